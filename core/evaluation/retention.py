"""What tuning broke: is general Vietnamese kept? App side of the retention check.

A narrow fine-tune forgets general Vietnamese; the guide's remedy is 5–10 % general pairs mixed into the
training split. This measures whether it worked: the base model and the tuned run (and, on request, a GGUF
of it) answer general Vietnamese, and their BLEU, ROUGE-L (syllables, ``core.evaluation.scoring``) and the
perplexity of the reference answers (teacher-forced) are compared. Two sets:

- ``general-test``: the test split of the general data mixed into the run's dataset version (its lineage
  names the general version), without the pairs that the mix drew into the run's training split (the mix
  draws from both splits of the general version: those pairs were trained on);
- ``shipped``: ``data/samples/retention/general_vi_eval.jsonl``, 239 general Vietnamese pairs written for
  the studio, none of which is in the bundled general data (``general_vi.jsonl``) that versions mix in.

A ``retention`` job (worker side: ``core.evaluation.retention_worker``) evaluates each target on each set;
the supervisor stores one ``retention_results`` row per (target, set) and its examples in one transaction.
A base result is reused by any run of the same base model, prompt format and set (``set_key``: the pairs
and the decoding), so the base model is evaluated once.

The check (``check``): on every set measured, the tuned ROUGE-L is at least the base's minus 0.05 and the
tuned perplexity at most the base's × 1.25 (admin settings, audited). It gates a release where it was
measured and fails; an admin can make it required (then a run without it is refused).
"""
from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import NamedTuple

from core import paths, store
from core.access.principal import DEFAULT_PROJECT, Principal, require
from core.datasets import versions
from core.evaluation.inference import Decoding
from core.i18n import M
from core.jobs import queue
from core.jobs.queue import JobError
from core.training import runs

NAME = M("general Vietnamese kept")
SETTING = "retention_gate"
DEFAULTS = {"rouge_l_drop": 0.05, "perplexity_ratio": 1.25, "required": False}
SETS = ("general-test", "shipped")
SET_LABELS = {"general-test": M("general data mixed in (its test split)"),
              "shipped": M("the studio's general Vietnamese set")}
TARGET_LABELS = {"base": M("base"), "run": M("tuned"), "gguf": M("tuned GGUF")}


class RetentionError(ValueError):
    pass


class Check(NamedTuple):
    """A gate check: its ``name``, ``passed`` (True, False, or None: not measured and not required), the
    ``numbers`` it rests on and its ``reason`` (an ``M``: English as a string, Vietnamese through
    ``core.i18n.render``)."""
    name: str
    passed: bool | None
    numbers: dict
    reason: str


def shipped_path() -> Path:
    return paths.samples_dir() / "retention" / "general_vi_eval.jsonl"


def shipped_rows() -> list[dict]:
    rows = []
    for line in shipped_path().read_text(encoding="utf-8").splitlines():
        if line.strip():
            obj = json.loads(line)
            rows.append({"instruction": obj["instruction"], "input": obj.get("input") or "", "output": obj["output"]})
    return rows


def _pair(row: dict) -> tuple[str, str, str]:
    return (row.get("instruction") or "", row.get("input") or "", row.get("output") or "")


def general_test_rows(version: dict) -> tuple[str | None, list[dict], int]:
    """The general data mixed into ``version`` (its record): (the general version's id, its test pairs that
    are not in ``version``'s training split, how many were dropped for being there); (None, [], 0) where
    the version mixed in none."""
    import pyarrow.parquet as pq

    lineage = version.get("lineage")
    lineage = json.loads(lineage) if isinstance(lineage, str) else (lineage or {})
    general = (lineage.get("general") or {}).get("version")
    if not general:
        return None, [], 0
    try:
        gv = versions.get_version(general)
    except ValueError:
        return general, [], 0
    test = pq.read_table(Path(gv["path"]) / "test.parquet", columns=["instruction", "input", "output"]).to_pylist()
    trained = {_pair(r) for r in pq.read_table(Path(version["path"]) / "train.parquet",
                                              columns=["instruction", "input", "output"]).to_pylist()}
    kept = [{"instruction": r["instruction"], "input": r.get("input") or "", "output": r["output"]}
            for r in test if _pair(r) not in trained]
    return general, kept, len(test) - len(kept)


