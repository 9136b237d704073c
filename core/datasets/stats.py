"""What the Datasets page shows about a version: lengths of each field, token counts in the
training prompt format, per-field statistics.

A version never changes, so each of these is computed once, on first view, and kept in the
version's folder (``stats/*.json``) and in this process's memory: a rerun of the page, another tab or
another browser reads it back instead of reading every row again.

Each is computed in the web process, so none holds a version in memory: its rows are read ``BATCH_ROWS`` at
a time (a column of a batch at a time becomes Python strings), and the per-row charts (words per field,
tokens per text) are drawn from at most ``CHART_ROWS`` rows spread evenly over the version.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable

from core import base_models, paths, prompt_format
from core.datasets.rows import FIELDS, DatasetError
from core.datasets.versions import get_version

_memo: "OrderedDict[str, dict]" = OrderedDict()
_memo_lock = threading.Lock()
MEMO_ENTRIES = 64


def _folder(version: str | dict) -> Path:
    """A version's folder, from its record (no query) or its id."""
    return Path((version if isinstance(version, dict) else get_version(version))["path"])


BATCH_ROWS = 10_000      # rows read at a time
CHART_ROWS = 100_000     # rows a per-row chart (and the token count) is drawn from, spread evenly over a version


def _batches(folder: Path, splits: tuple[str, ...] = ("train", "test"), columns: list[str] | None = None):
    """(split, index of the batch's first row in the version, batch) for each ``BATCH_ROWS`` rows of ``splits``."""
    import pyarrow.parquet as pq

    start = 0
    for split in splits:
        for batch in pq.ParquetFile(folder / f"{split}.parquet").iter_batches(batch_size=BATCH_ROWS, columns=columns):
            yield split, start, batch
            start += batch.num_rows


def _total_rows(folder: Path, splits: tuple[str, ...] = ("train", "test")) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(folder / f"{split}.parquet").metadata.num_rows for split in splits)


def _picked(start: int, n: int, every: int) -> list[int]:
    """Positions (within a batch starting at row ``start`` of ``n`` rows) of the rows a chart draws: every
    ``every``-th row of the version."""
    first = (-start) % every
    return list(range(first, n, every))


def _kept(folder: Path, name: str, compute: Callable[[], dict]) -> dict:
    """``compute()``'s result for this version, computed once and kept (memory, then ``stats/NAME.json``)."""
    path = folder / "stats" / f"{name}.json"
    key = str(path)
    with _memo_lock:
        if key in _memo:
            _memo.move_to_end(key)
            return _memo[key]
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        value = compute()
        try:
            path.parent.mkdir(exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}-{threading.get_ident()}.tmp")
            tmp.write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only folder: computed again next time, shown all the same
    with _memo_lock:
        _memo[key] = value
        while len(_memo) > MEMO_ENTRIES:
            _memo.popitem(last=False)
    return value


