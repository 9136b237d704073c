"""Sweeps: many training runs from one grid or list of settings, each evaluated by itself, ranked together.

A sweep varies a few settings over one dataset version — the LoRA rank and alpha, the learning rate, the
epochs, the batch (or the whole preset) and the base model — either as a **grid** (every combination) or
as a **list** of runs (each entry its own settings; a list and a grid together: every entry crossed with
the grid). Every run is an ordinary training job (``runs.submit_train``), recorded under the sweep's id
(``sweep_runs``, migration 14). When a sweep's training job is ingested by the supervisor, the gate's own
evaluation of its adapter on the held-out split is queued in the same transaction (``after_ingest``, which the train kind names in core.jobs.kinds), so
each run is evaluated without anyone starting it. The sweep view ranks the runs by the gate's metrics
(the evaluation each gate verdict rests on: releasable first, then passing, then ROUGE-L, then BLEU), with
their settings, loss curves and verdicts; the first is the best. Cancelling a sweep cancels its queued and
running jobs (training and evaluation) and stops evaluations from being queued for it.

Before it starts, a sweep says how many runs it makes and about how long they take on this box
(``estimate``): from what this studio home has **measured** — the seconds per training row of its finished
runs of the same base model, their start-up time, and the seconds per example of its evaluations — never
from a guess. Where nothing of that model has been measured here, the count comes without hours.

The spec (YAML, or the same keys from the CLI and the Train page)::

    name: r-and-lr                     # optional
    dataset: ds-…                      # the dataset version (or --dataset)
    preset: demo pass (CPU, 40 steps)  # the settings every run starts from
    settings: {max_steps: 40}          # any training setting, for every run
    grid: {r: [8, 16, 32], lr: [1e-4, 2e-4]}
    runs: [{alpha: 8}, {alpha: 32}]    # optional: a list (crossed with the grid when both are given)
    evaluate: {limit: null, max_new_tokens: 128}   # the gate's evaluation: the whole held-out split
"""
from __future__ import annotations

import itertools
import json
import math
import statistics
from pathlib import Path
from typing import Any

from core import store
from core.access import projects
from core.access.principal import Principal, require
from core.i18n import M
from core.jobs import queue
from core.training import presets
from core.training.config import TrainConfig

MAX_RUNS = 64          # one sweep at most: a typo in a grid must not queue a thousand jobs

# what a sweep may vary: the setting, its short names, its kind, its range
FIELDS: dict[str, dict] = {
    "lora_r": {"aliases": ("r",), "kind": int, "min": 1, "max": 256},
    "lora_alpha": {"aliases": ("alpha",), "kind": int, "min": 1, "max": 512},
    "learning_rate": {"aliases": ("lr",), "kind": float, "min": 1e-7, "max": 0.1},
    "num_train_epochs": {"aliases": ("epochs",), "kind": float, "min": 0.01, "max": 100},
    "per_device_train_batch_size": {"aliases": ("batch",), "kind": int, "min": 1, "max": 128},
    "gradient_accumulation_steps": {"aliases": ("accumulation",), "kind": int, "min": 1, "max": 128},
    "gpus": {"aliases": (), "kind": int, "min": 1, "max": 64},   # GPUs a run trains on (torchrun, core.training.ddp)
    "preset": {"aliases": (), "kind": str},
    "base_model": {"aliases": ("model",), "kind": str},
}
ALIASES = {a: name for name, f in FIELDS.items() for a in (name, *f["aliases"])}
SHORT = {name: (f["aliases"][0] if f["aliases"] else name) for name, f in FIELDS.items()}
TOP = ("name", "dataset", "preset", "settings", "grid", "runs", "evaluate")
EVALUATE = ("limit", "max_new_tokens", "batch_size")
MAX_SPEC_BYTES = 256 * 1024


class SweepError(ValueError):
    """A sweep that cannot start, in one line naming the field (an ``M``: a page shows it translated)."""


# ── the spec ─────────────────────────────────────────────────────────────────


def _field(name: Any, where: str) -> str:
    if not isinstance(name, str) or name not in ALIASES:
        raise SweepError(M("{where}.{name}: not a setting a sweep can vary (one of: {fields})", where=where,
                           name=name, fields=", ".join(f"{SHORT[n]}" + (f"/{n}" if SHORT[n] != n else "")
                                                        for n in FIELDS)))
    return ALIASES[name]