def set_key(rows: list[dict], decoding: Decoding) -> str:
    h = hashlib.sha256(json.dumps(decoding.to_dict(), sort_keys=True).encode())
    for r in rows:
        h.update(json.dumps(_pair(r), ensure_ascii=False).encode())
    return h.hexdigest()


def sets_for(version: dict, decoding: Decoding, limit: int | None = None) -> list[dict]:
    """The sets a run of ``version`` is checked on (the first ``limit`` pairs of each, when given)."""
    general, rows, dropped = general_test_rows(version)
    out = []
    if rows:
        rows = rows[:limit] if limit else rows
        out.append({"name": "general-test", "ref": general, "dropped": dropped, "rows": rows,
                    "key": set_key(rows, decoding)})
    rows = shipped_rows()
    rows = rows[:limit] if limit else rows
    out.append({"name": "shipped", "ref": shipped_path().name, "rows": rows, "key": set_key(rows, decoding)})
    return out


def _gguf_of(run_id: str, quant: str) -> str:
    from core.deploy import exports

    job = exports.latest(run_id, quant)
    if job is None:
        raise RetentionError(f"run {run_id} has no intact {quant} export: export it first "
                             f"(`python -m core export --run {run_id} --quant {quant}`)")
    return job["result"]["gguf"][quant]


def submit(run_id: str, *, actor: Principal, quant: str | None = None, limit: int | None = None,
           max_new_tokens: int = 128, base: bool = True, tuned: bool = True) -> dict:
    """Queue a retention job for a run: the base model (unless a stored base result covers every set), the
    tuned run (``tuned``) and, with ``quant``, the run's export at that quantization."""
    if limit is not None and limit < 1:
        raise RetentionError("the example limit must be at least 1 (leave it out for every pair)")
    run = runs.get_run(run_id, actor)
    require(actor, "evaluate.submit", run["project"])
    if run["state"] != "succeeded" or not run["adapter_dir"]:
        raise JobError(f"run {run_id} has not finished training ({run['state']})")
    decoding = Decoding(max_new_tokens=max_new_tokens).validate()
    version = versions.get_version(run["dataset_version_id"])
    sets = sets_for(version, decoding, limit)
    common = {"base_model": run["base_model"], "prompt_format": run["prompt_format"]}
    targets = []
    if base and _stored_base(run["base_model"], run["prompt_format"], [s["key"] for s in sets]) < len(sets):
        targets.append({"kind": "base", "label": "base", **common})
    if tuned:
        targets.append({"kind": "run", "label": run_id, "adapter_dir": run["adapter_dir"], **common})
    if quant:
        targets.append({"kind": "gguf", "label": f"{run_id} · {quant}", "quant": quant,
                        "gguf": _gguf_of(run_id, quant), **common})
    if not targets:
        raise RetentionError("nothing to evaluate: the base model's results are stored and neither the tuned "
                             "run nor a GGUF was asked for")
    job_dir = Path(run["run_dir"]) / "retention" / ("ret-" + uuid.uuid4().hex[:10])
    job_dir.mkdir(parents=True, exist_ok=True)
    from core.evaluation.retention_worker import SETS_FILE

    (job_dir / SETS_FILE).write_text(json.dumps(sets, ensure_ascii=False), encoding="utf-8")
    payload = {"run_id": run_id, "targets": targets, "decoding": decoding.to_dict(), "limit": limit,
               "sets": [{k: s[k] for k in ("name", "ref", "key")} | {"n": len(s["rows"]), "dropped": s.get("dropped")}
                        for s in sets],
               "owner": actor.name, "project": run["project"], **common}
    return queue.submit("retention", payload, job_dir, actor, run_id, run["dataset_version_id"], run["project"])


