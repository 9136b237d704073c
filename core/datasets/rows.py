"""Instruction pairs as read from files: parse, validate, clean, de-duplicate, split and mix.

Nothing here touches the studio database: ``core.datasets.importer`` (the Python path) and
``core.datasets.bulk`` (the DuckDB SQL path) share these rules, and ``core.datasets.versions``
stores what they keep. A row is a dict of ``instruction``, ``input``, ``output`` (and ``source``).
"""
from __future__ import annotations

import codecs
import csv
import hashlib
import io
import itertools
import json
import random
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from core.i18n import M

FIELDS = ("instruction", "input", "output")
REQUIRED = ("instruction", "output")
MAX_FIELD_CHARS = 32_000
MAX_LINE_CHARS = 1024**2          # one JSONL line / CSV record; longer ones are rejected unread
MAX_FILE_BYTES = 2 * 1024**3
MAX_ROWS = 20_000_000             # rows of one file (as many as a 2 GiB text file holds): a Parquet file's metadata
                                  # says how many it has before one is read
MAX_TEXT_BYTES = MAX_FILE_BYTES   # what the columns an import reads of a Parquet file may decode to: it compresses,
                                  # and 2 KB of it (a dictionary of three values, 200,000 indices) decode to 22 GB
PARQUET_BATCH_BYTES = 64 * 1024**2   # the decoded text of a Parquet file read at a time
MAX_ERRORS_LISTED = 1000          # rows past this are still counted, not listed
# a text field holding U+0000 is not text a person wrote (the bulk path's SQL gives the same reason)
NUL_REASON = "contains NUL characters (binary data, or a UTF-16 file without its byte-order mark)"


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


class EncodingError(DatasetError):
    """A file that cannot be read in the encoding tried. ``problem`` says where; ``str()`` adds the fix in
    the CLI's words (``--encoding``), ``for_page()`` in the Datasets page's (its Encoding control)."""

    def __init__(self, problem: str, named: bool):
        self.problem, self.named = problem, named
        super().__init__(problem + ("; check the encoding" if named else
                                    "; name its encoding (--encoding cp1258 for Windows-1258, --encoding utf-16) "
                                    "or save it as UTF-8"))

    def for_page(self) -> str:
        return self.problem + ("; choose another one under Encoding" if self.named else
                               "; choose its encoding under Encoding (Windows-1258 or UTF-16) or save it as UTF-8")


STREAM_BYTES = 64 * 1024**2       # text files larger than this are read line by line, in bounded memory


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
    sizes: dict[str, int] = field(default_factory=dict)  # bytes of each file read (not in the report)

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

    def rejected(self) -> str | None:
        """Beside the rows kept, what was rejected, in one line naming the first rejected row (None when
        nothing was, or when nothing was kept: ``failure`` says why)."""
        if not self.rows_kept or not self.rows_rejected:
            return None
        if not self.errors:
            return M("{rejected} of {read} rows were rejected; the valid rows were kept",
                     rejected=self.rows_rejected, read=self.rows_read)
        first = self.errors[0]
        return M("{rejected} of {read} rows were rejected (first: {file} line {line}: {reason}); the valid rows "
                 "were kept", rejected=self.rows_rejected, read=self.rows_read, file=first["file"], line=first["line"],
                 reason=first["reason"])

    def failure(self) -> str | None:
        """Why nothing was kept, in one line (None when something was)."""
        if self.rows_kept:
            return None
        if not self.rows_read:
            names = ", ".join(f["file"] for f in self.files)
            if self.sizes and not any(self.sizes.values()):
                return M("{files}: no rows found (the file is empty); nothing was imported", files=names or M("the input"))
            return M("{files}: no rows found (nothing but a header or blank lines); nothing was imported",
                     files=names or M("the input"))
        if not self.errors:
            return M("no valid rows were found; nothing was imported")
        first = self.errors[0]
        return M("no valid rows were found ({rejected} of {read} rejected, first: {file} line {line}: {reason}); "
                 "nothing was imported", rejected=self.rows_rejected, read=self.rows_read, file=first["file"],
                 line=first["line"], reason=first["reason"])


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
        raise _decode_error(path, encoding, line, exc.start, exc.reason) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    return text, ("utf-8" if enc == "utf-8-sig" and not data.startswith(b"\xef\xbb\xbf") else enc)


