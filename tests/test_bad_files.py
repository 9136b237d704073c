"""The bad-file corpus (tests/data/bad_files/, made by make_bad_files.py): the exact import report for each.

Files marked ``cli`` go through ``python -m core dataset import --json`` in a real subprocess, the
others through ``core.datasets.importer.import_files``; both give the same report."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.datasets import importer, versions
from tests.conftest import OPERATOR, cli

BAD = Path(__file__).resolve().parent / "data" / "bad_files"


def _report(name, rows_read, rows_kept, errors=(), *, dup_exact=0, dup_norm=0, normalized=0, mapped=None,
            duplicates=(), encoding="utf-8", fmt="jsonl"):
    return {
        "rows_read": rows_read, "rows_kept": rows_kept, "rows_rejected": len(errors),
        "duplicates_removed": dup_exact + dup_norm, "duplicates_exact": dup_exact, "duplicates_normalized": dup_norm,
        "normalized": normalized, "columns_mapped": mapped or {},
        "files": [{"file": name, "encoding": encoding, "format": fmt}],
        "errors": [{"file": name, "line": line, "reason": reason} for line, reason in errors],
        "duplicates": [{"file": name, "line": line, "kind": kind, "of": {"file": name, "line": of}}
                       for line, kind, of in duplicates],
    }


CASES = [
    # (file, extra CLI args, via the CLI?, expected report)
    ("bom.jsonl", [], True, _report("bom.jsonl", 3, 3, encoding="utf-8-sig")),
    ("crlf.jsonl", [], True, _report("crlf.jsonl", 4, 3, [(3, "invalid JSON (Expecting value)")])),
    ("nfd.jsonl", [], True, _report("nfd.jsonl", 4, 3, dup_norm=1, normalized=2,
                                    duplicates=[(3, "normalized", 1)])),
    ("invalid_line.jsonl", [], True, _report("invalid_line.jsonl", 5, 2, [
        (2, "invalid JSON (Expecting ',' delimiter)"),
        (4, "invalid JSON (Expecting property name enclosed in double quotes)"),
        (5, "invalid JSON (Expecting value)")])),
    ("missing_field.jsonl", [], False, _report("missing_field.jsonl", 4, 2, [
        (2, "missing field 'output'"), (3, "missing field 'instruction'")])),
    ("cp1258.jsonl", ["--encoding", "cp1258"], True, _report("cp1258.jsonl", 2, 2, normalized=2, encoding="cp1258")),
    ("utf16.jsonl", [], False, _report("utf16.jsonl", 2, 2, encoding="utf-16")),
    ("array.jsonl", [], False, _report("array.jsonl", 4, 3, [(4, "missing field 'output'")], fmt="json array")),
    ("huge_line.jsonl", [], False, _report("huge_line.jsonl", 3, 2, [
        (2, "field 'output' is too long (40000 characters, limit 32000)")])),
    ("numbers.jsonl", [], True, _report("numbers.jsonl", 6, 2, [
        (2, "field 'output' is not text (int)"), (3, "field 'instruction' is not text (float)"),
        (5, "field 'output' is not text (list)"), (6, "field 'input' is not text (int)")])),
    ("whitespace_output.jsonl", [], False, _report("whitespace_output.jsonl", 5, 2, [
        (2, "field 'output' is empty"), (3, "field 'output' is empty"), (5, "field 'instruction' is empty")],
        normalized=1)),
    ("mixed_fields.jsonl", [], True, _report("mixed_fields.jsonl", 4, 4, mapped={
        "question": "instruction", "answer": "output", "prompt": "instruction", "context": "input",
        "response": "output", "Question": "instruction", "Answer": "output"})),
    ("multiline.csv", [], True, _report("multiline.csv", 4, 2, [
        (4, "field 'output' is empty"), (6, "3 columns in the header, more in this row")],
        normalized=1, encoding="utf-8-sig", fmt="csv")),
    ("blank_lines.jsonl", [], False, _report("blank_lines.jsonl", 2, 2)),
    ("not_object.jsonl", [], False, _report("not_object.jsonl", 4, 1, [
        (n, "not an object with instruction, input and output") for n in (2, 3, 4)])),
    ("exact_duplicates.jsonl", [], False, _report("exact_duplicates.jsonl", 5, 2, dup_exact=2, dup_norm=1,
                                                   duplicates=[(3, "exact", 1), (4, "exact", 1),
                                                               (5, "normalized", 2)])),
]


@pytest.mark.parametrize("name,args,via_cli,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_file_report(home, name, args, via_cli, expected):
    if via_cli:
        proc = cli("dataset", "import", str(BAD / name), "--name", "bad", "--json", *args, home=home)
        report = json.loads(proc.stdout)
        version_id = report.pop("dataset_version")
        assert proc.stderr == ""
    else:
        encoding = args[1] if args else None
        version, rep = importer.import_files([BAD / name], "bad", encoding=encoding, actor=OPERATOR)
        report, version_id = rep.as_dict(), version["id"]
    assert report == expected
    version = versions.get_version(version_id)
    assert version["rows_total"] == expected["rows_kept"]
    assert json.loads(version["report"]) == expected  # the version keeps its import report


FAILS = [
    # (file, the one-line reason on stderr, exit code)
    ("empty.jsonl", "error: empty.jsonl: no rows found (the file is empty); nothing was imported", 1),
    ("cp1258.jsonl", "error: cp1258.jsonl: not UTF-8 (line 1, byte 20: invalid continuation byte); name its "
                     "encoding (--encoding cp1258 for Windows-1258, --encoding utf-16) or save it as UTF-8", 1),
    ("broken_array.json", "error: broken_array.json: invalid JSON at line 4 (Expecting ',' delimiter); a JSON array "
                          "cannot be read past a syntax error: fix it, or save the rows as JSONL", 1),
]


@pytest.mark.parametrize("name,message,code", FAILS, ids=[f[0] for f in FAILS])
def test_bad_file_refused_with_one_line(home, name, message, code):
    proc = cli("dataset", "import", str(BAD / name), "--name", "bad", home=home, check=False)
    assert proc.returncode == code
    assert proc.stderr == message + "\n"
    assert versions.list_versions(OPERATOR) == []


def test_corpus_has_at_least_twelve_files():
    files = [p for p in BAD.iterdir() if p.suffix != ".py"]
    assert len(files) >= 12
    covered = {c[0] for c in CASES} | {f[0] for f in FAILS}
    assert covered == {p.name for p in files}


def test_cp1258_text_is_decoded_to_nfc_vietnamese(home):
    version, _ = importer.import_files([BAD / "cp1258.jsonl"], "vi", encoding="cp1258", actor=OPERATOR)
    rows = versions.load_rows(version["id"], "train") + versions.load_rows(version["id"], "test")
    assert sorted(r["output"] for r in rows) == [
        "Dạ, đơn 1 được miễn phí vận chuyển nội thành ạ.", "Dạ, đơn 2 được miễn phí vận chuyển nội thành ạ."]


def test_text_report_names_mapped_columns_and_bad_lines(home):
    proc = cli("dataset", "import", str(BAD / "mixed_fields.jsonl"), str(BAD / "missing_field.jsonl"), "--name", "m",
               home=home)
    out = proc.stdout.splitlines()
    assert out[:7] == ["rows_read: 8", "rows_kept: 5", "rows_rejected: 2", "duplicates_removed: 1",  # line 1 of both
                       "duplicates_exact: 1", "duplicates_normalized: 0", "normalized: 0"]
    assert out[7] == ("columns mapped: question → instruction, answer → output, prompt → instruction, "
                      "context → input, response → output, Question → instruction, Answer → output")
    assert out[8:10] == ["  missing_field.jsonl:2: missing field 'output'",
                         "  missing_field.jsonl:3: missing field 'instruction'"]
    assert out[10].startswith("dataset version ds-")
