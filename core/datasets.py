"""Dataset versions: import instruction pairs, normalise, validate, dedup, split, mix, store.

A dataset version is immutable: its rows live in Parquet files under ``data/datasets/<id>/``
(``train.parquet`` and ``test.parquet``) and its record (content hash, parent, counts, lineage,
import report, who, when) in DuckDB. Runs and evaluations reference a version by id.
"""
from __future__ import annotations

import codecs
import csv
import functools
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

from core import paths, prompt_format, store

FIELDS = ("instruction", "input", "output")
REQUIRED = ("instruction", "output")
MAX_FIELD_CHARS = 32_000
MAX_LINE_CHARS = 1024**2          # one JSONL line / CSV record; longer ones are rejected unread
MAX_FILE_BYTES = 2 * 1024**3
MAX_ERRORS_LISTED = 1000          # rows past this are still counted, not listed
# Common other names for the three fields, looked for when a row lacks the studio's own name.
ALIASES: dict[str, tuple[str, ...]] = {
    "instruction": ("question", "prompt", "query", "instruction_vi", "cau_hoi", "câu_hỏi", "câu hỏi"),
    "input": ("context", "input_vi", "ngu_canh", "ngữ_cảnh", "ngữ cảnh"),
    "output": ("answer", "response", "completion", "output_vi", "tra_loi", "trả_lời", "trả lời",
               "câu_trả_lời", "câu trả lời"),
}
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u3000]+")
_INVISIBLE = re.compile(r"[\u200b\u200c\u200d\u2060\ufeff]")
_BLANK_LINES = re.compile(r"\n{3,}")
_BOMS = ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))


class DatasetError(ValueError):
    """A problem with a whole file or request, stated in one line."""


@dataclass
class ImportReport:
    rows_read: int = 0
    rows_kept: int = 0
    rows_rejected: int = 0
    duplicates_removed: int = 0
    duplicates_exact: int = 0
    duplicates_normalized: int = 0
    normalized: int = 0
    errors: list[dict] = field(default_factory=list)
    duplicates: list[dict] = field(default_factory=list)
    files: list[dict] = field(default_factory=list)
    columns_mapped: dict[str, str] = field(default_factory=dict)
    bulk: dict[str, Any] = field(default_factory=dict)  # bulk path only: seconds per stage, MB spilled to disk

    def as_dict(self) -> dict:
        extra = {"bulk": dict(self.bulk)} if self.bulk else {}
        return {
            "rows_read": self.rows_read,
            "rows_kept": self.rows_kept,
            "rows_rejected": self.rows_rejected,
            "duplicates_removed": self.duplicates_removed,
            "duplicates_exact": self.duplicates_exact,
            "duplicates_normalized": self.duplicates_normalized,
            "normalized": self.normalized,
            "columns_mapped": dict(self.columns_mapped),
            "files": list(self.files),
            "errors": self.errors,
            "duplicates": self.duplicates,
            **extra,
        }

    def failure(self) -> str | None:
        """Why nothing was kept, in one line (None when something was)."""
        if self.rows_kept:
            return None
        if not self.rows_read:
            names = ", ".join(f["file"] for f in self.files) or "the input"
            return f"{names}: no rows found (the file is empty); nothing was imported"
        return (f"no valid rows were found ({self.rows_rejected} of {self.rows_read} rejected, "
                f"first: line {self.errors[0]['line']}: {self.errors[0]['reason']}); nothing was imported"
                if self.errors else "no valid rows were found; nothing was imported")


def parse_mapping(items: Iterable[str] | dict | None) -> dict[str, str]:
    """``["question=instruction", "answer=output"]`` → {"question": "instruction", ...} (file column → field)."""
    if not items:
        return {}
    pairs = items.items() if isinstance(items, dict) else [_split_map(i) for i in items]
    out: dict[str, str] = {}
    for src, dst in pairs:
        src, dst = str(src).strip(), str(dst).strip()
        if not src:
            continue
        if dst not in FIELDS:
            raise DatasetError(f"column mapping '{src}={dst}': the target must be one of {', '.join(FIELDS)}")
        if dst in out.values():
            raise DatasetError(f"column mapping: two columns are mapped to '{dst}'")
        out[src] = dst
    return out