def _decode_error(path: Path, encoding: str | None, line: int, byte: int, reason: str) -> EncodingError:
    if encoding:
        return EncodingError(f"{path.name}: line {line} cannot be read as {encoding} ({reason})", True)
    return EncodingError(f"{path.name}: not UTF-8 (line {line}, byte {byte}: {reason})", False)


def _text_encoding(path: Path, encoding: str | None, head: bytes) -> str:
    """The codec a text file is read with: the named one (UTF-8 with an optional BOM), else UTF-8, or
    UTF-16 when the file starts with a UTF-16 BOM."""
    if encoding:
        try:
            name = codecs.lookup(encoding).name
        except LookupError:
            raise DatasetError(f"unknown encoding '{encoding}' (e.g. utf-8, utf-16, cp1258)") from None
        return "utf-8-sig" if name == "utf-8" else encoding
    return next((name for bom, name in _BOMS if head.startswith(bom)), "utf-8")


def _line_safe(enc: str) -> bool:
    """Whether every b"\\n" byte of text in ``enc`` is a line break (UTF-8 and the 8-bit code pages; not UTF-16)."""
    try:
        name = codecs.lookup(enc).name
        return name in ("utf-8", "utf-8-sig") or ("\n".encode(enc) == b"\n" and name != "utf-7")
    except LookupError:
        return False


def _stream_lines(path: Path, enc: str, encoding: str | None) -> Iterator[tuple[int, str | Exception]]:
    """(line number from 1, the line's text with its ending) for a large text file, read line by line: a
    line longer than any row may be is counted and skipped, never held (an Exception in its place)."""
    import numpy as np

    limit = MAX_LINE_CHARS * 4 + 2   # bytes: no line of MAX_LINE_CHARS characters is longer
    utf8 = codecs.lookup(enc).name == "utf-8"

    def characters(chunk: bytes) -> int:
        if not utf8:
            return len(chunk)
        return int(np.count_nonzero((np.frombuffer(chunk, dtype=np.uint8) & 0xC0) != 0x80))

    with open(path, "rb") as fh:
        offset = 0
        if enc == "utf-8-sig" and fh.read(3) != b"\xef\xbb\xbf":
            fh.seek(0)
        offset = fh.tell()
        number = 0
        while raw := fh.readline(limit):
            number += 1
            if len(raw) == limit and not raw.endswith(b"\n"):
                chars, size = characters(raw), len(raw)
                while chunk := fh.readline(limit):
                    size += len(chunk)
                    chars += characters(chunk.rstrip(b"\n"))
                    if chunk.endswith(b"\n"):
                        break
                offset += size
                yield number, ValueError(f"line too long ({chars} characters, limit {MAX_LINE_CHARS})")
                continue
            try:
                text = raw.decode("utf-8" if enc == "utf-8-sig" else enc)
            except UnicodeDecodeError as exc:
                raise _decode_error(path, encoding, number, offset + exc.start, exc.reason) from None
            offset += len(raw)
            yield number, text


def _jsonl_stream(lines: Iterator[tuple[int, str | Exception]]) -> Iterator[tuple[int, Any]]:
    """``_jsonl`` over streamed lines."""
    for number, line in lines:
        if isinstance(line, Exception):
            yield number, line
            continue
        yield from _jsonl_line(number, line[:-1] if line.endswith("\n") else line)


def _csv_stream(lines: Iterator[tuple[int, str | Exception]]) -> Iterator[tuple[int, Any]]:
    """``_csv`` over streamed lines; a skipped (too long) line is reported in its place and read as blank."""
    csv.field_size_limit(MAX_LINE_CHARS * 4)
    skipped: list[tuple[int, Exception]] = []

    def feed() -> Iterator[str]:
        for number, line in lines:
            if isinstance(line, Exception):
                skipped.append((number, line))
                yield "\n"
            else:
                yield line

    lines = _limit_lines(lines)
    it = feed()
    header = next(it, "")
    delimiter = max(",;\t", key=lambda d: (header.count(d), d == ","))
    reader = csv.DictReader(itertools.chain([header], it), delimiter=delimiter)
    yield from _csv_rows(reader, skipped)


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
            rest = text[i + 1:]
            if rest.strip():
                after = i + 1 + (len(rest) - len(rest.lstrip()))
                raise DatasetError(f"{name}: text after the JSON array's closing ] (line {line_at(after)}); a file "
                                   "holds one JSON array, or JSONL (one object a line)")
            return
        try:
            obj, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{name}: invalid JSON at line {exc.lineno} ({exc.msg}); a JSON array cannot be "
                               "read past a syntax error: fix it, or save the rows as JSONL") from None
        except RecursionError:
            raise DatasetError(f"{name}: invalid JSON at line {line_at(i)} (nested too deeply); save the rows as "
                               "JSONL, one object a line") from None
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
        yield from _jsonl_line(number, line)


