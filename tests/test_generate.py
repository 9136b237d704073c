"""Pair generation from raw documents: chunking, answer parsing, dedup, document reading, and end to
end against a real llama.cpp server (llama-cpp-python's OpenAI-compatible server) with the default
model's GGUF on loopback. The 270M base model is weak: the end-to-end tests accept either kept pairs
or malformed answers reported with their chunk, but always demand a finished job and honest counts."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from core import datasets, generate, jobs, store
from tests.conftest import REPO, cli

RAW = REPO / "data" / "samples" / "raw"


# ── chunking ─────────────────────────────────────────────────────────────────


def test_chunks_keep_paragraphs_respect_the_limit_and_overlap():
    paras = [f"Đoạn {i}: " + "khách hàng được hỗ trợ đổi trả trong bảy ngày. " * 4 for i in range(12)]
    text = "\r\n\r\n".join(paras)
    chunks = generate.chunk_text(text, max_chars=600, overlap=250)
    assert len(chunks) > 3
    assert all(len(c) <= 600 for c in chunks)
    # every paragraph is in some chunk, whole
    for p in paras:
        assert any(p.strip() in c for c in chunks)
    # each later chunk starts with the last paragraph of the one before (it fits the overlap)
    for before, after in zip(chunks, chunks[1:]):
        assert after.startswith(before.split("\n\n")[-1])


def test_a_long_paragraph_is_cut_at_sentences_and_overlap_falls_back_to_a_word_tail():
    sentence = "Nhân viên ghi nhận yêu cầu của khách hàng vào hệ thống CRM ngay trong ca trực. "
    text = sentence * 60  # one paragraph of ~4800 characters
    chunks = generate.chunk_text(text, max_chars=1000, overlap=120)
    assert len(chunks) >= 5 and all(len(c) <= 1000 for c in chunks)
    for before, after in zip(chunks, chunks[1:]):
        head = after.split("\n\n")[0]
        assert 0 < len(head) <= 120 and before.endswith(head)  # a tail of the previous chunk, on a word
    assert generate.chunk_text("", 500, 50) == []
    with pytest.raises(generate.GenerateError, match="overlap"):
        generate.chunk_text("x", 500, 300)


def test_sample_raw_documents_chunk():
    for doc in RAW.iterdir():
        chunks = generate.chunk_text(generate.read_document(doc), 1500, 200)
        assert 3 <= len(chunks) <= 8 and all(len(c) <= 1500 for c in chunks), doc.name


# ── answers ──────────────────────────────────────────────────────────────────

GOOD = [{"instruction": "Thời hạn đổi trả là bao lâu?", "input": "", "output": "Bảy ngày kể từ khi nhận hàng."},
        {"instruction": "Ai chịu phí vận chuyển?", "input": "Hàng lỗi", "output": "Sao Việt chịu phí."}]


def test_parse_valid_fenced_and_trailing_text():
    assert generate.parse_answer(json.dumps(GOOD, ensure_ascii=False)) == (GOOD, [])
    fenced = "Đây là kết quả:\n```json\n" + json.dumps(GOOD, ensure_ascii=False) + "\n```\nChúc bạn vui!"
    assert generate.parse_answer(fenced)[0] == GOOD
    trailing = json.dumps(GOOD, ensure_ascii=False) + "\n\nGhi chú: tôi đã tạo 2 cặp [xem trên]."
    assert generate.parse_answer(trailing)[0] == GOOD
    # an object wrapping the list, and a single object
    assert generate.parse_answer(json.dumps({"pairs": GOOD}))[0] == GOOD
    assert generate.parse_answer(json.dumps(GOOD[0]))[0] == [GOOD[0]]
    # NFD in, NFC out; whitespace trimmed
    import unicodedata

    nfd = [{"instruction": unicodedata.normalize("NFD", " Hỏi gì? "), "input": "", "output": "Đáp."}]
    assert generate.parse_answer(json.dumps(nfd))[0] == [{"instruction": "Hỏi gì?", "input": "", "output": "Đáp."}]


@pytest.mark.parametrize("answer, reason", [
    ("", "empty answer"),
    ("Xin lỗi, tôi không thể giúp.", "no JSON|invalid JSON"),
    ('[{"instruction": "Hỏi", "input": "", "output": "Đáp"', "invalid JSON"),  # cut off at max_tokens
    ('"chỉ một chuỗi"', "expected a JSON array"),
    ("[]", "array is empty"),
    ('[{"instruction": "Hỏi", "output": "Đáp"}]', "item 1: missing field 'input'"),
    ('[{"instruction": "Hỏi", "input": ""}]', "item 1: missing field 'output'"),
    ('[{"instruction": "Hỏi", "input": "", "output": "   "}]', "item 1: field 'output' is empty"),
    ('[{"instruction": "Hỏi", "input": "", "output": 42}]', "item 1: field 'output' is not text"),
    ('["Hỏi", "Đáp"]', "item 1: not an object"),
])
def test_parse_malformed_answers(answer, reason):
    with pytest.raises(generate.AnswerError, match=reason):
        generate.parse_answer(answer)


def test_parse_keeps_valid_items_and_reports_the_others():
    mixed = GOOD[:1] + [{"instruction": "Thiếu đáp án", "input": ""}, {"instruction": "", "input": "", "output": "x"}]
    pairs, problems = generate.parse_answer(json.dumps(mixed, ensure_ascii=False))
    assert pairs == GOOD[:1]
    assert problems == ["item 2: missing field 'output'", "item 3: field 'instruction' is empty"]


def test_dedup_after_nfc_case_and_whitespace():
    import unicodedata

    a = {"instruction": "Đổi trả thế nào?", "input": "", "output": "Trong bảy ngày."}
    b = {"instruction": unicodedata.normalize("NFD", "đổi  trả thế nào?"), "input": " ", "output": "TRONG bảy ngày."}
    c = {"instruction": "Đổi trả thế nào?", "input": "", "output": "Trong mười ngày."}
    kept, dropped = generate.dedup_pairs([a, b, c, dict(a)])
    assert kept == [a, c] and dropped == 2


def test_prompt_template_rendering_and_checks():
    tpl = 'Tạo {n_pairs} cặp dạng [{"instruction": "..."}] từ:\n{chunk}'
    assert generate.render_prompt(tpl, "VĂN BẢN", 4) == 'Tạo 4 cặp dạng [{"instruction": "..."}] từ:\nVĂN BẢN'
    with pytest.raises(generate.GenerateError, match=r"must contain \{chunk\}"):
        generate.check_template("Tạo cặp hỏi đáp")
    with pytest.raises(generate.GenerateError, match="empty"):
        generate.check_template("  ")


# ── documents ────────────────────────────────────────────────────────────────


def _pdf_bytes(text: str) -> bytes:
    """A minimal one-page PDF with a text layer, offsets computed so its xref is exact."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            b"/Resources << /Font << /F1 5 0 R >> >> >>",
            b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objs, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)


