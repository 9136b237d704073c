import json
import unicodedata

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core import store
from core.datasets import importer, rows as pair_rows, stats as ds_stats, versions
from tests.conftest import OPERATOR, cli, person, tiny_pairs, to_cp1258, write_jsonl


def test_jsonl_import_keeps_good_rows_and_names_bad_lines(home):
    rows = tiny_pairs(10)
    nfd = {k: unicodedata.normalize("NFD", v) for k, v in rows[0].items()}  # an NFD copy is a duplicate
    lines = rows + ["{broken", {"instruction": "Hỏi", "input": ""}, {"instruction": 5, "output": "x"},
                    {"instruction": "Hỏi gì?", "output": "   "}, nfd]
    path = write_jsonl(home / "pairs.jsonl", lines)
    version, report = importer.import_files([path], "cskh", test_fraction=0.2, seed=1, actor=OPERATOR)
    r = report.as_dict()
    assert (r["rows_read"], r["rows_kept"], r["rows_rejected"], r["duplicates_removed"]) == (15, 10, 4, 1)
    assert [(e["line"], e["reason"]) for e in r["errors"]] == [
        (11, "invalid JSON (Expecting property name enclosed in double quotes)"),
        (12, "missing field 'output'"),
        (13, "field 'instruction' is not text (int)"),
        (14, "field 'output' is empty"),
    ]
    assert version["rows_train"] + version["rows_test"] == 10 and version["rows_test"] == 2
    train = versions.load_rows(version["id"], "train")
    assert all(unicodedata.is_normalized("NFC", row["output"]) for row in train)


def test_csv_with_bom_and_multiline_fields_and_parquet(home):
    csv_path = home / "pairs.csv"
    csv_path.write_bytes(("\ufeffinstruction,input,output\r\n"
                          "\"Tóm tắt\",\"ĐIỀU 1:\r\ndòng hai\",\"Điều khoản chính: (1) ...\"\r\n"
                          "Giải thích,,\r\n").encode("utf-8"))
    parquet_path = home / "pairs.parquet"
    pq.write_table(pa.table({k: [r[k] for r in tiny_pairs(3)] for k in ("instruction", "input", "output")}),
                   parquet_path)
    version, report = importer.import_files([csv_path, parquet_path], "mixed", actor=OPERATOR)
    assert report.rows_read == 5 and report.rows_kept == 4
    assert report.errors == [{"file": "pairs.csv", "line": 4, "reason": "field 'output' is empty"}]
    rows = versions.load_rows(version["id"], "train") + versions.load_rows(version["id"], "test")
    assert any(r["input"] == "ĐIỀU 1:\ndòng hai" for r in rows)


def test_split_is_seeded_and_general_mix_is_recorded(home):
    general, _ = importer.import_files([write_jsonl(home / "g.jsonl", [
        {"instruction": f"Câu hỏi chung {i}", "input": "", "output": f"Trả lời {i}"} for i in range(30)])], "general", actor=OPERATOR)
    path = write_jsonl(home / "d.jsonl", tiny_pairs(40))
    a, _ = importer.import_files([path], "a", seed=7, general_version=general["id"], general_ratio=0.1, actor=OPERATOR)
    b, _ = importer.import_files([path], "b", seed=7, general_version=general["id"], general_ratio=0.1, actor=OPERATOR)
    assert a["content_hash"] == b["content_hash"]
    train = versions.load_rows(a["id"], "train")
    n_general = sum(r["source"] == "g" for r in train)
    assert n_general == 4 and n_general / len(train) == pytest.approx(0.1, abs=0.01)
    assert json.loads(a["lineage"])["general"] == {"version": general["id"], "ratio": 0.1, "rows": 4}