def _jsonl_line(number: int, line: str) -> Iterator[tuple[int, Any]]:
    if not line.strip():
        return
    if len(line) > MAX_LINE_CHARS:
        yield number, ValueError(f"line too long ({len(line)} characters, limit {MAX_LINE_CHARS})")
        return
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        yield number, ValueError(f"invalid JSON ({exc.msg})")
        return
    except RecursionError:
        yield number, ValueError("invalid JSON (nested too deeply)")
        return
    if "\\u" in line and _has_surrogate(obj):
        yield number, ValueError(SURROGATE_REASON)
        return
    yield number, obj


def _csv(text: str) -> Iterator[tuple[int, Any]]:
    yield from _csv_stream(_text_lines(text))


def _text_lines(text: str) -> Iterator[tuple[int, str | Exception]]:
    """A whole text's physical lines, as the line-by-line reader gives them (split at "\\n" only)."""
    pieces = text.split("\n")
    for number, line in enumerate(pieces, start=1):
        if number == len(pieces):
            if line:
                yield number, line
            return
        yield number, line + "\n"


def _limit_lines(lines: Iterator[tuple[int, str | Exception]]) -> Iterator[tuple[int, str | Exception]]:
    """Physical lines over ``MAX_LINE_CHARS`` characters become their error (CSV: no record reads them)."""
    for number, line in lines:
        if isinstance(line, str) and len(line) > MAX_LINE_CHARS and len(line.removesuffix("\n")) > MAX_LINE_CHARS:
            line = ValueError(f"line too long ({len(line.removesuffix(chr(10)))} characters, limit {MAX_LINE_CHARS})")
        yield number, line