def _stored_base(base_model: str, fmt: str, keys: list[str]) -> int:
    """How many of the sets ``keys`` have a stored base result of this model and prompt format."""
    got = store.one("""SELECT count(DISTINCT set_key) AS n FROM retention_results WHERE target = 'base'
                       AND base_model = ? AND prompt_format = ? AND set_key IN (SELECT unnest(?::VARCHAR[]))""",
                    [base_model, fmt, keys])
    return int(got["n"]) if got else 0


RESULT_COLUMNS = ("id", "job_id", "run_id", "target", "quant", "gguf", "base_model", "prompt_format", "set_name",
                  "set_ref", "set_key", "n", "bleu", "rouge_l", "perplexity", "answer_tokens", "decoding",
                  "duration_s", "created_by", "created_at", "project")
EXAMPLE_COLUMNS = ("result_id", "idx", "instruction", "input", "reference", "prediction", "bleu", "rouge_l", "nll",
                   "tokens")


def ingest(con, job: dict, result: dict) -> None:
    """In the supervisor, in the settle's transaction: every (target, set) result and its examples. Idempotent."""
    cfg = job["config"] if isinstance(job["config"], dict) else json.loads(job["config"])
    if con.execute("SELECT 1 FROM retention_results WHERE job_id = ? LIMIT 1", [job["id"]]).fetchall():
        return
    now = store.now()
    results, examples = [], []
    for r in result.get("results") or []:
        rid = "ret-" + uuid.uuid4().hex[:12]
        results.append([rid, job["id"], cfg.get("run_id") if r["target"] != "base" else None, r["target"],
                        r.get("quant"), r.get("gguf"), cfg["base_model"], cfg["prompt_format"], r["set_name"],
                        r.get("set_ref"), r["set_key"], r["n"], r["bleu"], r["rouge_l"], r.get("perplexity"),
                        r.get("answer_tokens"), json.dumps(cfg["decoding"]), r.get("duration_s"),
                        cfg.get("owner") or job.get("owner"), now, cfg.get("project") or DEFAULT_PROJECT])
        for line in Path(r["examples"]).read_text(encoding="utf-8").splitlines():
            ex = json.loads(line)
            examples.append([rid, ex["idx"], ex["instruction"], ex["input"], ex["reference"], ex["prediction"],
                             ex["bleu"], ex["rouge_l"], ex.get("nll"), ex.get("tokens")])
    store.insert_rows(con, "retention_results", RESULT_COLUMNS, results)
    store.insert_rows(con, "retention_examples", EXAMPLE_COLUMNS, examples)


# ── settings ─────────────────────────────────────────────────────────────────


def settings() -> dict:
    return {**DEFAULTS, **(store.get_setting(SETTING, {}) or {})}


def set_settings(*, actor: Principal, rouge_l_drop: float | None = None, perplexity_ratio: float | None = None,
                 required: bool | None = None, override_reason: str | None = None) -> dict:
    """Change the check's bounds (admins; audited). Looser than the defaults (a larger ROUGE-L drop, a larger
    perplexity ratio) only with ``override_reason``, recorded as such."""
    require(actor, "gate.thresholds")
    value = settings()
    if rouge_l_drop is not None:
        if not 0 <= rouge_l_drop <= 1:
            raise RetentionError("the allowed ROUGE-L drop must be between 0 and 1")
        value["rouge_l_drop"] = float(rouge_l_drop)
    if perplexity_ratio is not None:
        if not 1 <= perplexity_ratio <= 100:
            raise RetentionError("the allowed perplexity ratio must be between 1 and 100 (tuned ÷ base)")
        value["perplexity_ratio"] = float(perplexity_ratio)
    if required is not None:
        value["required"] = bool(required)
    looser = [f"{k} {value[k]} > {DEFAULTS[k]}" for k in ("rouge_l_drop", "perplexity_ratio") if value[k] > DEFAULTS[k]]
    reason = (override_reason or "").strip()
    if looser and not reason:
        raise RetentionError(f"{' and '.join(looser)} is looser than the default check (ROUGE-L drop "
                             f"{DEFAULTS['rouge_l_drop']}, perplexity ratio {DEFAULTS['perplexity_ratio']}): give an "
                             "override reason (it is recorded)")
    if looser:
        store.audit("gate.retention_loosened", SETTING, actor, reason=reason, new=value, defaults=DEFAULTS)
    store.set_setting(SETTING, value, actor, **({"override_reason": reason} if looser else {}))
    return value