def _split_map(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise DatasetError(f"column mapping '{item}': write it as FILE_COLUMN=FIELD, e.g. question=instruction")
    src, dst = item.split("=", 1)
    return src, dst


# ── reading ──────────────────────────────────────────────────────────────────


def _open_text(path: Path, encoding: str | None, report: ImportReport) -> tuple[str, str]:
    """The whole file as text, and the encoding used. Without ``encoding``: UTF-8 (with or without a
    BOM), or UTF-16 when it starts with a UTF-16 BOM; anything else is a clear error naming the fix."""
    data = path.read_bytes()
    if encoding:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise DatasetError(f"unknown encoding '{encoding}' (e.g. utf-8, utf-16, cp1258)") from None
        enc = "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding
    else:
        enc = next((name for bom, name in _BOMS if data.startswith(bom)), "utf-8")
    try:
        text = data.decode(enc)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        if encoding:
            raise DatasetError(f"{path.name}: line {line} cannot be read as {encoding} ({exc.reason}); "
                               "check the encoding") from None
        raise DatasetError(
            f"{path.name}: not UTF-8 (line {line}, byte {exc.start}: {exc.reason}); name its encoding "
            "(--encoding cp1258 for Windows-1258, --encoding utf-16) or save it as UTF-8") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    return text, ("utf-8" if enc == "utf-8-sig" and not data.startswith(b"\xef\xbb\xbf") else enc)


def _json_array(text: str, name: str) -> Iterator[tuple[int, Any]]:
    """Elements of a JSON array with the line each starts on."""
    decoder = json.JSONDecoder()
    i = text.index("[") + 1
    n = len(text)
    line, pos = 1, 0

    def line_at(idx: int) -> int:
        nonlocal line, pos
        line += text.count("\n", pos, idx)
        pos = idx
        return line

    while True:
        while i < n and text[i] in " \t\r\n,":
            i += 1
        if i >= n:
            raise DatasetError(f"{name}: the JSON array is not closed (line {line_at(n)})")
        if text[i] == "]":
            return
        try:
            obj, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{name}: invalid JSON at line {exc.lineno} ({exc.msg}); a JSON array cannot be "
                               "read past a syntax error: fix it, or save the rows as JSONL") from None
        yield line_at(i), obj
        i = end


SURROGATE_REASON = "invalid JSON (unpaired surrogate escape)"


def _has_surrogate(obj: Any) -> bool:
    """A \\uD800–\\uDFFF escape without its pair: json.loads takes it, but it is no character (UTF-8
    cannot hold it, Parquet neither)."""
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _jsonl(text: str) -> Iterator[tuple[int, Any]]:
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        if len(line) > MAX_LINE_CHARS:
            yield number, ValueError(f"line too long ({len(line)} characters, limit {MAX_LINE_CHARS})")
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, ValueError(f"invalid JSON ({exc.msg})")
            continue
        if "\\u" in line and _has_surrogate(obj):
            yield number, ValueError(SURROGATE_REASON)
            continue
        yield number, obj


def _csv(text: str) -> Iterator[tuple[int, Any]]:
    csv.field_size_limit(MAX_LINE_CHARS * 4)
    header = text.split("\n", 1)[0]
    # spreadsheets in a Vietnamese locale often save ";"-separated CSV; tab-separated also occurs
    delimiter = max(",;\t", key=lambda d: (header.count(d), d == ","))
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    start = 2  # a record's number is the line it starts on in the file (line 1: the header)
    try:
        for row in reader:
            if None in row:
                row = ValueError(f"{len(reader.fieldnames or [])} columns in the header, more in this row")
            elif all(v is None or not v.strip() for v in row.values()):
                start = reader.line_num + 1
                continue
            yield start, row
            start = reader.line_num + 1
    except csv.Error as exc:
        yield start, ValueError(f"unreadable CSV ({exc})")


