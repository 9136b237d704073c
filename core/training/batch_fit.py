"""Fit a run's batch to the GPU it trains on, keeping the guide's tokens per optimizer step.

The guide's batch 2 × accumulation 4 at 2048 tokens is sized for a 24 GB card; on an 80–141 GB GPU
it leaves most of the memory and most of the compute idle. "Fit to this GPU" keeps what the
learning-rate schedule sees — rows per optimizer step (batch × accumulation), each row as long as
the sequence length — and moves rows from accumulation into the batch while the memory estimate
(``core.training.vram``) fits in ``MEMORY_SHARE`` of the free memory: 2 × 4 becomes 8 × 1 where 8
rows fit, 4 × 2 where only 4 do.

The rows are packed to exactly the sequence length (``pack_rows``: the texts' tokens end to end, cut
every ``max_seq_length`` tokens), so every micro-step has the same shape ``[batch, max_seq_length]``
and the compiled step is compiled once. (Padding-free batching, the other way to pack, joins a batch
into one row of batch × length tokens: a new shape for every batch size, and at 8 × 2048 one whose
compile did not finish in 210 s on the H200.)
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from core.training import vram

MEMORY_SHARE = 0.6   # of the free memory: the estimate is ±30 %, and the allocator fragments


@dataclass
class Fit:
    batch: int               # rows a micro-step
    accumulation: int        # micro-steps an optimizer step
    row_tokens: int          # every row's length
    tokens_per_step: int     # batch × accumulation × row_tokens: the guide's, unchanged
    estimate_gib: float | None
    free_gib: float | None
    reason: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _divisors(n: int) -> list[int]:
    return [d for d in range(n, 0, -1) if n % d == 0]


def choose(cfg, free_gib: float | None, backend: str = "unsloth") -> Fit:
    """The largest batch that divides the config's rows per optimizer step and whose estimated peak
    fits in ``MEMORY_SHARE`` of ``free_gib``. Without a GPU (``free_gib`` None) or a model shape, the
    config's own batch stays."""
    rows = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
    kept = Fit(cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps, cfg.max_seq_length,
               rows * cfg.max_seq_length, None, free_gib, "")
    if free_gib is None:
        kept.reason = (f"no GPU here: batch {kept.batch} × accumulation {kept.accumulation} kept; "
                       f"rows packed to {cfg.max_seq_length} tokens")
        return kept
    budget = free_gib * MEMORY_SHARE
    for batch in _divisors(rows):
        est = vram.estimate(dataclasses.replace(cfg, per_device_train_batch_size=batch,
                                                gradient_accumulation_steps=rows // batch), backend)
        if est is None:
            kept.reason = "the model's shape is unknown (no config.json): the config's batch kept"
            return kept
        if est["total_gib"] <= budget or batch == 1:
            fits = est["total_gib"] <= budget
            return Fit(batch, rows // batch, cfg.max_seq_length, rows * cfg.max_seq_length, est["total_gib"], free_gib,
                       f"{rows} rows of {cfg.max_seq_length} tokens an optimizer step (the config's "
                       f"{cfg.per_device_train_batch_size} × {cfg.gradient_accumulation_steps}) as {batch} × "
                       f"{rows // batch}: estimated {est['total_gib']:.1f} GiB "
                       + (f"fits in {MEMORY_SHARE:.0%} of the {free_gib:.1f} GiB free"
                          if fits else f"is more than {MEMORY_SHARE:.0%} of the {free_gib:.1f} GiB free even so"))
    raise AssertionError("unreachable: batch 1 always returns")


def pack_rows(token_lists: list[list[int]], row_tokens: int, eos_id: int | None) -> list[list[int]]:
    """The texts' tokens end to end (an end-of-sequence token after each text that lacks one), cut into
    rows of exactly ``row_tokens``; the tail shorter than a row is dropped, unless it is all there is."""
    stream: list[int] = []
    for ids in token_lists:
        stream.extend(ids)
        if eos_id is not None and (not ids or ids[-1] != eos_id):
            stream.append(eos_id)
    if len(stream) < row_tokens:
        return [stream] if stream else []
    return [stream[i : i + row_tokens] for i in range(0, len(stream) - row_tokens + 1, row_tokens)]
