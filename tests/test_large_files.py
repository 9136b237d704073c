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


# ── issue 24, item 2: a Parquet file of 2 KB that decodes to 22 GB ───────────


def parquet_bomb(path: Path, rows_: int = 200_000, chars: int = 31_000) -> Path:
    """The real bomb: three columns of ``rows_`` rows, each a dictionary of one ``chars``-character value (under
    the field limit) and its indices, RLE-encoded and compressed: ~2.3 KB that decode to rows_ × 3 × chars bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def column(letter: str):
        return pa.DictionaryArray.from_arrays(pa.array([0] * rows_, pa.int32()), pa.array([letter * chars]))

    pq.write_table(pa.table({"instruction": column("a"), "input": column("b"), "output": column("c")}), path,
                   compression="zstd")
    return path


# Imports the file with an address-space limit of what the process holds once the readers are loaded plus
# 1.5 GB: reading the bomb's first 10,000 rows alone would take 2.8 GB. Prints how the import ended.
UNDER_A_LIMIT = r"""
import json, resource, sys
from pathlib import Path
import duckdb, numpy, pyarrow, pyarrow.compute, pyarrow.parquet
from core.access.principal import operator
from core.datasets import importer, rows
held = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
hard = resource.getrlimit(resource.RLIMIT_AS)[1]
soft = held + 1536 * 1024**2
resource.setrlimit(resource.RLIMIT_AS, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))
try:
    version, report = importer.import_files([Path(sys.argv[1])], "bomb", actor=operator())
    print(json.dumps({"imported": version is not None}))
except rows.DatasetError as exc:
    print(json.dumps({"refused": str(exc)}))
except MemoryError as exc:
    print(json.dumps({"memory": type(exc).__name__}))
"""


def test_a_2_kb_parquet_bomb_is_refused_from_its_metadata_before_anything_is_decoded(home):
    bomb = parquet_bomb(home / "bomb.parquet")
    assert bomb.stat().st_size < 4096
    env = dict(os.environ, VITUNE_HOME=str(home))
    proc = subprocess.run([sys.executable, "-c", UNDER_A_LIMIT, str(bomb)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got == {"refused": "bomb.parquet: its columns instruction, input, output decode to more than the import "
                              "limit of 2.0 GB (counted from its metadata and dictionaries; nothing was decoded): a "
                              "compressed or dictionary-encoded file much larger than it looks; split it into "
                              "smaller files"}, got


def test_a_parquet_file_with_more_rows_than_a_file_may_hold_is_refused_from_its_metadata(home, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from core.datasets import importer
    from tests.conftest import OPERATOR

    path = home / "many.parquet"
    pq.write_table(pa.table({"instruction": ["Hỏi"] * 50, "output": ["Đáp"] * 50}), path)
    monkeypatch.setattr(rows, "MAX_ROWS", 40)
    with pytest.raises(rows.DatasetError, match=r"many.parquet: 50 rows \(its metadata says; nothing was read\), over "
                                                r"the import limit of 40 rows a file"):
        importer.import_files([path], "many", actor=OPERATOR)
    # a column no field comes from is never read: a bomb there costs nothing
    junk = home / "junk.parquet"
    pq.write_table(pa.table({"instruction": ["Hỏi"] * 30, "output": ["Đáp"] * 30,
                             "junk": pa.DictionaryArray.from_arrays(pa.array([0] * 30, pa.int32()),
                                                                    pa.array(["x" * 1_000_000]))}), junk)
    monkeypatch.setattr(rows, "MAX_TEXT_BYTES", 10_000)
    version, report = importer.import_files([junk], "junk", actor=OPERATOR)
    assert report.rows_read == 30 and report.rows_kept == 1 and report.duplicates_removed == 29


# The web app's part of an import from the Datasets page (core.datasets.importer.import_files, isolated as the page
# asks), in a process standing for the web app: prints how the import ended, then that this process lives on.
AS_THE_PAGE_DOES = r"""
import json, os, sys
from pathlib import Path
from core.access.principal import operator
from core.datasets import importer, rows
try:
    version, report = importer.import_files([Path(sys.argv[1])], "cskh", actor=operator(), isolated=True)
    print(json.dumps({"version": version and version["id"], "kept": report.rows_kept, "pid": os.getpid()}))
except rows.DatasetError as exc:
    print(json.dumps({"refused": str(exc), "pid": os.getpid()}))