def _arrow_rows(tables) -> Iterator[tuple[int, Any]]:
    number = 0
    for table in tables:
        for batch in table.to_batches(10_000):
            for obj in batch.to_pylist():
                number += 1
                yield number, obj


def _hf_folder(path: Path) -> Iterator[tuple[int, Any]]:
    """A folder written by ``datasets``' ``save_to_disk`` (a Dataset, or a DatasetDict of splits),
    read with pyarrow alone (its Arrow files are IPC streams), in split order train, validation, test."""
    import pyarrow as pa

    def split_files(folder: Path) -> list[Path]:
        state = folder / "state.json"
        if state.exists():
            names = [f["filename"] for f in json.loads(state.read_text(encoding="utf-8")).get("_data_files", [])]
            return [folder / n for n in names]
        return sorted(folder.glob("*.arrow"))

    if (path / "dataset_dict.json").exists():
        splits = json.loads((path / "dataset_dict.json").read_text(encoding="utf-8")).get("splits", [])
        order = sorted(splits, key=lambda s: ({"train": 0, "validation": 1, "test": 2}.get(s, 3), s))
        files = [f for s in order for f in split_files(path / s)]
    else:
        files = split_files(path)
    if not files:
        raise DatasetError(f"{path.name}: a folder must be one saved by `datasets` (save_to_disk): no .arrow files")

    def tables():
        for f in files:
            with pa.memory_map(str(f)) as source:
                try:
                    yield pa.ipc.open_stream(source).read_all()
                except pa.ArrowInvalid:
                    yield pa.ipc.open_file(source).read_all()

    return _arrow_rows(tables())


def _records(path: Path, encoding: str | None, report: ImportReport) -> Iterator[tuple[int, Any]]:
    """(line or row number counted from 1, raw record or an Exception) for every row in the file."""
    info = {"file": path.name}
    report.files.append(info)
    if path.is_dir():
        info["format"] = "datasets folder"
        yield from _hf_folder(path)
        return
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        info["format"] = "parquet"
        number = 0
        for batch in pq.ParquetFile(path).iter_batches(10_000):
            for obj in batch.to_pylist():
                number += 1
                yield number, obj
        return
    if suffix not in (".jsonl", ".ndjson", ".json", ".csv"):
        raise DatasetError(f"{path.name}: unsupported file type '{suffix}' "
                           "(JSONL, JSON, CSV, Parquet, or a folder saved by `datasets`)")
    text, enc = _open_text(path, encoding, report)
    info["encoding"] = enc
    if suffix == ".csv":
        info["format"] = "csv"
        yield from _csv(text)
    elif text.lstrip().startswith("["):
        info["format"] = "json array"
        yield from _json_array(text, path.name)
    else:
        info["format"] = "jsonl"
        yield from _jsonl(text)