def _csv_rows(reader: csv.DictReader, skipped: list | None = None) -> Iterator[tuple[int, Any]]:
    """(the line a record starts on, the record) for every record; a record the csv module cannot read
    (a field over the limit) is reported and reading goes on after it. ``skipped``: lines the stream
    reader left out, reported in their place."""
    start = 2  # a record's number is the line it starts on in the file (line 1: the header)
    stuck = None
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            while skipped:
                yield skipped.pop(0)
            yield start, ValueError(f"unreadable CSV ({exc})")
            if stuck == reader.line_num:   # no progress past the error: the rest cannot be read
                break
            stuck = reader.line_num
            start = reader.line_num + 2    # the csv module has not counted the line it failed on
            continue
        while skipped:
            yield skipped.pop(0)
        if None in row:
            row = ValueError(f"{len(reader.fieldnames or [])} columns in the header, more in this row")
        elif all(v is None or not v.strip() for v in row.values()):
            start = reader.line_num + 1
            continue
        yield start, row
        start = reader.line_num + 1
    while skipped:
        yield skipped.pop(0)


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

    def where(f: Path) -> str:
        try:
            return f"{path.name}/{f.relative_to(path).as_posix()}"
        except ValueError:   # a resolved path (its folder was reached through a link)
            return f"{path.name}/{f.relative_to(path.resolve()).as_posix()}"

    def read_json(f: Path, key: str, kind: type):
        """A ``datasets`` metadata file's ``key``; DatasetError naming the file (and line) otherwise."""
        try:
            value = json.loads(f.read_text(encoding="utf-8")).get(key, kind())
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{where(f)}: invalid JSON at line {exc.lineno} ({exc.msg}); not a folder saved "
                               "by `datasets` (save_to_disk), or a damaged one") from None
        except (UnicodeDecodeError, AttributeError):
            raise DatasetError(f"{where(f)}: not the JSON object `datasets` writes; not a folder saved by "
                               "`datasets` (save_to_disk), or a damaged one") from None
        except OSError as exc:
            raise DatasetError(f"{where(f)}: cannot be read ({exc.strerror or exc})") from None
        if not isinstance(value, kind):
            raise DatasetError(f"{where(f)}: '{key}' is not a {kind.__name__}; a damaged `datasets` folder")
        return value

    root = path.resolve()

    def inside(f: Path, named: str) -> Path:
        """``f`` (named in the folder's metadata, or found in it), links followed, when it lies inside the
        folder; DatasetError otherwise: a folder names only its own files, and reads nothing else of the
        server (another version's rows, any .arrow file) however its metadata or links point."""
        resolved = f.resolve()
        if resolved != root and not resolved.is_relative_to(root):
            raise DatasetError(f"{path.name}: '{named}' leads outside the folder (a folder saved by `datasets` names "
                               "only its own files); nothing was imported")
        return resolved

    def split_files(folder: Path) -> list[Path]:
        state = folder / "state.json"
        if state.exists():
            entries = read_json(inside(state, where(state)), "_data_files", list)
            if not all(isinstance(e, dict) and isinstance(e.get("filename"), str) for e in entries):
                raise DatasetError(f"{where(state)}: '_data_files' does not name the Arrow files; a damaged "
                                   "`datasets` folder")
            return [inside(folder / e["filename"], e["filename"]) for e in entries]
        return [inside(f, where(f)) for f in sorted(folder.glob("*.arrow"))]

    if (path / "dataset_dict.json").exists():
        splits = read_json(inside(path / "dataset_dict.json", "dataset_dict.json"), "splits", list)
        order = sorted((str(s) for s in splits), key=lambda s: ({"train": 0, "validation": 1, "test": 2}.get(s, 3), s))
        files = [f for s in order for f in split_files(inside(path / s, s))]
    else:
        files = split_files(path)
    if not files:
        raise DatasetError(f"{path.name}: a folder must be one saved by `datasets` (save_to_disk): no .arrow files")

    def tables():
        for f in files:
            try:
                with pa.memory_map(str(f)) as source:
                    try:
                        yield pa.ipc.open_stream(source).read_all()
                    except pa.ArrowInvalid:
                        yield pa.ipc.open_file(source).read_all()
            except FileNotFoundError:
                raise DatasetError(f"{where(f)}: no such file (named in the folder's state.json)") from None
            except (pa.ArrowInvalid, OSError) as exc:
                detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                raise DatasetError(f"{where(f)}: not a readable Arrow file ({detail})") from None

    return _arrow_rows(tables())


def parquet_columns(names: Iterable[str], mapping: dict[str, str] | None = None) -> list[str]:
    """The columns of a Parquet file that can become a field (``_column_for``: mapped, named like a field, or an
    alias); the others are never read (a bomb in a column nobody imports costs nothing)."""
    mapping = mapping or {}
    aliases = {a for name in FIELDS for a in ALIASES[name]}
    return [c for c in names if c in mapping or c in FIELDS or str(c).strip().lower() in aliases]


