"""The DuckDB bulk import path (core/bulk_import.py) against the Python path: same reports, same rows.

Small files only; the speed and memory on 1M+ pairs are measured by bench/dataset_import.py."""
from __future__ import annotations

import json
import random
import unicodedata
from pathlib import Path

import pytest

from core import store
from core.datasets import bulk as bulk_path, importer, rows as pair_rows, versions
from tests.conftest import OPERATOR, cli, tiny_pairs, to_cp1258, write_jsonl

BAD = Path(__file__).resolve().parent / "data" / "bad_files"


def _both(files, **kw):
    """(report dict or error text, version) from the Python path and from the bulk path."""
    out = []
    for bulk in (False, True):
        try:
            version, report = importer.import_files(files, "parity", bulk=bulk, **kw, actor=OPERATOR)
        except pair_rows.DatasetError as exc:
            out.append((str(exc), None))
            continue
        r = report.as_dict()
        r.pop("bulk", None)
        for f in r["files"]:  # UTF-8 JSONL goes through SQL; other files through the Python reader
            sql = bulk and f.get("format") == "jsonl" and f.get("encoding", "").startswith("utf-8")
            assert f.pop("engine", "python") == ("duckdb" if sql else "python")
        out.append((r, version))
    return out


def _rows(version) -> list[tuple]:
    rows = versions.load_rows(version["id"], "train") + versions.load_rows(version["id"], "test")
    return sorted((r["instruction"], r["input"], r["output"], r["source"]) for r in rows)


@pytest.mark.parametrize("name", sorted(p.name for p in BAD.iterdir() if p.suffix in (".jsonl", ".json", ".csv")))
def test_bulk_report_matches_python_on_the_bad_files(home, name):
    encoding = "cp1258" if name == "cp1258.jsonl" else None
    (py, py_version), (sql, sql_version) = _both([BAD / name], encoding=encoding)
    assert sql == py
    if py_version:
        assert _rows(sql_version) == _rows(py_version)
        assert (sql_version["rows_train"], sql_version["rows_test"]) == (py_version["rows_train"], py_version["rows_test"])


def test_bulk_names_a_non_utf8_line_like_the_python_path(home, monkeypatch):
    path = home / "latin.jsonl"
    good = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in tiny_pairs(6)).encode("utf-8")
    path.write_bytes(good + b"\n" + to_cp1258('{"instruction": "Hỏi", "output": "Dạ"}\n'))
    monkeypatch.setattr(bulk_path, "CHUNK_BYTES", 100)  # the bad byte lies in a later block
    (py, _), (sql, _) = _both([path])
    assert sql == py and "line 8" in sql and "not UTF-8" in sql


def _messy_file(path: Path) -> Path:
    """BOM, CRLF, blank lines, NFD copies, exact copies, aliases, whitespace junk and bad lines at known places."""
    rng = random.Random(3)
    base = tiny_pairs(40)
    lines: list[str] = []
    for i, row in enumerate(base):
        lines.append(json.dumps(row, ensure_ascii=False))
        if i % 7 == 3:
            lines.append(json.dumps({k: unicodedata.normalize("NFD", v) for k, v in row.items()}, ensure_ascii=False))
        if i % 9 == 4:
            lines.append(json.dumps(rng.choice(base[: i + 1]), ensure_ascii=False))
        if i % 13 == 6:  # a copy in capitals (Vietnamese letters too): a normalised duplicate
            lines.append(json.dumps({k: v.upper() for k, v in row.items()}, ensure_ascii=False))
        if i % 11 == 5:
            lines.append("")
            lines.append("   \t")
    specials = [
        '{"instruction": "Hỏi", "output": "Dạ",}',                              # trailing comma: json.loads refuses
        '{"instruction": "Hỏi", "output": nan}',                                # lower-case nan
        '{"instruction": "Số", "output": NaN}',                                 # NaN is a float to Python
        '{"question": "Phí  chuyển\u200b khoản?", "answer": "  Miễn phí.\\r\\n\\r\\n\\r\\n\\r\\nChi tiết  "}',
        '{"Question ": "Câu hỏi viết hoa?", "Response": "Trả lời."}',
        '{"instruction": "Hỏi", "input": 5, "output": "x"}',
        '{"instruction": "Hỏi", "input": true, "output": "x"}',
        '{"instruction": "Hỏi", "output": {"a": 1}}',
        '{"instruction": null, "prompt": "Ưu tiên?", "output": "Có."}',
        '{"instruction": "Dài", "output": "' + "ạ" * (pair_rows.MAX_FIELD_CHARS + 1) + '"}',
        '["danh", "sách"]',
        '"chuỗi"',
        '{"instruction": "Hỏi"',
        '{"instruction": "\u3000\u3000", "output": "x"}',
        '{"instruction": "Chỉ \\u001f điều khiển \\t tab", "output": "\\"trích\\" \\\\ x"}',
        '{"instruction": "Tiếng Việt", "input": "", "output": "Ổn.", "output": "Ghi đè."}',
        '{"instruction": "Nửa ký tự", "output": "\\ud800"}',                  # json.loads takes it, UTF-8 cannot
    ]
    for k, special in enumerate(specials):
        lines.insert(5 + 4 * k, special)
    text = "\ufeff" + "\r\n".join(lines[:60]) + "\n" + "\n".join(lines[60:]) + "\n\n"
    path.write_bytes(text.encode("utf-8"))
    return path