def clean_text(text: str) -> str:
    """NFC, unified line breaks, no zero-width characters, collapsed runs of spaces, trimmed lines."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _INVISIBLE.sub("", text)
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def _column_for(raw: dict, name: str, mapping: dict[str, str]) -> str | None:
    """The row's column holding field ``name``: mapped explicitly, the field's own name, or an alias."""
    for src, dst in mapping.items():
        if dst == name and src in raw:
            return src
    if name in raw and name not in mapping:
        return name
    lowered = {str(k).strip().lower(): k for k in raw if k not in mapping}
    for alias in ALIASES[name]:
        if alias in lowered:
            return lowered[alias]
    return None


def _validate(raw: Any, mapping: dict[str, str] | None = None,
              report: ImportReport | None = None) -> tuple[dict | None, str | None]:
    if isinstance(raw, Exception):
        return None, str(raw)
    if not isinstance(raw, dict):
        return None, "not an object with instruction, input and output"
    mapping = mapping or {}
    row, used = {}, {}
    for name in FIELDS:
        column = _column_for(raw, name, mapping)
        value = raw.get(column) if column is not None else None
        if value is None:
            if name in REQUIRED:
                return None, f"missing field '{name}'"
            value = ""
        if not isinstance(value, str):
            return None, f"field '{column}' is not text ({type(value).__name__})"
        if len(value) > MAX_FIELD_CHARS:
            return None, f"field '{column}' is too long ({len(value)} characters, limit {MAX_FIELD_CHARS})"
        row[name] = value
        if column is not None and column != name:
            used[str(column)] = name
    for name in REQUIRED:
        if not clean_text(row[name]):
            return None, f"field '{_column_for(raw, name, mapping)}' is empty"
    if report is not None:
        report.columns_mapped.update(used)
    return row, None


def _size(n: int) -> str:
    for unit, scale in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n} bytes"


def read_pairs(path: Path, report: ImportReport, source: str, *, encoding: str | None = None,
               mapping: dict[str, str] | None = None) -> list[dict]:
    """Every row of one file: good rows cleaned (NFC, whitespace) and kept, bad rows in ``report.errors``."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    size = (sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir()
            else path.stat().st_size)
    if size > MAX_FILE_BYTES:
        raise DatasetError(f"{path.name}: {_size(size)} is over the import limit of {_size(MAX_FILE_BYTES)}; "
                           "split it into smaller files")
    kept = []
    for number, raw in _records(path, encoding, report):
        report.rows_read += 1
        row, reason = _validate(raw, mapping, report)
        if reason:
            report.rows_rejected += 1
            if len(report.errors) < MAX_ERRORS_LISTED:
                report.errors.append({"file": path.name, "line": number, "reason": reason})
            continue
        cleaned = {k: clean_text(v) for k, v in row.items()}
        if cleaned != row:
            report.normalized += 1
        cleaned["source"] = source
        cleaned["_raw"] = tuple(row[k] for k in FIELDS)
        cleaned["_at"] = (path.name, number)
        kept.append(cleaned)
    return kept


def dedup(rows: list[dict], report: ImportReport) -> list[dict]:
    """Drop exact copies (the same text as read) and normalised copies (the same after NFC, whitespace
    clean-up and case folding: an NFD copy of an NFC row is one); the first occurrence is kept."""
    exact: dict[tuple, tuple] = {}
    normal: dict[tuple, tuple] = {}
    out = []
    for row in rows:
        raw = row.pop("_raw", None) or tuple(row[k] for k in FIELDS)
        at = row.pop("_at", None)
        key = tuple(row[k].casefold() for k in FIELDS)
        first = exact.get(raw) or normal.get(key)
        if first is not None:
            kind = "exact" if raw in exact else "normalized"
            if kind == "exact":
                report.duplicates_exact += 1
            else:
                report.duplicates_normalized += 1
            report.duplicates_removed += 1
            if at and len(report.duplicates) < MAX_ERRORS_LISTED:
                report.duplicates.append({"file": at[0], "line": at[1], "kind": kind,
                                          "of": {"file": first[0], "line": first[1]} if first[0] else None})
            continue
        exact[raw] = normal[key] = at or (None, None)
        out.append(row)
    return out


# ── versions ─────────────────────────────────────────────────────────────────


def content_hash(train: list[dict], test: list[dict]) -> str:
    h = hashlib.sha256()
    for split, rows in (("train", train), ("test", test)):
        for row in rows:
            h.update(json.dumps([split] + [row[k] for k in FIELDS], ensure_ascii=False).encode())
    return h.hexdigest()


def test_count(n_rows: int, test_fraction: float) -> int:
    """How many of ``n_rows`` kept rows go to the test split (the same for both import engines)."""
    if not 0 < test_fraction < 1:
        raise DatasetError("the test fraction must be between 0 and 1")
    return max(1, round(n_rows * test_fraction)) if n_rows > 1 else 0