def parquet_text_bytes(path: Path, columns: list[str], stop_at: int | None = None) -> int:
    """What ``columns`` of a Parquet file decode to, in bytes, known before any of their values is decoded: a
    column chunk's uncompressed size (its metadata) bounds its plain values; a dictionary-encoded chunk's values
    are counted from its dictionary's lengths taken at its indices (Arrow compute; the values are never
    expanded). ``stop_at``: stop counting past it. DatasetError for a chunk whose size nothing bounds
    (DELTA_BYTE_ARRAY: each value a prefix of the one before)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    md = pf.metadata
    wanted = set(columns)
    text_types = {c: pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
                  or pa.types.is_large_binary(t)
                  for c, t in zip(pf.schema_arrow.names, pf.schema_arrow.types)}
    total = 0
    counted: list[tuple[int, str]] = []   # (row group, column) read through the dictionary
    for g in range(md.num_row_groups):
        group = md.row_group(g)
        for j in range(group.num_columns):
            chunk = group.column(j)
            top = chunk.path_in_schema.split(".")[0]
            if top not in wanted:
                continue
            if "DELTA_BYTE_ARRAY" in chunk.encodings:
                raise DatasetError(f"{path.name}: column '{top}' is stored as DELTA_BYTE_ARRAY, whose size cannot be "
                                   "known before it is read; save the file again with pyarrow's or pandas' defaults")
            if chunk.has_dictionary_page and text_types.get(top) and (g, top) not in counted:
                counted.append((g, top))
            elif chunk.has_dictionary_page:   # a nested column: at most each value as large as the whole chunk
                total += chunk.num_values * chunk.total_uncompressed_size
            else:
                total += chunk.total_uncompressed_size
            if stop_at is not None and total > stop_at:
                return total
    for g, column in counted:
        reader = pq.ParquetFile(path, read_dictionary=[column])
        for batch in reader.iter_batches(batch_size=1 << 20, row_groups=[g], columns=[column]):
            arr = batch.column(0)
            if pa.types.is_dictionary(arr.type):
                got = pc.sum(pc.take(pc.binary_length(arr.dictionary), arr.indices)).as_py()
            else:
                got = pc.sum(pc.binary_length(arr)).as_py()
            total += got or 0
            if stop_at is not None and total > stop_at:
                return total
    return total


def check_parquet(path: Path, mapping: dict[str, str] | None = None) -> tuple[list[str], int, int]:
    """A Parquet file's size checked from its metadata before any row is read: (the columns to read, their
    decoded bytes, rows). DatasetError naming the file when it has more than ``MAX_ROWS`` rows or its columns
    decode to more than ``MAX_TEXT_BYTES``."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    rows = pf.metadata.num_rows
    if rows > MAX_ROWS:
        raise DatasetError(f"{path.name}: {rows:,} rows (its metadata says; nothing was read), over the import limit "
                           f"of {MAX_ROWS:,} rows a file; split it into smaller files")
    columns = parquet_columns(pf.schema_arrow.names, mapping)
    text = parquet_text_bytes(path, columns, stop_at=MAX_TEXT_BYTES)
    if text > MAX_TEXT_BYTES:
        raise DatasetError(f"{path.name}: its columns {', '.join(columns)} decode to more than the import limit of "
                           f"{_size(MAX_TEXT_BYTES)} (counted from its metadata and dictionaries; nothing was "
                           "decoded): a compressed or dictionary-encoded file much larger than it looks; split it "
                           "into smaller files")
    return columns, text, rows


