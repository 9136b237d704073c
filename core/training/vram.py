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


def gemma4_parts(cfg: dict) -> dict | None:
    """Gemma 4's parameters by how QLoRA holds them, counted from its config.json (the hub's
    ``Gemma4ForConditionalGeneration`` or a text-only ``gemma4_text``), as transformers builds the model:

    - ``linear``: the language model's linear layers (4-bit under QLoRA): per layer q/k/v/o with the wider
      heads of full-attention layers (``global_head_dim`` / ``per_layer_config``), no k/v on layers that
      share another's KV cache, no v where a full layer's keys are its values (``attention_k_eq_v``), the
      MLP (twice as wide on shared layers with ``use_double_wide_mlp``), the per-layer-input gate and
      projection, the router of a mixture of experts;
    - ``embed``: the token embedding (tied output layer); ``per_layer_embed``: E2B/E4B's per-layer input
      embeddings (vocabulary × layers × 256: 2.4–2.8 B parameters, 16-bit);
    - ``experts``: a mixture of experts' stacked weights (3-D tensors, not linear layers: 16-bit);
    - ``towers``: the vision and audio encoders (linear layers, 4-bit) and ``towers_other`` (their
      position tables and projections into the text width, 16-bit);
    - ``lora_dims``: every targeted projection's (in, out), layer by layer, for LoRA's size.
    None when the config is not Gemma 4's."""
    t = cfg.get("text_config") or cfg
    if not str(t.get("model_type", cfg.get("model_type", ""))).startswith("gemma4"):
        return None
    h, layers, heads = t["hidden_size"], t["num_hidden_layers"], t["num_attention_heads"]
    kinds = t.get("layer_types") or ["sliding_attention"] * layers
    per_layer = {int(k): v for k, v in (t.get("per_layer_config") or {}).items()}
    shared_from = layers - (t.get("num_kv_shared_layers") or 0)
    linear, lora_dims = 0, []
    for i, kind in enumerate(kinds):
        full = kind == "full_attention"
        hd = per_layer.get(i, {}).get("head_dim") or ((t.get("global_head_dim") or t["head_dim"]) if full
                                                       else t["head_dim"])
        kv = per_layer.get(i, {}).get("num_key_value_heads") or (
            (t.get("num_global_key_value_heads") or t["num_key_value_heads"]) if full else t["num_key_value_heads"])
        dims = {"q_proj": (h, heads * hd), "o_proj": (heads * hd, h)}
        if i < shared_from:
            dims["k_proj"] = (h, kv * hd)
            if not (full and t.get("attention_k_eq_v")):
                dims["v_proj"] = (h, kv * hd)
        inter = t["intermediate_size"] * (2 if t.get("use_double_wide_mlp") and i >= shared_from else 1)
        dims.update(gate_proj=(h, inter), up_proj=(h, inter), down_proj=(inter, h))
        linear += sum(a * b for a, b in dims.values())
        lora_dims.append(dims)
        if t.get("hidden_size_per_layer_input"):
            linear += 2 * h * t["hidden_size_per_layer_input"]
        if t.get("enable_moe_block"):
            linear += h * t["num_experts"]
    ple = t.get("hidden_size_per_layer_input") or 0
    per_layer_embed = (t.get("vocab_size_per_layer_input") or t["vocab_size"]) * layers * ple
    linear += layers * ple * h                      # per_layer_model_projection
    experts = 0
    if t.get("enable_moe_block"):
        experts = layers * t["num_experts"] * 3 * h * t["moe_intermediate_size"]
    towers = towers_other = 0
    v = cfg.get("vision_config")
    if v:
        vh, vhd = v["hidden_size"], v.get("head_dim") or v["hidden_size"] // v["num_attention_heads"]
        towers += v["num_hidden_layers"] * (2 * vh * v["num_attention_heads"] * vhd
                                            + 2 * vh * v.get("num_key_value_heads", v["num_attention_heads"]) * vhd
                                            + 3 * vh * v["intermediate_size"])
        towers_other += vh * (v.get("patch_size", 16) ** 2 * 3 + 2 * v.get("position_embedding_size", 10240) + h)
    a = cfg.get("audio_config")
    if a:
        ah = a["hidden_size"]
        towers += a["num_hidden_layers"] * 24 * ah * ah          # two 4×-wide feed-forwards, conv, attention
        towers_other += ah * (a.get("output_proj_dims", 1536) + ah) + a.get("output_proj_dims", 1536) * h
    return {"linear": linear, "embed": t["vocab_size"] * h, "per_layer_embed": per_layer_embed,
            "experts": experts, "towers": towers, "towers_other": towers_other, "lora_dims": lora_dims,
            "hidden": h, "layers": layers, "vocab": t["vocab_size"],
            "intermediate": max(d["up_proj"][1] for d in lora_dims)}


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


def _config(base_model: str) -> dict | None:
    config = Path(base_model) / "config.json"
    if not config.exists():
        config = _cached_config(base_model) or config
    if not config.exists():
        return None
    try:
        return json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def estimate(cfg, backend: str = "unsloth") -> dict | None:
    """Peak GPU memory of a training job, in GiB, with its parts; None for a model of unknown shape."""
    base = cfg.resolved_base_model()
    config = _config(base)
    g4 = gemma4_parts(config) if config else None
    if g4:
        return _estimate_gemma4(cfg, backend, g4)
    shape, source = model_shape(base)
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
    return _total(cfg, backend, weights, lora, hidden, inter, layers, vocab, linear + embed, source)


def _total(cfg, backend: str, weights: float, lora: int, hidden: int, inter: int, layers: int, vocab: int,
           base_params: int, source: str, extra: dict | None = None) -> dict:
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
            "lora_params": lora, "base_params": base_params, "shape_from": source, "backend": backend,
            **(extra or {})}


def _estimate_gemma4(cfg, backend: str, g4: dict) -> dict:
    """Gemma 4 from its parts (``gemma4_parts``): the linear layers of the language model and of the towers
    in 4 bit; the embeddings, the per-layer input embeddings, the experts and the towers' tables in 16 bit
    (32 under transformers + bitsandbytes, whose k-bit preparation upcasts what it does not quantise)."""
    wide = 2 if backend == "unsloth" else 4
    sixteen = g4["embed"] + g4["per_layer_embed"] + g4["experts"] + g4["towers_other"]
    if cfg.load_in_4bit:
        weights = (g4["linear"] + g4["towers"]) * 0.54 + sixteen * wide
    else:
        weights = (g4["linear"] + g4["towers"] + sixteen) * 2
    lora = sum(cfg.lora_r * (i + o) for dims in g4["lora_dims"] for m, (i, o) in dims.items()
               if m in cfg.target_modules)
    base = g4["linear"] + g4["towers"] + sixteen
    return _total(cfg, backend, weights, lora, g4["hidden"], g4["intermediate"], g4["layers"], g4["vocab"], base,
                  "config.json (Gemma 4, counted part by part)",
                  {"gemma4": {k: g4[k] for k in ("linear", "embed", "per_layer_embed", "experts", "towers",
                                                 "towers_other")}})


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
