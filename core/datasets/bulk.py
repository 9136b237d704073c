"""Bulk import: very large JSONL files validated, cleaned, deduplicated, split and written in DuckDB SQL.

``core.datasets.importer.import_files`` comes here for JSONL files over ``BULK_THRESHOLD_BYTES`` (or with
``bulk=True``, ``python -m core dataset import --bulk``). The report has the same fields, line numbers and
reasons as the Python path; what differs is where the work happens:

1. The file is read in ``CHUNK_BYTES`` blocks into one reused buffer. Each block is cut at its last
   newline, the line boundaries are found with numpy and the block goes to DuckDB as an Arrow table of
   (line number, text) without copying or looping over rows in Python. Line numbers are physical
   lines counted from 1 (a blank line counts, but is no row); a UTF-8 BOM is skipped; the bytes are
   checked to be UTF-8 (Arrow's validation) and the first bad byte gets the Python path's message.
2. One ``INSERT … SELECT`` per block validates (``json_valid``, ``json_transform``, ``json_keys`` for
   aliases and column mapping), cleans (``nfc_normalize`` and the macro ``vt_clean_full``: the same
   steps as ``rows.clean_text``, run only on fields a single regex finds something to do in) and
   keys every line into the table ``parsed``, in file order; a rejected line keeps only its reason.
   The rare lines SQL cannot judge like ``json.loads`` (a key given twice) are decided in Python.
3. Duplicates: a GROUP BY on the key of the cleaned, lowered fields keeps the first row of each
   group; a later row is an exact copy when its raw fields equal the first's, else a normalised one.
4. The seeded split ranks the kept rows by their key xor a number drawn from the seed and takes the
   first ``test_count``; the kept rows are marked in place, general data is sampled by a seeded md5 and
   appended; ``COPY … TO … (FORMAT parquet)`` writes each split by a plain scan, in file order.
5. The content hash is ``rows.content_hash``'s definition (sha256 over
   ``json.dumps([split, instruction, input, output], ensure_ascii=False)`` of every row, train then
   test, in file order), the text built in SQL (macro ``vt_json``) and fed to hashlib batch by batch.

Everything happens in a scratch in-memory DuckDB (``store.scratch``) whose ``memory_limit`` makes
large sorts and aggregates spill to disk; the studio database is opened only for the version record.
"""
from __future__ import annotations

import codecs
import hashlib
import itertools
import json
import os
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

from core import store
from core.datasets import rows as pairs
from core.datasets.rows import (ALIASES, FIELDS, MAX_ERRORS_LISTED, MAX_FIELD_CHARS, MAX_FILE_BYTES, MAX_LINE_CHARS,
                                NUL_REASON, REQUIRED, DatasetError, ImportReport)

# JSONL files larger than this go through DuckDB automatically ($VITUNE_BULK_THRESHOLD_BYTES: tests and benches,
# whose imports run in an import process of their own)
BULK_THRESHOLD_BYTES = int(os.environ.get("VITUNE_BULK_THRESHOLD_BYTES") or 64 * 1024**2)
BULK_THRESHOLD_ROWS = 250_000         # and Parquet files with more rows (or decoding to more than the bytes above)
CHUNK_BYTES = 32 * 1024**2            # bytes read per Arrow batch
PYTHON_BATCH_ROWS = 50_000            # rows of a file the Python reader reads (CSV, Parquet, …) per insert
MEMORY_LIMIT = "1GB"                  # DuckDB's buffer manager limit ($VITUNE_BULK_MEMORY); beyond it, data spills
PARQUET_ROW_GROUP = 16_384          # rows per Parquet row group: the writer holds one group per thread in memory
THREADS: int | None = None            # None: every core
_SUFFIXES = (".jsonl", ".ndjson", ".json")

# Python's str.strip() / str.isspace() set, without "\n" (the line separator) and "\r" (made "\n" first).
_WS = "\t\x0b\x0c\x1c\x1d\x1e\x1f \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + \
      "\u2028\u2029\u202f\u205f\u3000"
_INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff"
_RE_WS = (r"\t\x{0b}\x{0c}\x{1c}-\x{1f} \x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}"
          r"\x{205f}\x{3000}")
_RE_SPACES = r"[ \t\x{a0}\x{2000}-\x{200a}\x{202f}\x{3000}]+"   # rows._SPACES
_RE_INVISIBLE = r"\x{200b}\x{200c}\x{200d}\x{2060}\x{feff}"
# Anything clean_text would change in an NFC string; rows without it skip the regex chain.
_RE_NEEDS = (rf"[\r{_RE_INVISIBLE}\t\x{{a0}}\x{{2000}}-\x{{200a}}\x{{202f}}\x{{3000}}]|  |^[{_RE_WS}\n]|"
             rf"[{_RE_WS}\n]$|[{_RE_WS}]\n|\n[{_RE_WS}]|\n\n\n")