def test_reads_txt_md_docx_pdf(tmp_path):
    import docx

    d = docx.Document()
    d.add_paragraph("Điều 1. Phạm vi dịch vụ Internet cáp quang.")
    d.add_paragraph("Điều 2. Thời hạn hợp đồng là mười hai tháng.")
    t = d.add_table(rows=1, cols=2)
    t.cell(0, 0).text, t.cell(0, 1).text = "Gói cước", "200.000 đồng"
    d.save(tmp_path / "hd.docx")
    text = generate.read_document(tmp_path / "hd.docx")
    assert "Điều 2. Thời hạn hợp đồng là mười hai tháng." in text and "Gói cước | 200.000 đồng" in text

    (tmp_path / "p.pdf").write_bytes(_pdf_bytes("Dieu 3. Phi lap dat mien phi."))
    assert "Dieu 3. Phi lap dat mien phi." in generate.read_document(tmp_path / "p.pdf")

    (tmp_path / "a.txt").write_bytes("\ufeffDòng một\r\n\r\nDòng hai".encode("utf-8"))
    assert generate.read_document(tmp_path / "a.txt") == "Dòng một\n\nDòng hai"
    (tmp_path / "u16.md").write_bytes("# Tiêu đề\n\nNội dung".encode("utf-16"))
    assert generate.read_document(tmp_path / "u16.md") == "# Tiêu đề\n\nNội dung"