def split_rows(rows: list[dict], test_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    n_test = test_count(len(rows), test_fraction)
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
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


def _new_version_folder() -> tuple[str, Path]:
    version_id = "ds-" + uuid.uuid4().hex[:10]
    folder = paths.datasets_dir() / version_id
    folder.mkdir(parents=True)
    return version_id, folder


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

    version_id, folder = _new_version_folder()
    for split, rows in (("train", train), ("test", test)):
        cols = {k: [r[k] for r in rows] for k in FIELDS + ("source",)}
        pq.write_table(pa.table(cols), folder / f"{split}.parquet")
    return _record_version(version_id, folder, name, content_hash=content_hash(train, test),
                           rows_train=len(train), rows_test=len(test), source=source, parent_id=parent_id,
                           lineage=lineage, report=report, created_by=created_by)


def _record_version(version_id: str, folder: Path, name: str, *, content_hash: str, rows_train: int,
                    rows_test: int, source: str, parent_id: str | None, lineage: dict, report: dict,
                    created_by: str | None) -> dict:
    """The version's record and audit entry, once its ``train.parquet`` and ``test.parquet`` are in
    ``folder`` (written by pyarrow here, or by DuckDB's COPY in core.bulk_import)."""
    record = {
        "id": version_id,
        "name": name,
        "parent_id": parent_id,
        "content_hash": content_hash,
        "source": source,
        "rows_total": rows_train + rows_test,
        "rows_train": rows_train,
        "rows_test": rows_test,
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
    encoding: str | None = None,
    mapping: dict[str, str] | Iterable[str] | None = None,
    source: str = "import",
    extra_lineage: dict | None = None,
    bulk: bool | None = None,
) -> tuple[dict | None, ImportReport]:
    """Import one or more files (or ``datasets`` folders) as a new dataset version.

    ``encoding`` names the files' text encoding when it is not UTF-8 (e.g. ``cp1258``, ``utf-16``);
    ``mapping`` maps file columns to fields (``{"question": "instruction"}`` or ``["question=instruction"]``);
    without it, common aliases (question/answer, prompt/response, …) are recognised and reported.
    ``bulk``: True runs the import in DuckDB SQL (core.bulk_import), False in Python; None (default)
    picks DuckDB when a JSONL file is over ``bulk_import.BULK_THRESHOLD_BYTES``.
    Returns (version or None when no row was kept, report)."""
    files = [Path(f) for f in files]
    if not name or not name.strip():
        raise DatasetError("a dataset version needs a name")
    mapping = parse_mapping(mapping)
    from core import bulk_import

    if bulk or (bulk is None and any(bulk_import.wants_bulk(f, encoding) for f in files)):
        return bulk_import.import_bulk(
            files, name.strip(), test_fraction=test_fraction, seed=seed, general_version=general_version,
            general_ratio=general_ratio, created_by=created_by, encoding=encoding, mapping=mapping,
            source=source, extra_lineage=extra_lineage)
    report = ImportReport()
    rows: list[dict] = []
    for f in files:
        rows.extend(read_pairs(f, report, source=f.stem, encoding=encoding, mapping=mapping))
    rows = dedup(rows, report)
    report.rows_kept = len(rows)
    if not rows:
        return None, report
    train, test = split_rows(rows, test_fraction, seed) if len(rows) > 1 else (rows, [])
    lineage: dict[str, Any] = {"files": [str(f) for f in files], "test_fraction": test_fraction, "seed": seed,
                               "encoding": encoding, "mapping": mapping or None}
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


def derive_version(parent: dict, train: list[dict], test: list[dict], *, source: str, lineage: dict,
                   created_by: str | None) -> dict:
    """A new version made from ``parent`` (an edit): same name, ``parent_id`` set, lineage kept."""
    report = {"rows_kept": len(train) + len(test), "derived_from": parent["id"]}
    return _write_version(parent["name"], train, test, source=source, parent_id=parent["id"],
                          lineage=lineage, report=report, created_by=created_by)


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


def take_rows(version_id: str, split: str, indices: list[int]) -> list[dict]:
    """Only the rows at ``indices`` (from 0) of one split, without turning the whole split into Python."""
    import pyarrow.parquet as pq

    if not indices:
        return []
    version = get_version(version_id)
    table = pq.read_table(Path(version["path"]) / f"{split}.parquet", columns=list(FIELDS) + ["source"])
    return table.take(indices).to_pylist()


SAMPLE_DOMAINS = {
    # name: (files, what it is)
    "sample-cskh-hopdong": (["customer_care.jsonl", "contracts.jsonl"], "customer care + contract clauses"),
    "sample-ghichu-noibo": (["internal_notes.jsonl"], "internal notes rewritten in full (fixed style)"),
}
DEMO_SAMPLE = "sample-ghichu-noibo"


def import_samples(created_by: str | None = "setup") -> dict:
    """The sample data shipped in data/samples/: general Vietnamese, then each sample domain mixed with 5 %
    of it. Returns the demo domain, ``sample-ghichu-noibo`` (internal notes in the team's shorthand,
    rewritten in full): its answers follow one fixed style, so the default model passes the evaluation
    gate on it with the 40-step CPU preset ``config.DEMO_PRESET`` (README, Deploy). It is imported last, so that it is the
    newest version (the one the Train page offers first).

    The samples are written by the ViTune team itself, so every version is recorded as reviewed by
    construction (core.review.mark_bundled) and trains without a review sample."""
    from core import review

    samples = paths.samples_dir()
    general = find_by_name("general-vi")
    if general is None:
        general, _ = import_files([samples / "general_vi.jsonl"], "general-vi", created_by=created_by)
    review.mark_bundled(general["id"])
    domains = {}
    for name, (files, _) in SAMPLE_DOMAINS.items():
        domain = find_by_name(name)
        if domain is None:
            domain, _ = import_files([samples / f for f in files], name, general_version=general["id"],
                                     general_ratio=0.05, created_by=created_by)
        review.mark_bundled(domain["id"])
        domains[name] = domain
    return domains[DEMO_SAMPLE]


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


def token_stats(version_id: str, base_model: str | None = None, fmt: str = "chat",
                max_seq_length: int = 2048, split: str | None = None) -> dict:
    """Tokens per training text (prompt format applied, EOS counted) with the base model's tokenizer,
    and how many texts exceed ``max_seq_length`` (the trainer would cut them)."""
    from core import prompt_format

    model = Path(base_model) if base_model else paths.default_base_model_dir()
    if not (model / "tokenizer.json").exists():
        raise DatasetError(f"{model}: no tokenizer.json in that folder (token lengths need a local base model)")
    tok = _fast_tokenizer(str(model))
    rows = []
    for sp in ([split] if split else ["train", "test"]):
        rows.extend(load_rows(version_id, sp))
    texts = [prompt_format.render_training_text(r, fmt, tok) for r in rows]
    lengths = [n + 1 for n in tok.count(texts)]  # + the EOS the trainer appends
    over = sum(n > max_seq_length for n in lengths)
    return {"tokenizer": model.name, "format": fmt, "max_seq_length": max_seq_length, "lengths": lengths,
            "rows": len(lengths), "over": over, "share_over": over / len(lengths) if lengths else 0.0,
            "max": max(lengths, default=0), "mean": sum(lengths) / len(lengths) if lengths else 0.0}


def field_stats(version_id: str) -> list[dict]:
    """Characters and words of each field (mean, max, empty count), for the per-field table."""
    rows = load_rows(version_id, "train") + load_rows(version_id, "test")
    out = []
    for k in FIELDS:
        chars = [len(r[k]) for r in rows]
        words = [len(r[k].split()) for r in rows]
        out.append({"field": k, "mean_chars": round(sum(chars) / len(chars), 1) if chars else 0,
                    "max_chars": max(chars, default=0), "mean_words": round(sum(words) / len(words), 1) if words else 0,
                    "max_words": max(words, default=0), "empty": sum(c == 0 for c in chars)})
    return out


def lineage_chain(version_id: str) -> list[dict]:
    """The version and its ancestors, newest first."""
    chain, seen = [], set()
    current: str | None = version_id
    while current and current not in seen:
        seen.add(current)
        v = get_version(current)
        chain.append(v)
        current = v["parent_id"]
    return chain
