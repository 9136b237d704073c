"""Evaluation: batched generation on a held-out split, scored by ``core.scoring``, gated.

``submit`` queues an evaluation job; the worker calls ``run`` (generation and scoring, written to
``predictions.jsonl`` in the job folder); the supervisor calls ``ingest`` to store the evaluation
and every example in DuckDB.
"""
from __future__ import annotations

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
           owner: str | None = None) -> dict:
    """Queue an evaluation of a run (its adapter) or, with ``base_model`` alone, of the base model."""
    from core import datasets

    decoding = decoding or Decoding()
    adapter_dir = None
    fmt = prompt_format.DEFAULT_FORMAT
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
    scores = scoring.score([r["output"] for r in rows], predictions, job["thresholds"])
    with (job_dir / PREDICTIONS).open("w", encoding="utf-8") as fh:
        for i, (row, pred, per) in enumerate(zip(rows, predictions, scores.per_example)):
            fh.write(json.dumps({"idx": i, "instruction": row["instruction"], "input": row["input"],
                                 "reference": row["output"], "prediction": pred, **per},
                                ensure_ascii=False) + "\n")
    log(f"BLEU {scores.bleu:.4f}  ROUGE-L {scores.rouge_l:.4f}  passed={scores.passed}")
    return {**scores.summary(), "duration_s": time.time() - t0, "predictions": str(job_dir / PREDICTIONS)}


def ingest(con, job: dict, result: dict) -> None:
    """In the supervisor: store the evaluation and its examples."""
    cfg = job["config"] if isinstance(job["config"], dict) else json.loads(job["config"])
    con.execute(
        """INSERT INTO evaluations (id, job_id, run_id, base_model, dataset_version_id, split, n, bleu, rouge_l,
               passed, thresholds, decoding, duration_s, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        [cfg["evaluation_id"], job["id"], cfg.get("run_id"), cfg["base_model"], cfg["dataset_version_id"],
         cfg["split"], result["n"], result["bleu"], result["rouge_l"], result["passed"],
         json.dumps(result["thresholds"]), json.dumps(cfg["decoding"]), result.get("duration_s"), store.now()],
    )
    rows = []
    for line in Path(result["predictions"]).read_text(encoding="utf-8").splitlines():
        ex = json.loads(line)
        rows.append([cfg["evaluation_id"], ex["idx"], ex["instruction"], ex["input"], ex["reference"],
                     ex["prediction"], ex["bleu"], ex["rouge_l"]])
    if rows:
        con.executemany("INSERT INTO evaluation_examples VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)


def list_evaluations(run_id: str | None = None) -> list[dict]:
    if run_id:
        return store.rows("SELECT * FROM evaluations WHERE run_id = ? ORDER BY created_at DESC", [run_id])
    return store.rows("SELECT * FROM evaluations ORDER BY created_at DESC")


def get_evaluation(evaluation_id: str) -> dict:
    got = store.one("SELECT * FROM evaluations WHERE id = ?", [evaluation_id])
    if not got:
        raise ValueError(f"no evaluation '{evaluation_id}'")
    return got


def examples(evaluation_id: str) -> list[dict]:
    return store.rows("SELECT * FROM evaluation_examples WHERE evaluation_id = ? ORDER BY idx", [evaluation_id])


def latest_passing(run_id: str) -> dict | None:
    return store.one(
        "SELECT * FROM evaluations WHERE run_id = ? AND passed ORDER BY created_at DESC LIMIT 1", [run_id]
    )


def verdict(run_id: str) -> dict:
    """Whether a run may be released: a passing evaluation on its held-out split."""
    evals = list_evaluations(run_id)
    passing = [e for e in evals if e["passed"] and e["split"] == "test"]
    if passing:
        return {"releasable": True, "evaluation": passing[0], "reason": "passing evaluation on the test split"}
    if evals:
        e = evals[0]
        return {"releasable": False, "evaluation": e,
                "reason": f"latest evaluation BLEU {e['bleu']:.3f}, ROUGE-L {e['rouge_l']:.3f} is below the gate"}
    return {"releasable": False, "evaluation": None, "reason": "the run has no evaluation yet"}