@pytest.mark.parametrize("name, content, message", [
    ("notes.xlsx", b"PK\x03\x04", "notes.xlsx: unsupported document type '.xlsx' (txt, md, docx or pdf)"),
    ("README", b"text", "README: unsupported document type '(none)'"),
    ("empty.txt", b"", "empty.txt: the file is empty"),
    ("cp1258.txt", b"\xd0\xe3ng k\xfd h\xf4\xf2p \xf0\xf4\xf2ng", "cp1258.txt: not UTF-8 text"),
    ("broken.docx", b"this is not a zip file", "broken.docx: not a readable .docx file"),
    ("broken.pdf", b"%PDF-1.4\nnot really a pdf", "broken.pdf: not a readable PDF"),
    ("blank.txt", b" \n\n \t\n", "blank.txt: no text found"),
])
def test_bad_documents_give_a_one_line_message(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(generate.DocumentError) as got:
        generate.read_document(tmp_path / name)
    assert str(got.value).startswith(message) and "\n" not in str(got.value)
    with pytest.raises(generate.DocumentError, match="no such file"):
        generate.read_document(tmp_path / "missing.md")


def test_submit_refuses_bad_requests_before_queueing(home, tmp_path):
    (tmp_path / "x.xlsx").write_bytes(b"PK")
    doc = RAW / "quy_trinh_cskh.md"
    for kwargs, message in [
        (dict(docs=[tmp_path / "x.xlsx"], name="g"), "unsupported document type"),
        (dict(docs=[doc], name=" "), "needs a name"),
        (dict(docs=[doc], name="g", prompt="không có chỗ cho đoạn văn"), "must contain"),
        (dict(docs=[doc], name="g", backend=generate.Backend(base_url="ftp://x")), "not an http"),
        (dict(docs=[doc], name="g", backend=generate.Backend(api_key_env="sk-live-abc123")), "not an environment variable name"),
    ]:
        with pytest.raises(generate.GenerateError, match=message):
            generate.submit(**kwargs)
    assert jobs.list_jobs() == []
    proc = cli("generate", "--docs", str(tmp_path / "x.xlsx"), "--name", "g", "--local", home=home, check=False)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith("error: x.xlsx: unsupported")
    proc = cli("generate-stop", "7", home=home, check=False)
    assert proc.returncode == 1 and proc.stderr.strip() == "error: no job 7"


# ── end to end against a real llama.cpp server ──────────────────────────────


def _small_doc(tmp_path: Path) -> Path:
    text = generate.read_document(RAW / "chinh_sach_doi_tra.md")
    doc = tmp_path / "doi_tra.md"
    doc.write_text("\n\n".join(generate.paragraphs(text)[:6]), encoding="utf-8")
    return doc


def _assert_finished_honestly(out: dict, job: dict) -> None:
    """Either pairs landed as a dataset version, or every malformed answer is reported with its chunk."""
    assert job["state"] == "succeeded", job["error"]
    assert out["chunks_done"] == out["chunks_total"] == 1
    assert out["tokens_in"] > 0 and out["tokens_out"] > 0  # llama.cpp reports usage
    rejects = generate.rejects(job)
    assert out["failed_chunks"] == len(rejects)
    for r in rejects:
        assert r["doc"] == "doi_tra.md" and r["chunk"] == 0 and r["attempts"]
        assert all(a["reason"] for a in r["attempts"])
    lines = Path(out["pairs_file"]).read_text(encoding="utf-8").splitlines()
    assert len(lines) == out["pairs"]
    if out["pairs"]:
        version = datasets.get_version(out["dataset_version"])
        assert version["source"] == "generate" and version["rows_total"] == out["pairs"]
        lineage = json.loads(version["lineage"])["generation"]
        assert lineage["prompt"] == Path(lineage["prompt_file"]).read_text(encoding="utf-8")
        assert lineage["prompt_sha256"] and lineage["job_id"] == job["id"]
        rows = datasets.load_rows(version["id"], "train") + datasets.load_rows(version["id"], "test")
        assert all(r["output"].strip() and r["instruction"].strip() for r in rows)
    else:
        assert out["dataset_version"] is None and out["failed_chunks"] == 1
        assert out["malformed_answers"] >= 1


@pytest.mark.slow
def test_cli_generate_local_end_to_end(home, tmp_path):
    """The studio starts llama.cpp's server on loopback with the default model's GGUF, the job runs in
    a worker, and a dataset version lands (or the malformed answer is reported with its chunk)."""
    doc = _small_doc(tmp_path)
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Từ tài liệu sau, tạo {n_pairs} cặp hỏi đáp tiếng Việt dạng mảng JSON "
                      "với các khóa instruction, input, output.\n\n{chunk}\n", encoding="utf-8")
    proc = cli("generate", "--docs", str(doc), "--name", "gen-local", "--local", "--prompt-file", str(prompt),
               "--max-chunks", "1", "--pairs-per-chunk", "1", "--retries", "1", "--max-tokens", "160",
               "--json", home=home, check=False, timeout=600)
    out = json.loads(proc.stdout)
    job = jobs.get_job(out["job"])
    _assert_finished_honestly(out, job)
    assert proc.returncode == (0 if out["pairs"] else 1)
    # the template is saved beside the generated pairs, exactly as given
    assert (Path(job["job_dir"]) / "prompt.txt").read_text(encoding="utf-8") == prompt.read_text(encoding="utf-8")
    assert (Path(job["job_dir"]) / "llama-server.log").exists()
    print("local generation:", {k: out[k] for k in ("pairs", "malformed_answers", "tokens_in", "tokens_out", "elapsed_s")})