# ── the check ────────────────────────────────────────────────────────────────


def _join(parts: list) -> str:
    out = parts[0]
    for p in parts[1:]:
        out = M("{a}; {b}", a=out, b=p)
    return out


def checks(run_ids: list[str], quant: str | None = None, cfg: dict | None = None) -> dict[str, Check]:
    """``check`` of many runs in one query: each run's latest tuned result on each set (of its GGUF at
    ``quant`` when given) beside the latest base result on the same set."""
    if not run_ids:
        return {}
    cfg = cfg or settings()
    target, q = ("gguf", quant) if quant else ("run", None)
    got = store.rows(
        """WITH t AS (SELECT * FROM retention_results WHERE run_id IN (SELECT unnest(?::VARCHAR[])) AND target = ?
                        AND (? IS NULL OR quant = ?)
                      QUALIFY row_number() OVER (PARTITION BY run_id, set_name ORDER BY created_at DESC) = 1),
                b AS (SELECT * FROM retention_results WHERE target = 'base' AND set_key IN (SELECT set_key FROM t)
                      QUALIFY row_number() OVER (PARTITION BY base_model, prompt_format, set_key
                                                 ORDER BY created_at DESC) = 1)
           SELECT t.run_id, t.id, t.set_name, t.set_ref, t.n, t.bleu, t.rouge_l, t.perplexity, t.created_at,
                  b.id AS base_id, b.bleu AS base_bleu, b.rouge_l AS base_rouge_l, b.perplexity AS base_perplexity
           FROM t LEFT JOIN b ON b.set_key = t.set_key AND b.base_model = t.base_model
                             AND b.prompt_format = t.prompt_format
           ORDER BY t.run_id, t.set_name""", [list(run_ids), target, q, q])
    by_run: dict[str, list[dict]] = {}
    for r in got:
        by_run.setdefault(r["run_id"], []).append(r)
    return {rid: _check_of(by_run.get(rid, []), cfg, quant) for rid in run_ids}


def check(run_id: str, quant: str | None = None, cfg: dict | None = None) -> Check:
    """"General Vietnamese kept" for a run (or its GGUF at ``quant``)."""
    return checks([run_id], quant, cfg)[run_id]


def _check_of(rows: list[dict], cfg: dict, quant: str | None) -> Check:
    drop, ratio = cfg["rouge_l_drop"], cfg["perplexity_ratio"]
    numbers = {"rouge_l_drop": drop, "perplexity_ratio_max": ratio, "required": cfg["required"], "quant": quant,
               "sets": {}}
    measured = [r for r in rows if r["base_id"]]
    for r in rows:
        s = {"n": r["n"], "set_ref": r["set_ref"], "tuned_id": r["id"], "base_id": r["base_id"],
             "tuned": {"bleu": r["bleu"], "rouge_l": r["rouge_l"], "perplexity": r["perplexity"]},
             "base": ({"bleu": r["base_bleu"], "rouge_l": r["base_rouge_l"], "perplexity": r["base_perplexity"]}
                      if r["base_id"] else None)}
        if r["base_id"]:
            ppl_ratio = (r["perplexity"] / r["base_perplexity"]
                         if r["perplexity"] is not None and r["base_perplexity"] else None)
            rouge_ok = r["rouge_l"] >= r["base_rouge_l"] - drop - 1e-12
            ppl_ok = ppl_ratio is not None and ppl_ratio <= ratio + 1e-12
            s.update(delta_rouge_l=r["rouge_l"] - r["base_rouge_l"], delta_bleu=r["bleu"] - r["base_bleu"],
                     ratio=ppl_ratio, rouge_l_ok=rouge_ok, perplexity_ok=ppl_ok, passed=rouge_ok and ppl_ok)
        numbers["sets"][r["set_name"]] = s
    if not measured:
        why = M("general Vietnamese not measured (`python -m core retention run --run RUN`)")
        if cfg["required"]:
            return Check(NAME, False, numbers, M("{why}; an admin made the check required", why=why))
        return Check(NAME, None, numbers, M("{why}; it does not gate until measured", why=why))
    parts = []
    for r in measured:
        s = numbers["sets"][r["set_name"]]
        parts.append(M("{set} (n={n}): ROUGE-L {rouge:.3f} against the base's {base_rouge:.3f} (at least "
                       "{min_rouge:.3f}), perplexity {ppl:.2f} against {base_ppl:.2f} (at most {max_ppl:.2f})",
                       set=SET_LABELS.get(r["set_name"], r["set_name"]), n=r["n"], rouge=r["rouge_l"],
                       base_rouge=r["base_rouge_l"], min_rouge=r["base_rouge_l"] - drop,
                       ppl=r["perplexity"] if r["perplexity"] is not None else float("nan"),
                       base_ppl=r["base_perplexity"] or float("nan"),
                       max_ppl=(r["base_perplexity"] or float("nan")) * ratio))
    passed = all(numbers["sets"][r["set_name"]]["passed"] for r in measured)
    detail = _join(parts)
    if passed:
        return Check(NAME, True, numbers, M("general Vietnamese kept: {detail}", detail=detail))
    return Check(NAME, False, numbers, M("general Vietnamese not kept: {detail}", detail=detail))