def _value(field: str, value: Any, where: str) -> Any:
    """One value of a varied setting, checked: its kind and its range, a preset that exists, a base model the
    studio may load (the same check as a training job's)."""
    spec = FIELDS[field]
    kind = spec["kind"]
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SweepError(M("{where}: {value} is not a whole number", where=where, value=repr(value)))
    elif kind is float:
        if isinstance(value, str):
            try:
                value = float(value)   # YAML reads 2e-4 (no dot) as text
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise SweepError(M("{where}: {value} is not a number", where=where, value=repr(value)))
        value = float(value)
    else:
        if not isinstance(value, str) or not value.strip():
            raise SweepError(M("{where}: {value} is not a name", where=where, value=repr(value)))
        value = value.strip()
    if "min" in spec and not spec["min"] <= value <= spec["max"]:
        raise SweepError(M("{where}: {value} is out of range ({low}–{high})", where=where, value=value,
                           low=spec["min"], high=spec["max"]))
    if field == "preset" and value not in presets.PRESETS:
        raise SweepError(M("{where}: no preset '{value}' (one of: {names})", where=where, value=value,
                           names=", ".join(presets.PRESETS)))
    if field == "gpus":   # as many as this box can give one job
        from core.training import runs

        try:
            runs.check_gpus(value)
        except queue.JobError as exc:
            raise SweepError(M("{where}: {problem}", where=where, problem=str(exc))) from None
    if field == "base_model":
        from core import base_models

        try:
            base_models.check(value)
        except ValueError as exc:
            raise SweepError(M("{where}: {problem}", where=where, problem=str(exc))) from None
    return value


def normalize(spec: Any) -> dict:
    """The spec with every key checked and every short name made long: ``{"name", "dataset", "preset",
    "settings", "grid": {field: [values]}, "runs": [{field: value}], "evaluate": {...}}``. SweepError names
    the field at fault."""
    if not isinstance(spec, dict):
        raise SweepError(M("a sweep must be a mapping of fields ({fields}), not {kind}", fields=", ".join(TOP),
                           kind=type(spec).__name__))
    unknown = [k for k in spec if k not in TOP]
    if unknown:
        raise SweepError(M("{field}: not a sweep field (one of: {fields})", field=unknown[0], fields=", ".join(TOP)))
    out: dict[str, Any] = {"name": None, "dataset": None, "preset": presets.DEMO_PRESET, "settings": {}, "grid": {},
                           "runs": [], "evaluate": {"limit": None, "max_new_tokens": 128, "batch_size": 0}}
    for key in ("name", "dataset"):
        if spec.get(key) is not None:
            if not isinstance(spec[key], str) or not spec[key].strip():
                raise SweepError(M("{field}: {value} is not a name", field=key, value=repr(spec[key])))
            out[key] = spec[key].strip()
    if spec.get("preset") is not None:
        out["preset"] = _value("preset", spec["preset"], "preset")
    settings = spec.get("settings") or {}
    if not isinstance(settings, dict):
        raise SweepError(M("settings: a mapping of training settings, not {value}", value=repr(settings)))
    try:
        presets.preset(out["preset"], **settings)
    except ValueError as exc:
        raise SweepError(M("settings: {problem}", problem=str(exc))) from None
    out["settings"] = dict(settings)
    grid = spec.get("grid")
    if grid is not None:
        if not isinstance(grid, dict):
            raise SweepError(M("grid: a mapping of settings to lists of values, not {value}", value=repr(grid)))
        for name, values in grid.items():
            field = _field(name, "grid")
            if field in out["grid"]:
                raise SweepError(M("grid.{name}: {field} is given twice", name=name, field=field))
            if not isinstance(values, list):
                values = [values]
            if not values:
                raise SweepError(M("grid.{name}: an empty list of values", name=name))
            checked = [_value(field, v, f"grid.{name}") for v in values]
            twice = [v for i, v in enumerate(checked) if v in checked[:i]]
            if twice:
                raise SweepError(M("grid.{name}: {value} is listed twice", name=name, value=twice[0]))
            out["grid"][field] = checked
    listed = spec.get("runs")
    if listed is not None:
        if not isinstance(listed, list):
            raise SweepError(M("runs: a list of runs, each a mapping of settings, not {value}", value=repr(listed)))
        for i, entry in enumerate(listed, start=1):
            if not isinstance(entry, dict) or not entry:
                raise SweepError(M("runs[{i}]: a mapping of settings (e.g. {{r: 8, lr: 2e-4}}), not {value}", i=i,
                                   value=repr(entry)))
            out["runs"].append({_field(k, f"runs[{i}]"): _value(_field(k, f"runs[{i}]"), v, f"runs[{i}].{k}")
                                for k, v in entry.items()})
    ev = spec.get("evaluate") or {}
    if not isinstance(ev, dict) or [k for k in ev if k not in EVALUATE]:
        bad = [k for k in ev if k not in EVALUATE] if isinstance(ev, dict) else [repr(ev)]
        raise SweepError(M("evaluate.{field}: not an evaluation setting (one of: {fields})", field=bad[0],
                           fields=", ".join(EVALUATE)))
    for key, low, high in (("limit", 1, 10**6), ("max_new_tokens", 1, 8192), ("batch_size", 0, 1024)):
        if key in ev and ev[key] is not None:
            value = ev[key]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise SweepError(M("evaluate.{field}: {value} is out of range ({low}–{high})", field=key,
                                   value=repr(value), low=low, high=high))
            out["evaluate"][key] = value
    if not out["grid"] and not out["runs"]:
        raise SweepError(M("grid: the sweep has no runs: give a grid of values (e.g. r: [8, 16, 32]) or a list of runs"))
    return out


