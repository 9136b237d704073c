"""Training throughput on a CUDA GPU: the studio's worker (Unsloth and HF + bitsandbytes backends)
against a raw Unsloth script with the same settings, on a Gemma-architecture model with random
weights (no hub access is needed). Prints a table of tokens/s and peak VRAM.

    python bench/train_throughput.py [--arch gemma3|gemma4] [--size 1.7b|small] [--steps 20]

Settings (the guide's): r=16 on all 7 projections, alpha 16, batch 2 × accumulation 4, packing,
seq 2048, adamw_8bit, bf16. tokens/s is measured over steps 5…N (after compilation warm-up).
Each backend runs in its own process: importing unsloth patches transformers and trl process-wide.
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


def build_model(out: Path, arch: str, size: str) -> Path:
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
    common = dict(vocab_size=len(fast), hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
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


def run_worker(model_dir: Path, backend: str, steps: int, work: Path) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from core.config import TrainConfig

    job_dir = work / f"job-{backend}"
    job_dir.mkdir(parents=True, exist_ok=True)
    rows = training_rows()
    pq.write_table(pa.table({k: [r[k] for r in rows] for k in ("instruction", "input", "output")}),
                   job_dir / "train.parquet")
    cfg = TrainConfig(base_model=str(model_dir), max_steps=steps, backend=backend, save_steps=10_000, logging_steps=1)
    (job_dir / "job.json").write_text(json.dumps({"kind": "train", "job_id": backend, "run_id": backend,
                                                  "config": cfg.to_dict(), "train_file": str(job_dir / "train.parquet")}))
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "core.worker", str(job_dir)], cwd=REPO, capture_output=True, text=True)
    (job_dir / "worker.log").write_text(proc.stdout + proc.stderr)
    status = json.loads((job_dir / "status.json").read_text())
    if status.get("state") != "succeeded":
        return {"backend": f"studio {backend}", "error": status.get("error"), "log": (proc.stdout + proc.stderr)[-3000:]}
    metrics = [json.loads(l) for l in (job_dir / "metrics.jsonl").read_text().splitlines()]
    return summarise(f"studio worker ({backend})", metrics, time.time() - t0)


def summarise(label: str, metrics: list[dict], wall: float) -> dict:
    steady = [m for m in metrics if m["step"] >= 5]
    tokens = sum(m.get("tokens", 0) for m in steady)
    span = steady[-1]["ts"] - steady[0]["ts"] if len(steady) > 1 else 0
    # tokens per step are fixed by packing (batch × accumulation × seq)
    per_step = 2 * 4 * 2048
    tps = per_step * (len(steady) - 1) / span if span else float("nan")
    return {"backend": label, "tokens_per_s": tps, "peak_gib": max(m.get("gpu_mem_gib", 0) for m in metrics),
            "final_loss": metrics[-1]["loss"], "wall_s": wall}


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


def run_raw(model_dir: Path, steps: int, work: Path) -> dict:
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
    proc = subprocess.run([sys.executable, str(script), str(model_dir), str(steps), str(data)], capture_output=True, text=True)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("RAW-METRICS ")), None)
    if not line:
        return {"backend": "raw Unsloth script", "error": "no metrics", "log": (proc.stdout + proc.stderr)[-3000:]}
    got = json.loads(line[len("RAW-METRICS "):])
    return summarise("raw Unsloth script", got["metrics"], time.time() - t0)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="gemma3", choices=["gemma3", "gemma4"])
    ap.add_argument("--size", default="1.7b", choices=list(SIZES))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--backends", default="unsloth,hf-bnb,raw")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vitune-throughput-"))
    model_dir = build_model(work / "model", args.arch, args.size)
    results = []
    for backend in args.backends.split(","):
        res = run_raw(model_dir, args.steps, work) if backend == "raw" else run_worker(model_dir, backend, args.steps, work)
        results.append(res)
        print(json.dumps(res)[:3000], flush=True)
    print(f"\n{args.arch} {args.size}, r=16, batch 2×4, seq 2048, packing, adamw_8bit, bf16")
    print(f"{'backend':<32} {'tokens/s':>10} {'peak GiB':>9} {'loss':>8}")
    for r in results:
        if "error" in r:
            print(f"{r['backend']:<32} error: {r['error']}")
        else:
            print(f"{r['backend']:<32} {r['tokens_per_s']:>10,.0f} {r['peak_gib']:>9.2f} {r['final_loss']:>8.3f}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
