"""The cost of quantization, app side: the held-out pairs an export measures, storing the measurements
(``quant_costs``, migration 16) from the export job's ``quant_cost.json`` or a ``quant_cost`` job's, the
quantization to choose, and the admin's KL bound that blocks a release (``check``).

``core.deploy.quant_cost`` (worker side) measures: perplexity of f16 and of each quantization on the
held-out answers, and each quantization's mean KL divergence from f16 at every answer token, as llama.cpp's
``llama-perplexity --kl-divergence`` computes it (its docstring says how, and what differs).

**Which one to choose** (``recommend``): the smallest file whose mean KL divergence from f16 is at most the
bound: the admin's KL bound when one is set, else ``ADVISED_KL``. None within it: q8_0 if measured, else
f16. ``ADVISED_KL`` is the studio's own line, not a standard of llama.cpp's.
"""
from __future__ import annotations

import json
import math
import time
import uuid
from pathlib import Path
from typing import Callable

from core import store
from core.access.principal import Principal, require
from core.deploy.quant_cost import DEFAULT_PAIRS, REPORT, QuantCostError
from core.i18n import M
from core.jobs import queue

KL_BOUND = "quant_kl_bound"    # the setting: None (no bound) or the largest mean KL (nats) a release may have
ADVISED_KL = 0.05              # without a bound, the line ``recommend`` chooses by (nats)
MAX_BOUND = 10.0
# smaller first: the order ``recommend`` tries them in (the files' sizes follow it)
BY_SIZE = ("q4_k_m", "q8_0", "f16")
COLUMNS = ("export_job_id", "quantization", "run_id", "measured_by_job", "sequences", "tokens", "ppl", "ppl_unc",
           "ppl_ratio", "kl_mean", "kl_unc", "kl_median", "kl_p99", "kl_max", "same_top", "dp_rms", "file_bytes",
           "method", "report", "created_at", "project")


def held_out_pairs(dataset_version_id: str, n: int = DEFAULT_PAIRS) -> list[dict]:
    """The first ``n`` held-out pairs of the version (the preflight's golden pairs are their first few);
    none when the version has no test split (the export is then not measured)."""
    from core.datasets import versions   # read here, not through preflights: that module imports the gate

    rows = versions.head_rows(versions.get_version(dataset_version_id), "test", n)
    return [{"instruction": r.get("instruction") or "", "input": r.get("input") or "",
             "output": r.get("output") or ""} for r in rows or []]


# ── storing ──────────────────────────────────────────────────────────────────


def _cfg(job: dict) -> dict:
    return job["config"] if isinstance(job["config"], dict) else json.loads(job["config"])


def store_report(con, export_job: dict, report_path: str | Path, measured_by: int) -> int:
    """The measurements of ``report_path`` as rows of the export (those of an earlier measurement of the same
    export replaced), in the caller's transaction. Returns the rows written."""
    report = json.loads(Path(report_path).read_text(encoding="utf-8"))
    result = export_job.get("result") or {}
    if isinstance(result, str):
        result = json.loads(result)
    files = result.get("gguf") or {}
    con.execute("DELETE FROM quant_costs WHERE export_job_id = ?", [export_job["id"]])
    rows = []
    for q, s in report["per_quantization"].items():
        size = Path(files[q]).stat().st_size if q in files and Path(files[q]).exists() else None
        rows.append([export_job["id"], q, export_job.get("run_id"), measured_by, report["sequences"], s["tokens"],
                     s["ppl"], s["ppl_unc"], s.get("ppl_ratio"), s.get("kl_mean"), s.get("kl_unc"), s.get("kl_median"),
                     s.get("kl_p99"), s.get("kl_max"), s.get("same_top"), s.get("dp_rms"), size, report["method"],
                     str(report_path), store.now(), export_job.get("project")])
    store.insert_rows(con, "quant_costs", COLUMNS, rows)
    return len(rows)


def ingest_export(con, job: dict, result: dict) -> None:
    """An export job's own measurement (``result["quant_cost"]``), at its settle. Idempotent."""
    if result.get("quant_cost") and Path(result["quant_cost"]).exists():
        if not con.execute("SELECT 1 FROM quant_costs WHERE export_job_id = ? AND measured_by_job = ?",
                           [job["id"], job["id"]]).fetchall():
            store_report(con, {**job, "result": result}, result["quant_cost"], job["id"])


def ingest(con, job: dict, result: dict) -> None:
    """A ``quant_cost`` job's measurement of an earlier export, at its settle. Idempotent."""
    if con.execute("SELECT 1 FROM quant_costs WHERE measured_by_job = ?", [job["id"]]).fetchall():
        return
    row = con.execute("SELECT * FROM jobs WHERE id = ?", [result["export_job"]]).fetchone()
    cols = [d[0] for d in con.description]
    store_report(con, dict(zip(cols, row)), result["quant_cost"], job["id"])


def submit(export_job_id: int, *, actor: Principal, pairs: int = DEFAULT_PAIRS) -> dict:
    """Queue a ``quant_cost`` job that measures a succeeded export (one made before these measurements, or
    again on more pairs)."""
    from core.training import runs

    export = queue.get_job(int(export_job_id))
    if export["kind"] != "export":
        raise QuantCostError(f"job {export_job_id} is a {export['kind']} job, not an export")
    run = runs.get_run(export["run_id"], actor)
    require(actor, "export.submit", run["project"])
    if export["state"] != "succeeded":
        raise QuantCostError(f"export job {export_job_id} has not succeeded ({export['state']})")
    result = export["result"]
    got = held_out_pairs(run["dataset_version_id"], pairs)
    if not got:
        raise QuantCostError(f"dataset version {run['dataset_version_id']} has no held-out pairs to measure on")
    payload = {"export_job": export["id"], "gguf": result["gguf"], "merged_dir": result["merged_dir"],
               "prompt_format": result.get("prompt_format") or run["prompt_format"], "pairs": got,
               "base_model": run["base_model"]}
    job_dir = Path(result["gguf"]["f16"]).parent / f"quant-cost-{time.strftime('%H%M%S')}-{uuid.uuid4().hex[:6]}"
    return queue.submit("quant_cost", payload, job_dir, actor, run["id"], run["dataset_version_id"], run["project"])


