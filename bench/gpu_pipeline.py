"""The whole pipeline through the studio's own jobs on a Gemma 4 architecture model, in one process:
import → train (Unsloth 4-bit on CUDA) → evaluate → export (merge, f16, q8_0, q4_k_m) → Modelfile →
preflight. Made for the H200 (one device call), runs anywhere (``--tiny`` on a CPU).

    python bench/gpu_pipeline.py --out DIR [--worker-python PY] [--tokenizer DIR] [--steps 30] [--tiny]

The model has random weights (no weights can be fetched) and Gemma 4's real tokenizer
(``bench/gemma4_random.py``, rebuilt from llama.cpp's vocab GGUF), so llama.cpp's converter takes it
as a Gemma 4. The studio's code runs as it runs for a team: this process is the app side (DuckDB),
every job runs in a worker started by the supervisor under ``--worker-python`` (on the H200, an
interpreter whose path has the GPU packages and not the app's). Loss does not fall on random weights,
the gate cannot pass (the deploy is an override, recorded) and the preflight may block: each stage's
time and outcome are what this measures. Writes ``DIR/gpu_pipeline.json`` and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))


def gpu_name() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout.strip()
        return out or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--home", type=Path, help="studio home (default: OUT/home)")
    ap.add_argument("--worker-python", help="interpreter of the workers (default: this one)")
    ap.add_argument("--tokenizer", type=Path, help="a Gemma 4 tokenizer folder from bench/gemma4_random.py")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=640)
    ap.add_argument("--eval-limit", type=int, default=None, help="held-out pairs to evaluate (default: all)")
    ap.add_argument("--tiny", action="store_true", help="a 2-layer model, 2 steps, short sequences (a CPU check)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    home = (args.home or args.out / "home").resolve()
    os.environ["VITUNE_HOME"] = str(home)
    if args.worker_python:
        os.environ["VITUNE_WORKER_PYTHON"] = args.worker_python

    import gemma4_random
    from core.datasets import samples
    from core.deploy import exports, preflights, releases
    from core.evaluation import evaluations
    from core.evaluation.inference import Decoding
    from core.jobs import supervisor
    from core.training import presets, runs

    result: dict = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": platform.node(), "gpu": gpu_name(),
                    "python": platform.python_version(), "stages": {}}
    stages = result["stages"]

    def stage(name: str, fn):
        print(f"==> {name}", flush=True)
        t0 = time.time()
        try:
            out = fn()
            stages[name] = {"seconds": round(time.time() - t0, 1), "ok": True, **(out or {})}
        except Exception as exc:  # a stage that fails is reported, the next ones are skipped
            stages[name] = {"seconds": round(time.time() - t0, 1), "ok": False, "error": f"{type(exc).__name__}: {exc}"}
            raise
        finally:
            (args.out / "gpu_pipeline.json").write_text(json.dumps(result, indent=2, ensure_ascii=False, default=str))
        print(f"    {json.dumps(stages[name], ensure_ascii=False, default=str)[:600]}", flush=True)
        return out

    def job_outcome(job: dict) -> dict:
        return {"job": job["id"], "state": job["state"], "error": job["error"], "slot": job["slot"]}

    worker = args.worker_python or sys.executable
    base = home / "models" / "base" / "gemma4-random"
    size = dict(layers=2, hidden=64, head_dim=32, heads=2) if args.tiny else dict(layers=args.layers,
                                                                                    hidden=args.hidden)

    def self_check():
        proc = subprocess.run([worker, "-m", "core.worker", "--self-check"], cwd=REPO, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")})
        out = proc.stdout.strip().splitlines()
        for module in ("duckdb", "streamlit", "plotly"):
            probe = subprocess.run([worker, "-c", f"import {module}"], capture_output=True, text=True)
            out.append(f"import {module} in the worker interpreter: {'ok' if probe.returncode == 0 else 'fails'}")
        if proc.returncode != 0:
            raise RuntimeError("; ".join(out))
        return {"worker_python": worker, "report": out}

    def make_model():
        if base.exists():
            return {"model": str(base), "reused": True}
        gemma4_random.build_model(base, tokenizer_from=args.tokenizer, **size)
        from math import prod

        from safetensors import safe_open

        count = 0
        for f in base.glob("*.safetensors"):
            with safe_open(str(f), "pt") as st:
                count += sum(prod(st.get_slice(k).get_shape()) for k in st.keys())
        return {"model": str(base), **size, "parameters": count}

    def import_data():
        version = samples.import_samples(created_by="bench")
        return {"dataset_version": version["id"], "train": version["rows_train"], "test": version["rows_test"]}

    stage("worker self-check", self_check)
    stage("random Gemma 4", make_model)
    data = stage("import", import_data)

    def train():
        overrides = {"base_model": str(base), "max_steps": 2 if args.tiny else args.steps, "save_steps": 1000}
        if args.tiny:
            overrides.update(max_seq_length=256, per_device_train_batch_size=2, gradient_accumulation_steps=1)
        cfg = presets.preset("guide (r=16)", **overrides)
        job = runs.submit_train(data["dataset_version"], cfg, owner="bench")
        job = supervisor.wait(job["id"], timeout=3600, poll=2)
        if job["state"] != "succeeded":
            raise RuntimeError(f"train job {job['state']}: {job['error']} {job.get('log_tail') or ''}"[-2000:])
        metrics = runs.run_metrics(job["run_id"])
        warm = metrics[metrics["step"] > min(5, len(metrics) // 2)]
        first = metrics["ts"].min() - job["started_at"].timestamp() if len(metrics) else None
        return {**job_outcome(job), "run": job["run_id"], "backend": job["result"]["backend"],
                "steps": int(metrics["step"].max()), "tokens_per_s_after_warmup": round(float(warm["tokens_per_s"].median()), 1)
                if len(warm) else None, "peak_gpu_mem_gib": round(float(metrics["gpu_mem_gib"].max()), 2)
                if metrics["gpu_mem_gib"].notna().any() else None, "first_step_after_s": round(first, 1) if first else None,
                "loss_first": float(metrics["loss"].iloc[0]), "loss_last": float(metrics["loss"].iloc[-1]),
                "train_runtime_s": job["result"]["train_runtime_s"]}

    trained = stage("train", train)
    run_id = trained["run"]

    def evaluate():
        job = evaluations.submit(run_id, limit=args.eval_limit, decoding=Decoding(max_new_tokens=16 if args.tiny else 64),
                                 owner="bench")
        job = supervisor.wait(job["id"], timeout=3600, poll=2)
        if job["state"] != "succeeded":
            raise RuntimeError(f"evaluate job {job['state']}: {job['error']}")
        r = job["result"]
        return {**job_outcome(job), "n": r["n"], "bleu": r["bleu"], "rouge_l": r["rouge_l"], "passed": r["passed"],
                "generation_s": round(r["generation_s"], 1), "examples_per_s": round(r["examples_per_s"], 2),
                "batch_size": job["config"]["decoding"]["batch_size"]}

    stage("evaluate", evaluate)

    def export():
        job = exports.submit(run_id, ["f16", "q8_0", "q4_k_m"], owner="bench")
        job = supervisor.wait(job["id"], timeout=3600, poll=2)
        if job["state"] != "succeeded":
            raise RuntimeError(f"export job {job['state']}: {job['error']} {job.get('log_tail') or ''}"[-2000:])
        r = job["result"]
        return {**job_outcome(job), "architecture": r["architecture"],
                "gguf_mib": {q: round(Path(p).stat().st_size / 2**20, 1) for q, p in r["gguf"].items()},
                "smoke_answer": r["smoke_answer"][:80]}

    stage("export", export)

    def modelfile():
        prepared = releases.prepare(run_id, "gemma4-random:bench", quantization="q8_0", actor="bench",
                                    override_reason="bench: random weights cannot pass the gate",
                                    on_progress=lambda m: print("    " + m, flush=True))
        result["prepared"] = prepared
        return {"modelfile_path": prepared["modelfile_path"], "template_turns": "<|turn>" in prepared["modelfile"],
                "lines": len(prepared["modelfile"].splitlines())}

    stage("modelfile", modelfile)

    def preflight():
        prepared = result.pop("prepared")
        job = preflights.submit(run_id, prepared["gguf"], prepared["merged_dir"], prepared["modelfile"], owner="bench",
                                out_dir=Path(prepared["gguf"]).parent)
        job = supervisor.wait(job["id"], timeout=3600, poll=2)
        if job["state"] != "succeeded":
            raise RuntimeError(f"preflight job {job['state']}: {job['error']}")
        r = job["result"]
        return {**job_outcome(job), "passed": r["passed"], "reason": r["reason"], "n": r["n"],
                "prompts_match_training": all(e["prompt_matches_training"] for e in r["examples"]),
                "exact_match_rate": r["exact_match_rate"], "duration_s": r["duration_s"]}

    stage("preflight", preflight)
    print(json.dumps(result, indent=2, ensure_ascii=False, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
