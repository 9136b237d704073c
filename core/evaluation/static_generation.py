"""Generation for a whole evaluation with shapes that never change: the CUDA engine.

A decoding step of a small model at a large batch is bound by reading the weights once a step, and
transformers' plain loop spends far longer than that in Python. With a static KV cache transformers
compiles the decoding step (``torch.compile``, CUDA graphs) — but a compiled step is only reused
while its shapes stay the same. So every batch of an evaluation gets the same shapes:

- one prompt length for all batches: the longest prompt, rounded up to a multiple of ``BUCKET``
  tokens; shorter prompts are left-padded to it (the attention mask hides the padding);
- one batch size, chosen from the GPU's free memory (``plan``), and a last batch filled up to it with
  copies of one of its prompts (their answers are thrown away);
- so one cache length, ``prompt_len + max_new_tokens``, and one compile for the whole evaluation.

The first batch pays the compile (``on_phase("compiling")``); the others reuse it, and the compile
caches (``core.jobs.worker`` keeps them under the studio's home) serve the next evaluation of the
same model and shapes. This module knows nothing of prompts' formats or answers' cleaning: it turns
token ids into token ids (``core.evaluation.inference`` does the rest).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

BUCKET = 64            # prompt lengths are rounded up to a multiple of this
MAX_BATCH = 256        # the largest batch chosen by memory (a larger one buys little on a weight-bound step)
MEMORY_SHARE = 0.5     # the share of the free GPU memory one batch may plan to use
CPU_BATCH = 8          # the batch where no GPU says how much memory there is


@dataclass
class Plan:
    batch: int          # rows in every batch
    prompt_len: int     # every prompt left-padded to this many tokens
    cache_len: int      # prompt_len + max_new_tokens: the static cache's length
    batches: int        # how many batches the prompts make
    reason: str         # how the batch size was chosen, in words

    def to_dict(self) -> dict:
        return {"batch": self.batch, "prompt_len": self.prompt_len, "cache_len": self.cache_len,
                "batches": self.batches, "reason": self.reason}


def _text_config(config):
    get = getattr(config, "get_text_config", None)
    return get() if callable(get) else config


def _field(c, name: str, default: int = 0) -> int:
    """A config's number, the largest over its layers where it varies by layer (Gemma 4's configs
    refuse a global ``head_dim`` and the like: each layer has its own)."""
    try:
        value = getattr(c, name, None)
    except Exception:   # a per-layer attribute read globally
        value = None
        layers = getattr(c, "per_layer_config", None) or []
        got = [getattr(layer, name, None) for layer in layers]
        got = [g for g in got if isinstance(g, (int, float))]
        value = max(got) if got else None
    if isinstance(value, (list, tuple)):
        value = max((v for v in value if isinstance(v, (int, float))), default=None)
    return int(value) if isinstance(value, (int, float)) and value else default


def bytes_per_row(config, cache_len: int, prompt_len: int, dtype_bytes: int = 2) -> int:
    """About how much GPU memory one row of a batch needs: its KV cache over ``cache_len`` positions
    in every layer, the prefill's activations over ``prompt_len`` positions, and the last position's
    logits in float32 (twice: the logits and the processed scores). Where a number varies by layer
    the largest is taken: an estimate on the safe side."""
    c = _text_config(config)
    layers = _field(c, "num_hidden_layers", 1)
    heads = _field(c, "num_attention_heads", 1)
    hidden = _field(c, "hidden_size", 1)
    kv_heads = _field(c, "num_key_value_heads", heads)
    head_dim = max(_field(c, "head_dim", hidden // heads), _field(c, "global_head_dim", 0))
    intermediate = _field(c, "intermediate_size", 4 * hidden)
    vocab = _field(c, "vocab_size", 0)
    kv = layers * 2 * kv_heads * head_dim * dtype_bytes * cache_len
    prefill = prompt_len * (6 * hidden + 3 * intermediate + 2 * heads * head_dim) * dtype_bytes
    return kv + prefill + 2 * vocab * 4


def _pow2_floor(n: int) -> int:
    return 1 << max(0, int(n).bit_length() - 1)


def plan(lengths: Sequence[int], max_new_tokens: int, *, config, free_bytes: int | None,
         requested_batch: int = 0, dtype_bytes: int = 2) -> Plan:
    """The batch size and padded prompt length of a whole evaluation. ``requested_batch`` > 0 is the
    user's choice and is kept; 0 means "choose": the largest power of two whose rows fit in
    ``MEMORY_SHARE`` of ``free_bytes`` (at most ``MAX_BATCH``, at most the prompts' count rounded up
    to a power of two); ``CPU_BATCH`` where ``free_bytes`` is unknown."""
    n = len(lengths)
    longest = max(lengths) if lengths else 1
    prompt_len = BUCKET * math.ceil(longest / BUCKET)
    cache_len = prompt_len + int(max_new_tokens)
    enough = 1 << max(0, (max(n, 1) - 1).bit_length())   # the prompts' count rounded up to a power of two
    if requested_batch > 0:
        batch, reason = int(requested_batch), f"batch {requested_batch} as asked"
    elif free_bytes is None:
        batch = min(CPU_BATCH, enough)
        reason = f"batch {batch}: no GPU memory to size it by"
    else:
        row = bytes_per_row(config, cache_len, prompt_len, dtype_bytes)
        fits = max(1, int(free_bytes * MEMORY_SHARE) // max(row, 1))
        batch = max(1, min(MAX_BATCH, _pow2_floor(fits), enough))
        reason = (f"batch {batch}: {fits} rows of ~{row / 2**20:.1f} MiB fit in {MEMORY_SHARE:.0%} of "
                  f"{free_bytes / 2**30:.1f} GiB free (at most {MAX_BATCH}, at most {enough} for {n} prompts)")
    return Plan(batch=batch, prompt_len=prompt_len, cache_len=cache_len, batches=math.ceil(n / batch) if n else 0,
                reason=reason)


def free_gpu_bytes(model) -> int | None:
    """Free memory on the model's GPU now (after its weights are loaded), or None off CUDA."""
    import torch

    device = getattr(model, "device", None)
    if device is None or getattr(device, "type", "cpu") != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return int(free)


def batches(order: Sequence[int], p: Plan) -> Iterator[tuple[list[int], list[int]]]:
    """(the prompts' indices, the same filled up to ``p.batch`` with copies of the last) per batch."""
    for start in range(0, len(order), p.batch):
        idx = list(order[start : start + p.batch])
        yield idx, idx + [idx[-1]] * (p.batch - len(idx))


def run(model, tok, prompts: Sequence[str], order: Sequence[int], p: Plan, kwargs: dict,
        on_batch: Callable[[list[int], list[list[int]]], None],
        on_phase: Callable[[str], None] | None = None) -> None:
    """Generate every batch of ``p`` with a static cache; ``on_batch(indices, new_token_ids)`` gets the
    real rows of each (the filler rows dropped). ``kwargs`` are ``model.generate``'s decoding settings."""
    import torch

    for k, (idx, filled) in enumerate(batches(order, p)):
        if on_phase:
            on_phase("compiling" if k == 0 else "generating")
        batch = tok([prompts[i] for i in filled], return_tensors="pt", padding="max_length",
                    max_length=p.prompt_len, truncation=False, add_special_tokens=True)
        batch = {name: t.to(model.device) for name, t in batch.items()}
        with torch.inference_mode():
            out = model.generate(**batch, **kwargs, cache_implementation="static")
        new = out[: len(idx), p.prompt_len:].tolist()
        on_batch(idx, new)