def load(text: str, source: str = "the sweep") -> dict:
    """A sweep spec from YAML text; SweepError naming the line or the field."""
    import yaml

    if len(text.encode("utf-8", errors="replace")) > MAX_SPEC_BYTES:
        raise SweepError(M("{source}: too large for a sweep spec", source=source))
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise SweepError(M("{source}: {where}not valid YAML ({problem})", source=source, where=where,
                           problem=getattr(exc, "problem", None) or str(exc))) from None
    if data is None:
        raise SweepError(M("{source}: empty; a sweep needs a grid or a list of runs", source=source))
    try:
        spec = normalize(data)
        expand(spec)   # its runs make configs, not too many, none twice: said of this file too
        return spec
    except SweepError as exc:
        raise SweepError(M("{source}: {problem}", source=source, problem=exc.args[0])) from None


def load_file(path: str | Path) -> dict:
    path = Path(path)
    try:
        if path.stat().st_size > MAX_SPEC_BYTES:
            raise SweepError(M("{source}: too large for a sweep spec", source=str(path)))
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SweepError(M("{source}: no such file", source=str(path))) from None
    except IsADirectoryError:
        raise SweepError(M("{source}: a folder, not a sweep spec", source=str(path))) from None
    except UnicodeDecodeError as exc:
        raise SweepError(M("{source}: not UTF-8 text (byte {byte}); a sweep spec is YAML", source=str(path),
                           byte=exc.start)) from None
    except OSError as exc:
        raise SweepError(M("{source}: cannot be read ({why})", source=str(path), why=exc.strerror or str(exc))) from None
    return load(text, str(path))


def parse_values(name: str, text: str) -> list:
    """``"8, 16, 32"`` (a page's box, the CLI's ``--grid r=8,16,32``) as the field's values; [] for nothing."""
    field = _field(name, "grid")
    parts = [p.strip() for p in str(text or "").replace(";", ",").split(",") if p.strip()]
    out = []
    for part in parts:
        value: Any = part
        if FIELDS[field]["kind"] is int:
            try:
                value = int(part)
            except ValueError:
                pass
        out.append(value)
    return out


def from_options(*, preset: str | None = None, grid: dict | None = None, settings: dict | None = None,
                 dataset: str | None = None, name: str | None = None, evaluate: dict | None = None) -> dict:
    """A spec from a form's or the command line's parts (each grid entry a list, or text such as "8, 16")."""
    spec: dict[str, Any] = {"grid": {}}
    for key, values in (grid or {}).items():
        values = parse_values(key, values) if isinstance(values, str) else list(values)
        if values:
            spec["grid"][key] = values
    for key, value in (("preset", preset), ("dataset", dataset), ("name", name)):
        if value:
            spec[key] = value
    if settings:
        spec["settings"] = settings
    if evaluate:
        spec["evaluate"] = {k: v for k, v in evaluate.items() if v is not None}
    return normalize(spec)


