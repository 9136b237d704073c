"""A GPU memory estimate before a training job is queued.

Rough on purpose (±30 %), and built from the parts that matter for QLoRA:

- base weights: 4-bit (NF4, ~0.54 bytes a parameter with its scales) for the linear layers, 16-bit
  for the embeddings (32-bit under transformers + bitsandbytes: PEFT's ``prepare_model_for_kbit_training``
  upcasts every non-quantised weight); or everything in 16-bit when the run does not load in 4 bit;
- LoRA: rank r on the chosen projections, each trainable parameter with its fp32 copy, gradient and
  optimizer state (8-bit Adam: 2 bytes; Adam: 8);
- activations with gradient checkpointing: every layer's input kept, one layer recomputed at a time,
  and what the loss keeps of the logits over the vocabulary: nothing under Unsloth (its fused
  cross-entropy never materialises them), a slice under trl's chunked loss;
- the CUDA context, which PyTorch's own counters do not show.

Calibrated on the H200 runs in the README (a 1.7B Gemma, batch 2, 2048 tokens, r=16; PyTorch's peak,
no CUDA context): with an 8,000-row vocabulary 1.38 GiB (Unsloth) and 2.37 (transformers +
bitsandbytes), estimated 1.31 and 2.29; with Gemma's own 262,144 rows 2.36 and 4.35, estimated 2.28
and 4.46.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

GIB = 1024**3
CUDA_CONTEXT_GIB = 0.5

# Shapes of Gemma 3 sizes, for a model named but not downloaded yet: hidden, intermediate, layers,
# attention heads, kv heads, head dim, vocabulary. Other models (Gemma 4 among them) are read from
# their config.json: a local folder, or the Hugging Face cache once the model has been downloaded.
KNOWN = {
    "gemma-3-270m": (640, 2048, 18, 4, 1, 256, 262144),
    "gemma-3-1b": (1152, 6912, 26, 4, 1, 256, 262144),
    "gemma-3-4b": (2560, 10240, 34, 8, 4, 256, 262208),
    "gemma-3-12b": (3840, 15360, 48, 16, 8, 256, 262208),
}


def _shape_from_config(cfg: dict) -> tuple | None:
    cfg = cfg.get("text_config") or cfg
    try:
        hidden = cfg["hidden_size"]
        heads = cfg["num_attention_heads"]
        return (hidden, cfg["intermediate_size"], cfg["num_hidden_layers"], heads,
                cfg.get("num_key_value_heads") or heads, cfg.get("head_dim") or hidden // heads, cfg["vocab_size"])
    except (KeyError, TypeError):
        return None


def _cached_config(name: str) -> Path | None:
    """config.json of a hub model already in the local Hugging Face cache (nothing is downloaded)."""
    import os

    if "/" not in name:
        return None
    hub = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub")
    found = sorted((hub / f"models--{name.replace('/', '--')}" / "snapshots").glob("*/config.json"))
    return found[-1] if found else None


def model_shape(base_model: str) -> tuple[tuple | None, str]:
    """(shape, where it came from) for a local folder, a cached hub model or a known model name."""
    config = Path(base_model) / "config.json"
    if not config.exists():
        config = _cached_config(base_model) or config
    if config.exists():
        shape = _shape_from_config(json.loads(config.read_text(encoding="utf-8")))
        if shape:
            return shape, "config.json"
    name = base_model.lower()
    for key, shape in KNOWN.items():
        if key in name:
            return shape, f"the model name ({key})"
    return None, "unknown"


def estimate(cfg, backend: str = "unsloth") -> dict | None:
    """Peak GPU memory of a training job, in GiB, with its parts; None for a model of unknown shape."""
    shape, source = model_shape(cfg.resolved_base_model())
    if shape is None:
        return None
    hidden, inter, layers, heads, kv, head_dim, vocab = shape
    q_out, kv_out = heads * head_dim, kv * head_dim
    dims = {"q_proj": (hidden, q_out), "k_proj": (hidden, kv_out), "v_proj": (hidden, kv_out),
            "o_proj": (q_out, hidden), "gate_proj": (hidden, inter), "up_proj": (hidden, inter),
            "down_proj": (inter, hidden)}
    linear = layers * sum(i * o for i, o in dims.values())
    embed = vocab * hidden
    if cfg.load_in_4bit:
        weights = linear * 0.54 + embed * (2 if backend == "unsloth" else 4)
    else:
        weights = (linear + embed) * 2
    lora = layers * sum(cfg.lora_r * (i + o) for m, (i, o) in dims.items() if m in cfg.target_modules)
    lora_bytes = lora * (4 + 4 + (2 if "8bit" in cfg.optim else 8))
    tokens = cfg.per_device_train_batch_size * cfg.max_seq_length
    kept = tokens * hidden * 2 * layers                      # checkpointed layer inputs (16-bit)
    one_layer = tokens * (3 * inter + 8 * hidden) * 2       # one layer recomputed in the backward pass
    logits = 0                                               # Unsloth's fused loss: never materialised
    if backend != "unsloth":                                 # no fused kernels: more live tensors
        one_layer *= 4
        logits = tokens * vocab * 4 / 16                     # fp32 slices alive in trl's chunked loss (calibrated)
    parts = {
        "weights": weights / GIB,
        "lora_and_optimizer": lora_bytes / GIB,
        "activations": (kept + one_layer + logits) / GIB,
        "cuda_context": CUDA_CONTEXT_GIB,
    }
    return {"total_gib": round(sum(parts.values()), 2), "parts": {k: round(v, 2) for k, v in parts.items()},
            "lora_params": lora, "base_params": linear + embed, "shape_from": source, "backend": backend}


def gpu_total_gib(index: int = 0) -> float | None:
    """The memory of GPU ``index`` as nvidia-smi reports it; None without an NVIDIA GPU."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=memory.total", "--format=csv,noheader,nounits", f"--id={index}"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        return float(out.splitlines()[0]) / 1024
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
        return None


def check(cfg, backend: str = "unsloth", gpu_index: int = 0) -> dict:
    """The estimate and, on a GPU machine, whether it fits: what the Train page and the CLI show."""
    est = estimate(cfg, backend)
    total = gpu_total_gib(gpu_index)
    out = {"estimate": est, "gpu_total_gib": total, "fits": None, "message": ""}
    if est is None:
        out["message"] = "No memory estimate: the model's shape is unknown (no config.json on disk)."
        return out
    text = f"Estimated peak GPU memory ≈ {est['total_gib']:.1f} GiB ({backend}; ±30 %)"
    if total is None:
        out["message"] = text + "; no GPU on this machine."
    else:
        out["fits"] = est["total_gib"] <= total
        out["message"] = text + (f" of {total:.0f} GiB on GPU {gpu_index}." if out["fits"] else
                                 f": MORE than the {total:.0f} GiB of GPU {gpu_index}. Lower the batch size or "
                                 "the sequence length, or load in 4 bit.")
    return out