def test_not_utf8_is_a_clear_error_or_decoded_when_named(home):
    path = home / "cp1258.jsonl"
    path.write_bytes(to_cp1258('{"instruction": "Hợp đồng là gì?", "output": "Là thỏa thuận."}\n'))
    with pytest.raises(pair_rows.DatasetError, match=r"cp1258.jsonl: not UTF-8 \(line 1, .*--encoding cp1258"):
        importer.import_files([path], "x", actor=OPERATOR)
    version, report = importer.import_files([path], "x", encoding="cp1258", actor=OPERATOR)
    assert report.files == [{"file": "cp1258.jsonl", "encoding": "cp1258", "format": "jsonl"}]
    row = versions.load_rows(version["id"], "train")[0]
    assert row["instruction"] == "Hợp đồng là gì?" and unicodedata.is_normalized("NFC", row["output"])
    utf16 = home / "utf16.jsonl"  # a UTF-16 BOM is recognised without being named
    utf16.write_bytes('{"instruction": "Hợp đồng", "output": "ổn"}\n'.encode("utf-16"))
    version, report = importer.import_files([utf16], "y", actor=OPERATOR)
    assert report.rows_kept == 1 and report.files[0]["encoding"] == "utf-16"


def test_dataset_import_cli(home):
    path = write_jsonl(home / "p.jsonl", tiny_pairs(5) + ["not json"])
    proc = cli("dataset", "import", str(path), "--name", "p", "--json", home=home)
    report = json.loads(proc.stdout)
    assert report["rows_kept"] == 5 and report["errors"] == [{"file": "p.jsonl", "line": 6, "reason": "invalid JSON (Expecting value)"}]
    empty = home / "empty.jsonl"
    empty.write_text("")
    proc = cli("dataset", "import", str(empty), "--name", "e", home=home, check=False)
    assert proc.returncode == 1 and proc.stderr == "error: empty.jsonl: no rows found (the file is empty); nothing was imported\n"