def expand(spec: dict) -> list[dict]:
    """Every run of a (normalized) spec: ``{"params": what varies, "config": TrainConfig}``, in order.
    SweepError when there are more than ``MAX_RUNS``, two alike, or a run's settings do not make a config."""
    grid = spec["grid"]
    combos = [dict(zip(grid, values)) for values in itertools.product(*grid.values())] if grid else [{}]
    listed = spec["runs"] or [{}]
    count = len(combos) * len(listed)
    if count > MAX_RUNS:
        raise SweepError(M("grid: {count} runs is more than a sweep may queue ({most}); vary fewer values",
                           count=count, most=MAX_RUNS))
    out, seen = [], {}
    for entry in listed:
        for combo in combos:
            params = {**entry, **combo}
            i = len(out) + 1
            overrides = {k: v for k, v in params.items() if k != "preset"}
            try:
                cfg = presets.preset(params.get("preset", spec["preset"]), **{**spec["settings"], **overrides})
            except ValueError as exc:
                raise SweepError(M("run {i} ({params}): {problem}", i=i, params=describe(params),
                                   problem=str(exc))) from None
            key = json.dumps(cfg.to_dict(), sort_keys=True)
            if key in seen:
                raise SweepError(M("run {i} ({params}) trains exactly as run {j}: remove one", i=i,
                                   params=describe(params), j=seen[key]))
            seen[key] = i
            out.append({"params": params, "config": cfg})
    return out


def describe(params: dict) -> str:
    """``r=8, lr=0.0002``: what a run varies, in the short names."""
    return ", ".join(f"{SHORT.get(k, k)}={v}" for k, v in params.items()) or "—"


# ── the estimate ─────────────────────────────────────────────────────────────


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v) and v >= 0]
    return statistics.median(values) if values else None


def measured(base_models: list[str]) -> dict[str, dict]:
    """What this home measured of each base model, in two queries: ``s_per_row`` (median training seconds per
    training row: a finished run's ``train_runtime_s`` / (steps × batch × accumulation)), ``train_overhead_s``
    (median of a job's wall time minus its training time: loading, packing, saving), ``s_per_example`` and
    ``eval_overhead_s`` of its evaluations, and ``from_runs``/``from_evaluations``: how many were counted.
    Resumed runs are left out (their time covers part of their steps), and runs across GPUs."""
    if not base_models:
        return {}
    trained = store.rows(
        """SELECT r.base_model, r.config AS config, j.result AS result,
                  epoch(j.finished_at) - epoch(j.started_at) AS wall_s
           FROM jobs j JOIN runs r ON r.job_id = j.id
           WHERE j.kind = 'train' AND j.state = 'succeeded' AND r.base_model IN (SELECT unnest(?::VARCHAR[]))
           ORDER BY j.finished_at DESC LIMIT 400""", [base_models])
    evaluated = store.rows(
        """SELECT e.base_model, e.n, e.duration_s, epoch(j.finished_at) - epoch(j.started_at) AS wall_s
           FROM evaluations e LEFT JOIN jobs j ON j.id = e.job_id
           WHERE e.run_id IS NOT NULL AND e.n > 0 AND e.duration_s > 0
             AND e.base_model IN (SELECT unnest(?::VARCHAR[]))
           ORDER BY e.created_at DESC LIMIT 400""", [base_models])
    out: dict[str, dict] = {}
    for model in base_models:
        per_row, overhead, n = [], [], 0
        for t in trained:
            result = json.loads(t["result"]) if isinstance(t["result"], str) else (t["result"] or {})
            # a run across GPUs is left out too: its time is not one slot's
            if t["base_model"] != model or result.get("resumed_from") or not result.get("train_runtime_s") \
                    or (result.get("gpus") or 1) > 1:
                continue
            rows = (result.get("steps") or 0) * (result.get("per_device_train_batch_size") or 0) \
                * (result.get("gradient_accumulation_steps") or 0)
            if not rows:
                cfg = json.loads(t["config"]) if isinstance(t["config"], str) else t["config"]
                rows = (result.get("steps") or 0) * cfg.get("per_device_train_batch_size", 0) \
                    * cfg.get("gradient_accumulation_steps", 0)
            if rows <= 0:
                continue
            n += 1
            per_row.append(result["train_runtime_s"] / rows)
            if t["wall_s"] is not None:
                overhead.append(max(0.0, t["wall_s"] - result["train_runtime_s"]))
        evals = [e for e in evaluated if e["base_model"] == model]
        out[model] = {
            "s_per_row": _median(per_row), "train_overhead_s": _median(overhead) or 0.0, "from_runs": n,
            "s_per_example": _median([e["duration_s"] / e["n"] for e in evals]),
            "eval_overhead_s": _median([e["wall_s"] - e["duration_s"] for e in evals if e["wall_s"] is not None]) or 0.0,
            "from_evaluations": len(evals),
        }
    return out


