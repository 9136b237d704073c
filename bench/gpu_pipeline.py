"""The whole pipeline through the studio's own jobs on a Gemma 4 model, in one process: import → train
(Unsloth 4-bit on CUDA; the guide's settings, then "fit to this GPU") → evaluate → train again under
24 and 16 GiB caps (the batch "fit to this GPU" picks for such a card, under a hard cap) → export (merge, f16, q8_0, q4_k_m) → Modelfile → preflight. Made for the lent H200/H100 (one
device call a shape), runs anywhere (``--tiny`` on a CPU: CI's slow set runs it).

    python bench/gpu_pipeline.py --out DIR [--shape e4b] [--worker-python PY] [--tokenizer DIR] [--steps 12]
                                 [--stages train,fit,evaluate,cap24,cap16,export,modelfile,preflight] [--tiny]

``--shape`` is one of Gemma 4's published configurations (``bench/gemma4_random.SHAPES``: e2b, e4b, 26b-a4b,
31b, from transformers' own conversion script), built with random weights exactly as the hub lays the
checkpoint out (``Gemma4ForConditionalGeneration`` with its vision and audio towers, the processor beside
the tokenizer), so every job meets what a real checkpoint brings; ``--tiny`` keeps that structure at a
CPU's size. Without ``--shape``: the small text-only Gemma 4 of earlier runs (``--layers``, ``--hidden``).

The tokenizer is Gemma 4's real one (``bench/gemma4_random.py``, rebuilt from llama.cpp's vocab GGUF), so
llama.cpp's converter takes the model as a Gemma 4. The studio's code runs as it runs for a team: this
process is the app side (DuckDB); every job runs in a worker started by the supervisor under
``--worker-python`` (on the GPU machine, an interpreter whose path has the GPU packages and not the
app's). Loss does not fall on random weights, the gate cannot pass (the deploy is an override, recorded)
and the preflight may block: each stage's time and outcome are what this measures. Writes
``DIR/gpu_pipeline.json`` after every stage and prints a table at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

STAGES = ("train", "fit", "evaluate", "cap24", "cap16", "export", "modelfile", "preflight")
# dense bf16 peak of the card, by its datasheet (H100/H200 SXM: 989.4 TFLOP/s), for MFU
BF16_PEAK_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.1, "RTX 4090": 165.2}
# HBM bandwidth by the datasheet, for the weight-read bound of decoding
HBM_TB_S = {"H200": 4.8, "H100": 3.35, "A100": 2.04, "L40S": 0.864, "RTX 4090": 1.008}
GUIDE_EXAMPLES, GUIDE_EPOCHS = 50_000, 3


def gpu_name() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout.strip()
        return out or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def card_figure(table: dict, name: str | None) -> float | None:
    return next((v for k, v in table.items() if name and k in name), None)


class SmiPeak:
    """The most GPU memory nvidia-smi saw in use while a stage ran (every process, the CUDA context too)."""

    def __init__(self):
        self.peak_mib, self._stop = None, threading.Event()

    def __enter__(self):
        def poll():
            while not self._stop.wait(0.5):
                try:
                    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                         capture_output=True, text=True, timeout=10).stdout.split()
                    used = max(int(x) for x in out) if out else None
                except (OSError, ValueError, subprocess.TimeoutExpired):
                    return
                if used is not None:
                    self.peak_mib = max(self.peak_mib or 0, used)
        self._thread = threading.Thread(target=poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=15)


def flops_per_token(config: dict, seq: int) -> float:
    """Training FLOPs a token (the PaLM paper's MFU count, appendix B): 6 × the language model's matmul
    parameters a token goes through (embeddings and per-layer lookups excluded; experts counted as the
    top-k a token uses) + 12 × layers × attention width × sequence (halved: causal)."""
    t = config.get("text_config") or config
    h, layers, heads = t["hidden_size"], t["num_hidden_layers"], t["num_attention_heads"]
    kinds = t.get("layer_types") or ["full_attention"] * layers
    kv_full = t.get("num_global_key_value_heads") or t.get("num_key_value_heads")
    params, attn = 0, 0
    for kind in kinds:
        hd = (t.get("global_head_dim") or t["head_dim"]) if kind == "full_attention" else t["head_dim"]
        kv = kv_full if kind == "full_attention" else t["num_key_value_heads"]
        v = 0 if (kind == "full_attention" and t.get("attention_k_eq_v")) else kv * hd
        params += h * heads * hd * 2 + h * kv * hd + h * v
        attn += heads * hd
        if t.get("enable_moe_block"):
            params += 3 * h * t["intermediate_size"] + 3 * h * t["moe_intermediate_size"] * t["top_k_experts"]
        else:
            params += 3 * h * t["intermediate_size"]
        if t.get("hidden_size_per_layer_input"):
            params += 2 * h * t["hidden_size_per_layer_input"]
    params += h * t["vocab_size"]   # the output layer (tied to the embedding, still a matmul)
    return 6 * params + 12 * attn * seq / 2


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--home", type=Path, help="studio home (default: OUT/home)")
    ap.add_argument("--worker-python", help="interpreter of the workers (default: this one)")
    ap.add_argument("--tokenizer", type=Path, help="a Gemma 4 tokenizer folder from bench/gemma4_random.py")
    ap.add_argument("--shape", help="one of Gemma 4's published shapes (e2b, e4b, 26b-a4b, 31b)")
    ap.add_argument("--device", default=None, help="where the random weights are made (default: cuda if there is one)")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--cap-steps", type=int, default=3, help="steps of the runs under a memory cap")
    ap.add_argument("--stages", default=",".join(STAGES), help=f"which of {','.join(STAGES)} to run, in that order")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=640)
    ap.add_argument("--eval-limit", type=int, default=None, help="held-out pairs to evaluate (default: all)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--quantizations", default="f16,q8_0,q4_k_m")
    ap.add_argument("--tiny", action="store_true", help="the model at a CPU's size, 2 steps, short sequences")
    args = ap.parse_args()
    wanted = [s for s in args.stages.split(",") if s]
    unknown = set(wanted) - set(STAGES)
    if unknown:
        ap.error(f"unknown stages: {', '.join(sorted(unknown))} (known: {', '.join(STAGES)})")
    args.out.mkdir(parents=True, exist_ok=True)
    home = (args.home or args.out / "home").resolve()
    os.environ["VITUNE_HOME"] = str(home)
    if args.worker_python:
        os.environ["VITUNE_WORKER_PYTHON"] = args.worker_python

    import gemma4_random
    from core.access.principal import operator
    from core.datasets import samples
    from core.deploy import exports, preflights, releases
    from core.evaluation import evaluations
    from core.evaluation.inference import Decoding
    from core.jobs import supervisor
    from core.training import presets, runs, trainer, vram

    actor = operator()
    gpu = gpu_name()
    result: dict = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": platform.node(), "gpu": gpu,
                    "python": platform.python_version(), "shape": args.shape, "tiny": args.tiny,
                    "command": " ".join(sys.argv), "stages": {}}
    stages = result["stages"]
    failed: set[str] = set()

    def save():
        (args.out / "gpu_pipeline.json").write_text(json.dumps(result, indent=2, ensure_ascii=False, default=str))

    def stage(name: str, fn, *, needs: tuple[str, ...] = ()):
        """Run one stage; a failed stage is reported and the stages that need it are skipped."""
        missing = [n for n in needs if n in failed or n not in stages]
        if missing:
            stages[name] = {"ok": False, "skipped": f"needs {', '.join(missing)}"}
            failed.add(name)
            save()
            print(f"==> {name}: skipped ({stages[name]['skipped']})", flush=True)
            return None
        print(f"==> {name}", flush=True)
        t0 = time.time()
        with SmiPeak() as smi:
            try:
                out = fn()
                stages[name] = {"seconds": round(time.time() - t0, 1), "ok": True, **(out or {})}
            except Exception as exc:
                stages[name] = {"seconds": round(time.time() - t0, 1), "ok": False,
                                "error": f"{type(exc).__name__}: {exc}"[-3000:]}
                failed.add(name)
                out = None
        if smi.peak_mib is not None:
            stages[name]["nvidia_smi_peak_mib"] = smi.peak_mib
        save()
        print(f"    {json.dumps(stages[name], ensure_ascii=False, default=str)[:900]}", flush=True)
        return out

    def job_outcome(job: dict) -> dict:
        return {"job": job["id"], "state": job["state"], "error": job["error"], "slot": job["slot"]}

    # the interpreter the supervisor starts the jobs' workers with (core.jobs.supervisor.worker_python)
    worker = args.worker_python or os.environ.get("VITUNE_WORKER_PYTHON") or sys.executable
    base = home / "models" / "base" / (f"gemma4-{args.shape}" + ("-tiny" if args.tiny else "") if args.shape
                                       else "gemma4-random")
    device = args.device
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"

    def self_check():
        proc = subprocess.run([worker, "-m", "core.worker", "--self-check"], cwd=REPO, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")})
        out = proc.stdout.strip().splitlines()
        for module in ("duckdb", "streamlit", "plotly"):
            probe = subprocess.run([worker, "-c", f"import {module}"], capture_output=True, text=True)
            out.append(f"import {module} in the worker interpreter: {'ok' if probe.returncode == 0 else 'fails'}")
        if proc.returncode != 0:
            raise RuntimeError("; ".join(out) + proc.stderr[-1500:])
        return {"worker_python": worker, "report": out}

    def make_model():
        if (base / "config.json").exists():
            return {"model": str(base), "reused": True}
        if args.shape:
            built = gemma4_random.build_shape(base, args.shape, tiny=args.tiny, device=device,
                                              tokenizer_from=args.tokenizer)
            return {"model": str(base), **built, "device": device}
        size = dict(layers=2, hidden=64, head_dim=32, heads=2) if args.tiny else dict(layers=args.layers,
                                                                                        hidden=args.hidden)
        gemma4_random.build_model(base, tokenizer_from=args.tokenizer, **size)
        return {"model": str(base), **size}

    def import_data():
        version = samples.import_samples(actor=actor)
        return {"dataset_version": version["id"], "train": version["rows_train"], "test": version["rows_test"]}

    stage("worker self-check", self_check)
    stage("random Gemma 4", make_model)
    stage("import", import_data)
    config = json.loads((base / "config.json").read_text()) if (base / "config.json").exists() else None

    def train_job(preset: str, *, steps: int, cap: float | None = None) -> dict:
        overrides = {"base_model": str(base), "max_steps": 2 if args.tiny else steps, "save_steps": 1000}
        if args.tiny:
            overrides.update(max_seq_length=256, per_device_train_batch_size=2, gradient_accumulation_steps=1)
        cfg = presets.preset(preset, **overrides)
        estimate = vram.estimate(cfg)
        previous = os.environ.pop(trainer.MEMORY_CAP_ENV, None)
        if cap:
            os.environ[trainer.MEMORY_CAP_ENV] = str(cap)
        try:
            job = runs.submit_train(stages["import"]["dataset_version"], cfg, actor=actor,
                                    override_review="bench: the sample data, reviewed by construction")
            job = supervisor.wait(job["id"], timeout=3600, poll=2)
        finally:
            os.environ.pop(trainer.MEMORY_CAP_ENV, None)
            if previous is not None:
                os.environ[trainer.MEMORY_CAP_ENV] = previous
        out = {**job_outcome(job), "preset": preset, "memory_cap_gib": cap,
               "estimate_gib": estimate and estimate["total_gib"], "estimate_parts": estimate and estimate["parts"]}
        if job["state"] != "succeeded":
            out["log_tail"] = (job.get("log_tail") or "")[-1500:]
            if cap:   # over the cap is an outcome, not a failure of the bench
                out["out_of_memory"] = "out of memory" in (out["log_tail"] + (job["error"] or "")).lower()
                return out
            raise RuntimeError(f"train job {job['state']}: {job['error']} {out['log_tail']}")
        r = job["result"]
        metrics = runs.run_metrics(job["run_id"])
        losses = metrics[metrics["loss"].notna()] if "loss" in metrics else metrics
        warm = losses[losses["step"] > min(3, len(losses) // 2)]
        tps = float(warm["tokens_per_s"].median()) if len(warm) and warm["tokens_per_s"].notna().any() else None
        peak = r.get("peak_gpu_mem_gib")
        out.update(run=job["run_id"], backend=r["backend"], steps=r["steps"], compile_s=r.get("compile_s"),
                   batch=r["per_device_train_batch_size"], accumulation=r["gradient_accumulation_steps"],
                   fit=r.get("fit"), tokens_per_s_after_warmup=round(tps, 1) if tps else None,
                   peak_gpu_mem_gib=peak, peak_gpu_reserved_gib=r.get("peak_gpu_reserved_gib"),
                   loss_first=float(losses["loss"].iloc[0]) if len(losses) else None,
                   loss_last=float(losses["loss"].iloc[-1]) if len(losses) else None,
                   train_runtime_s=r["train_runtime_s"])
        if estimate and peak:
            # the estimate counts the CUDA context, which max_memory_allocated does not
            out["estimate_error"] = round((estimate["total_gib"] - vram.CUDA_CONTEXT_GIB) / peak - 1, 3)
        peak_tflops = card_figure(BF16_PEAK_TFLOPS, gpu)
        if tps and config and peak_tflops:
            seq = cfg.max_seq_length
            out["mfu"] = round(tps * flops_per_token(config, seq) / (peak_tflops * 1e12), 4)
        if tps:
            out["projected_guide_hours"] = round(GUIDE_EXAMPLES * GUIDE_EPOCHS * texts_tokens() / tps / 3600, 2)
        return out

    def texts_tokens() -> float:
        """Mean tokens of a training text of the imported version, as the trainer renders it."""
        if "_mean_text_tokens" not in result:
            import pyarrow.parquet as pq
            from transformers import AutoTokenizer

            from core import prompt_format
            from core.datasets import versions

            version = versions.get_version(stages["import"]["dataset_version"], actor)
            rows = pq.read_table(Path(version["path"]) / "train.parquet").to_pylist()
            tok = AutoTokenizer.from_pretrained(str(base))
            cfg = presets.preset("guide (r=16)")
            n = [len(tok(prompt_format.render_training_text(r, cfg.prompt_format, tok))["input_ids"]) for r in rows]
            result["_mean_text_tokens"] = sum(n) / len(n)
        return result["_mean_text_tokens"]

    if "train" in wanted:
        stage("train", lambda: train_job("guide (r=16)", steps=args.steps), needs=("import", "random Gemma 4"))
    if "fit" in wanted:
        stage("fit", lambda: train_job(presets.FIT_PRESET, steps=args.steps), needs=("import", "random Gemma 4"))
    run_stage = next((s for s in ("train", "fit") if s in stages and stages[s].get("ok")), None)
    run_id = stages[run_stage]["run"] if run_stage else None
    needs_run = (run_stage,) if run_stage else (("train",) if "train" in wanted else ("fit",))

    def evaluate():
        job = evaluations.submit(run_id, limit=args.eval_limit,
                                 decoding=Decoding(max_new_tokens=16 if args.tiny else args.max_new_tokens), actor=actor)
        job = supervisor.wait(job["id"], timeout=3600, poll=2)
        if job["state"] != "succeeded":
            raise RuntimeError(f"evaluate job {job['state']}: {job['error']} {(job.get('log_tail') or '')[-1500:]}")
        r = job["result"]
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(base))
        preds = [json.loads(line)["prediction"] for line in Path(r["predictions"]).read_text().splitlines()]
        tokens = sum(len(tok(p, add_special_tokens=False)["input_ids"]) for p in preds)
        gen_s, compile_s = r["generation_s"], r.get("compile_s") or 0.0
        out = {**job_outcome(job), "n": r["n"], "bleu": r["bleu"], "rouge_l": r["rouge_l"], "passed": r["passed"],
               "engine": r.get("engine"), "plan": r.get("plan"), "generation_s": round(gen_s, 2),
               "compile_s": compile_s and round(compile_s, 2), "generated_tokens": tokens,
               "tokens_per_s": round(tokens / gen_s, 1) if gen_s else None,
               "examples_per_s": round(r["examples_per_s"], 2)}
        bw = card_figure(HBM_TB_S, gpu)
        batch = (r.get("plan") or {}).get("batch_size") or job["config"]["decoding"].get("batch_size")
        weights = sum(f.stat().st_size for f in base.glob("*.safetensors"))
        if bw and batch and weights:
            # every decoding step reads every weight once: at batch B, at most B × bandwidth ÷ bytes tokens/s
            out["weight_read_bound_tokens_per_s"] = round(batch * bw * 1e12 / weights)
        return out

    if "evaluate" in wanted:
        stage("evaluate", evaluate, needs=needs_run)
    for cap in (24, 16):
        if f"cap{cap}" in wanted:
            stage(f"cap{cap}", lambda cap=cap: train_job(presets.FIT_PRESET, steps=args.cap_steps, cap=cap),
                  needs=("import", "random Gemma 4"))

    def export():
        job = exports.submit(run_id, args.quantizations.split(","), actor=actor)
        job = supervisor.wait(job["id"], timeout=3600, poll=2)
        if job["state"] != "succeeded":
            raise RuntimeError(f"export job {job['state']}: {job['error']} {job.get('log_tail') or ''}"[-2000:])
        r = job["result"]
        return {**job_outcome(job), "architecture": r["architecture"],
                "gguf_mib": {q: round(Path(p).stat().st_size / 2**20, 1) for q, p in r["gguf"].items()},
                "timings_s": r.get("timings_s"), "smoke_answer": (r.get("smoke_answer") or "")[:80]}

    if "export" in wanted:
        stage("export", export, needs=needs_run)

    def modelfile():
        quant = "q8_0" if "q8_0" in args.quantizations.split(",") else args.quantizations.split(",")[0]
        prepared = releases.prepare(run_id, f"gemma4-{args.shape or 'random'}:bench", quantization=quant, actor=actor,
                                    override_reason="bench: random weights cannot pass the gate",
                                    on_progress=lambda m: print("    " + m, flush=True))
        result["_prepared"] = prepared
        return {"modelfile_path": prepared["modelfile_path"], "template_turns": "<|turn>" in prepared["modelfile"],
                "lines": len(prepared["modelfile"].splitlines()), "quantization": quant}

    if "modelfile" in wanted:
        stage("modelfile", modelfile, needs=("export",))

    def preflight():
        prepared = result.pop("_prepared")
        job = preflights.submit(run_id, prepared["gguf"], prepared["merged_dir"], prepared["modelfile"], actor=actor,
                                out_dir=Path(prepared["gguf"]).parent)
        job = supervisor.wait(job["id"], timeout=3600, poll=2)
        if job["state"] != "succeeded":
            raise RuntimeError(f"preflight job {job['state']}: {job['error']}")
        r = job["result"]
        return {**job_outcome(job), "passed": r["passed"], "reason": r["reason"], "n": r["n"],
                "prompts_match_training": all(e["prompt_matches_training"] for e in r["examples"]),
                "exact_match_rate": r["exact_match_rate"], "duration_s": r["duration_s"]}

    if "preflight" in wanted:
        stage("preflight", preflight, needs=("modelfile",))
    result.pop("_prepared", None)
    save()
    print(json.dumps(result, indent=2, ensure_ascii=False, default=str))
    print(table(result))
    return 0 if not failed else 1


def table(result: dict) -> str:
    lines = ["| stage | seconds | outcome |", "|---|---|---|"]
    for name, s in result["stages"].items():
        keep = {k: v for k, v in s.items() if k not in ("seconds", "ok", "report", "estimate_parts", "plan", "fit",
                                                         "log_tail")}
        lines.append(f"| {name} | {s.get('seconds', '')} | {'ok' if s.get('ok') else 'FAILED'} "
                     f"{json.dumps(keep, ensure_ascii=False, default=str)[:300]} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
