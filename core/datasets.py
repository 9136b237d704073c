"""Dataset versions: import instruction pairs, normalise, validate, dedup, split, mix, store.

A dataset version is immutable: its rows live in Parquet files under ``data/datasets/<id>/``
(``train.parquet`` and ``test.parquet``) and its record (content hash, parent, counts, lineage,
import report, who, when) in DuckDB. Runs and evaluations reference a version by id.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import random
import re
import unicodedata
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from core import paths, store

FIELDS = ("instruction", "input", "output")
REQUIRED = ("instruction", "output")
MAX_FIELD_CHARS = 32_000
MAX_FILE_BYTES = 2 * 1024**3
_SPACES = re.compile(r"[ \t\u00a0]+")
_BLANK_LINES = re.compile(r"\n{3,}")


class DatasetError(ValueError):
    """A problem with a whole file or request, stated in one line."""


@dataclass
class ImportReport:
    rows_read: int = 0
    rows_kept: int = 0
    rows_rejected: int = 0
    duplicates_removed: int = 0
    normalized: int = 0
    errors: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "rows_read": self.rows_read,
            "rows_kept": self.rows_kept,
            "rows_rejected": self.rows_rejected,
            "duplicates_removed": self.duplicates_removed,
            "normalized": self.normalized,
            "errors": self.errors,
        }


# ── reading ──────────────────────────────────────────────────────────────────


def _records(path: Path) -> Iterator[tuple[int, Any]]:
    """(line or row number counted from 1, raw record or an Exception) for every row in the file."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        with path.open("r", encoding="utf-8-sig", newline="") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as exc:
                    yield number, ValueError(f"invalid JSON ({exc.msg})")
    elif suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8-sig"))
        if not isinstance(data, list):
            raise DatasetError(f"{path.name}: a .json file must hold an array of objects")
        for number, obj in enumerate(data, start=1):
            yield number, obj
    elif suffix == ".csv":
        with path.open("r", encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            # a record's number is the line it starts on in the file
            start = reader.line_num + 1
            for row in reader:
                yield start, row
                start = reader.line_num + 1
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        for number, obj in enumerate(table.to_pylist(), start=1):
            yield number, obj
    else:
        raise DatasetError(f"{path.name}: unsupported file type '{suffix}' (JSONL, JSON, CSV or Parquet)")


def clean_text(text: str) -> str:
    """NFC, unified line breaks, collapsed runs of spaces, trimmed lines."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def _validate(raw: Any) -> tuple[dict | None, str | None]:
    if isinstance(raw, Exception):
        return None, str(raw)
    if not isinstance(raw, dict):
        return None, "not an object with instruction, input and output"
    row = {}
    for name in FIELDS:
        value = raw.get(name)
        if value is None:
            if name in REQUIRED:
                return None, f"missing field '{name}'"
            value = ""
        if not isinstance(value, str):
            return None, f"field '{name}' is not text ({type(value).__name__})"
        if len(value) > MAX_FIELD_CHARS:
            return None, f"field '{name}' is too long ({len(value)} characters, limit {MAX_FIELD_CHARS})"
        row[name] = value
    for name in REQUIRED:
        if not clean_text(row[name]):
            return None, f"field '{name}' is empty"
    return row, None


def read_pairs(path: Path, report: ImportReport, source: str) -> list[dict]:
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise DatasetError(f"{path.name}: larger than the {MAX_FILE_BYTES // 1024**3} GB limit")
    kept = []
    try:
        for number, raw in _records(path):
            report.rows_read += 1
            row, reason = _validate(raw)
            if reason:
                report.rows_rejected += 1
                report.errors.append({"file": path.name, "line": number, "reason": reason})
                continue
            cleaned = {k: clean_text(v) for k, v in row.items()}
            if cleaned != row:
                report.normalized += 1
            cleaned["source"] = source
            kept.append(cleaned)
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"{path.name}: not UTF-8 (byte {exc.start}: {exc.reason}); save it as UTF-8 first"
        ) from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path.name}: invalid JSON at line {exc.lineno} ({exc.msg})") from None
    return kept


def dedup(rows: list[dict], report: ImportReport) -> list[dict]:
    seen: set[tuple] = set()
    out = []
    for row in rows:
        key = tuple(row[k].casefold() for k in FIELDS)
        if key in seen:
            report.duplicates_removed += 1
            continue
        seen.add(key)
        out.append(row)
    return out


# ── versions ─────────────────────────────────────────────────────────────────


def content_hash(train: list[dict], test: list[dict]) -> str:
    h = hashlib.sha256()
    for split, rows in (("train", train), ("test", test)):
        for row in rows:
            h.update(json.dumps([split] + [row[k] for k in FIELDS], ensure_ascii=False).encode())
    return h.hexdigest()


def split_rows(rows: list[dict], test_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    if not 0 < test_fraction < 1:
        raise DatasetError("the test fraction must be between 0 and 1")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_test = max(1, round(len(rows) * test_fraction)) if len(rows) > 1 else 0
    test = [rows[i] for i in sorted(order[:n_test])]
    train = [rows[i] for i in sorted(order[n_test:])]
    return train, test


def mix_general(train: list[dict], general: list[dict], ratio: float, seed: int) -> list[dict]:
    """Add general Vietnamese pairs so that they make up ``ratio`` of the training split."""
    if not 0 < ratio < 0.5:
        raise DatasetError("the general-data share must be between 0 and 0.5 (the guide: 5–10 %)")
    want = round(len(train) * ratio / (1 - ratio))
    if want > len(general):
        raise DatasetError(f"{want} general pairs needed for {ratio:.0%}, the general version has {len(general)}")
    picked = random.Random(seed).sample(general, want)
    return train + [dict(row, source=row.get("source") or "general") for row in picked]


def _write_version(
    name: str,
    train: list[dict],
    test: list[dict],
    *,
    source: str,
    parent_id: str | None,
    lineage: dict,
    report: dict,
    created_by: str | None,
) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    version_id = "ds-" + uuid.uuid4().hex[:10]
    folder = paths.datasets_dir() / version_id
    folder.mkdir(parents=True)
    for split, rows in (("train", train), ("test", test)):
        cols = {k: [r[k] for r in rows] for k in FIELDS + ("source",)}
        pq.write_table(pa.table(cols), folder / f"{split}.parquet")
    record = {
        "id": version_id,
        "name": name,
        "parent_id": parent_id,
        "content_hash": content_hash(train, test),
        "source": source,
        "rows_total": len(train) + len(test),
        "rows_train": len(train),
        "rows_test": len(test),
        "path": str(folder),
        "lineage": json.dumps(lineage, ensure_ascii=False),
        "report": json.dumps(report, ensure_ascii=False),
        "created_by": created_by,
        "created_at": store.now(),
    }
    with store.connect() as con:
        cols = ", ".join(record)
        con.execute(
            f"INSERT INTO dataset_versions ({cols}) VALUES ({', '.join('?' * len(record))})",
            list(record.values()),
        )
    store.audit("dataset.created", version_id, created_by, name=name, rows=record["rows_total"])
    return record


def import_files(
    files: Iterable[str | Path],
    name: str,
    *,
    test_fraction: float = 0.1,
    seed: int = 42,
    general_version: str | None = None,
    general_ratio: float = 0.05,
    created_by: str | None = None,
    source: str = "import",
    extra_lineage: dict | None = None,
) -> tuple[dict | None, ImportReport]:
    """Import one or more files as a new dataset version. Returns (version or None, report)."""
    files = [Path(f) for f in files]
    if not name or not name.strip():
        raise DatasetError("a dataset version needs a name")
    report = ImportReport()
    rows: list[dict] = []
    for f in files:
        rows.extend(read_pairs(f, report, source=f.stem))
    rows = dedup(rows, report)
    report.rows_kept = len(rows)
    if not rows:
        return None, report
    train, test = split_rows(rows, test_fraction, seed) if len(rows) > 1 else (rows, [])
    lineage: dict[str, Any] = {"files": [str(f) for f in files], "test_fraction": test_fraction, "seed": seed}
    if general_version:
        general = load_rows(general_version, "train") + load_rows(general_version, "test")
        before = len(train)
        train = mix_general(train, general, general_ratio, seed)
        lineage["general"] = {"version": general_version, "ratio": general_ratio, "rows": len(train) - before}
    lineage.update(extra_lineage or {})
    version = _write_version(
        name.strip(),
        train,
        test,
        source=source,
        parent_id=None,
        lineage=lineage,
        report=report.as_dict(),
        created_by=created_by,
    )
    return version, report


def list_versions() -> list[dict]:
    return store.rows("SELECT * FROM dataset_versions ORDER BY created_at DESC")


def get_version(version_id: str) -> dict:
    got = store.one("SELECT * FROM dataset_versions WHERE id = ?", [version_id])
    if not got:
        raise DatasetError(f"no dataset version '{version_id}'")
    return got


def find_by_name(name: str) -> dict | None:
    return store.one("SELECT * FROM dataset_versions WHERE name = ? ORDER BY created_at DESC LIMIT 1", [name])


def load_rows(version_id: str, split: str = "train") -> list[dict]:
    import pyarrow.parquet as pq

    version = get_version(version_id)
    if split not in ("train", "test"):
        raise DatasetError(f"unknown split '{split}' (train or test)")
    return pq.read_table(Path(version["path"]) / f"{split}.parquet").to_pylist()


def import_samples(created_by: str | None = "setup") -> dict:
    """The sample data shipped in data/samples/: general Vietnamese, then the two domains mixed with 5 %."""
    samples = paths.samples_dir()
    general = find_by_name("general-vi")
    if general is None:
        general, _ = import_files([samples / "general_vi.jsonl"], "general-vi", created_by=created_by)
    domain = find_by_name("sample-cskh-hopdong")
    if domain is None:
        domain, _ = import_files(
            [samples / "customer_care.jsonl", samples / "contracts.jsonl"],
            "sample-cskh-hopdong",
            general_version=general["id"],
            general_ratio=0.05,
            created_by=created_by,
        )
    return domain


def save_upload(filename: str, data: bytes) -> Path:
    """Keep an uploaded file under data/uploads/ so that its import can be repeated."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(filename).name) or "upload"
    folder = paths.data_dir() / "uploads" / uuid.uuid4().hex[:8]
    folder.mkdir(parents=True)
    target = folder / safe
    target.write_bytes(data)
    return target


def length_stats(version_id: str) -> "list[dict]":
    """Per-row lengths (words) of each field, for the Datasets page's charts."""
    out = []
    for split in ("train", "test"):
        for row in load_rows(version_id, split):
            out.append({"split": split, "source": row.get("source"),
                        **{f"{k}_words": len(row[k].split()) for k in FIELDS}})
    return out