def _steps(cfg: TrainConfig, rows_train: int) -> int:
    """Optimizer steps of a run: ``max_steps``, or by epochs the trainer's own count on unpacked rows (with
    packing the rows are fewer: an upper bound)."""
    if cfg.max_steps > 0:
        return cfg.max_steps
    per_step = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * cfg.gpus
    return math.ceil(max(rows_train, 1) / per_step) * math.ceil(cfg.num_train_epochs)


def estimate(planned: list[dict], version: dict, spec: dict) -> dict:
    """How many runs and about how long on this box: ``{"runs", "slot", "slots", "hours" (slot-hours, None
    when a model has not been measured here), "wall_hours", "per_run": [...], "unmeasured": [models],
    "message": M}``."""
    from core.jobs import supervisor

    every = supervisor.slots()
    gpu = any(s.startswith("gpu:") for s in every)
    models = sorted({p["config"].resolved_base_model() for p in planned})
    known = measured(models)
    limit = spec["evaluate"].get("limit")
    held_out = int(version.get("rows_test") or 0)
    examples = min(limit, held_out) if limit else held_out
    per_run, unmeasured = [], set()
    for p in planned:
        cfg = p["config"]
        m = known.get(cfg.resolved_base_model()) or {}
        steps = _steps(cfg, int(version.get("rows_train") or 0))
        # a run across N GPUs takes N times the rows a step: about the GPU-hours of one GPU doing them all
        # (perfect scaling assumed; not measured on a multi-GPU host)
        rows = steps * cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * cfg.gpus
        if m.get("s_per_row") is None:
            unmeasured.add(cfg.resolved_base_model())
            per_run.append({"params": p["params"], "steps": steps, "seconds": None})
            continue
        seconds = m["train_overhead_s"] + rows * m["s_per_row"]
        if examples and m.get("s_per_example") is not None:
            seconds += m["eval_overhead_s"] + examples * m["s_per_example"]
        elif examples:
            unmeasured.add(cfg.resolved_base_model())
        per_run.append({"params": p["params"], "steps": steps, "seconds": round(seconds, 1)})
    hours = None if any(r["seconds"] is None for r in per_run) else sum(r["seconds"] for r in per_run) / 3600
    wall = hours / len(every) if hours is not None else None
    out = {"runs": len(planned), "slots": every, "gpu": gpu, "hours": round(hours, 3) if hours is not None else None,
           "wall_hours": round(wall, 3) if wall is not None else None, "per_run": per_run,
           "unmeasured": sorted(unmeasured), "examples_per_run": examples, "measured": known}
    out["message"] = message(out)
    return out


def message(est: dict) -> M:
    """The estimate in one line (a stored estimate too: a page shows it in the reader's language)."""
    n, hours, wall = est["runs"], est.get("hours"), est.get("wall_hours")
    if hours is None:
        from core import models as model_names

        return M("{n} runs; no time estimate yet: no finished run (and evaluation) of {models} was measured on "
                 "this box", n=n, models=", ".join(model_names.display_name(x) or x for x in est.get("unmeasured") or []))
    if est.get("gpu"):
        return M("{n} runs, about {hours} GPU-hours on this box ({slots} GPUs: about {wall} hours of wall time)", n=n,
                 hours=_hours(hours), slots=len(est["slots"]), wall=_hours(wall))
    return M("{n} runs, about {hours} CPU-hours on this box (no GPU: one run at a time)", n=n, hours=_hours(hours))


def _hours(h: float) -> str:
    return f"{h:.2f}" if h < 0.1 else f"{h:.1f}"


# ── starting, cancelling ─────────────────────────────────────────────────────


def plan(spec: dict, dataset_version_id: str | None = None, *, actor: Principal) -> dict:
    """What a sweep would queue, without queuing it: the runs (their params and configs) and the estimate."""
    from core.datasets import versions

    spec = normalize(spec)
    dataset = dataset_version_id or spec.get("dataset")
    if not dataset:
        raise SweepError(M("dataset: a sweep needs a dataset version (see `python -m core dataset list`)"))
    planned = expand(spec)
    version = versions.get_version(dataset, actor)
    return {"spec": {**spec, "dataset": dataset}, "version": version, "runs": planned,
            "estimate": estimate(planned, version, spec)}