_RE_LINE_TRIM = rf"(?m)^[{_RE_WS}]+|[{_RE_WS}]+$"
# Characters whose NFC quick-check is Yes (they are NFC, combine with nothing before them and have
# combining class 0; tests/test_bulk_import.py checks this with unicodedata): text made only of them is NFC, so
# nfc_normalize (utf8proc, the slowest step) runs only on the rest: Latin incl. Vietnamese letters,
# general punctuation, currency signs.
NFC_SAFE_RANGES = ((0x0, 0x2FF), (0x1E00, 0x1EFF), (0x2010, 0x2027), (0x2030, 0x205E), (0x20A0, 0x20BF))
_NFC_SAFE = "".join(f"\\x{{{lo:x}}}-\\x{{{hi:x}}}" for lo, hi in NFC_SAFE_RANGES)
_RE_NAN_INF = r"[:\[,][ \t\r\n]*[-+]?(?:[iI][nN]|[nN][aA])"   # a value that starts like inf or nan
_RE_CONTROL = r"[\x{00}-\x{08}\x{0b}-\x{1f}]"  # control characters json.dumps escapes as \uXXXX, \b, \f, \r
# not surely NFC, a control character, or something to clean
_RE_TOUCH = rf"[^{_NFC_SAFE}]|{_RE_CONTROL}|" + _RE_NEEDS
_RE_LAX_CANDIDATE = r",[ \t\r\n]*[\]}]|" + _RE_NAN_INF
_RE_BLANK_START = rf"^[{_RE_WS}\r\n]"        # a line that may be blank (str.strip() leaves nothing)
_RE_BLANK_LINE = rf"[{_RE_WS}\r\n]*"
_RE_JSON_ESCAPE = r'[\x{00}-\x{1f}"\\]'   # what json.dumps escapes
_RE_JSON_STRING = r'"(?:[^"\\]|\\.)*"'   # a JSON string literal
_RE_STRIP = rf"^[{_RE_WS}\n]+|[{_RE_WS}\n]+$"


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# SQL for a string without control characters other than "\n": backslash, quote and line break escaped
_JSTR_NEEDS = r"""contains(x, '\') OR contains(x, '"') OR contains(x, chr(10))"""
_JSTR_SIMPLE = r"""replace(replace(replace(x, '\', '\\'), '"', '\"'), chr(10), '\n')"""


def _escape_chain(x: str) -> str:
    """SQL replacing what json.dumps escapes: backslash first, then the quote and control characters."""
    expr = f"replace({x}, '\\', '\\\\')"
    expr = f"replace({expr}, '\"', '\\\"')"
    for i in range(32):
        expr = f"replace({expr}, chr({i}), {_lit(json.dumps(chr(i))[1:-1])})"
    return expr


_MACROS = f"""
CREATE OR REPLACE MACRO vt_clean_full(x) AS
  regexp_replace(
    regexp_replace(
      regexp_replace(
        regexp_replace(
          translate(replace(replace(x, chr(13) || chr(10), chr(10)), chr(13), chr(10)), {_lit(_INVISIBLE)}, ''),
          {_lit(_RE_SPACES)}, ' ', 'g'),
        {_lit(_RE_LINE_TRIM)}, '', 'g'),
      '\\n{{3,}}', chr(10) || chr(10), 'g'),
    {_lit(_RE_STRIP)}, '', 'g');
-- rows.clean_text: NFC, CRLF/CR -> LF, zero-width characters removed, runs of spaces collapsed,
-- lines trimmed, 3+ line breaks -> 2, stripped.
-- one regex pass finds the rows that need any of it (most rows need none)
CREATE OR REPLACE MACRO vt_clean(x) AS
  CASE WHEN regexp_matches(x, {_lit(_RE_TOUCH)}) THEN vt_clean_full(nfc_normalize(x)) ELSE x END;
-- a string as json.dumps(ensure_ascii=False) writes it, quotes included; ctl: the row may hold control
-- characters other than the line break (else only backslash, quote and line break need escaping)
CREATE OR REPLACE MACRO vt_jstr(x, ctl) AS
  '"' || (CASE WHEN ctl IS NOT false THEN {_escape_chain("x")}
               WHEN {_JSTR_NEEDS} THEN {_JSTR_SIMPLE}
               ELSE x END) || '"';
CREATE OR REPLACE MACRO vt_json(split, a, b, c, ctl) AS
  '["' || split || '", ' || vt_jstr(a, ctl) || ', ' || vt_jstr(b, ctl) || ', ' || vt_jstr(c, ctl) || ']';
CREATE OR REPLACE MACRO vt_ctl(a, b, c) AS
  regexp_matches(a, {_lit(_RE_CONTROL)}) OR regexp_matches(b, {_lit(_RE_CONTROL)})
  OR regexp_matches(c, {_lit(_RE_CONTROL)});
-- JSON that DuckDB's reader takes but Python's json.loads refuses: trailing commas, and nan/inf
-- spelt other than NaN, Infinity, -Infinity (looked at with the strings' contents blanked out)
CREATE OR REPLACE MACRO vt_lax_strict(s) AS
  regexp_matches(s, ',[ \t\r\n]*[\\]}}]')
  OR regexp_matches(regexp_replace(s, '-?Infinity|NaN', '', 'g'), {_lit(_RE_NAN_INF)});
CREATE OR REPLACE MACRO vt_lax_json(x) AS
  CASE WHEN regexp_matches(x, {_lit(_RE_LAX_CANDIDATE)})
       THEN vt_lax_strict(regexp_replace(x, {_lit(_RE_JSON_STRING)}, '""', 'g')) ELSE false END;
-- an unambiguous key of three strings (byte length before each)
CREATE OR REPLACE MACRO vt_key(a, b, c) AS
  md5_number(strlen(a) || ':' || a || strlen(b) || ':' || b || strlen(c) || ':' || c);
-- the key of the lowered strings: lower() keeps the number of code points, so the lengths of a and b
-- mark the fields' bounds; its input starts with 'L' (vt_key's with a digit), a separate key space
CREATE OR REPLACE MACRO vt_lkey(a, b, c) AS
  md5_number('L' || length(a) || ':' || length(b) || ':' || lower(a || b || c));
-- equal for rows that are equal after lower(): the fields' lengths and their lowered first 24 characters
CREATE OR REPLACE MACRO vt_bucket(a, b, c) AS
  md5_number(length(a) || ':' || length(b) || ':' || length(c) || ':'
             || lower(left(a, 24) || chr(0) || left(b, 24) || chr(0) || left(c, 24)));
"""


