"""Training throughput on a CUDA GPU: the studio's worker (Unsloth and HF + bitsandbytes backends)
against a raw Unsloth script with the same settings, on a Gemma-architecture model with random
weights (no hub access is needed). Prints a table of tokens/s and peak VRAM.

    python bench/train_throughput.py [--arch gemma3|gemma4] [--size 1.7b|small] [--steps 30] \
        [--runs raw,unsloth,raw,unsloth,hf-bnb] [--vocab 262144]

Settings (the guide's): r=16 on all 7 projections, alpha 16, batch 2 × accumulation 4, packing,
seq 2048, adamw_8bit, bf16. tokens/s is measured over steps 5…N (after compilation warm-up).
Each backend runs in its own process: importing unsloth patches transformers and trl process-wide.
``--runs`` may name a backend more than once: runs alternate so that warm compile caches and GPU clocks
favour neither side, and the table gives each backend's median. The vocabulary is Gemma's own
(262,144 rows) by default: the output layer and the logits are a large part of a Gemma's memory, and a
small vocabulary hides what Unsloth's fused loss saves (the tokenizer uses only its first 8,000 ids).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SIZES = {  # hidden, intermediate, layers, heads, kv heads, head dim
    "small": (640, 2048, 8, 4, 1, 256),
    "1.7b": (2048, 8192, 18, 8, 4, 256),
}


def build_model(out: Path, arch: str, size: str, vocab: int) -> Path:
    """A random-weight Gemma model and a BPE tokenizer trained on the sample data."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers, decoders
    from transformers import PreTrainedTokenizerFast

    from core import prompt_format

    texts = []
    for f in (REPO / "data" / "samples").glob("*.jsonl"):
        for line in f.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            texts.append(" ".join(row.values()))
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=8000, special_tokens=specials))
    from tokenizers.processors import TemplateProcessing

    tok.post_processor = TemplateProcessing(single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", 2)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>")
    fast.chat_template = prompt_format.GEMMA_CHAT_TEMPLATE
    hidden, inter, layers, heads, kv, head_dim = SIZES[size]
    torch.manual_seed(0)
    common = dict(vocab_size=max(vocab, len(fast)), hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                  num_attention_heads=heads, num_key_value_heads=kv, head_dim=head_dim, pad_token_id=0,
                  eos_token_id=1, bos_token_id=2, max_position_embeddings=4096)
    if arch == "gemma4":
        from transformers import Gemma4ForCausalLM, Gemma4TextConfig

        model = Gemma4ForCausalLM(Gemma4TextConfig(**common))
    else:
        from transformers import Gemma3ForCausalLM, Gemma3TextConfig

        model = Gemma3ForCausalLM(Gemma3TextConfig(**common))
    model.to(torch.bfloat16).save_pretrained(out)
    fast.save_pretrained(out)
    return out


def training_rows(n: int = 4000) -> list[dict]:
    rows = []
    for f in sorted((REPO / "data" / "samples").glob("*.jsonl")):
        rows += [json.loads(line) for line in f.read_text(encoding="utf-8").splitlines()]
    rnd = random.Random(0)
    return [rnd.choice(rows) for _ in range(n)]