def submit(spec: dict, dataset_version_id: str | None = None, *, actor: Principal,
           override_review: str | None = None) -> dict:
    """Queue every run of a sweep as an ordinary training job, in one transaction (all or none), under one
    sweep id; each is evaluated when its training is ingested. Needs training and evaluating in the dataset
    version's project. Audited (``sweep.started``, and each job's ``job.submitted``)."""
    planned = plan(spec, dataset_version_id, actor=actor)
    spec, version, est = planned["spec"], planned["version"], planned["estimate"]
    project = version["project"]
    require(actor, "train.submit", project)
    require(actor, "evaluate.submit", project)
    from core.training import runs

    sweep_id = queue.new_id("sweep")
    with store.transaction() as con:
        con.execute(
            """INSERT INTO sweeps (id, name, project, dataset_version_id, spec, estimate, created_by, created_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
            [sweep_id, spec.get("name") or sweep_id, project, version["id"], json.dumps(spec, ensure_ascii=False),
             json.dumps({k: v for k, v in est.items() if k not in ("measured", "message")}, ensure_ascii=False),
             actor.name, store.now()])
        made = []
        for i, p in enumerate(planned["runs"]):
            job = runs.submit_train(version["id"], p["config"], actor=actor, override_review=override_review)
            con.execute("INSERT INTO sweep_runs (sweep_id, idx, run_id, params) VALUES (?, ?, ?, ?)",
                        [sweep_id, i, job["run_id"], json.dumps(p["params"], ensure_ascii=False)])
            made.append({"job": job["id"], "run": job["run_id"], "params": p["params"]})
        store.audit("sweep.started", sweep_id, actor, con=con, project=project, dataset=version["id"],
                    runs=len(made), grid=spec["grid"], listed=spec["runs"], preset=spec["preset"],
                    settings=spec["settings"], evaluate=spec["evaluate"], estimate=str(est["message"]),
                    jobs=[m["job"] for m in made])
    return {"id": sweep_id, "runs": made, "estimate": est}


def cancel(sweep_id: str, *, actor: Principal) -> dict:
    """Cancel a sweep: no evaluation is queued for it from now on, and every queued or running job of its runs
    (training, resumed training, evaluation) is cancelled. Audited (``sweep.cancelled``, and each job's
    ``job.cancelled``). Returns the jobs cancelled."""
    from core.jobs import supervisor

    sweep = get(sweep_id, actor)
    require(actor, "job.cancel", sweep["project"])

    def active() -> list[dict]:   # the queued first: none of them starts while the running ones are stopped
        return store.rows(
            """SELECT j.id FROM jobs j JOIN sweep_runs s ON s.run_id = j.run_id
               WHERE s.sweep_id = ? AND j.kind IN ('train', 'evaluate') AND j.state IN ('queued', 'running')
               ORDER BY j.state = 'running', j.id""", [sweep_id])

    if not active():
        raise queue.JobError(f"sweep {sweep_id} was cancelled already, and none of its jobs is queued or running"
                             if sweep["cancelled_at"] else
                             f"sweep {sweep_id} has no queued or running job: it has finished, nothing to cancel")
    store.execute("UPDATE sweeps SET cancelled_at = ?, cancelled_by = ? WHERE id = ? AND cancelled_at IS NULL",
                  [store.now(), actor.name, sweep_id])
    jobs = active()   # again: an evaluation queued by a settle before the sweep was marked is among them
    cancelled, ended = [], []
    for j in jobs:
        try:
            supervisor.cancel(j["id"], actor=actor)
            cancelled.append(j["id"])
        except queue.JobError:
            ended.append(j["id"])   # it ended on its own meanwhile
    store.audit("sweep.cancelled", sweep_id, actor, project=sweep["project"], jobs=cancelled, ended_meanwhile=ended)
    return {"id": sweep_id, "cancelled": cancelled, "ended_meanwhile": ended}


# ── the supervisor's side ────────────────────────────────────────────────────


def after_ingest(con, job: dict, result: dict) -> int | None:
    """In the settle of a training job (its transaction): when its run belongs to a sweep that is not cancelled,
    queue the gate's evaluation of the new adapter on the held-out split, as the sweep's owner. Idempotent: a
    run with an evaluation job already is left alone. Returns the evaluation job's id."""
    got = con.execute(
        """SELECT s.id, s.spec, s.created_by, s.project, s.cancelled_at FROM sweep_runs sr JOIN sweeps s ON s.id = sr.sweep_id
           WHERE sr.run_id = ?""", [job["run_id"]]).fetchall()
    if not got or got[0][4] is not None or not result.get("adapter_dir"):
        return None
    sweep_id, spec, owner, project = got[0][0], json.loads(got[0][1]), got[0][2], got[0][3]
    if con.execute("SELECT 1 FROM jobs WHERE kind = 'evaluate' AND run_id = ?", [job["run_id"]]).fetchall():
        return None
    from core.evaluation import evaluations
    from core.evaluation.inference import Decoding

    ev = spec.get("evaluate") or {}
    run = con.execute("SELECT base_model, prompt_format, run_dir, dataset_version_id FROM runs WHERE id = ?",
                      [job["run_id"]]).fetchone()
    decoding = Decoding(max_new_tokens=ev.get("max_new_tokens") or 128, batch_size=ev.get("batch_size") or 0)
    job_id = evaluations.queue_for_run(
        con, run_id=job["run_id"], run_dir=run[2], base_model=run[0], adapter_dir=result["adapter_dir"],
        prompt_format_name=run[1], dataset_version_id=run[3], limit=ev.get("limit"), decoding=decoding,
        owner=owner, project=project)
    store.audit("job.submitted", str(job_id), owner, con=con, project=project, kind="evaluate", run_id=job["run_id"],
                sweep=sweep_id, automatic=True)
    return job_id


# ── reading ──────────────────────────────────────────────────────────────────


def _decode(s: dict | None) -> dict | None:
    if s is None:
        return None
    for key in ("spec", "estimate"):
        if isinstance(s.get(key), str):
            s[key] = json.loads(s[key])
    return s


def get(sweep_id: str, actor: Principal | None = None) -> dict:
    """A sweep by id. With ``actor``, one of another project is no sweep at all."""
    got = _decode(store.one("SELECT * FROM sweeps WHERE id = ?", [sweep_id]))
    if not got or (actor is not None and not actor.sees(got["project"])):
        raise SweepError(M("no sweep '{sweep}'", sweep=sweep_id))
    return got


def list_sweeps(actor: Principal, project: str | None = None, limit: int = 50) -> list[dict]:
    """The newest sweeps the actor sees, each with its counts (runs, trained, evaluated, active jobs), in one query."""
    cond, params = projects.where(actor, project, "s.project")
    got = store.rows(
        f"""SELECT s.*, count(DISTINCT sr.run_id) AS n_runs,
                   count(DISTINCT sr.run_id) FILTER (WHERE j.kind = 'train' AND j.state = 'succeeded') AS trained,
                   count(DISTINCT sr.run_id) FILTER (WHERE j.kind = 'evaluate' AND j.state = 'succeeded') AS evaluated,
                   count(DISTINCT j.id) FILTER (WHERE j.state IN ('queued', 'running')) AS active
            FROM sweeps s LEFT JOIN sweep_runs sr ON sr.sweep_id = s.id LEFT JOIN jobs j ON j.run_id = sr.run_id
            WHERE {cond} GROUP BY ALL ORDER BY s.created_at DESC LIMIT ?""", params + [int(limit)])
    out = []
    for s in got:
        s = _decode(s)
        s["state"] = "cancelled" if s["cancelled_at"] else ("running" if s["active"] else "finished")
        out.append(s)
    return out


STATES = {"running": M("sweep running"), "finished": M("sweep finished"), "cancelled": M("sweep cancelled")}


def view(sweep_id: str, actor: Principal | None = None) -> dict:
    """The sweep view's data, in six queries whatever its size: the sweep, its runs (settings, training job,
    latest evaluation job), the gate's verdicts (its settings, the evaluations, the reviews), and every run's
    loss curve. ``runs`` is ranked best
    first by the gate's metrics (releasable, passed, ROUGE-L, BLEU of the evaluation each verdict rests on);
    runs without an evaluation follow in their order. ``best``: the first run's id, once one is evaluated."""
    from core.evaluation import gate

    sweep = get(sweep_id, actor)
    members = store.rows(
        """SELECT sr.idx, sr.run_id, sr.params, r.id, r.dataset_version_id, r.base_model, r.config, r.adapter_dir,
                  j.id AS job_id, j.state AS train_state, j.error AS train_error,
                  epoch(j.finished_at) - epoch(j.started_at) AS train_s,
                  e.id AS eval_job, e.state AS eval_state, e.error AS eval_error,
                  epoch(e.finished_at) - epoch(e.started_at) AS eval_s
           FROM sweep_runs sr JOIN runs r ON r.id = sr.run_id JOIN jobs j ON j.id = r.job_id
           LEFT JOIN (SELECT * FROM jobs WHERE kind = 'evaluate' AND run_id IN (SELECT run_id FROM sweep_runs WHERE sweep_id = ?)
                      QUALIFY row_number() OVER (PARTITION BY run_id ORDER BY id DESC) = 1) e ON e.run_id = sr.run_id
           WHERE sr.sweep_id = ? ORDER BY sr.idx""", [sweep_id, sweep_id])
    verdicts = gate.verdicts(members) if members else {}
    metrics = store.frame(
        """SELECT run_id, step, loss, eval_loss FROM metrics
           WHERE run_id IN (SELECT run_id FROM sweep_runs WHERE sweep_id = ?) ORDER BY run_id, step""", [sweep_id])
    rows = []
    for m in members:
        v = verdicts.get(m["run_id"]) or {}
        e = v.get("evaluation") or {}
        params = json.loads(m["params"]) if isinstance(m["params"], str) else m["params"]
        cfg = json.loads(m["config"]) if isinstance(m["config"], str) else m["config"]
        rows.append({
            "idx": m["idx"], "run_id": m["run_id"], "params": params, "label": describe(params),
            "config": {k: cfg.get(k) for k in ("lora_r", "lora_alpha", "learning_rate", "num_train_epochs",
                                               "per_device_train_batch_size", "gradient_accumulation_steps",
                                               "max_steps", "base_model")},
            "base_model": m["base_model"], "job_id": m["job_id"], "train_state": m["train_state"],
            "eval_job": m["eval_job"], "eval_state": m["eval_state"],
            "error": m["train_error"] or m["eval_error"],
            "evaluation": e.get("id"), "n": e.get("n"), "bleu": e.get("bleu"), "rouge_l": e.get("rouge_l"),
            "passed": e.get("passed"), "releasable": bool(v.get("releasable")), "reason": v.get("reason"),
        })
    evaluated = sorted((r for r in rows if r["evaluation"]),
                       key=lambda r: (not r["releasable"], not r["passed"], -(r["rouge_l"] or 0), -(r["bleu"] or 0),
                                      r["idx"]))
    ranked = evaluated + [r for r in rows if not r["evaluation"]]
    for i, r in enumerate(ranked, start=1):
        r["rank"] = i if r["evaluation"] else None
        r["best"] = bool(evaluated) and r is evaluated[0]
    active = any(r["train_state"] in ("queued", "running") or r["eval_state"] in ("queued", "running")
                 or (r["train_state"] == "succeeded" and r["eval_state"] is None and not sweep["cancelled_at"])
                 for r in rows)
    state = "cancelled" if sweep["cancelled_at"] else ("running" if active else "finished")
    counts = {"runs": len(rows), "trained": sum(r["train_state"] == "succeeded" for r in rows),
              "evaluated": sum(r["eval_state"] == "succeeded" for r in rows),
              "failed": sum(r["train_state"] == "failed" or r["eval_state"] == "failed" for r in rows)}
    used = sum((m["train_s"] or 0) + (m["eval_s"] or 0) for m in members)   # slot time of its jobs so far
    return {"sweep": sweep, "state": state, "runs": ranked, "best": evaluated[0]["run_id"] if evaluated else None,
            "metrics": metrics, "counts": counts, "hours_used": round(used / 3600, 4)}


def summary(v: dict) -> dict:
    """The view as plain JSON (the CLI's ``--json``)."""
    keep = ("rank", "best", "run_id", "params", "train_state", "eval_state", "evaluation", "n", "bleu", "rouge_l",
            "passed", "releasable", "reason", "error")
    return {"id": v["sweep"]["id"], "name": v["sweep"]["name"], "state": v["state"], "counts": v["counts"],
            "best": v["best"], "estimate": str(message(v["sweep"]["estimate"])) if v["sweep"].get("estimate") else None,
            "estimated_hours": (v["sweep"].get("estimate") or {}).get("hours"), "hours_used": v["hours_used"],
            "runs": [{k: (str(r[k]) if k == "reason" and r[k] is not None else r[k]) for k in keep} for r in v["runs"]]}


def wait(sweep_id: str, timeout: float = 24 * 3600, poll: float = 1.0, on_update=None) -> dict:
    """Tick the supervisor until the sweep has finished (every run trained and evaluated, or failed) or is
    cancelled; returns its view (the CLI's wait, and the tests')."""
    import time

    from core.jobs import supervisor

    deadline = time.monotonic() + timeout
    while True:
        supervisor.tick()
        v = view(sweep_id)
        if on_update:
            on_update(v)
        if v["state"] != "running":
            return v
        if time.monotonic() > deadline:
            raise queue.JobError(f"sweep {sweep_id} still running after {timeout:g} s; it goes on (`python -m core "
                                 f"sweep show {sweep_id}`, `python -m core sweep cancel {sweep_id}`)")
        time.sleep(poll)
