"""Evaluation: batched generation on a held-out split, scored by ``core.scoring``, gated.

``submit`` queues an evaluation job; the worker calls ``run`` (generation and scoring, written to
``predictions.jsonl`` in the job folder); the supervisor calls ``ingest`` to store the evaluation
and every example in DuckDB.
"""
from __future__ import annotations

import csv
import difflib
import hashlib
import io
import json
import time
import uuid
from pathlib import Path
from typing import Callable

from core import jobs, paths, prompt_format, scoring, store
from core.inference import Decoding

PREDICTIONS = "predictions.jsonl"


def thresholds() -> dict:
    return store.get_setting("thresholds", dict(scoring.DEFAULT_THRESHOLDS))


def set_thresholds(bleu: float, rouge_l: float, actor: str | None = None) -> dict:
    for name, value in (("BLEU", bleu), ("ROUGE-L", rouge_l)):
        if not 0 <= value <= 1:
            raise ValueError(f"the {name} threshold must be between 0 and 1")
    value = {"bleu": float(bleu), "rouge_l": float(rouge_l)}
    store.set_setting("thresholds", value, actor)
    return value


def submit(run_id: str | None = None, *, base_model: str | None = None, dataset_version_id: str | None = None,
           split: str = "test", limit: int | None = None, decoding: Decoding | None = None,
           owner: str | None = None, prompt_format_name: str | None = None) -> dict:
    """Queue an evaluation of a run (its adapter) or, with ``base_model`` alone, of the base model
    (in ``prompt_format_name``: give the tuned run's format to compare the two on equal terms)."""
    from core import datasets

    decoding = (decoding or Decoding()).validate()
    if split not in ("test", "train"):
        raise ValueError(f"unknown split '{split}' (test or train)")
    if limit is not None and limit < 1:
        raise ValueError("the example limit must be at least 1 (leave it out for the whole split)")
    adapter_dir = None
    fmt = prompt_format.check_format(prompt_format_name or prompt_format.DEFAULT_FORMAT)
    if run_id:
        run = jobs.get_run(run_id)
        if run["state"] != "succeeded" or not run["adapter_dir"]:
            raise jobs.JobError(f"run {run_id} has not finished training ({run['state']})")
        base_model = run["base_model"]
        adapter_dir = run["adapter_dir"]
        fmt = run["prompt_format"]
        dataset_version_id = dataset_version_id or run["dataset_version_id"]
    if not base_model or not dataset_version_id:
        raise ValueError("an evaluation needs a run, or a base model and a dataset version")
    version = datasets.get_version(dataset_version_id)
    evaluation_id = "eval-" + uuid.uuid4().hex[:10]
    where = Path(run["run_dir"]) / "evaluations" if run_id else paths.data_dir() / "evaluations"
    payload = {
        "evaluation_id": evaluation_id,
        "run_id": run_id,
        "base_model": base_model,
        "adapter_dir": adapter_dir,
        "prompt_format": fmt,
        "dataset_version_id": dataset_version_id,
        "split": split,
        "rows_file": str(Path(version["path"]) / f"{split}.parquet"),
        "limit": limit,
        "decoding": decoding.to_dict(),
        "thresholds": thresholds(),
        "owner": owner,
    }
    return jobs.submit("evaluate", payload, where / evaluation_id, owner, run_id, dataset_version_id)