def run_worker(model_dir: Path, backend: str, steps: int, work: Path, timeout: float, extra: dict | None = None) -> dict:
    """One training job through ``python -m core.worker`` (``extra``: more settings of its config)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from core.training.config import TrainConfig

    job_dir = work / f"job-{backend}-{time.time_ns()}"
    job_dir.mkdir(parents=True, exist_ok=True)
    rows = training_rows()
    pq.write_table(pa.table({k: [r[k] for r in rows] for k in ("instruction", "input", "output")}),
                   job_dir / "train.parquet")
    cfg = TrainConfig(base_model=str(model_dir), max_steps=steps, backend=backend, save_steps=10_000, logging_steps=1,
                      **(extra or {}))
    (job_dir / "job.json").write_text(json.dumps({"kind": "train", "job_id": backend, "run_id": backend,
                                                  "config": cfg.to_dict(), "train_file": str(job_dir / "train.parquet")}))
    t0 = time.time()
    try:
        proc = subprocess.run([sys.executable, "-m", "core.worker", str(job_dir)], cwd=REPO, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        return {"backend": f"studio worker ({backend})", "error": f"no result in {timeout:.0f} s",
                "log": str(exc.stdout or "")[-2000:] + str(exc.stderr or "")[-2000:]}
    (job_dir / "worker.log").write_text(proc.stdout + proc.stderr)
    status = json.loads((job_dir / "status.json").read_text())
    if status.get("state") != "succeeded":
        return {"backend": f"studio {backend}", "error": status.get("error"), "log": (proc.stdout + proc.stderr)[-3000:]}
    metrics = [json.loads(l) for l in (job_dir / "metrics.jsonl").read_text().splitlines()]
    result = status.get("result") or {}
    batch, accumulation = result.get("per_device_train_batch_size", 2), result.get("gradient_accumulation_steps", 4)
    # a packed step's text tokens as the worker counted them (rows hold padding or fall short of a full row)
    per_step = status.get("tokens_per_step") or batch * accumulation * cfg.max_seq_length
    out = summarise(f"studio worker ({backend})", metrics, time.time() - t0, per_step)
    out.update(batch=batch, accumulation=accumulation, compile_s=status.get("compile_s"), fit=status.get("fit"),
               first_step_s=round(metrics[0]["ts"] - t0, 1), metrics=metrics)
    return out


def summarise(label: str, metrics: list[dict], wall: float, per_step: int = 2 * 4 * 2048) -> dict:
    """tokens/s over steps 5…N: a step is ``per_step`` text tokens (the worker's count for packed rows)."""
    steady = [m for m in metrics if m["step"] >= 5]
    span = steady[-1]["ts"] - steady[0]["ts"] if len(steady) > 1 else 0
    tps = per_step * (len(steady) - 1) / span if span else float("nan")
    step_s = [round(b["ts"] - a["ts"], 3) for a, b in zip(metrics, metrics[1:])]
    return {"backend": label, "tokens_per_s": tps, "tokens_per_step": per_step, "step_s": step_s,
            "peak_gib": max(m.get("gpu_mem_gib", 0) for m in metrics), "final_loss": metrics[-1]["loss"], "wall_s": wall}


RAW = r'''
import json, sys, time, torch
from unsloth import FastLanguageModel
from datasets import Dataset
from trl import SFTConfig, SFTTrainer
from transformers import TrainerCallback
model_dir, steps, data = sys.argv[1], int(sys.argv[2]), sys.argv[3]
model, tok = FastLanguageModel.from_pretrained(model_name=model_dir, max_seq_length=2048, dtype=None, load_in_4bit=True)
model = FastLanguageModel.get_peft_model(model, r=16, target_modules=["q_proj","k_proj","v_proj","o_proj","gate_proj","up_proj","down_proj"],
    lora_alpha=16, lora_dropout=0, bias="none", use_gradient_checkpointing="unsloth", random_state=42)
texts = [json.loads(l)["text"] for l in open(data)]
log = []
class R(TrainerCallback):
    def on_log(self, a, s, c, logs=None, **k):
        if logs and "loss" in logs:
            log.append({"step": s.global_step, "loss": logs["loss"], "ts": time.time(), "gpu_mem_gib": torch.cuda.max_memory_allocated()/1024**3})
args = SFTConfig(output_dir="/tmp/raw-unsloth", per_device_train_batch_size=2, gradient_accumulation_steps=4, max_steps=steps,
    learning_rate=2e-4, lr_scheduler_type="linear", warmup_steps=0.1, optim="adamw_8bit", weight_decay=0.01, seed=42,
    logging_steps=1, save_strategy="no", report_to="none", bf16=True, packing=True, max_length=2048, dataset_text_field="text")
t0 = time.time()
SFTTrainer(model=model, processing_class=tok, train_dataset=Dataset.from_dict({"text": texts}), args=args, callbacks=[R()]).train()
print("RAW-METRICS " + json.dumps({"metrics": log, "wall": time.time() - t0}))
'''


def run_raw(model_dir: Path, steps: int, work: Path, timeout: float) -> dict:
    from core import prompt_format
    from core.models import load_tokenizer

    tok = load_tokenizer(str(model_dir))
    data = work / "raw.jsonl"
    with data.open("w", encoding="utf-8") as fh:
        for row in training_rows():
            fh.write(json.dumps({"text": prompt_format.render_training_text(row, "chat", tok)}, ensure_ascii=False) + "\n")
    script = work / "raw_unsloth.py"
    script.write_text(RAW)
    t0 = time.time()
    try:
        proc = subprocess.run([sys.executable, str(script), str(model_dir), str(steps), str(data)], capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"backend": "raw Unsloth script", "error": f"no result in {timeout:.0f} s"}
    line = next((l for l in proc.stdout.splitlines() if l.startswith("RAW-METRICS ")), None)
    if not line:
        return {"backend": "raw Unsloth script", "error": "no metrics", "log": (proc.stdout + proc.stderr)[-3000:]}
    got = json.loads(line[len("RAW-METRICS "):])
    return summarise("raw Unsloth script", got["metrics"], time.time() - t0)


def median(values: list[float]) -> float:
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="gemma3", choices=["gemma3", "gemma4"])
    ap.add_argument("--size", default="1.7b", choices=list(SIZES))
    ap.add_argument("--vocab", type=int, default=262_144, help="output-layer rows (Gemma's own by default)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--runs", "--backends", dest="runs", default="raw,unsloth,raw,unsloth,hf-bnb",
                    help="backends in run order; a name may repeat (unsloth, hf-bnb: the studio worker; raw)")
    ap.add_argument("--timeout", type=float, default=400, help="seconds one run may take")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--work", default=None, help="folder for the model and the runs (default: a new temp folder)")
    args = ap.parse_args()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="vitune-throughput-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    model_dir = build_model(work / "model", args.arch, args.size, args.vocab)
    print(f"model built in {time.time() - t0:.0f} s", flush=True)
    results = []
    for backend in args.runs.split(","):
        t = time.time()
        res = (run_raw(model_dir, args.steps, work, args.timeout) if backend == "raw"
               else run_worker(model_dir, backend, args.steps, work, args.timeout))
        res["key"] = backend
        results.append(res)
        print(f"[{time.time() - t:.0f} s] " + json.dumps(res)[:3000], flush=True)
    print(f"\n{args.arch} {args.size}, vocab {args.vocab:,}, r=16, batch 2×4, seq 2048, packing, adamw_8bit, bf16, "
          f"{args.steps} steps (tokens/s over steps 5…{args.steps})")
    print(f"| run | backend | tokens/s | peak GiB | final loss | wall s |\n|---|---|---|---|---|---|")
    for i, r in enumerate(results, 1):
        if "error" in r:
            print(f"| {i} | {r['backend']} | error: {r['error']} | | | |")
        else:
            print(f"| {i} | {r['backend']} | {r['tokens_per_s']:,.0f} | {r['peak_gib']:.2f} | {r['final_loss']:.3f} "
                  f"| {r['wall_s']:.0f} |")
    ok = [r for r in results if "error" not in r]
    med = {k: {"tokens_per_s": median([r["tokens_per_s"] for r in ok if r["key"] == k]),
               "peak_gib": median([r["peak_gib"] for r in ok if r["key"] == k])}
           for k in dict.fromkeys(r["key"] for r in ok)}
    print("\nmedians: " + ", ".join(f"{k} {v['tokens_per_s']:,.0f} tok/s {v['peak_gib']:.2f} GiB" for k, v in med.items()))
    if "unsloth" in med and "raw" in med:
        print(f"studio Unsloth worker / raw Unsloth, tokens/s: {med['unsloth']['tokens_per_s'] / med['raw']['tokens_per_s']:.3f}×"
              " (target ≥ 0.97×)")
    if "unsloth" in med and "hf-bnb" in med:
        print(f"studio Unsloth worker / HF + bnb, tokens/s: {med['unsloth']['tokens_per_s'] / med['hf-bnb']['tokens_per_s']:.2f}×"
              f" (target ≥ 2×); peak memory: {med['unsloth']['peak_gib'] / med['hf-bnb']['peak_gib']:.2f} (target ≤ 0.5)")
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "results": results, "medians": med}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
