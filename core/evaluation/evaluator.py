"""The evaluation job, worker side: batched generation on a held-out split, then BLEU and ROUGE-L.

The target is the run's adapter on its HF base model (``target`` "adapter", the default), an exported GGUF at
its quantization through llama.cpp (``gguf``), or a release served by Ollama (``ollama``): the same rows, the
same prompt format, the same decoding and the same scoring (``core.evaluation.gguf_eval`` generates for the last
two). The result says which backend generated (``backend``).

``core.evaluation.evaluations`` (app side) queues it; the worker calls ``run``, which writes every
prediction with its scores to ``predictions.jsonl`` in the job folder; the supervisor stores them.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from core import prompt_format
from core.evaluation import inference, scoring
from core.evaluation.inference import Decoding

PREDICTIONS = "predictions.jsonl"


def run(job: dict, job_dir: Path, status, log: Callable[[str], None]) -> dict:
    """In the worker: generate for every held-out pair, score, write predictions.jsonl."""
    import pyarrow.parquet as pq

    t0 = time.time()
    rows = pq.read_table(job["rows_file"]).to_pylist()
    if job.get("limit"):
        rows = rows[: int(job["limit"])]
    if not rows:
        raise ValueError("the split has no rows to evaluate")
    if job.get("target") in ("gguf", "ollama"):
        return _run_artifact(job, job_dir, rows, status, log, t0)
    loaded = inference.load(job["base_model"], job.get("adapter_dir"), job["prompt_format"])
    prompts = [prompt_format.render_prompt(r, loaded.prompt_format, loaded.tokenizer) for r in rows]
    decoding = Decoding.from_dict(job.get("decoding"))
    status.update(progress={"done": 0, "total": len(rows), "label": "examples"})
    gen_t0 = time.time()
    phases: dict[str, float] = {}   # when each phase began: on CUDA the first batch compiles the decoding step
    info: dict = {}                 # the engine generate used, and its plan
    first_batch = [0]               # prompts in the first batch (the one that compiled)

    def on_phase(phase: str) -> None:
        if phase in phases:
            return
        phases[phase] = time.time()
        status.update(phase=phase, phase_started=phases[phase])
        if phase == "compiling":
            log(f"generation: static cache, {info['plan']['reason']}; prompts padded to {info['plan']['prompt_len']} "
                "tokens; the first batch compiles the decoding step")

    def on_progress(done: int, total: int) -> None:
        first_batch[0] = first_batch[0] or done
        if "compiling" in phases:   # the pace after the compile: an ETA of the batches left, not of the compile
            since, counted = phases.get("generating"), done - first_batch[0]
        else:
            since, counted = gen_t0, done
        rate = counted / max(time.time() - since, 1e-9) if since and counted > 0 else None
        status.update(progress={"done": done, "total": total, "label": "examples", "per_s": rate})

    predictions = inference.generate(loaded, prompts, decoding, on_progress, on_phase=on_phase, info=info)
    generation_s = time.time() - gen_t0
    # the first batch's time, compile included (the whole generation where there was one batch)
    compile_s = (phases.get("generating", time.time()) - phases["compiling"]) if "compiling" in phases else None
    log(f"generated {len(rows)} answers in {generation_s:.1f} s ({len(rows) / max(generation_s, 1e-9):.2f} examples/s; "
        f"engine {info.get('engine')}" + (f"; first batch with its compile {compile_s:.1f} s" if compile_s else "") + ")")
    if info.get("fallback"):
        log(f"static-cache generation was not available: {info['fallback']}")
    score_t0 = time.time()
    scores = _write(job, job_dir, rows, predictions, log)   # scored, and the predictions written
    scoring_s = time.time() - score_t0
    return {**scores.summary(), "duration_s": time.time() - t0, "generation_s": generation_s, "scoring_s": scoring_s,
            "examples_per_s": len(rows) / max(generation_s, 1e-9), "prompt_format": loaded.prompt_format,
            "engine": info.get("engine"), "plan": info.get("plan"), "compile_s": compile_s,
            "backend": {"engine": info.get("engine"), "device": str(getattr(loaded.model, "device", "cpu")),
                        "plan": info.get("plan")},
            "predictions": str(job_dir / PREDICTIONS)}


def _write(job: dict, job_dir: Path, rows: list[dict], predictions: list[str], log) -> scoring.Scores:
    scores = scoring.score([r["output"] for r in rows], predictions, job["thresholds"])
    with (job_dir / PREDICTIONS).open("w", encoding="utf-8") as fh:
        for i, (row, pred, per) in enumerate(zip(rows, predictions, scores.per_example)):
            fh.write(json.dumps({"idx": i, "instruction": row["instruction"], "input": row["input"],
                                 "reference": row["output"], "prediction": pred, **per},
                                ensure_ascii=False) + "\n")
    log(f"BLEU {scores.bleu:.4f}  ROUGE-L {scores.rouge_l:.4f}  passed={scores.passed}")
    return scores


def _run_artifact(job: dict, job_dir: Path, rows: list[dict], status, log, t0: float) -> dict:
    """An exported GGUF (llama.cpp, batched) or an Ollama release: generate, score, write predictions.jsonl."""
    from core.evaluation import gguf_eval

    decoding = Decoding.from_dict(job.get("decoding"))
    fmt = job["prompt_format"]
    status.update(progress={"done": 0, "total": len(rows), "label": "examples"})
    gen_t0 = time.time()

    def on_progress(done: int, total: int) -> None:
        status.update(progress={"done": done, "total": total, "label": "examples",
                                "per_s": done / max(time.time() - gen_t0, 1e-9)})

    if job["target"] == "gguf":
        from core.models import load_tokenizer

        tok = load_tokenizer(job["base_model"])   # the run's own prompts: what training rendered
        prompts = [prompt_format.render_prompt(r, fmt, tok) for r in rows]
        gen = gguf_eval.LlamaBatchGenerator(job["gguf_path"], n_parallel=int(job.get("n_parallel") or
                                                                              gguf_eval.DEFAULT_PARALLEL))
        try:
            log(f"llama.cpp: {job['gguf_path']} ({job.get('quantization')}) on {gen.backend['device']}, "
                f"{gen.backend['gpu_layers']}/{gen.backend['layers']} layers offloaded, {gen.n_threads} threads, "
                f"{gen.n_parallel} sequences in parallel")
            if gen.backend.get("fallback"):
                log(f"fell back: {gen.backend['fallback']}")
            predictions, stats = gen.generate(prompts, decoding, fmt, on_progress)
        finally:
            gen.close()
        backend = {**gen.backend, **stats}
    else:
        backend = {"engine": "ollama", "model": job["ollama_model"], "host": job["ollama_host"]}
        log(f"Ollama: {job['ollama_model']} at {job['ollama_host']}")
        predictions, stats = gguf_eval.ollama_answers(job["ollama_model"], rows, fmt, decoding, job["ollama_host"],
                                                      on_progress=on_progress)
        backend.update(stats)
    generation_s = time.time() - gen_t0
    log(f"generated {len(rows)} answers in {generation_s:.1f} s ({backend.get('tokens_per_s')} tokens/s)")
    score_t0 = time.time()
    scores = _write(job, job_dir, rows, predictions, log)
    return {**scores.summary(), "duration_s": time.time() - t0, "generation_s": generation_s,
            "scoring_s": time.time() - score_t0, "examples_per_s": len(rows) / max(generation_s, 1e-9),
            "prompt_format": fmt, "engine": backend["engine"], "backend": backend,
            "predictions": str(job_dir / PREDICTIONS)}
