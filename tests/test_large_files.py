"""Large files do not take the importing process's memory: a one-line JSONL and a CSV with a line of
hundreds of megabytes are read with bounded buffers (the line is counted and rejected, the valid rows
kept), and the line-by-line reader of large CSV and JSONL files gives the report the whole-file reader
gives. Memory is measured as the peak resident size of a real import process (not time)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.datasets import rows
from tests.conftest import REPO

PAIR = {"instruction": "Khách hỏi về phí vận chuyển.", "input": "", "output": "Dạ, nội thành được miễn phí ạ."}
HUGE = 100 * 1024 * 1024   # characters in the one long line

# Imports a file in a fresh process (the web app's import path: core.datasets.importer.import_files) and
# prints the report and how much the peak resident memory grew during the import. The thresholds are
# lowered so that a file of a few hundred MB takes the paths a 2 GB one takes.
MEASURE = r"""
import json, resource, sys
from pathlib import Path
from core.access.principal import operator
from core.datasets import bulk, importer, rows
rows.STREAM_BYTES = bulk.BULK_THRESHOLD_BYTES = bulk.CHUNK_BYTES = 4 * 1024 * 1024
warm = Path(sys.argv[2])
importer.import_files([warm], "warm-up", actor=operator())          # duckdb, pyarrow and numpy loaded
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
version, report = importer.import_files([Path(sys.argv[1])], "large", actor=operator())
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({"grown_mb": grown / 1024, "kept": report.rows_kept, "errors": report.errors,
                  "engine": [f.get("engine") for f in report.files]}))
"""


def _measure(home: Path, path: Path) -> dict:
    warm = home / "warm.csv"
    warm.write_text("instruction,input,output\n" + "".join(f"Hỏi {i},,Đáp {i}\n" for i in range(50)), encoding="utf-8")
    env = dict(os.environ, VITUNE_HOME=str(home), VITUNE_BULK_MEMORY="64MB")
    proc = subprocess.run([sys.executable, "-c", MEASURE, str(path), str(warm)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _write_with_a_huge_line(path: Path, head: str, huge: str, tail: list[str]) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        fh.write(head)
        fh.write(huge[0])
        block = huge[1] * (1024 * 1024)
        for _ in range(HUGE // len(block)):
            fh.write(block)
        fh.write(huge[2])
        fh.writelines(tail)
    return path


@pytest.mark.slow
def test_a_one_line_jsonl_of_hundreds_of_megabytes_is_read_in_bounded_memory(home):
    path = _write_with_a_huge_line(home / "one_line.jsonl", json.dumps(PAIR, ensure_ascii=False) + "\n",
                                   ('{"instruction": "', "ả", '", "output": "x"}\n'),
                                   [json.dumps({**PAIR, "output": "Dạ, có ạ."}, ensure_ascii=False) + "\n"])
    got = _measure(home, path)
    assert got["engine"] == ["duckdb"] and got["kept"] == 2
    assert got["errors"] == [{"file": "one_line.jsonl", "line": 2,
                              "reason": f"line too long ({HUGE + 34} characters, limit {rows.MAX_LINE_CHARS})"}]
    assert got["grown_mb"] < 150, got   # the line alone is 300 MB of UTF-8


@pytest.mark.slow
def test_a_csv_with_a_line_of_hundreds_of_megabytes_is_read_in_bounded_memory(home):
    path = _write_with_a_huge_line(home / "big.csv", "instruction,input,output\nHỏi 1,,Đáp 1\n",
                                   ("", "x", ",,y\n"), ["Hỏi 2,,Đáp 2\n", "Hỏi 3,,Đáp 3\n"])
    got = _measure(home, path)
    assert got["kept"] == 3
    assert got["errors"] == [{"file": "big.csv", "line": 3,
                              "reason": f"line too long ({HUGE + 3} characters, limit {rows.MAX_LINE_CHARS})"}]
    assert got["grown_mb"] < 150, got   # read whole, the file was held three times over (bytes, text, rows)


def _report(path: Path, **kw) -> dict:
    report = rows.ImportReport()
    kept = rows.read_pairs(path, report, source="x", **kw)
    return {"kept": [(r["instruction"], r["input"], r["output"]) for r in kept],
            **{k: v for k, v in report.as_dict().items() if k != "files"}, "files": report.files}


@pytest.mark.parametrize("name,text", [  # ids: the texts are long (pytest puts a test's id in the environment)
    ("rows.csv", "\ufeffinstruction,input,output\r\nHỏi 1,,Đáp 1\r\n\"Hỏi\r\nnhiều dòng\",,Đáp 2\r\n"
                 ",,\r\nHỏi 3,,\r\nHỏi 4,,Đáp 4,thừa\r\n" + "x" * 5_000_000 + ",,y\r\nHỏi 5,,Đáp 5\r\n"),
    ("semicolons.csv", "instruction;input;output\nHỏi 1;;Đáp 1\nHỏi 2;Ngữ cảnh;Đáp 2\n"),
    ("rows.jsonl", "\n".join([json.dumps(PAIR, ensure_ascii=False), "{hỏng", "", '{"instruction": 1, "output": "a"}',
                              "[" * 100_000, "a" * 2_000_000, json.dumps({**PAIR, "output": "Khác"})]) + "\n"),
], ids=["csv", "semicolons", "jsonl"])
def test_the_line_by_line_reader_gives_the_whole_file_readers_report(tmp_path, monkeypatch, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    whole = _report(path)
    monkeypatch.setattr(rows, "STREAM_BYTES", 1024)
    assert _report(path) == whole
    assert whole["kept"] and (whole["errors"] or name == "semicolons.csv")


def test_a_non_utf8_large_file_names_the_line_and_the_byte_as_the_whole_file_reader_does(tmp_path, monkeypatch):
    path = tmp_path / "cp.jsonl"
    path.write_bytes((json.dumps(PAIR, ensure_ascii=False) + "\n").encode() * 3 + b"H\xf4\xd2i\n")
    with pytest.raises(rows.EncodingError) as whole:
        rows.read_pairs(path, rows.ImportReport(), source="x")
    monkeypatch.setattr(rows, "STREAM_BYTES", 16)
    with pytest.raises(rows.EncodingError) as streamed:
        rows.read_pairs(path, rows.ImportReport(), source="x")
    assert str(streamed.value) == str(whole.value) and "line 4" in str(whole.value)
    utf16 = tmp_path / "u16.jsonl"
    utf16.write_bytes((json.dumps(PAIR, ensure_ascii=False) + "\n").encode("utf-16"))
    with pytest.raises(rows.DatasetError, match=r"u16.jsonl: .* of utf-16 text is more than the 16 bytes that is "
                                                r"read whole; save it as UTF-8"):
        rows.read_pairs(utf16, rows.ImportReport(), source="x")