def test_bulk_matches_python_on_a_messy_generated_file(home):
    path = _messy_file(home / "messy.jsonl")
    (py, py_version), (sql, sql_version) = _both([path], seed=5)
    assert sql == py
    assert py["duplicates_normalized"] >= 7 and py["duplicates_exact"] >= 3 and py["rows_rejected"] >= 10
    assert py["columns_mapped"] == {"question": "instruction", "answer": "output", "Question ": "instruction",
                                    "Response": "output"}  # "instruction": null is a missing field, not "prompt"
    assert _rows(sql_version) == _rows(py_version)
    # the content hash is datasets.content_hash's, computed over the bulk version's own split
    train = versions.load_rows(sql_version["id"], "train")
    test = versions.load_rows(sql_version["id"], "test")
    assert pair_rows.content_hash(train, test) == sql_version["content_hash"]
    # each split keeps the file's order
    first_line = {}
    for n, line in enumerate(path.read_text(encoding="utf-8-sig").split("\n"), start=1):
        try:
            row = json.loads(line)
            key = pair_rows.clean_text(row.get("instruction") or row.get("question") or "")
        except (ValueError, AttributeError, TypeError):
            continue
        first_line.setdefault(key, n)
    for rows in (train, test):
        lines = [first_line[r["instruction"]] for r in rows if r["instruction"] in first_line]
        assert len(lines) > len(rows) // 2 and lines == sorted(lines)
    # seeded: the same seed draws the same test rows, another seed other rows, always as many
    again, _ = importer.import_files([path], "again", bulk=True, seed=5, actor=OPERATOR)
    other, _ = importer.import_files([path], "other", bulk=True, seed=6, actor=OPERATOR)
    assert again["content_hash"] == sql_version["content_hash"] and other["content_hash"] != again["content_hash"]
    assert (other["rows_train"], other["rows_test"]) == (py_version["rows_train"], py_version["rows_test"])


def test_bulk_honours_the_column_mapping_like_the_python_path(home):
    lines = [
        '{"hoi": "Câu hỏi một?", "dap": "Trả lời một."}',
        '{"hoi": "Câu hỏi hai?", "instruction": "bị bỏ qua", "dap": "Trả lời hai.", "context": "ngữ cảnh"}',
        '{"instruction": "Không có hoi", "output": "vẫn dùng tên gốc"}',
        '{"hoi": 3, "dap": "số"}',
        '{"hoi": "Thiếu dap"}',
        '{"hoi": "Lặp", "dap": "một", "dap": "hai"}',
        '{"question": "alias khi có --map?", "answer": "có"}',
    ]
    path = home / "mapped.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (py, py_version), (sql, sql_version) = _both([path], mapping={"hoi": "instruction", "dap": "output"})
    assert sql == py and py["rows_kept"] == 5 and [e["line"] for e in py["errors"]] == [4, 5]
    assert _rows(sql_version) == _rows(py_version)