# ── reading ──────────────────────────────────────────────────────────────────


def for_export(export_job_id: int) -> dict[str, dict]:
    """The export's measurements by quantization (empty when it has none)."""
    return {r["quantization"]: r for r in store.rows("SELECT * FROM quant_costs WHERE export_job_id = ?",
                                                     [int(export_job_id)])}


def for_run(run_id: str) -> dict[str, dict]:
    """For each quantization, the newest measurement among the run's exports (each against its export's f16)."""
    got = store.rows("SELECT * FROM quant_costs WHERE run_id = ? ORDER BY export_job_id DESC, quantization", [run_id])
    out: dict[str, dict] = {}
    for r in got:
        out.setdefault(r["quantization"], r)
    return out


# ── the bound (an admin's setting) and the choice ────────────────────────────


def kl_bound() -> float | None:
    got = store.get_setting(KL_BOUND, None)
    return None if got is None else float(got)


def set_kl_bound(bound: float | None, *, actor: Principal) -> float | None:
    """The largest mean KL divergence from f16 (nats) a released quantization may have; None lifts it.
    Admins only; audited (``setting.changed``, old and new)."""
    require(actor, "gate.thresholds")
    if bound is not None:
        try:
            bound = float(bound)
        except (TypeError, ValueError):
            raise QuantCostError(M("the KL bound must be a number of nats, not '{bound}'", bound=bound)) from None
        if not (math.isfinite(bound) and 0 < bound <= MAX_BOUND):
            raise QuantCostError(M("the KL bound must be above 0 and at most {most} nats (got {bound})",
                                   most=MAX_BOUND, bound=bound))
    store.set_setting(KL_BOUND, bound, actor)
    return bound


def recommend(costs: dict[str, dict], bound: float | None = None) -> tuple[str | None, M]:
    """The quantization to choose among measured ones, and why (the rule in the module's docstring)."""
    if not costs:
        return None, M("not measured yet")
    line = bound if bound is not None else ADVISED_KL
    for q in BY_SIZE:
        c = costs.get(q)
        if c is None:
            continue
        if q == "f16":
            return q, M("no quantization keeps its mean KL from f16 within {line} nats: f16", line=line)
        if c["kl_mean"] is not None and c["kl_mean"] <= line:
            return q, M("{q}: the smallest file whose mean KL from f16 ({kl:.4f} nats) is within {line} nats",
                        q=q, kl=c["kl_mean"], line=line)
    return ("q8_0" if "q8_0" in costs else None), M("no measured quantization is within {line} nats", line=line)


def check(export_job_id: int, quantization: str, *, actor: Principal | None = None,
          on_progress: Callable[[str], None] | None = None) -> tuple[str, bool, dict, M]:
    """The release check of a quantization's cost: ``(name, passed, numbers, reason)``. Passes without a bound
    (the numbers are shown), for f16 (the reference itself), and for a quantization whose mean KL from f16 is at
    most the bound; an export with no measurement while a bound is set is measured first (a ``quant_cost`` job,
    waited for) when ``actor`` is given, and fails otherwise."""
    name = "quantization cost"
    bound = kl_bound()
    costs = for_export(export_job_id)
    if bound is not None and quantization != "f16" and quantization not in costs and actor is not None:
        from core.jobs import supervisor

        if on_progress:
            on_progress(M("measuring the cost of quantization of export job {job} (KL bound {bound})",
                          job=export_job_id, bound=bound))
        job = supervisor.wait(submit(export_job_id, actor=actor)["id"], timeout=3600)
        if job["state"] != "succeeded":
            raise QuantCostError(f"quant_cost job {job['id']} {job['state']}: {job.get('error')}")
        costs = for_export(export_job_id)
    c = costs.get(quantization) or {}
    numbers = {"quantization": quantization, "export_job": int(export_job_id), "bound": bound,
               **{k: c.get(k) for k in ("ppl", "ppl_ratio", "kl_mean", "kl_unc", "kl_p99", "same_top", "dp_rms",
                                        "tokens", "sequences")}}
    numbers["f16_ppl"] = (costs.get("f16") or {}).get("ppl")
    if quantization == "f16":
        return name, True, numbers, M("f16 is the reference the quantizations are measured against")
    if bound is None:
        return name, True, numbers, (M("no KL bound is set (an admin can set one); mean KL from f16 {kl:.4f} nats",
                                       kl=c["kl_mean"]) if c.get("kl_mean") is not None
                                     else M("no KL bound is set; not measured"))
    if c.get("kl_mean") is None:
        return name, False, numbers, M("{q} of export job {job} has no measured KL divergence, and a KL bound of "
                                       "{bound} nats is set: measure it (python -m core quant-cost --export {job})",
                                       q=quantization, job=export_job_id, bound=bound)
    passed = c["kl_mean"] <= bound
    return name, passed, numbers, M("{q}: mean KL divergence from f16 {kl:.4f} nats ({verdict} the bound of {bound} "
                                    "nats; same top token as f16 on {top:.1%} of answer tokens)", q=quantization,
                                    kl=c["kl_mean"], verdict=M("within") if passed else M("above"), bound=bound,
                                    top=c["same_top"] or 0.0)