@pytest.mark.slow
def test_openai_compatible_endpoint_with_a_key_that_is_never_written(home, tmp_path, monkeypatch):
    """A real llama.cpp server that demands an API key: the worker reads it from the named variable; no
    file the studio writes (DuckDB, job config, status, logs, pairs, Parquet) holds it."""
    from core import models

    secret = "sk-vitune-TEST-" + os.urandom(6).hex()
    gguf = models.gguf_path(lambda m: None)
    with generate.LocalServer(gguf, log_path=tmp_path / "srv.log", api_key=secret) as server:
        monkeypatch.setenv("VITUNE_TEST_KEY", secret)
        backend = generate.Backend(base_url=server.base_url, model="gemma", api_key_env="VITUNE_TEST_KEY",
                                   max_tokens=160, structured=True)
        generate.save_backend(backend, actor="tester")
        job = generate.submit([_small_doc(tmp_path)], "gen-remote", backend=backend, n_pairs=1, max_chunks=1,
                              max_retries=1, owner="tester")
        job = jobs.wait(job["id"], timeout=600, poll=0.5)
        out = {**job["result"]}
        _assert_finished_honestly(out, job)

        # a wrong key: refused at once (HTTP 401), the job fails with a clear, key-free reason
        wrong = "sk-wrong-" + os.urandom(6).hex()
        monkeypatch.setenv("VITUNE_TEST_KEY", wrong)
        bad = jobs.wait(generate.submit([_small_doc(tmp_path)], "gen-bad", backend=backend, max_chunks=1)["id"],
                        timeout=120, poll=0.5)
        assert bad["state"] == "failed" and "HTTP 401" in bad["error"] and wrong not in bad["error"]

    monkeypatch.delenv("VITUNE_TEST_KEY")
    missing = jobs.wait(generate.submit([_small_doc(tmp_path)], "gen-nokey", backend=backend)["id"], timeout=120)
    assert missing["state"] == "failed" and "VITUNE_TEST_KEY" in missing["error"]

    assert generate.saved_backend().api_key_env == "VITUNE_TEST_KEY"
    leaked = [str(p) for p in home.rglob("*") if p.is_file()
              and (secret.encode() in p.read_bytes() or wrong.encode() in p.read_bytes())]
    assert leaked == []
    assert any(p.name == "studio.duckdb" for p in home.rglob("*"))  # the database was among the files read
    assert secret.encode() not in json.dumps(store.rows("SELECT * FROM jobs"), default=str).encode()


@pytest.mark.slow
def test_stop_keeps_what_was_made(home, tmp_path):
    """A STOP file ends the loop after the current request; the job succeeds with what it has."""
    import time

    job = generate.submit([RAW / "quy_trinh_cskh.md"], "gen-stop", local=True, n_pairs=1, max_retries=0,
                          prompt="Tạo {n_pairs} cặp hỏi đáp (mảng JSON) từ: {chunk}",
                          backend=generate.Backend(max_tokens=64), chunk_chars=300, overlap=0)
    deadline = time.monotonic() + 300
    while not generate.live(job := jobs.get_job(job["id"])).get("in_flight"):  # the first request is out
        jobs.tick()
        assert job["state"] in ("queued", "running") and time.monotonic() < deadline, job["error"]
        time.sleep(0.2)
    generate.request_stop(job)
    job = jobs.wait(job["id"], timeout=300, poll=0.5)
    out = job["result"]
    assert job["state"] == "succeeded", job["error"]
    assert out["stopped"] == "stopped by the user"
    assert out["chunks_done"] == 1 and out["chunks_total"] > 10
    lines = Path(out["pairs_file"]).read_text(encoding="utf-8").splitlines()
    assert len(lines) == out["pairs"] and out["failed_chunks"] == len(generate.rejects(job)) == 1 - min(out["pairs"], 1)
    assert (out["dataset_version"] is not None) == (out["pairs"] > 0)