def test_bulk_several_files_dedup_across_them_and_mix_general(home):
    chung = [{"instruction": f"Câu hỏi chung số {i}?", "input": "", "output": f"Trả lời chung {i}."} for i in range(30)]
    general, _ = importer.import_files([write_jsonl(home / "general.jsonl", chung)], "general-vi", actor=OPERATOR)
    pairs = tiny_pairs(25)
    a = write_jsonl(home / "a.jsonl", pairs[:15])
    csv = home / "b.csv"
    csv.write_text("question,context,answer\n" + "".join(f'"{r["instruction"]}","{r["input"]}","{r["output"]}"\n'
                                                       for r in pairs[10:]), encoding="utf-8")
    (py, py_version), (sql, sql_version) = _both([a, csv], general_version=general["id"], general_ratio=0.1, seed=2)
    assert sql == py and py["duplicates_removed"] == 5
    assert sql["files"][0]["format"] == "jsonl" and sql["files"][1]["format"] == "csv"
    lineage = json.loads(sql_version["lineage"])
    assert lineage["general"] == json.loads(py_version["lineage"])["general"] and lineage["engine"] == "duckdb"
    assert sql_version["rows_train"] == py_version["rows_train"] and sql_version["rows_test"] == py_version["rows_test"]
    mixed = [r for r in versions.load_rows(sql_version["id"], "train") if r["source"] == "general"]
    assert len(mixed) == lineage["general"]["rows"] > 0


def test_sql_clean_matches_clean_text(home):
    rng = random.Random(11)
    pieces = ["Tiếng", "Việt", "hợp đồng", " ", "  ", "\t", "\n", "\r\n", "\r", "\u00a0", "\u200b", "\u2060", "\ufeff",
              "\u3000", "\u2003", "\u202f", "\x0b", "\x0c", "\x1f", "\x85", "\u2028", "\n\n\n", "Đ", "ß", "“x”", "₫",
              unicodedata.normalize("NFD", "Hồ Chí Minh"), unicodedata.normalize("NFD", "ƯỚC"), "\u0301", "e\u0302",
              "한국", "ｶﾀｶﾅ", "Å", "\u212b"]
    samples = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 24))) for _ in range(4000)]
    samples += ["", " ", "\n", "a", "  Xin chào\u00a0\u00a0bạn  ", "dòng 1  \n   \n\n\n\n  dòng 2"]
    with store.scratch("256MB", 1) as con:
        con.execute(bulk_path._MACROS)
        con.execute("CREATE TABLE s (i INTEGER, x VARCHAR)")
        con.executemany("INSERT INTO s VALUES (?, ?)", list(enumerate(samples)))
        got = dict(con.execute("SELECT i, vt_clean(x) FROM s").fetchall())
    wrong = [(s, got[i], pair_rows.clean_text(s)) for i, s in enumerate(samples) if got[i] != pair_rows.clean_text(s)]
    assert not wrong, wrong[:3]


def test_sql_row_json_matches_json_dumps(home):
    """The content hash is built from vt_json's text: it must be json.dumps's, byte for byte."""
    rng = random.Random(2)
    pieces = ["Việt", " ", "\n", '"', "\\", "\\n", "\x00", "\x01", "\x08", "\x0c", "\x1f", "\x7f", "\u2028", "/", "'", "₫"]
    triples = [["".join(rng.choice(pieces) for _ in range(rng.randint(0, 8))) for _ in range(3)] for _ in range(2000)]
    with store.scratch("256MB", 1) as con:
        con.execute(bulk_path._MACROS)
        con.execute("CREATE TABLE s (i INTEGER, a VARCHAR, b VARCHAR, c VARCHAR)")
        con.executemany("INSERT INTO s VALUES (?, ?, ?, ?)", [[i, *t] for i, t in enumerate(triples)])
        got = con.execute("SELECT vt_json('train', a, b, c, vt_ctl(a, b, c)), vt_json('test', a, b, c, NULL) "
                          "FROM s ORDER BY i").fetchall()
    for (flagged, unknown), t in zip(got, triples):
        assert flagged == json.dumps(["train", *t], ensure_ascii=False)
        assert unknown == json.dumps(["test", *t], ensure_ascii=False)


def test_nfc_shortcut_ranges_hold_only_nfc_quick_check_yes_characters():
    """The bulk path skips nfc_normalize for text made only of these characters: each must be NFC, have
    combining class 0 and never be the second character of a canonical composition."""
    second = set()
    for cp in range(0x110000):
        d = unicodedata.decomposition(chr(cp))
        if d and not d.startswith("<") and len(d.split()) == 2:
            second.add(int(d.split()[1], 16))
    ranges = bulk_path.NFC_SAFE_RANGES
    assert (0x0, 0x2FF) in ranges and (0x1E00, 0x1EFF) in ranges  # Latin, and the Vietnamese letters
    for lo, hi in ranges:
        for cp in range(lo, hi + 1):
            c = chr(cp)
            assert unicodedata.normalize("NFC", c) == c and unicodedata.combining(c) == 0 and cp not in second, hex(cp)