def length_stats(version: str | dict) -> dict:
    """Per-row lengths (words) of each field, as columns (``split``, ``source``, ``instruction_words``, …),
    for the Datasets page's charts: of every row, or of ``CHART_ROWS`` rows spread evenly over a larger version."""
    folder = _folder(version)

    def compute() -> dict:
        every = max(1, -(-_total_rows(folder) // CHART_ROWS))
        out: dict[str, list] = {"split": [], "source": [], **{f"{k}_words": [] for k in FIELDS}}
        for split, start, batch in _batches(folder, columns=list(FIELDS) + ["source"]):
            at = _picked(start, batch.num_rows, every)
            if not at:
                continue
            batch = batch.take(at) if len(at) < batch.num_rows else batch
            out["split"].extend([split] * batch.num_rows)
            out["source"].extend(batch.column("source").to_pylist())
            for k in FIELDS:
                out[f"{k}_words"].extend(len(text.split()) for text in batch.column(k).to_pylist())
        return out

    return _kept(folder, "lengths", compute)


class _FastTokenizer(prompt_format.TemplateTokenizer):
    """A local model's tokenizer.json and chat template, without loading transformers (seconds faster);
    enough to count the tokens of the training text exactly as the trainer renders it."""

    def __init__(self, folder: Path):
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8")) \
            if (folder / "tokenizer_config.json").exists() else {}
        template = config.get("chat_template")
        if (folder / "chat_template.jinja").exists():
            template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
        if not template and "gemma" in folder.name.lower():
            template = prompt_format.GEMMA_CHAT_TEMPLATE
        super().__init__(template, config.get("bos_token") or "<bos>")

    def count(self, texts: list[str]) -> list[int]:
        return [len(e.ids) for e in self.tok.encode_batch(texts, add_special_tokens=True)]


@functools.lru_cache(maxsize=4)
def _fast_tokenizer(folder: str) -> _FastTokenizer:
    return _FastTokenizer(Path(folder))


def token_stats(version: str | dict, base_model: str | None = None, fmt: str = "chat",
                max_seq_length: int = 2048, split: str | None = None) -> dict:
    """Tokens per training text (prompt format applied, EOS counted) with the base model's tokenizer,
    and how many texts exceed ``max_seq_length`` (the trainer would cut them). The lengths are kept
    per version, tokenizer (its files' size and time) and format; ``max_seq_length`` only changes the count."""
    try:
        base_models.require_allowed(base_model)   # a name a browser sent: no tokenizer is read from any other folder
    except ValueError as exc:
        raise DatasetError(str(exc)) from None
    model = Path(base_model) if base_model else paths.default_base_model_dir()
    tokenizer_file = model / "tokenizer.json"
    if not tokenizer_file.exists():
        raise DatasetError(f"{model}: no tokenizer.json in that folder (token lengths need a local base model)")
    folder = _folder(version)
    info = tokenizer_file.stat()
    which = hashlib.sha1(f"{model.resolve()}|{info.st_size}|{info.st_mtime_ns}".encode()).hexdigest()[:12]
    splits = (split,) if split else ("train", "test")

    def compute() -> dict:
        tok = _fast_tokenizer(str(model))
        every = max(1, -(-_total_rows(folder, splits) // CHART_ROWS))
        lengths: list[int] = []
        for _split, start, batch in _batches(folder, splits, columns=list(FIELDS)):
            at = _picked(start, batch.num_rows, every)
            if at:
                rows = (batch.take(at) if len(at) < batch.num_rows else batch).to_pylist()
                texts = [prompt_format.render_training_text(r, fmt, tok) for r in rows]
                lengths.extend(n + 1 for n in tok.count(texts))   # + the EOS the trainer appends
        return {"tokenizer": model.name, "format": fmt, "lengths": lengths}

    kept = _kept(folder, f"tokens-{fmt}-{'-'.join(splits)}-{which}", compute)
    lengths = kept["lengths"]
    over = sum(n > max_seq_length for n in lengths)
    return {"tokenizer": kept["tokenizer"], "format": fmt, "max_seq_length": max_seq_length, "lengths": lengths,
            "rows": len(lengths), "over": over, "share_over": over / len(lengths) if lengths else 0.0,
            "max": max(lengths, default=0), "mean": sum(lengths) / len(lengths) if lengths else 0.0}


def field_stats(version: str | dict) -> list[dict]:
    """Characters and words of each field (mean, max, empty count), for the per-field table: of every row,
    counted with Arrow compute a batch at a time."""
    folder = _folder(version)

    def compute() -> dict:
        sums = {k: {"rows": 0, "chars": 0, "words": 0, "max_chars": 0, "max_words": 0, "empty": 0} for k in FIELDS}
        for _split, _start, batch in _batches(folder, columns=list(FIELDS)):
            for k in FIELDS:
                texts = batch.column(k).to_pylist()   # one column of one batch at a time
                chars = [len(t) for t in texts]
                words = [len(t.split()) for t in texts]
                del texts
                got = sums[k]
                got["rows"] += len(chars)
                got["chars"] += sum(chars)
                got["words"] += sum(words)
                got["max_chars"] = max(got["max_chars"], max(chars, default=0))
                got["max_words"] = max(got["max_words"], max(words, default=0))
                got["empty"] += sum(c == 0 for c in chars)
        out = []
        for k in FIELDS:
            got = sums[k]
            n = got["rows"]
            out.append({"field": k, "mean_chars": round(got["chars"] / n, 1) if n else 0, "max_chars": got["max_chars"],
                        "mean_words": round(got["words"] / n, 1) if n else 0, "max_words": got["max_words"],
                        "empty": got["empty"]})
        return {"fields": out}

    return _kept(folder, "fields", compute)["fields"]