def as_dict(c: Check) -> dict:
    """A check for JSON: its reason in both languages."""
    from core import i18n

    return {"name": str(c.name), "passed": c.passed, "numbers": c.numbers,
            "reason": {lang: i18n.render(c.reason, lambda s, lang=lang: i18n.translate(s, lang))
                       for lang in ("en", "vi")}}


# ── reading ──────────────────────────────────────────────────────────────────


def results(run_id: str, actor: Principal | None = None) -> list[dict]:
    """The run's results (tuned and GGUF) and the base results they are compared with, newest first."""
    if actor is not None:
        runs.get_run(run_id, actor)
    return store.rows(
        """WITH t AS (SELECT * FROM retention_results WHERE run_id = ?)
           SELECT * FROM t
           UNION ALL
           SELECT * FROM retention_results WHERE target = 'base' AND set_key IN (SELECT set_key FROM t)
             AND base_model IN (SELECT base_model FROM t)
           ORDER BY created_at DESC, set_name, target""", [run_id])


def get_result(result_id: str, actor: Principal | None = None) -> dict:
    got = store.one("SELECT * FROM retention_results WHERE id = ?", [result_id])
    if not got or (actor is not None and not actor.sees(got["project"])):
        raise RetentionError(f"no retention result '{result_id}'")
    return got


def drilldown(tuned_id: str, base_id: str, actor: Principal | None = None) -> list[dict]:
    """The examples of a tuned result beside the base's on the same pairs, the largest ROUGE-L loss first."""
    a, b = get_result(tuned_id, actor), get_result(base_id, actor)
    if a["set_key"] != b["set_key"]:
        raise RetentionError(f"{tuned_id} and {base_id} are not of the same pairs")
    got = store.rows(
        """SELECT t.idx, t.instruction, t.input, t.reference, t.prediction AS tuned, b.prediction AS base,
                  t.rouge_l AS tuned_rouge_l, b.rouge_l AS base_rouge_l, t.rouge_l - b.rouge_l AS delta_rouge_l,
                  t.nll AS tuned_nll, b.nll AS base_nll, t.tokens
           FROM retention_examples t JOIN retention_examples b ON b.result_id = ? AND b.idx = t.idx
           WHERE t.result_id = ? ORDER BY t.rouge_l - b.rouge_l, t.idx""", [base_id, tuned_id])
    return got


def summary(run_id: str, actor: Principal | None = None, quant: str | None = None) -> dict:
    """What the page and ``retention show`` show: the check and the results it rests on."""
    c = check(run_id, quant)
    return {"run": run_id, "check": as_dict(c), "check_obj": c, "results": results(run_id, actor)}