def run(job: dict, job_dir: Path, status, log: Callable[[str], None]) -> dict:
    """In the worker: generate for every held-out pair, score, write predictions.jsonl."""
    import pyarrow.parquet as pq

    from core import inference

    t0 = time.time()
    rows = pq.read_table(job["rows_file"]).to_pylist()
    if job.get("limit"):
        rows = rows[: int(job["limit"])]
    if not rows:
        raise ValueError("the split has no rows to evaluate")
    loaded = inference.load(job["base_model"], job.get("adapter_dir"), job["prompt_format"])
    prompts = [prompt_format.render_prompt(r, loaded.prompt_format, loaded.tokenizer) for r in rows]
    decoding = Decoding.from_dict(job.get("decoding"))
    status.update(progress={"done": 0, "total": len(rows), "label": "examples"})
    gen_t0 = time.time()

    def on_progress(done: int, total: int) -> None:
        rate = done / max(time.time() - gen_t0, 1e-9)
        status.update(progress={"done": done, "total": total, "label": "examples", "per_s": rate})

    predictions = inference.generate(loaded, prompts, decoding, on_progress)
    generation_s = time.time() - gen_t0
    log(f"generated {len(rows)} answers in {generation_s:.1f} s ({len(rows) / max(generation_s, 1e-9):.2f} examples/s)")
    score_t0 = time.time()
    scores = scoring.score([r["output"] for r in rows], predictions, job["thresholds"])
    scoring_s = time.time() - score_t0
    with (job_dir / PREDICTIONS).open("w", encoding="utf-8") as fh:
        for i, (row, pred, per) in enumerate(zip(rows, predictions, scores.per_example)):
            fh.write(json.dumps({"idx": i, "instruction": row["instruction"], "input": row["input"],
                                 "reference": row["output"], "prediction": pred, **per},
                                ensure_ascii=False) + "\n")
    log(f"BLEU {scores.bleu:.4f}  ROUGE-L {scores.rouge_l:.4f}  passed={scores.passed}")
    return {**scores.summary(), "duration_s": time.time() - t0, "generation_s": generation_s, "scoring_s": scoring_s,
            "examples_per_s": len(rows) / max(generation_s, 1e-9), "prompt_format": loaded.prompt_format,
            "predictions": str(job_dir / PREDICTIONS)}


def pair_key(instruction: str | None, input_text: str | None, reference: str | None) -> str:
    """The same held-out pair in any evaluation (migration 004 computes it alike in SQL)."""
    text = "\x1f".join([instruction or "", input_text or "", reference or ""])
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def gate_reason(passed: bool, bleu: float, rouge: float, th: dict) -> str:
    parts = [f"BLEU {bleu:.4f} {'>' if bleu > th['bleu'] else '≤'} {th['bleu']}",
             f"ROUGE-L {rouge:.4f} {'>' if rouge > th['rouge_l'] else '≤'} {th['rouge_l']}"]
    return ("PASS: " if passed else "FAIL: ") + ", ".join(parts)