def test_samples_are_nfc_and_large_enough():
    from core import paths

    counts = {}
    for name in ("customer_care", "contracts", "general_vi"):
        lines = (paths.samples_dir() / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
        rows = [json.loads(line) for line in lines]
        assert all(set(r) == {"instruction", "input", "output"} for r in rows)
        assert all(unicodedata.is_normalized("NFC", v) for r in rows for v in r.values())
        counts[name] = len(rows)
    assert counts["customer_care"] + counts["contracts"] >= 300 and counts["general_vi"] >= 50
    assert len(list((paths.samples_dir() / "raw").iterdir())) >= 3


def test_column_mapping_by_cli_flags(home):
    path = write_jsonl(home / "qa.jsonl", [{"cau": f"Câu {i}?", "ctx": "", "dap": f"Đáp {i}."} for i in range(4)])
    proc = cli("dataset", "import", str(path), "--name", "qa", "--map", "cau=instruction", "--map", "dap=output",
               "--map", "ctx=input", "--json", home=home)
    report = json.loads(proc.stdout)
    assert report["rows_kept"] == 4 and report["columns_mapped"] == {"cau": "instruction", "ctx": "input", "dap": "output"}
    rows = versions.load_rows(report["dataset_version"], "train")
    assert {r["instruction"] for r in rows} <= {f"Câu {i}?" for i in range(4)}
    assert json.loads(versions.get_version(report["dataset_version"])["lineage"])["mapping"] == {
        "cau": "instruction", "dap": "output", "ctx": "input"}
    proc = cli("dataset", "import", str(path), "--name", "qa", home=home, check=False)
    assert proc.returncode == 1 and proc.stderr == (
        "error: no valid rows were found (4 of 4 rejected, first: qa.jsonl line 1: missing field 'instruction'); "
        "nothing was imported\n")
    proc = cli("dataset", "import", str(path), "--name", "qa", "--map", "cau", home=home, check=False)
    assert proc.returncode == 1 and "write it as FILE_COLUMN=FIELD" in proc.stderr
    with pytest.raises(pair_rows.DatasetError, match="the target must be one of instruction, input, output"):
        importer.import_files([path], "qa", mapping=["cau=question"], actor=OPERATOR)


def test_explicit_mapping_wins_over_aliases(home):
    path = write_jsonl(home / "m.jsonl", [{"question": "Q ngắn", "title": "Câu hỏi thật?", "answer": "Trả lời."}])
    version, report = importer.import_files([path], "m", mapping={"title": "instruction"}, actor=OPERATOR)
    assert versions.load_rows(version["id"])[0]["instruction"] == "Câu hỏi thật?"
    assert report.columns_mapped == {"title": "instruction", "answer": "output"}


def test_datasets_folder_and_parquet_with_numbers(home):
    import datasets as hf

    pairs = tiny_pairs(6)
    dd = hf.DatasetDict({
        "train": hf.Dataset.from_list([{"prompt": p["instruction"], "response": p["output"]} for p in pairs[:4]]),
        "test": hf.Dataset.from_list([{"prompt": p["instruction"], "response": p["output"]} for p in pairs[4:]]
                                     + [{"prompt": "Hỏi", "response": ""}]),
    })
    dd.save_to_disk(str(home / "hf_dd"))
    version, report = importer.import_files([home / "hf_dd"], "hf", actor=OPERATOR)
    r = report.as_dict()
    assert (r["rows_read"], r["rows_kept"]) == (7, 6)
    assert r["errors"] == [{"file": "hf_dd", "line": 7, "reason": "field 'response' is empty"}]
    assert r["columns_mapped"] == {"prompt": "instruction", "response": "output"}
    assert r["files"] == [{"file": "hf_dd", "format": "datasets folder"}]
    hf.Dataset.from_list(pairs[:3]).save_to_disk(str(home / "hf_one"))
    _, report = importer.import_files([home / "hf_one"], "hf1", actor=OPERATOR)
    assert report.rows_kept == 3
    pq.write_table(pa.table({"instruction": ["Hỏi 1", "Hỏi 2"], "output": ["Đáp", None], "input": [1, None]}),
                   home / "n.parquet")
    version, report = importer.import_files([home / "n.parquet"], "n", actor=OPERATOR)
    assert version is None and report.errors == [
        {"file": "n.parquet", "line": 1, "reason": "field 'input' is not text (int)"},
        {"file": "n.parquet", "line": 2, "reason": "missing field 'output'"}]
    empty = home / "empty_dir"
    empty.mkdir()
    with pytest.raises(pair_rows.DatasetError, match="empty_dir: a folder must be one saved by `datasets`"):
        importer.import_files([empty], "e", actor=OPERATOR)


def test_size_limits_are_clear(home, monkeypatch):
    path = write_jsonl(home / "big.jsonl", tiny_pairs(50))
    monkeypatch.setattr(pair_rows, "MAX_FILE_BYTES", 1024)
    with pytest.raises(pair_rows.DatasetError, match=r"big.jsonl: 10.4 KB is over the import limit of 1.0 KB; split it"):
        importer.import_files([path], "big", actor=OPERATOR)
    monkeypatch.setattr(pair_rows, "MAX_FILE_BYTES", 10**9)
    monkeypatch.setattr(pair_rows, "MAX_LINE_CHARS", 150)
    _, report = importer.import_files([write_jsonl(home / "l.jsonl", [
        {"instruction": "Hỏi", "output": "Đáp"}, {"instruction": "Hỏi " * 40, "output": "Đáp"}])], "l", actor=OPERATOR)
    assert report.errors == [{"file": "l.jsonl", "line": 2, "reason": "line too long (196 characters, limit 150)"}]
    with pytest.raises(pair_rows.DatasetError, match="unknown encoding 'latin-9x'"):
        importer.import_files([path], "x", encoding="latin-9x", actor=OPERATOR)
    with pytest.raises(pair_rows.DatasetError, match="no such file or folder"):
        importer.import_files([home / "nope.jsonl"], "x", actor=OPERATOR)
    with pytest.raises(pair_rows.DatasetError, match="unsupported file type '.xlsx'"):
        (home / "a.xlsx").write_bytes(b"x")
        importer.import_files([home / "a.xlsx"], "x", actor=OPERATOR)


def test_wrong_encoding_named_is_clear(home):
    path = home / "u16.jsonl"
    path.write_bytes('{"instruction": "Hỏi", "output": "Đáp"}\n'.encode("utf-16-le"))  # no BOM
    with pytest.raises(pair_rows.DatasetError, match="u16.jsonl: not UTF-8"):
        importer.import_files([path], "x", actor=OPERATOR)
    version, report = importer.import_files([path], "x", encoding="utf-16-le", actor=OPERATOR)
    assert report.rows_kept == 1


def test_token_stats_match_the_trainers_tokenizer(home, tokenizer):
    from core import prompt_format

    rows = tiny_pairs(6)
    rows[0]["output"] = "Dạ, " + "rất nhiều chữ " * 200
    version, _ = importer.import_files([write_jsonl(home / "t.jsonl", rows)], "t", test_fraction=0.2, actor=OPERATOR)
    stats = ds_stats.token_stats(version["id"], None, "chat", 256)
    loaded = versions.load_rows(version["id"], "train") + versions.load_rows(version["id"], "test")
    expected = [len(tokenizer(prompt_format.render_training_text(r, "chat", tokenizer)).input_ids) + 1 for r in loaded]
    assert stats["lengths"] == expected
    assert (stats["rows"], stats["over"]) == (6, 1) and stats["share_over"] == pytest.approx(1 / 6)
    assert stats["tokenizer"] == "gemma-3-270m" and stats["max"] > 256
    alpaca = ds_stats.token_stats(version["id"], None, "alpaca-vi", 4096)
    assert alpaca["over"] == 0 and alpaca["lengths"] != stats["lengths"]
    fields = {f["field"]: f for f in ds_stats.field_stats(version["id"])}
    assert fields["input"]["empty"] == 0 and fields["output"]["max_words"] == 601
    from core import charts

    fig = charts.token_histogram(stats)
    assert fig.data[0].type == "histogram" and "16.7% over" in fig.layout.annotations[0].text
    no_tokenizer = home / "models" / "base" / "no-tokenizer"   # an allowed folder (under models/base) without one
    no_tokenizer.mkdir(parents=True)
    with pytest.raises(pair_rows.DatasetError, match="no tokenizer.json"):
        ds_stats.token_stats(version["id"], str(no_tokenizer), "chat", 256)


def test_versions_are_immutable_records_with_hash_parent_who_and_when(home):
    from core.datasets import review
    from tests.conftest import approve_review

    path = write_jsonl(home / "v.jsonl", tiny_pairs(12))
    a, _ = importer.import_files([path], "v", actor=person("an"))
    b, _ = importer.import_files([path], "v", actor=person("binh"))
    assert a["id"] != b["id"] and a["content_hash"] == b["content_hash"]  # same content, same hash
    assert (a["parent_id"], a["created_by"], a["source"]) == (None, "an", "import") and a["created_at"]
    review.start(a["id"], fraction=0.5, actor=OPERATOR)
    item = review.next_item(a["id"])
    review.decide(a["id"], item["idx"], "edited", actor=person("chi", 'reviewer'), edited={"instruction": "Câu hỏi đã sửa"})
    s = approve_review(a["id"], reviewer="chi")
    child = versions.get_version(s["child_version"])
    assert (child["parent_id"], child["created_by"], child["rows_total"]) == (a["id"], "chi", 12)
    assert child["content_hash"] != a["content_hash"]
    assert [v["id"] for v in versions.lineage_chain(child["id"])] == [child["id"], a["id"]]
    assert versions.get_version(a["id"])["content_hash"] == a["content_hash"]


def test_semicolon_and_tab_csv_and_a_bom_in_a_named_encoding(home):
    semi = home / "excel.csv"
    semi.write_text("instruction;input;output\nPhí ship?;;Dạ, 20.000đ, ạ.\n", encoding="utf-8")
    tab = home / "tab.csv"
    tab.write_text("question\tanswer\nGiờ mở cửa?\tDạ, 8 giờ, ạ.\n", encoding="utf-8")
    version, report = importer.import_files([semi, tab], "csv", actor=OPERATOR)
    assert report.rows_kept == 2 and report.errors == []
    rows = versions.load_rows(version["id"], "train") + versions.load_rows(version["id"], "test")
    assert sorted(r["output"] for r in rows) == ["Dạ, 20.000đ, ạ.", "Dạ, 8 giờ, ạ."]
    le = home / "le.jsonl"
    le.write_bytes(b"\xff\xfe" + '{"instruction": "Hỏi", "output": "Đáp"}\n'.encode("utf-16-le"))
    _, report = importer.import_files([le], "le", encoding="utf-16-le", actor=OPERATOR)
    assert report.rows_kept == 1


@pytest.mark.parametrize("filename, kept", [
    ("../../etc/passwd", "passwd"),                           # no way out of the upload's own folder
    ("/etc/passwd", "passwd"),
    ("..\\..\\Windows\\System32\\hop dong.csv", "hop dong.csv"),  # a Windows browser's path; the space stays
    ("Dữ liệu khách hàng.jsonl", "Dữ liệu khách hàng.jsonl"),  # the name its owner knows (NFC), for the messages
    ("hợp đồng; rm -rf.csv", "hợp đồng_ rm -rf.csv"),         # anything but letters, digits, spaces, ( ) . _ - is '_'
    (".env", "env"),                                          # no hidden files
    ("", "upload"),                                           # nothing left of the name: a name of the studio's
    ("..", "upload"),
    ("\\", "upload"),
])
def test_an_upload_is_saved_under_a_clean_name_in_a_folder_of_its_own(home, filename, kept):
    from core import uploads

    path = importer.save_upload(filename, b"noi dung")
    assert path.name == kept
    assert path.parent.parent == uploads.uploads_dir() and path.read_bytes() == b"noi dung"
    assert [p for p in home.rglob("*") if p.is_file()] == [path]   # nothing written anywhere else


def test_two_uploads_of_the_same_name_do_not_overwrite_each_other(home):
    first = importer.save_upload("du_lieu.jsonl", b"mot")
    second = importer.save_upload("du_lieu.jsonl", b"hai")
    assert first != second and first.name == second.name == "du_lieu.jsonl"
    assert (first.read_bytes(), second.read_bytes()) == (b"mot", b"hai")
    assert importer.remove_uploads([first]) == 1 and not first.parent.exists() and second.exists()


@pytest.mark.parametrize("trick", ["state.json ../", "state.json absolute", "dataset_dict.json ../", "a symlink"])
def test_a_datasets_folder_names_only_its_own_files(home, trick):
    """A folder dropped in the import root whose state.json, dataset_dict.json or links point elsewhere reads no
    file outside it (another version's rows, any .arrow file on the server): refused, naming the entry."""
    import os

    import datasets as hf

    secret = home / "elsewhere" / "secret"   # not under the import root
    hf.Dataset.from_list([{"instruction": "Mật khẩu kho?", "input": "", "output": "kho-2024-bi-mat"}]).save_to_disk(
        str(secret))
    arrow = next(secret.glob("*.arrow"))
    folder = importer.import_root() / "nhap"
    (folder / "train").mkdir(parents=True)
    if trick == "state.json ../":
        (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": os.path.relpath(arrow, folder)}]}))
    elif trick == "state.json absolute":
        (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": str(arrow)}]}))
    elif trick == "dataset_dict.json ../":
        (folder / "dataset_dict.json").write_text(json.dumps({"splits": [os.path.relpath(secret, folder)]}))
    else:
        (folder / "data-00000-of-00001.arrow").symlink_to(arrow)
    with pytest.raises(pair_rows.DatasetError, match=r"nhap.*outside the folder"):
        importer.import_files([importer.server_path("nhap")], "nhap", actor=OPERATOR)
    assert versions.list_versions(OPERATOR) == []