def _utf8(encoding: str | None) -> bool:
    if not encoding:
        return True
    try:
        return codecs.lookup(encoding).name == "utf-8"
    except LookupError:
        return False


def _starts_with_array_or_utf16(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(64 * 1024)
    return head.startswith((b"\xff\xfe", b"\xfe\xff")) or head.removeprefix(b"\xef\xbb\xbf").lstrip().startswith(b"[")


def _sql_readable(path: Path, encoding: str | None) -> bool:
    """A JSONL file that the SQL reader takes (UTF-8, not a JSON array); other files (UTF-16 by its BOM) are read by
    the Python path and only their kept rows join the SQL tables."""
    return (path.is_file() and path.suffix.lower() in _SUFFIXES and _utf8(encoding)
            and not _starts_with_array_or_utf16(path))


def wants_bulk(path: str | Path, encoding: str | None = None, mapping: dict[str, str] | None = None) -> bool:
    """Whether ``importer.prepare`` picks the bulk path for this file by itself: any file over the threshold (a
    UTF-8 JSONL is read by SQL; CSV, Parquet and other encodings by the Python reader, in batches), so that
    a large file never becomes one Python list. A Parquet file is judged by what it decodes to and its rows
    (its metadata and dictionaries), not by its compressed size."""
    path = Path(path)
    try:
        if path.is_dir():   # a `datasets` folder: its Arrow files
            return sum(f.stat().st_size for f in [*path.glob("*.arrow"), *path.glob("*/*.arrow")]) > BULK_THRESHOLD_BYTES
        if not path.is_file():
            return False
        if path.stat().st_size > BULK_THRESHOLD_BYTES:
            return True
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            pf = pq.ParquetFile(path)
            return pf.metadata.num_rows > BULK_THRESHOLD_ROWS or pairs.parquet_text_bytes(
                path, pairs.parquet_columns(pf.schema_arrow.names, mapping), stop_at=BULK_THRESHOLD_BYTES) > BULK_THRESHOLD_BYTES
        return False
    except (OSError, ValueError):   # the reader names what is wrong with it
        return False


# ── reading lines into Arrow ─────────────────────────────────────────────────


class _Lines:
    """Arrow batches (line, text) of a UTF-8 file, cut at newlines; ``error`` is set (and the stream
    ends) at the first byte that is not UTF-8. A line's text keeps its "\\n" (JSON ignores it)."""

    def __init__(self, path: Path, encoding: str | None):
        self.path, self.encoding = path, encoding
        self.error: DatasetError | None = None
        self.bom = False
        self.lines = 0
        self.too_long: list[tuple[int, int]] = []   # (line, characters) of lines longer than a whole buffer

    def schema(self):
        import pyarrow as pa

        return pa.schema([("line", pa.int64()), ("text", pa.large_string())])

    def _batch(self, chunk: memoryview, file_offset: int):
        import numpy as np
        import pyarrow as pa

        buf = np.frombuffer(chunk, dtype=np.uint8)
        ends = np.flatnonzero(buf == 10) + 1
        if not len(ends) or ends[-1] != len(chunk):
            ends = np.append(ends, len(chunk))
        offsets = np.zeros(len(ends) + 1, dtype=np.int64)
        offsets[1:] = ends
        n = len(ends)
        text = pa.Array.from_buffers(pa.large_string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(chunk)])
        try:
            text.validate(full=True)
        except pa.ArrowInvalid:
            data = bytes(chunk)
            try:
                data.decode("utf-8")
            except UnicodeDecodeError as exc:
                line = self.lines + data.count(b"\n", 0, exc.start) + 1
                name = self.path.name
                self.error = pairs._decode_error(self.path, self.encoding, line, file_offset + exc.start, exc.reason)
                return None
            raise
        lines = pa.array(np.arange(self.lines + 1, self.lines + n + 1, dtype=np.int64))
        self.lines += n
        return pa.RecordBatch.from_arrays([lines, text], schema=self.schema())

    def batches(self) -> Iterator:
        """Batches over three buffers used in turn (no copy of the text in Python): a batch stays valid
        while the next two are made, which is how they are consumed (``prefetched``: one block is
        inserted while the next is read)."""
        with open(self.path, "rb") as fh:
            self.bom = fh.read(3) == b"\xef\xbb\xbf"
            if not self.bom:
                fh.seek(0)
            offset = fh.tell()
            buffers = [bytearray(CHUNK_BYTES) for _ in range(3)]
            turn, filled = 0, 0
            buf = buffers[0]
            while True:
                if filled == len(buf):  # a line longer than the buffer is too long for any row: skipped
                    filled, consumed = self._skip_line(fh, buf, filled)
                    offset += consumed
                    continue
                with memoryview(buf) as view:
                    got = fh.readinto(view[filled:])
                filled += got
                cut = (buf.rfind(b"\n", 0, filled) + 1) if got else filled  # at the end: the rest
                if not cut:
                    if not got:
                        return
                    continue
                batch = self._batch(memoryview(buf)[:cut], offset)
                if batch is None:
                    return
                yield batch
                del batch
                if not got:
                    return
                offset += cut
                turn = (turn + 1) % len(buffers)
                if len(buffers[turn]) < len(buf):
                    buffers[turn] = bytearray(len(buf))
                tail = filled - cut
                buffers[turn][:tail] = buf[cut:filled]
                buf, filled = buffers[turn], tail

    def _skip_line(self, fh, buf: bytearray, filled: int) -> tuple[int, int]:
        """Read on to the end of the line that fills ``buf`` and drop it, counting its characters (the
        buffer never grows: a 2 GB line costs no more memory than a short one). The line is listed in
        ``too_long``; the bytes after its newline are moved to the front of ``buf``. Returns (bytes now in
        ``buf``, bytes of the file consumed)."""
        import numpy as np

        chars = consumed = 0
        while True:
            arr = np.frombuffer(buf, dtype=np.uint8, count=filled)
            breaks = np.flatnonzero(arr == 10)
            end = int(breaks[0]) if len(breaks) else filled
            chars += int(np.count_nonzero((arr[:end] & 0xC0) != 0x80))   # UTF-8: one lead byte a character
            del arr
            if len(breaks) or not filled:
                consumed += end + (1 if len(breaks) else 0)
                rest = filled - end - 1 if len(breaks) else 0
                buf[:rest] = buf[end + 1:filled]
                break
            consumed += filled
            with memoryview(buf) as view:
                filled = fh.readinto(view)
        self.lines += 1
        self.too_long.append((self.lines, chars))
        return rest, consumed

    def prefetched(self) -> Iterator:
        """``batches`` made in a second thread, one ahead (reading, numpy and Arrow release the GIL)."""
        import queue
        import threading

        ready: queue.Queue = queue.Queue(maxsize=1)
        stop = threading.Event()

        def produce() -> None:
            try:
                for batch in self.batches():
                    while not stop.is_set():
                        try:
                            ready.put(batch, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
                ready.put(None)
            except BaseException as exc:  # handed to the consumer
                ready.put(exc)

        thread = threading.Thread(target=produce, name="bulk-read", daemon=True)
        thread.start()
        try:
            while (item := ready.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while thread.is_alive():
                try:
                    ready.get(timeout=0.1)
                except queue.Empty:
                    pass
            thread.join()


# ── SQL: validate, clean and hash every line ─────────────────────────────────


def _column_sql(name: str, mapping: dict[str, str]) -> str:
    """SQL for rows._column_for: the row's key holding field ``name``, or NULL."""
    keys = "json_keys(text)"
    whens = [f"WHEN list_contains({keys}, {_lit(src)}) THEN {_lit(src)}" for src, dst in mapping.items() if dst == name]
    if name not in mapping:
        whens.append(f"WHEN list_contains({keys}, {_lit(name)}) THEN {_lit(name)}")
    map_keys = "[" + ", ".join(_lit(k) for k in mapping) + "]::VARCHAR[]"
    # Python lowers with str.lower() after str.strip(); DuckDB's lower()/trim() agree on the aliases' letters.
    picks = [f"list_filter({keys}, lambda k: lower(trim(k)) = {_lit(alias)} AND NOT list_contains({map_keys}, k))[-1]"
             for alias in ALIASES[name]]
    generic = f"CASE {' '.join(whens)} ELSE coalesce({', '.join(picks)}) END"
    fast = "" if mapping else f"WHEN s.{name} IS NOT NULL THEN {_lit(name)} "
    return f"CASE WHEN early IS NOT NULL THEN NULL {fast}ELSE {generic} END"


def _parse_sql(file_idx: int, source: str, mapping: dict[str, str]) -> str:
    struct = _lit(json.dumps({k: "JSON" for k in FIELDS}))
    cols = ", ".join(f"{_column_sql(k, mapping)} AS col_{k}" for k in FIELDS)
    jvs = ", ".join(
        f"CASE WHEN col_{k} IS NULL THEN NULL WHEN col_{k} = {_lit(k)} AND s.{k} IS NOT NULL THEN s.{k} "
        f"ELSE json_extract(text, '/' || replace(replace(col_{k}, '~', '~0'), '/', '~1')) END::VARCHAR AS jv_{k}"
        for k in FIELDS)
    kinds = ", ".join(
        f"""CASE WHEN jv_{k} IS NULL OR jv_{k} = 'null' THEN 'none' WHEN prefix(jv_{k}, '"') THEN 'str'
             WHEN prefix(jv_{k}, '[') THEN 'list' WHEN prefix(jv_{k}, '{{') THEN 'dict'
             WHEN jv_{k} IN ('true', 'false') THEN 'bool'
             WHEN regexp_matches(jv_{k}, '[.eEnN]') THEN 'float' ELSE 'int' END AS t_{k}""" for k in FIELDS)
    values = ", ".join(
        f"CASE WHEN t_{k} = 'str' THEN json_extract_string(jv_{k}, '$') WHEN t_{k} = 'none' THEN '' END AS v_{k}"
        for k in FIELDS)
    field_reasons = []
    for k in FIELDS:
        missing = _lit(f"missing field '{k}'") if k in REQUIRED else "NULL"
        field_reasons.append(
            f"CASE WHEN t_{k} = 'none' THEN {missing} "
            f"WHEN t_{k} <> 'str' THEN 'field ''' || col_{k} || ''' is not text (' || t_{k} || ')' "
            f"WHEN strlen(v_{k}) > {MAX_FIELD_CHARS} AND length(v_{k}) > {MAX_FIELD_CHARS} THEN "
            f"'field ''' || col_{k} || ''' is too long (' || length(v_{k}) || ' characters, limit {MAX_FIELD_CHARS})' "
            f"WHEN contains(v_{k}, chr(0)) THEN 'field ''' || col_{k} || ''' ' || {_lit(NUL_REASON)} END")
    empty = [f"CASE WHEN c_{k} = '' THEN 'field ''' || col_{k} || ''' is empty' END" for k in REQUIRED]
    mapped = ", ".join(f"CASE WHEN col_{k} <> {_lit(k)} THEN col_{k} END AS m_{k}" for k in FIELDS)
    names = "|".join(FIELDS)
    seen = f"""regexp_extract_all(text, '"(?:{names})"')"""
    # rows that need aliases or a mapping read json_keys(); a repeated key among them goes to Python too
    need_keys = "true" if mapping else " OR ".join(f"s.{k} IS NULL" for k in FIELDS)
    generic_twice = f"({need_keys}) AND len(json_keys(text)) <> len(list_distinct(json_keys(text)))"
    return f"""
    INSERT INTO parsed
    WITH l AS (
      SELECT line, text, CASE WHEN strlen(text) > {MAX_LINE_CHARS}
                              THEN length(text) - CASE WHEN suffix(text, chr(10)) THEN 1 ELSE 0 END
                              ELSE 0 END AS n
      FROM src WHERE NOT (regexp_matches(text, {_lit(_RE_BLANK_START)})
                          AND regexp_full_match(text, {_lit(_RE_BLANK_LINE)}))
    ), a AS (
      SELECT line, text,
        CASE WHEN n > {MAX_LINE_CHARS} THEN 'line too long (' || n || ' characters, limit {MAX_LINE_CHARS})'
             WHEN NOT json_valid(text) OR vt_lax_json(text) THEN 'invalid JSON'
             WHEN NOT regexp_matches(text, '^[ \t\r\n]*[{{]') THEN 'not an object with instruction, input and output'
        END AS early
      FROM l
    ), a1 AS (SELECT *, CASE WHEN early IS NULL THEN {seen} END AS seen FROM a
    ), a2 AS (
      -- a key given twice: json.loads keeps the last value, DuckDB the first; such rows go to Python
      SELECT line, text, CASE WHEN list_unique(seen) <> len(seen) THEN '{_PYTHON}' ELSE early END AS early FROM a1
    ), b AS (
      SELECT *, CASE WHEN early IS NULL THEN json_transform(text, {struct}) END AS s FROM a2
    ), b2 AS (
      SELECT line, text, s, CASE WHEN early IS NULL AND {generic_twice} THEN '{_PYTHON}' ELSE early END AS early
      FROM b
    ), c AS (SELECT *, {cols} FROM b2
    ), d AS (SELECT *, {jvs} FROM c
    ), e AS (SELECT *, {kinds} FROM d
    ), f AS (SELECT *, {values}, coalesce(early, {', '.join(field_reasons)}) AS r0 FROM e
    ), g1 AS (
      SELECT *, {', '.join(f"CASE WHEN r0 IS NULL THEN regexp_matches(v_{k}, {_lit(_RE_TOUCH)}) END AS u_{k}"
                          for k in FIELDS)} FROM f
    ), g AS (
      SELECT *,
        {', '.join(f"CASE WHEN u_{k} THEN vt_clean_full(nfc_normalize(v_{k})) ELSE v_{k} END AS c_{k}" for k in FIELDS)}
      FROM g1
    ), h AS (
      SELECT *, coalesce(r0, {', '.join(empty)}) AS reason,
        coalesce(r0, {', '.join(empty)}) IS NULL
          AND (c_instruction <> v_instruction OR c_input <> v_input OR c_output <> v_output) AS changed
      FROM g)
    SELECT ({file_idx}::BIGINT << 40) + line AS ord, {file_idx} AS file_idx, line, {_lit(source)} AS source, reason,
      CASE WHEN reason IN ('invalid JSON', '{_PYTHON}') THEN text END AS bad_text,
      {', '.join(f"CASE WHEN reason IS NULL THEN c_{k} END AS {k}" for k in FIELDS)},
      -- the raw fields' key only where cleaning changed them (else it is the cleaned fields' key, see _dedup)
      CASE WHEN reason IS NULL AND changed THEN vt_key(v_instruction, v_input, v_output) END AS raw_h,
      -- the cleaned fields' key; _dedup makes it the lowered fields' key where their lengths collide
      CASE WHEN reason IS NULL THEN vt_key(c_instruction, c_input, c_output) END AS norm_h,
      CASE WHEN reason IS NULL THEN vt_bucket(c_instruction, c_input, c_output) END AS bucket,
      changed,
      {mapped},
      coalesce({' OR '.join(f"(u_{k} AND regexp_matches(c_{k}, {_lit(_RE_CONTROL)}))" for k in FIELDS)}, false) AS ctl,
      NULL AS part
    FROM h
    """


_PYTHON = "~python"   # a row's reason meaning: decide this one in Python (rare cases SQL cannot match)

_PARSED = """
CREATE TABLE parsed (ord BIGINT, file_idx INTEGER, line BIGINT, source VARCHAR, reason VARCHAR, bad_text VARCHAR,
  instruction VARCHAR, input VARCHAR, output VARCHAR, raw_h UHUGEINT, norm_h UHUGEINT, bucket UHUGEINT, changed BOOLEAN,
  m_instruction VARCHAR, m_input VARCHAR, m_output VARCHAR,
  ctl BOOLEAN,   -- a kept row holds control characters other than the line break (see vt_jstr)
  part TINYINT)  -- 0: train, 1: test, NULL: not written (rejected, duplicate)
"""


def _json_message(text: str | None) -> str:
    """Python's own message for a line DuckDB found invalid (only for the listed ones)."""
    try:
        obj = json.loads(text or "")
    except json.JSONDecodeError as exc:
        return f"invalid JSON ({exc.msg})"
    except (ValueError, RecursionError) as exc:
        return f"invalid JSON ({exc})"
    if pairs._has_surrogate(obj):
        return pairs.SURROGATE_REASON
    return "invalid JSON"


def _load_sql(con, path: Path, idx: int, report: ImportReport, encoding: str | None,
              mapping: dict[str, str], source: str) -> None:
    info: dict[str, Any] = {"file": path.name}
    report.files.append(info)
    report.sizes[path.name] = path.stat().st_size
    import pyarrow as pa

    lines = _Lines(path, encoding)
    sql = _parse_sql(idx, source, mapping)
    for batch in lines.prefetched():
        # a table of small batches, so that DuckDB's threads share a block's lines
        con.register("src", pa.Table.from_batches([batch.slice(i, 4096) for i in range(0, batch.num_rows, 4096)]))
        try:
            con.execute(sql)
        finally:
            con.unregister("src")
    if lines.error:
        raise lines.error
    for line, chars in lines.too_long:   # the lines the reader skipped keep their place and their reason
        con.execute("INSERT INTO parsed (ord, file_idx, line, source, reason, changed) VALUES (?, ?, ?, ?, ?, false)",
                    [(idx << 40) + line, idx, line, source,
                     f"line too long ({chars} characters, limit {MAX_LINE_CHARS})"])
    _decide_in_python(con, idx, report, mapping)
    info.update(encoding="utf-8-sig" if lines.bom else "utf-8", format="jsonl", engine="duckdb")
    read, rejected, changed = con.execute(
        "SELECT count(*), count(reason), count(*) FILTER (changed) FROM parsed WHERE file_idx = ?", [idx]).fetchall()[0]
    report.rows_read += read
    report.rows_rejected += rejected
    report.normalized += changed
    room = MAX_ERRORS_LISTED - len(report.errors)
    if room > 0 and rejected:
        for line, reason, text in con.execute(
                "SELECT line, reason, bad_text FROM parsed WHERE file_idx = ? AND reason IS NOT NULL "
                "ORDER BY ord LIMIT ?", [idx, room]).fetchall():
            if reason == "invalid JSON":
                reason = _json_message(text)
            report.errors.append({"file": path.name, "line": line, "reason": reason})
    for column, name in con.execute(
            "SELECT col, name FROM (" + " UNION ALL ".join(
                f"SELECT m_{k} AS col, '{k}' AS name, min(ord) AS first FROM parsed "
                f"WHERE file_idx = {idx} AND m_{k} IS NOT NULL GROUP BY m_{k}" for k in FIELDS)
            + ") ORDER BY first").fetchall():
        report.columns_mapped[column] = name
    con.execute("UPDATE parsed SET bad_text = NULL WHERE file_idx = ? AND bad_text IS NOT NULL", [idx])


def _decide_in_python(con, idx: int, report: ImportReport, mapping: dict[str, str]) -> None:
    """Rows marked ``_PYTHON`` (a repeated key) validated and cleaned by the Python path's own code."""
    import pyarrow as pa

    fixes = []
    for ord_, text in con.execute("SELECT ord, bad_text FROM parsed WHERE file_idx = ? AND reason = ? ORDER BY ord",
                                  [idx, _PYTHON]).fetchall():
        try:
            raw = json.loads(text)
        except ValueError as exc:
            row, reason = None, f"invalid JSON ({getattr(exc, 'msg', exc)})"
        else:
            row, reason = pairs._validate(raw, mapping, report)
        fix = {"ord": ord_, "reason": reason, **{f"v_{k}": row[k] if row else None for k in FIELDS},
               **{f"c_{k}": pairs.clean_text(row[k]) if row else None for k in FIELDS}}
        fixes.append(fix)
    if not fixes:
        return
    con.register("fixes", pa.Table.from_pylist(fixes))
    try:
        con.execute("""
            UPDATE parsed SET reason = f.reason, bad_text = NULL,
              instruction = f.c_instruction, input = f.c_input, output = f.c_output,
              raw_h = CASE WHEN f.reason IS NULL THEN vt_key(f.v_instruction, f.v_input, f.v_output) END,
              norm_h = CASE WHEN f.reason IS NULL THEN vt_key(f.c_instruction, f.c_input, f.c_output) END,
              bucket = CASE WHEN f.reason IS NULL THEN vt_bucket(f.c_instruction, f.c_input, f.c_output) END,
              changed = f.reason IS NULL AND (f.c_instruction <> f.v_instruction OR f.c_input <> f.v_input
                                              OR f.c_output <> f.v_output),
              ctl = f.reason IS NULL AND vt_ctl(f.c_instruction, f.c_input, f.c_output)
            FROM fixes f WHERE parsed.ord = f.ord""")
    finally:
        con.unregister("fixes")


def _load_python(con, path: Path, idx: int, report: ImportReport, encoding: str | None,
                 mapping: dict[str, str], source: str) -> None:
    """A file the SQL reader does not take (CSV, Parquet, JSON array, another encoding): read by the
    Python path (its errors and counts go to the report there), its kept rows added to ``parsed``."""
    import pyarrow as pa

    rows = pairs.iter_pairs(path, report, source=source, encoding=encoding, mapping=mapping)
    while batch := list(itertools.islice(rows, PYTHON_BATCH_ROWS)):   # bounded memory, whatever the file's size
        table = pa.table({
            "line": [r["_at"][1] for r in batch],
            "source": [r["source"] for r in batch],
            **{f"c_{k}": [r[k] for r in batch] for k in FIELDS},
            **{f"v_{k}": [r["_raw"][i] for r in batch] for i, k in enumerate(FIELDS)},
        })
        del batch
        con.register("py_rows", table)
        try:
            con.execute(f"""
                INSERT INTO parsed (ord, file_idx, line, source, instruction, input, output, raw_h, norm_h, bucket,
                                    changed, ctl)
                SELECT ({idx}::BIGINT << 40) + line, {idx}, line, source, c_instruction, c_input, c_output,
                       vt_key(v_instruction, v_input, v_output), vt_key(c_instruction, c_input, c_output),
                       vt_bucket(c_instruction, c_input, c_output), false,
                       vt_ctl(c_instruction, c_input, c_output)
                FROM py_rows ORDER BY line""")
        finally:
            con.unregister("py_rows")


# ── dedup, split, mix, write ─────────────────────────────────────────────────


def _dedup(con, report: ImportReport, names: list[str]) -> int:
    # Normalised copies are rows whose cleaned fields are equal after lower() (which stands in for
    # str.casefold(): they differ only where casefold expands a letter, German ß -> ss and some
    # ligatures, none of which occur in Vietnamese). lower() is slow on non-ASCII text, so it runs
    # where it can matter: rows that are copies share a bucket (vt_bucket: lengths and lowered first
    # characters); the key is the cleaned fields' (norm_h from parsing) except in buckets holding
    # different texts, where it becomes the lowered fields' key (a separate key space: vt_lkey).
    con.execute("""
        UPDATE parsed SET norm_h = vt_lkey(instruction, input, output)
        FROM (SELECT bucket FROM parsed WHERE reason IS NULL GROUP BY bucket HAVING min(norm_h) <> max(norm_h)) b
        WHERE parsed.bucket = b.bucket AND parsed.reason IS NULL""")
    con.execute("""
        CREATE TABLE firsts AS
        SELECT norm_h, min(ord) AS first_ord FROM parsed WHERE reason IS NULL GROUP BY norm_h""")
    # A copy is exact when its raw fields equal the first's: raw_h is stored only where cleaning changed
    # a row, elsewhere the raw fields are the cleaned ones, whose key is computed here for the few rows involved.
    con.execute("""
        CREATE TABLE dups AS
        SELECT p.ord, p.file_idx, p.line, q.file_idx AS of_idx, q.line AS of_line,
               coalesce(p.raw_h, vt_key(p.instruction, p.input, p.output))
                 = coalesce(q.raw_h, vt_key(q.instruction, q.input, q.output)) AS is_exact
        FROM parsed p JOIN firsts f USING (norm_h) JOIN parsed q ON q.ord = f.first_ord
        WHERE p.reason IS NULL AND p.ord <> f.first_ord""")
    exact, normal = con.execute(
        "SELECT count(*) FILTER (is_exact), count(*) FILTER (NOT is_exact) FROM dups").fetchall()[0]
    report.duplicates_exact += exact
    report.duplicates_normalized += normal
    report.duplicates_removed += exact + normal
    for file_idx, line, is_exact, of_idx, of_line in con.execute(
            "SELECT file_idx, line, is_exact, of_idx, of_line FROM dups ORDER BY ord LIMIT ?",
            [MAX_ERRORS_LISTED]).fetchall():
        report.duplicates.append({"file": names[file_idx], "line": line, "kind": "exact" if is_exact else "normalized",
                                  "of": {"file": names[of_idx], "line": of_line}})
    return con.execute("SELECT count(*) FROM firsts").fetchall()[0][0]


def _content_hash(con) -> str:
    """rows.content_hash of the written rows (``part`` 0 then 1, in table order, as COPY wrote them):
    DuckDB builds each row's JSON text in a second thread while this one feeds sha256 (which releases the GIL)."""
    import queue
    import threading

    import numpy as np
    import pyarrow as pa

    h = hashlib.sha256()
    chunks: queue.Queue = queue.Queue(maxsize=4)

    def produce() -> None:
        try:
            for split, part in (("train", 0), ("test", 1)):
                rel = con.sql(f"SELECT vt_json('{split}', instruction, input, output, ctl) AS j FROM parsed "
                              f"WHERE part = {part}")
                for batch in rel.to_arrow_reader(50_000):
                    chunks.put(batch.column(0))
            chunks.put(None)
        except BaseException as exc:  # handed to the consumer
            chunks.put(exc)

    thread = threading.Thread(target=produce, name="bulk-hash", daemon=True)
    thread.start()
    while (arr := chunks.get()) is not None:
        if isinstance(arr, BaseException):
            raise arr
        if arr.type not in (pa.string(), pa.large_string()):
            arr = arr.cast(pa.large_string())
        if not len(arr):
            continue
        width = np.int64 if arr.type == pa.large_string() else np.int32
        offsets = np.frombuffer(arr.buffers()[1], dtype=width)[arr.offset: arr.offset + len(arr) + 1]
        h.update(memoryview(arr.buffers()[2])[offsets[0]:offsets[-1]])
    thread.join()
    return h.hexdigest()


class _Stages:
    """Seconds per stage, and the most DuckDB had spilled to disk at a stage's end, into ``report.bulk``."""

    def __init__(self, report: ImportReport, memory_limit: str):
        self.t0 = self.last = time.perf_counter()
        self.seconds: dict[str, float] = {}
        self.bulk = report.bulk = {"seconds": self.seconds, "memory_limit": memory_limit, "spilled_mb": 0.0}

    def done(self, label: str, con) -> None:
        now = time.perf_counter()
        self.seconds[label] = round(now - self.last, 3)
        self.last = now
        spilled = con.execute("SELECT coalesce(sum(size), 0) FROM duckdb_temporary_files()").fetchall()[0][0]
        self.bulk["spilled_mb"] = max(self.bulk["spilled_mb"], round(spilled / 1024**2, 1))

    def total(self) -> None:
        self.seconds["total"] = round(time.perf_counter() - self.t0, 3)


def prepare_bulk(
    files: Iterable[Path],
    folder: Path,
    *,
    test_fraction: float = 0.1,
    seed: int = 42,
    general: dict | None = None,
    general_ratio: float = 0.05,
    encoding: str | None = None,
    mapping: dict[str, str] | None = None,
    extra_lineage: dict | None = None,
    memory_limit: str | None = None,
) -> tuple[dict | None, ImportReport]:
    """``importer.prepare`` done in DuckDB SQL (see the module's docstring); same arguments, same report. Writes
    the version's ``train.parquet`` and ``test.parquet`` into ``folder`` and returns what its record needs
    (content hash, rows of each split, lineage), or None when no row was kept; touches no studio database
    (``importer.import_files`` records the version). ``general``: the general-data version's ``id``, ``path``
    and ``rows_total``. ``memory_limit``: DuckDB's (default ``$VITUNE_BULK_MEMORY`` or ``MEMORY_LIMIT``)."""
    import duckdb

    files = [Path(f) for f in files]
    mapping = mapping or {}
    memory_limit = memory_limit or os.environ.get("VITUNE_BULK_MEMORY") or MEMORY_LIMIT
    report = ImportReport()
    stages = _Stages(report, memory_limit)
    pairs.test_count(2, test_fraction)  # a bad fraction fails before any work
    if general and not 0 < general_ratio < 0.5:
        raise DatasetError("the general-data share must be between 0 and 0.5 (the guide: 5–10 %)")
    for f in files:
        if not f.exists():
            raise DatasetError(f"{f}: no such file or folder")
        if f.is_file() and f.stat().st_size > MAX_FILE_BYTES:
            raise DatasetError(f"{f.name}: {pairs._size(f.stat().st_size)} is over the import limit of "
                               f"{pairs._size(MAX_FILE_BYTES)}; split it into smaller files")
    try:
        with store.scratch(memory_limit, THREADS) as con:
            con.execute(_MACROS)
            con.execute(_PARSED)
            for idx, f in enumerate(files):
                if _sql_readable(f, encoding):
                    _load_sql(con, f, idx, report, encoding, mapping, f.stem)
                else:
                    _load_python(con, f, idx, report, encoding, mapping, f.stem)
            stages.done("read, validate, clean", con)
            kept = _dedup(con, report, [f.name for f in files])
            report.rows_kept = kept
            stages.done("dedup", con)
            if not kept:
                stages.total()
                return None, report
            n_test = pairs.test_count(kept, test_fraction)
            # a seeded shuffle: the rows' (uniform) content hashes xor a number drawn from the seed
            mask = int.from_bytes(hashlib.sha256(f"split:{seed}".encode()).digest()[:16], "big")
            con.execute(f"""
                CREATE TABLE split AS
                SELECT first_ord AS ord,
                       row_number() OVER (ORDER BY xor(norm_h, {mask}::UHUGEINT), first_ord) <= {n_test} AS is_test
                FROM firsts""")
            # The kept rows are marked in place: ``parsed`` is in file order (each block is inserted in
            # order, preserve_insertion_order), so a plain scan writes them in file order without a sort.
            con.execute("UPDATE parsed SET part = CASE WHEN s.is_test THEN 1 ELSE 0 END "
                        "FROM split s WHERE parsed.ord = s.ord")
            lineage: dict[str, Any] = {"files": [str(f) for f in files], "test_fraction": test_fraction,
                                       "seed": seed, "encoding": encoding, "mapping": mapping or None,
                                       "engine": "duckdb"}
            n_train = kept - n_test
            if general:
                want = round(n_train * general_ratio / (1 - general_ratio))
                if want > general["rows_total"]:
                    raise DatasetError(f"{want} general pairs needed for {general_ratio:.0%}, "
                                       f"the general version has {general['rows_total']}")
                parts = ", ".join(_lit(str(Path(general["path"]) / f"{s}.parquet")) for s in ("train", "test"))
                # a seeded sample, appended after the file's rows in the order drawn (as mix_general does)
                con.execute(f"""
                    INSERT INTO parsed (ord, file_idx, source, instruction, input, output, ctl, part)
                    SELECT (1::BIGINT << 62) + row_number() OVER (ORDER BY r), -1,
                           coalesce(nullif(source, ''), 'general'), instruction, input, output,
                           vt_ctl(instruction, input, output), 0
                    FROM (SELECT *, md5_number({int(seed)} || ':' || filename || ':' || file_row_number) AS r
                          FROM read_parquet([{parts}], filename = true, file_row_number = true)
                          ORDER BY r LIMIT {want})
                    ORDER BY r""")
                lineage["general"] = {"version": general["id"], "ratio": general_ratio, "rows": want}
                n_train += want
            lineage.update(extra_lineage or {})
            stages.done("split", con)
            for split, part in (("train", 0), ("test", 1)):
                con.execute(f"""
                    COPY (SELECT instruction, input, output, source FROM parsed WHERE part = {part})
                    TO {_lit(str(folder / (split + '.parquet')))} (FORMAT parquet, ROW_GROUP_SIZE {PARQUET_ROW_GROUP})""")
            stages.done("write parquet", con)
            digest = _content_hash(con)
            stages.done("content hash", con)
    except duckdb.OutOfMemoryException as exc:
        raise DatasetError(f"the bulk import needs more than its memory limit of {memory_limit} (set "
                           f"VITUNE_BULK_MEMORY, e.g. 2GB): {str(exc).splitlines()[0]}") from None
    stages.total()
    return {"content_hash": digest, "rows_train": n_train, "rows_test": n_test, "lineage": lineage}, report