def _records(path: Path, encoding: str | None, report: ImportReport,
             mapping: dict[str, str] | None = None) -> Iterator[tuple[int, Any]]:
    """(line or row number counted from 1, raw record or an Exception) for every row in the file."""
    info = {"file": path.name}
    report.files.append(info)
    if path.is_file():
        report.sizes[path.name] = path.stat().st_size
    if path.is_dir():
        info["format"] = "datasets folder"
        yield from _hf_folder(path)
        return
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        info["format"] = "parquet"
        columns, text, rows = check_parquet(path, mapping)
        per_row = max(1, text // max(rows, 1))
        number = 0
        for batch in pq.ParquetFile(path).iter_batches(max(1, min(10_000, PARQUET_BATCH_BYTES // per_row)),
                                                       columns=columns):
            for obj in batch.to_pylist():
                number += 1
                yield number, obj
        return
    if suffix not in (".jsonl", ".ndjson", ".json", ".csv"):
        raise DatasetError(f"{path.name}: unsupported file type '{suffix}' "
                           "(JSONL, JSON, CSV, Parquet, or a folder saved by `datasets`)")
    if path.stat().st_size > STREAM_BYTES:
        yield from _large_text(path, suffix, encoding, info)
        return
    text, enc = _open_text(path, encoding, report)
    info["encoding"] = enc
    if suffix == ".csv":
        info["format"] = "csv"
        yield from _csv(text)
    elif _array_text(suffix, text.lstrip()[:1], text.rstrip()[-1:]):
        info["format"] = "json array"
        yield from _json_array(text, path.name)
    else:
        info["format"] = "jsonl"
        yield from _jsonl(text)


def _array_text(suffix: str, first: str, last: str) -> bool:
    """Whether a text file is one JSON array, from its first and last characters (blanks aside): a .json
    file that starts with "[", or a .jsonl that also ends with "]" (a .jsonl whose first line alone is
    broken, "[[[…" say, is JSON Lines still: its other lines are read)."""
    return first == "[" and (suffix == ".json" or last == "]")


def _array_file(path: Path, suffix: str) -> bool:
    """``_array_text`` for a file on disk, from its first and last 64 KB (a BOM aside; UTF-8 or alike)."""
    with open(path, "rb") as fh:
        head = fh.read(64 * 1024).removeprefix(b"\xef\xbb\xbf").lstrip()
        size = fh.seek(0, 2)
        fh.seek(max(0, size - 64 * 1024))
        tail = fh.read().rstrip()
    return _array_text(suffix, head[:1].decode("latin-1"), tail[-1:].decode("latin-1"))


def _large_text(path: Path, suffix: str, encoding: str | None, info: dict) -> Iterator[tuple[int, Any]]:
    """A CSV or JSONL file over ``STREAM_BYTES``, line by line: memory stays bounded however large the file
    or its lines (the bulk path reads its rows into DuckDB in batches)."""
    with open(path, "rb") as fh:
        head = fh.read(64 * 1024)
    enc = _text_encoding(path, encoding, head)
    size = _size(path.stat().st_size)
    if not _line_safe(enc):
        raise DatasetError(f"{path.name}: {size} of {enc} text is more than the {_size(STREAM_BYTES)} that is read "
                           "whole; save it as UTF-8 (read line by line, up to the import limit)")
    if suffix != ".csv" and _array_file(path, suffix):
        raise DatasetError(f"{path.name}: a JSON array of {size} is more than the {_size(STREAM_BYTES)} that is "
                           "read whole; save the rows as JSONL (one object a line)")
    info["encoding"] = "utf-8" if enc == "utf-8-sig" and not head.startswith(b"\xef\xbb\xbf") else enc
    lines = _stream_lines(path, enc, encoding)
    if suffix == ".csv":
        info["format"] = "csv"
        yield from _csv_stream(lines)
    else:
        info["format"] = "jsonl"
        yield from _jsonl_stream(lines)


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
        if "\x00" in value:
            return None, f"field '{column}' {NUL_REASON}"
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
    return list(iter_pairs(path, report, source, encoding=encoding, mapping=mapping))


def _unreadable(path: Path, exc: BaseException) -> DatasetError:
    """A file whose format cannot be read at all (a broken Parquet, Arrow or ``datasets`` folder), in one line."""
    what = ("a readable folder saved by `datasets`" if path.is_dir() else
            {".parquet": "a readable Parquet file"}.get(path.suffix.lower(), "a readable file"))
    if isinstance(exc, OSError) and not type(exc).__module__.startswith("pyarrow"):
        return DatasetError(f"{path.name}: cannot be read ({exc.strerror or exc})")
    detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return DatasetError(f"{path.name}: not {what} ({detail})")


def iter_pairs(path: Path, report: ImportReport, source: str, *, encoding: str | None = None,
               mapping: dict[str, str] | None = None) -> Iterator[dict]:
    """``read_pairs`` one row at a time (the bulk path takes them in batches)."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    size = (sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir()
            else path.stat().st_size)
    if size > MAX_FILE_BYTES:
        raise DatasetError(f"{path.name}: {_size(size)} is over the import limit of {_size(MAX_FILE_BYTES)}; "
                           "split it into smaller files")
    records = _records(path, encoding, report, mapping)
    while True:
        try:
            number, raw = next(records)
        except StopIteration:
            return
        except DatasetError:
            raise
        except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
            # pyarrow's errors are these (ArrowInvalid is a ValueError, ArrowIOError an OSError), and so are a
            # broken state.json's: the file's format is unreadable; nothing else of it can be read
            raise _unreadable(path, exc) from None
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
        yield cleaned


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


# ── splitting and mixing ─────────────────────────────────────────────────────


def content_hash(train: list[dict], test: list[dict]) -> str:
    h = hashlib.sha256()
    for split, rows in (("train", train), ("test", test)):
        hash_rows(h, split, rows)
    return h.hexdigest()


def hash_rows(h, split: str, rows: Iterable[dict]) -> None:
    """Feed ``rows`` of ``split`` to ``h`` as ``content_hash`` does (train's rows, then test's, in order): a
    version written batch by batch gets the hash of the whole."""
    for row in rows:
        h.update(json.dumps([split] + [row[k] for k in FIELDS], ensure_ascii=False).encode())


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
