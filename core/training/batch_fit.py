"""Fit a run's batch to the GPU it trains on, keeping the guide's tokens per optimizer step.

The guide's batch 2 × accumulation 4 at 2048 tokens is sized for a 24 GB card; on an 80–141 GB GPU
it leaves most of the memory and most of the compute idle. "Fit to this GPU" keeps what the
learning-rate schedule sees — rows per optimizer step (batch × accumulation), each row as long as
the sequence length — and moves rows from accumulation into the batch while the memory estimate
(``core.training.vram``) fits in ``MEMORY_SHARE`` of the free memory: 2 × 4 becomes 8 × 1 where 8
rows fit, 4 × 2 where only 4 do.

Rows are packed the way the guide's packing packs them — whole texts, best fit decreasing, each text
with its own positions and attending only to itself (TRL's ``pack_dataset``, the same call its own
packing makes) — and then padded to exactly the sequence length (``FixedRows``), so every micro-step
has the same shape ``[batch, max_seq_length]`` and the compiled step is compiled once. Padding-free
batching, the guide's way to feed them, joins a batch into one row of up to batch × length tokens: a new
shape for every batch, and at 8 × 2048 one whose compile did not finish in 210 s on the H200.

A text's boundaries are kept by position ids that restart at every text, with no attention mask:
transformers then builds the attention of each row block by block, one causal block a text
(``masking_utils.find_packed_sequence_indices``). The first token of every text is no target (it would
be predicted from the end of the text before it), nor is any padding. transformers reads the positions as
boundaries only when the forward builds no KV cache, so a model trained on these rows has its cache off
(``for_packed_rows``).
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


def pack_rows(token_lists: list[list[int]], row_tokens: int, eos_id: int | None) -> list[dict]:
    """Whole texts (an end-of-sequence token after each text that lacks one; a text longer than a row
    cut at ``row_tokens``) packed into rows of at most ``row_tokens`` tokens by TRL's best-fit-decreasing
    packing. Each row: ``input_ids`` and ``seq_lengths``, the lengths of its texts in order."""
    from datasets import Dataset
    from trl import pack_dataset

    ids = [list(t) + ([eos_id] if eos_id is not None and (not t or t[-1] != eos_id) else []) for t in token_lists]
    ids = [t for t in ids if t]
    if not ids:
        return []
    packed = pack_dataset(Dataset.from_dict({"input_ids": ids}), row_tokens, strategy="bfd")
    return [{"input_ids": list(r["input_ids"]), "seq_lengths": [int(n) for n in r["seq_lengths"]]} for r in packed]


def real_tokens(rows: list[dict]) -> int:
    """Tokens that are text, not padding, in packed rows."""
    return sum(sum(r["seq_lengths"]) for r in rows)


def for_packed_rows(model):
    """Turn the model's KV cache off for training on packed rows: with ``use_cache`` on, the forward makes a
    cache and transformers then lets every token of a row attend to the texts before it."""
    config = getattr(model, "config", None)
    if config is not None:
        config.use_cache = False
    return model


class FixedRows:
    """The data collator of packed rows: ``[batch, row_tokens]`` whatever the rows hold.

    ``input_ids`` padded with ``pad_id``; ``position_ids`` restarting at 0 at every text (the padding is
    one more span of its own); ``labels`` the ids, except -100 at every text's first token and on the
    padding; no ``attention_mask`` (with one, transformers would let a row's texts see each other). A row
    without ``seq_lengths`` (an evaluation text) is one text."""

    def __init__(self, row_tokens: int, pad_id: int):
        self.row_tokens, self.pad_id = row_tokens, pad_id

    def __call__(self, examples: list[dict]) -> dict:
        import torch

        n, width = len(examples), self.row_tokens
        input_ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        labels = torch.full((n, width), -100, dtype=torch.long)
        position_ids = torch.zeros((n, width), dtype=torch.long)
        for i, example in enumerate(examples):
            ids = list(example["input_ids"])[:width]
            spans = [int(k) for k in (example.get("seq_lengths") or [len(ids)])]
            if sum(spans) != len(ids):
                raise ValueError(f"a packed row of {len(ids)} tokens says its texts have {sum(spans)}")
            if len(ids) < width:
                spans.append(width - len(ids))
            input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            labels[i, : len(ids)] = input_ids[i, : len(ids)]
            position_ids[i] = torch.cat([torch.arange(k) for k in spans])
        labels[position_ids == 0] = -100
        return {"input_ids": input_ids, "position_ids": position_ids, "labels": labels}