print("still here")
"""


def test_an_import_runs_in_a_process_of_its_own_whose_death_leaves_the_caller_standing(home):
    from tests.conftest import tiny_pairs, write_jsonl

    path = write_jsonl(home / "cskh.jsonl", tiny_pairs(12))

    def page_import(**env) -> dict:
        proc = subprocess.run([sys.executable, "-c", AS_THE_PAGE_DOES, str(path)], cwd=REPO, capture_output=True,
                              text=True, timeout=300, env=dict(os.environ, VITUNE_HOME=str(home), **env))
        assert proc.returncode == 0 and proc.stdout.splitlines()[-1] == "still here", proc.stderr[-3000:]
        return json.loads(proc.stdout.splitlines()[-2])

    got = page_import()
    assert got["kept"] == 12 and got["version"]
    # the import's process is killed (SIGKILL) in the middle: the caller gets one line and goes on
    got = page_import(VITUNE_CRASH_AT="import.prepare")
    assert got["refused"] == ("cskh.jsonl: the import's process was killed by SIGKILL (most likely out of memory); "
                              "nothing was imported and the studio goes on"), got
    from core.datasets import versions
    from tests.conftest import OPERATOR

    with_home = {v["id"] for v in versions.list_versions(OPERATOR)}
    assert len(with_home) == 1   # the first import's version only
    assert sorted(p.name for p in (home / "data" / "datasets").iterdir()) == sorted(with_home)   # no half version
    assert not list((home / "data" / "tmp").glob("import-*"))
    # the bomb through the same path: refused from its metadata, in the import's process
    bomb = parquet_bomb(home / "bomb.parquet")
    proc = subprocess.run([sys.executable, "-c", AS_THE_PAGE_DOES, str(bomb)], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, VITUNE_HOME=str(home)))
    assert proc.stdout.splitlines()[-1] == "still here", proc.stderr[-3000:]
    assert json.loads(proc.stdout.splitlines()[-2])["refused"].startswith(
        "bomb.parquet: its columns instruction, input, output decode to more than the import limit of 2.0 GB")


# What the web process reads of a dataset version to show it (the Datasets page's stats), to draw a vote set or
# to queue a preflight, in a fresh process: how much its peak resident memory grew (the version holds 120 MB of text).
READ_A_VERSION = r"""
import json, resource, sys
import pyarrow, pyarrow.compute, pyarrow.parquet, tokenizers
from core.access.principal import operator
from core.datasets import stats, versions
from core.deploy import preflights
from core.evaluation import votes
version = versions.get_version(sys.argv[1])
stats.CHART_ROWS = 2_000    # the token count: a sample, so that the test does not tokenize 120 MB
stats._fast_tokenizer(str(stats.paths.default_base_model_dir()))   # the tokenizer's own memory is not the version's
reads = {"field_stats": lambda: stats.field_stats(version), "length_stats": lambda: stats.length_stats(version),
         "token_stats": lambda: {k: v for k, v in stats.token_stats(version, None, "chat", 2048).items()
                                 if k in ("rows", "mean", "max")},
         "held_out_prompts": lambda: votes.held_out_prompts(version["id"], 10, seed=3, actor=operator()),
         "golden_pairs": lambda: preflights.golden_pairs(version["id"])}
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
got = {what: reads[what]() for what in sys.argv[2:]}
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps({"grown_mb": grown, "got": got}, ensure_ascii=False, default=str))
"""


def test_showing_a_large_version_reads_it_a_batch_at_a_time(home, default_model):
    """The Datasets page's stats, a vote set drawn from the held-out split and a preflight's golden pairs read
    what they need of a version, never all of it into the web process: a version of 120 MB of text grows the
    reading process by a fraction of that (read whole, one function alone grew it by about twice its text)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from core.datasets import versions
    from tests.conftest import OPERATOR

    folder = home / "data" / "datasets" / "ds-large"
    folder.mkdir(parents=True)
    text = {k: "từ ngữ " * 40 + f"{k} " + "x" * 200 for k in ("instruction", "input", "output")}   # ~500 characters
    schema = pa.schema([(c, pa.string()) for c in ("instruction", "input", "output", "source")])
    for split in ("train", "test"):
        with pq.ParquetWriter(folder / f"{split}.parquet", schema, use_dictionary=False) as writer:
            for block in range(4):   # 40,000 rows a split, in row groups of 10,000
                rows = {k: pa.array([f"{block}-{i} {v}" for i in range(10_000)]) for k, v in text.items()}
                writer.write_table(pa.table({**rows, "source": pa.array(["x"] * 10_000)}, schema=schema))
    versions._record_version("ds-large", folder, "large", content_hash="-", rows_train=40_000, rows_test=40_000,
                             source="import", parent_id=None, lineage={}, report={}, actor=OPERATOR, project="default")
    env = dict(os.environ, VITUNE_HOME=str(home))
    got = {}
    for reads in (("field_stats", "length_stats", "token_stats"), ("held_out_prompts", "golden_pairs")):
        proc = subprocess.run([sys.executable, "-c", READ_A_VERSION, "ds-large", *reads], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        assert out["grown_mb"] < 60, (reads, out["grown_mb"])
        got.update(out["got"])
    assert [f["max_chars"] for f in got["field_stats"]] == [len(f"3-9999 {v}") for v in text.values()]
    assert [f["mean_words"] for f in got["field_stats"]] == [83.0, 83.0, 83.0] and got["field_stats"][0]["empty"] == 0
    assert len(got["length_stats"]["split"]) == 2_000 and set(got["length_stats"]["instruction_words"]) == {83}
    assert got["token_stats"]["rows"] == 2_000 and got["token_stats"]["max"] > 200
    drawn = [int(p["source"].split("#")[1]) for p in got["held_out_prompts"]]
    assert len(drawn) == 10 and all(f"{i // 10_000}-{i % 10_000} " in p["prompt"]
                                    for i, p in zip(drawn, got["held_out_prompts"]))
    assert [p["instruction"][:4] for p in got["golden_pairs"][:2]] == ["0-0 ", "0-1 "]