def ingest(con, job: dict, result: dict) -> None:
    """In the supervisor: store the evaluation and its examples."""
    cfg = job["config"] if isinstance(job["config"], dict) else json.loads(job["config"])
    th = result["thresholds"]
    con.execute(
        """INSERT INTO evaluations (id, job_id, run_id, base_model, dataset_version_id, split, n, bleu, rouge_l,
               passed, thresholds, decoding, duration_s, created_at, prompt_format, adapter_dir, sample_limit,
               generation_s, scoring_s, examples_per_s, gate_reason, created_by)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        [cfg["evaluation_id"], job["id"], cfg.get("run_id"), cfg["base_model"], cfg["dataset_version_id"],
         cfg["split"], result["n"], result["bleu"], result["rouge_l"], result["passed"],
         json.dumps(th), json.dumps(cfg["decoding"]), result.get("duration_s"), store.now(),
         result.get("prompt_format") or cfg.get("prompt_format"), cfg.get("adapter_dir"), cfg.get("limit"),
         result.get("generation_s"), result.get("scoring_s"), result.get("examples_per_s"),
         gate_reason(result["passed"], result["bleu"], result["rouge_l"], th), cfg.get("owner") or job.get("owner")],
    )
    rows = []
    for line in Path(result["predictions"]).read_text(encoding="utf-8").splitlines():
        ex = json.loads(line)
        rows.append([cfg["evaluation_id"], ex["idx"], ex["instruction"], ex["input"], ex["reference"],
                     ex["prediction"], ex["bleu"], ex["rouge_l"],
                     pair_key(ex["instruction"], ex["input"], ex["reference"])])
    if rows:
        con.executemany(
            """INSERT INTO evaluation_examples (evaluation_id, idx, instruction, input, reference, prediction, bleu,
                   rouge_l, pair_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""", rows)


def _decode(e: dict | None) -> dict | None:
    if e is None:
        return None
    for key in ("thresholds", "decoding"):
        if isinstance(e.get(key), str):
            e[key] = json.loads(e[key])
    e["label"] = label(e)
    return e


def label(e: dict) -> str:
    from core import models

    who = e["run_id"] or f"{models.display_name(e['base_model'])} (base, no adapter)"
    return f"{e['id']} · {who} · {e['dataset_version_id']}/{e['split']} · n={e['n']}"


def list_evaluations(run_id: str | None = None) -> list[dict]:
    if run_id:
        got = store.rows("SELECT * FROM evaluations WHERE run_id = ? ORDER BY created_at DESC", [run_id])
    else:
        got = store.rows("SELECT * FROM evaluations ORDER BY created_at DESC")
    return [_decode(e) for e in got]


def leaderboard(dataset_version_id: str | None = None, base_model: str | None = None,
                split: str | None = None) -> list[dict]:
    """Evaluations best first (ROUGE-L, then BLEU), optionally of one dataset version / base model / split."""
    where, params = [], []
    for column, value in (("dataset_version_id", dataset_version_id), ("base_model", base_model), ("split", split)):
        if value:
            where.append(f"{column} = ?")
            params.append(value)
    sql = "SELECT * FROM evaluations" + (" WHERE " + " AND ".join(where) if where else "")
    got = store.rows(sql + " ORDER BY rouge_l DESC, bleu DESC, created_at DESC", params)
    return [dict(_decode(e), rank=i) for i, e in enumerate(got, start=1)]


def get_evaluation(evaluation_id: str) -> dict:
    got = _decode(store.one("SELECT * FROM evaluations WHERE id = ?", [evaluation_id]))
    if not got:
        raise ValueError(f"no evaluation '{evaluation_id}'")
    return got


def examples(evaluation_id: str) -> list[dict]:
    return store.rows("SELECT * FROM evaluation_examples WHERE evaluation_id = ? ORDER BY idx", [evaluation_id])


def latest_passing(run_id: str) -> dict | None:
    return _decode(store.one(
        "SELECT * FROM evaluations WHERE run_id = ? AND passed ORDER BY created_at DESC LIMIT 1", [run_id]
    ))


def verdict(run_id: str) -> dict:
    """Whether a run may be released: a passing evaluation on the held-out (test) split of the dataset
    version it was trained on, a version that has passed its review sample. Returns ``releasable``, ``reason`` and the ``evaluation`` it rests on
    (with the thresholds that evaluation was gated with)."""
    run = jobs.get_run(run_id)
    evals = list_evaluations(run_id)
    held_out = [e for e in evals if e["split"] == "test" and e["dataset_version_id"] == run["dataset_version_id"]]
    passing = [e for e in held_out if e["passed"]]
    if passing:
        e = passing[0]
        from core import review

        reviewed = review.status(run["dataset_version_id"])
        if not reviewed["reviewed"]:
            return {"releasable": False, "evaluation": e, "thresholds": e["thresholds"],
                    "reason": f"evaluation {e['id']} passed the gate, but the run's dataset version is not reviewed "
                              f"({reviewed['reason']})"}
        return {"releasable": True, "evaluation": e, "thresholds": e["thresholds"],
                "reason": f"evaluation {e['id']} on the held-out test split of {e['dataset_version_id']} "
                          f"passed the gate ({e.get('gate_reason') or gate_reason(True, e['bleu'], e['rouge_l'], e['thresholds'])})"}
    if held_out:
        e = held_out[0]
        return {"releasable": False, "evaluation": e, "thresholds": e["thresholds"],
                "reason": f"latest held-out evaluation {e['id']}: BLEU {e['bleu']:.3f}, ROUGE-L {e['rouge_l']:.3f} "
                          f"is below the gate (BLEU > {e['thresholds']['bleu']}, ROUGE-L > {e['thresholds']['rouge_l']})"}
    if evals:
        return {"releasable": False, "evaluation": None, "thresholds": None,
                "reason": f"the run has no evaluation on the held-out test split of its dataset version "
                          f"{run['dataset_version_id']} ({len(evals)} on other splits or versions do not count)"}
    return {"releasable": False, "evaluation": None, "thresholds": None, "reason": "the run has no evaluation yet"}


# ── comparison, drill-down, export ───────────────────────────────────────────


def _words(text: str) -> list[str]:
    return (text or "").split()


def _norm(word: str) -> str:
    return " ".join(scoring.tokenize(word))


def word_diff(reference: str, prediction: str) -> dict:
    """Reference and prediction as runs of words, marked where they differ (compared the way the scores
    see them: NFC, lower case, punctuation ignored). ``{"reference": [(text, changed)], "prediction": …,
    "same_words": k}``."""
    ref, pred = _words(reference), _words(prediction)
    matcher = difflib.SequenceMatcher(a=[_norm(w) for w in ref], b=[_norm(w) for w in pred], autojunk=False)
    out_ref: list[tuple[str, bool]] = []
    out_pred: list[tuple[str, bool]] = []
    same = 0

    def add(side: list, words: list[str], changed: bool) -> None:
        if not words:
            return
        text = " ".join(words)
        if side and side[-1][1] == changed:
            side[-1] = (side[-1][0] + " " + text, changed)
        else:
            side.append((text, changed))

    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        changed = op != "equal"
        same += 0 if changed else i2 - i1
        add(out_ref, ref[i1:i2], changed)
        add(out_pred, pred[j1:j2], changed)
    return {"reference": out_ref, "prediction": out_pred, "same_words": same}


def compare(a_id: str, b_id: str) -> dict:
    """Two evaluations side by side on the examples they share (matched by pair key: the same
    instruction, input and reference): whole-evaluation metrics, the metrics re-scored on the shared
    examples, their deltas (B − A), and every shared example with both predictions and scores."""
    a, b = get_evaluation(a_id), get_evaluation(b_id)
    ex_a = {e["pair_key"]: e for e in examples(a_id)}
    ex_b = {e["pair_key"]: e for e in examples(b_id)}
    shared = [k for k in ex_a if k in ex_b]
    pairs = []
    for k in shared:
        x, y = ex_a[k], ex_b[k]
        pairs.append({"pair_key": k, "idx_a": x["idx"], "idx_b": y["idx"], "instruction": x["instruction"],
                      "input": x["input"], "reference": x["reference"], "prediction_a": x["prediction"],
                      "prediction_b": y["prediction"], "rouge_l_a": x["rouge_l"], "rouge_l_b": y["rouge_l"],
                      "bleu_a": x["bleu"], "bleu_b": y["bleu"], "delta_rouge_l": y["rouge_l"] - x["rouge_l"]})
    refs = [p["reference"] for p in pairs]
    on_a = scoring.score(refs, [p["prediction_a"] for p in pairs], a["thresholds"])
    on_b = scoring.score(refs, [p["prediction_b"] for p in pairs], b["thresholds"])
    eps = 1e-9
    better = sorted((p for p in pairs if p["delta_rouge_l"] > eps), key=lambda p: -p["delta_rouge_l"])
    worse = sorted((p for p in pairs if p["delta_rouge_l"] < -eps), key=lambda p: p["delta_rouge_l"])
    summary = lambda e: {k: e[k] for k in ("id", "label", "run_id", "base_model", "dataset_version_id", "split",
                                            "n", "bleu", "rouge_l", "passed", "thresholds", "decoding")}
    return {
        "a": summary(a), "b": summary(b),
        "delta": {"bleu": b["bleu"] - a["bleu"], "rouge_l": b["rouge_l"] - a["rouge_l"]},
        "shared": {"n": len(pairs), "a": {"bleu": on_a.bleu, "rouge_l": on_a.rouge_l},
                   "b": {"bleu": on_b.bleu, "rouge_l": on_b.rouge_l},
                   "delta": {"bleu": on_b.bleu - on_a.bleu, "rouge_l": on_b.rouge_l - on_a.rouge_l}},
        "counts": {"better": len(better), "worse": len(worse), "same": len(pairs) - len(better) - len(worse)},
        "better": better, "worse": worse, "pairs": pairs,
    }


def base_counterpart(evaluation_id: str) -> dict | None:
    """The latest evaluation of the same base model without an adapter on the same dataset version and split."""
    e = get_evaluation(evaluation_id)
    return _decode(store.one(
        """SELECT * FROM evaluations WHERE run_id IS NULL AND base_model = ? AND dataset_version_id = ? AND split = ?
           AND id <> ? ORDER BY created_at DESC LIMIT 1""",
        [e["base_model"], e["dataset_version_id"], e["split"], e["id"]]))


CSV_COLUMNS = ["idx", "instruction", "input", "reference", "prediction", "bleu", "rouge_l"]


def examples_csv(evaluation_id: str) -> str:
    """Every example of an evaluation as CSV (UTF-8 with a BOM, so that spreadsheet programs read the diacritics)."""
    get_evaluation(evaluation_id)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(CSV_COLUMNS)
    for ex in examples(evaluation_id):
        writer.writerow([ex[c] for c in CSV_COLUMNS])
    return "\ufeff" + buf.getvalue()


def report_html(evaluation_id: str, compare_with: str | None = None) -> str:
    from core import report

    return report.build(evaluation_id, compare_with)