def test_bulk_spills_under_a_low_memory_limit(home, monkeypatch):
    """~50k rows (57 MB) through a DuckDB held to 100 MB: the tables, sorts and joins spill to disk and the
    version lands; 1M+ rows under the default 1 GB is the benchmark's job (bench/dataset_import.py)."""
    rng = random.Random(5)
    words = "khách hàng hợp đồng dịch vụ thanh toán bảo hành sản phẩm yêu cầu hỗ trợ điều khoản".split()
    path = home / "big.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for i in range(50_000):
            row = {"instruction": f"Câu {i}: " + " ".join(rng.choices(words, k=20)), "input": "",
                   "output": " ".join(rng.choices(words, k=150))}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            if i % 1000 == 7:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    monkeypatch.setattr(bulk_path, "CHUNK_BYTES", 4 * 1024**2)
    monkeypatch.setenv("VITUNE_BULK_MEMORY", "100MB")
    version, report = importer.import_files([path], "big", bulk=True, actor=OPERATOR)
    assert report.rows_read == 50_050 and report.duplicates_exact == 50 and report.rows_kept == 50_000
    assert (version["rows_train"], version["rows_test"]) == (45_000, 5_000)
    assert report.files[0]["engine"] == "duckdb" and report.bulk["memory_limit"] == "100MB"
    assert report.bulk["spilled_mb"] > 5  # it did not fit: DuckDB wrote to its temp_directory
    assert not list((home / "data" / "tmp").iterdir())  # which is gone afterwards
    monkeypatch.setenv("VITUNE_BULK_MEMORY", "30MB")  # too little even to spill: a clear one-line error
    with pytest.raises(pair_rows.DatasetError, match="memory limit of 30MB .*VITUNE_BULK_MEMORY"):
        importer.import_files([path], "big", bulk=True, actor=OPERATOR)
    assert len(versions.list_versions(OPERATOR)) == 1 and len(list((home / "data" / "datasets").iterdir())) == 1


def test_import_files_picks_the_bulk_path_over_the_threshold(home, monkeypatch):
    path = write_jsonl(home / "pairs.jsonl", tiny_pairs(12))
    _, small = importer.import_files([path], "small", actor=OPERATOR)
    assert "engine" not in small.files[0] and not small.bulk
    monkeypatch.setattr(bulk_path, "BULK_THRESHOLD_BYTES", path.stat().st_size - 1)
    _, large = importer.import_files([path], "large", actor=OPERATOR)
    assert large.files[0]["engine"] == "duckdb" and large.bulk["seconds"]["total"] > 0
    assert large.rows_kept == small.rows_kept == 12


def test_cli_bulk_json(home):
    path = _messy_file(home / "messy.jsonl")
    proc = cli("dataset", "import", str(path), "--name", "messy", "--bulk", "--json", home=home)
    out = json.loads(proc.stdout)
    assert out["files"] == [{"file": "messy.jsonl", "encoding": "utf-8-sig", "format": "jsonl", "engine": "duckdb"}]
    assert out["dataset_version"] and out["rows_kept"] > 0 and set(out["bulk"]["seconds"]) >= {"dedup", "total"}
    _, report = importer.import_files([path], "py", bulk=False, actor=OPERATOR)
    assert [(e["line"], e["reason"]) for e in out["errors"]] == [(e["line"], e["reason"]) for e in report.errors]
    plain = cli("dataset", "import", str(path), "--name", "messy2", "--bulk", home=home)
    assert "bulk import (DuckDB):" in plain.stdout and proc.stderr == ""


def test_scratch_duckdb_is_in_memory_spills_under_data_tmp_and_cleans_up(home):
    stale = home / "data" / "tmp" / "scratch-999999999-dead"  # left by a process that no longer exists
    stale.mkdir(parents=True)
    (stale / "duckdb_temp_block").write_bytes(b"x" * 10)
    with store.scratch("64MB", 1) as con:
        assert not stale.exists()
        (folder,) = (home / "data" / "tmp").iterdir()
        settings = dict(con.execute("SELECT name, value FROM duckdb_settings() WHERE name IN "
                                    "('memory_limit', 'threads', 'temp_directory')").fetchall())
        assert settings["temp_directory"] == str(folder) and settings["threads"] == "1"
        assert con.execute("SELECT database_name FROM duckdb_databases() WHERE NOT internal").fetchall() == [("memory",)]
        assert not (home / "data" / "studio.duckdb").exists()  # the studio database is not opened
    assert not folder.exists()
