"""Pair generation from raw documents: chunking, answer parsing, dedup, document reading, and end to
end against a real llama.cpp server (llama-cpp-python's OpenAI-compatible server) with the default
model's GGUF on loopback. The 270M base model is weak: the end-to-end tests accept either kept pairs
or malformed answers reported with their chunk, but always demand a finished job and honest counts."""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from core import store
from core.datasets import versions
from core.datasets.generation import answers, documents, endpoint, generations
from core.jobs import queue, supervisor
from tests.conftest import OPERATOR, REPO, cli, person, worker_pythons

RAW = REPO / "data" / "samples" / "raw"


# ── chunking ─────────────────────────────────────────────────────────────────


def test_chunks_keep_paragraphs_respect_the_limit_and_overlap():
    paras = [f"Đoạn {i}: " + "khách hàng được hỗ trợ đổi trả trong bảy ngày. " * 4 for i in range(12)]
    text = "\r\n\r\n".join(paras)
    chunks = documents.chunk_text(text, max_chars=600, overlap=250)
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
    chunks = documents.chunk_text(text, max_chars=1000, overlap=120)
    assert len(chunks) >= 5 and all(len(c) <= 1000 for c in chunks)
    for before, after in zip(chunks, chunks[1:]):
        head = after.split("\n\n")[0]
        assert 0 < len(head) <= 120 and before.endswith(head)  # a tail of the previous chunk, on a word
    assert documents.chunk_text("", 500, 50) == []
    with pytest.raises(documents.GenerateError, match="overlap"):
        documents.chunk_text("x", 500, 300)


def test_sample_raw_documents_chunk():
    for doc in RAW.iterdir():
        chunks = documents.chunk_text(documents.read_document(doc), 1500, 200)
        assert 3 <= len(chunks) <= 8 and all(len(c) <= 1500 for c in chunks), doc.name


# ── answers ──────────────────────────────────────────────────────────────────

GOOD = [{"instruction": "Thời hạn đổi trả là bao lâu?", "input": "", "output": "Bảy ngày kể từ khi nhận hàng."},
        {"instruction": "Ai chịu phí vận chuyển?", "input": "Hàng lỗi", "output": "Sao Việt chịu phí."}]


def test_parse_valid_fenced_and_trailing_text():
    assert answers.parse_answer(json.dumps(GOOD, ensure_ascii=False)) == (GOOD, [])
    fenced = "Đây là kết quả:\n```json\n" + json.dumps(GOOD, ensure_ascii=False) + "\n```\nChúc bạn vui!"
    assert answers.parse_answer(fenced)[0] == GOOD
    trailing = json.dumps(GOOD, ensure_ascii=False) + "\n\nGhi chú: tôi đã tạo 2 cặp [xem trên]."
    assert answers.parse_answer(trailing)[0] == GOOD
    # an object wrapping the list, and a single object
    assert answers.parse_answer(json.dumps({"pairs": GOOD}))[0] == GOOD
    assert answers.parse_answer(json.dumps(GOOD[0]))[0] == [GOOD[0]]
    # NFD in, NFC out; whitespace trimmed
    import unicodedata

    nfd = [{"instruction": unicodedata.normalize("NFD", " Hỏi gì? "), "input": "", "output": "Đáp."}]
    assert answers.parse_answer(json.dumps(nfd))[0] == [{"instruction": "Hỏi gì?", "input": "", "output": "Đáp."}]


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
    with pytest.raises(answers.AnswerError, match=reason):
        answers.parse_answer(answer)


def test_parse_keeps_valid_items_and_reports_the_others():
    mixed = GOOD[:1] + [{"instruction": "Thiếu đáp án", "input": ""}, {"instruction": "", "input": "", "output": "x"}]
    pairs, problems = answers.parse_answer(json.dumps(mixed, ensure_ascii=False))
    assert pairs == GOOD[:1]
    assert problems == ["item 2: missing field 'output'", "item 3: field 'instruction' is empty"]


def test_dedup_after_nfc_case_and_whitespace():
    import unicodedata

    a = {"instruction": "Đổi trả thế nào?", "input": "", "output": "Trong bảy ngày."}
    b = {"instruction": unicodedata.normalize("NFD", "đổi  trả thế nào?"), "input": " ", "output": "TRONG bảy ngày."}
    c = {"instruction": "Đổi trả thế nào?", "input": "", "output": "Trong mười ngày."}
    kept, dropped = answers.dedup_pairs([a, b, c, dict(a)])
    assert kept == [a, c] and dropped == 2


def test_prompt_template_rendering_and_checks():
    tpl = 'Tạo {n_pairs} cặp dạng [{"instruction": "..."}] từ:\n{chunk}'
    assert answers.render_prompt(tpl, "VĂN BẢN", 4) == 'Tạo 4 cặp dạng [{"instruction": "..."}] từ:\nVĂN BẢN'
    with pytest.raises(documents.GenerateError, match=r"must contain \{chunk\}"):
        answers.check_template("Tạo cặp hỏi đáp")
    with pytest.raises(documents.GenerateError, match="empty"):
        answers.check_template("  ")


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
    text = documents.read_document(tmp_path / "hd.docx")
    assert "Điều 2. Thời hạn hợp đồng là mười hai tháng." in text and "Gói cước | 200.000 đồng" in text

    (tmp_path / "p.pdf").write_bytes(_pdf_bytes("Dieu 3. Phi lap dat mien phi."))
    assert "Dieu 3. Phi lap dat mien phi." in documents.read_document(tmp_path / "p.pdf")

    (tmp_path / "a.txt").write_bytes("\ufeffDòng một\r\n\r\nDòng hai".encode("utf-8"))
    assert documents.read_document(tmp_path / "a.txt") == "Dòng một\n\nDòng hai"
    (tmp_path / "u16.md").write_bytes("# Tiêu đề\n\nNội dung".encode("utf-16"))
    assert documents.read_document(tmp_path / "u16.md") == "# Tiêu đề\n\nNội dung"


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
    with pytest.raises(documents.DocumentError) as got:
        documents.read_document(tmp_path / name)
    assert str(got.value).startswith(message) and "\n" not in str(got.value)
    with pytest.raises(documents.DocumentError, match="no such file"):
        documents.read_document(tmp_path / "missing.md")


def test_submit_refuses_bad_requests_before_queueing(home, tmp_path):
    (tmp_path / "x.xlsx").write_bytes(b"PK")
    doc = RAW / "quy_trinh_cskh.md"
    for kwargs, message in [
        (dict(docs=[tmp_path / "x.xlsx"], name="g"), "unsupported document type"),
        (dict(docs=[doc], name=" "), "needs a name"),
        (dict(docs=[doc], name="g", prompt="không có chỗ cho đoạn văn"), "must contain"),
        (dict(docs=[doc], name="g", endpoint="nope"), "no generation endpoint named 'nope'"),
        (dict(docs=[doc], name="g"), "choose the default model"),
        (dict(docs=[doc], name="g", local=True, max_tokens=3), "at least 16"),
    ]:
        with pytest.raises(documents.GenerateError, match=message):
            generations.submit(**kwargs, actor=OPERATOR)
    assert queue.list_jobs() == []
    proc = cli("generate", "--docs", str(tmp_path / "x.xlsx"), "--name", "g", "--local", home=home, check=False)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith("error: x.xlsx: unsupported")
    proc = cli("generate", "--docs", str(doc), "--name", "g", home=home, check=False)
    assert proc.returncode == 2 and "needs --local (the default model) or --endpoint NAME" in proc.stderr
    for flag in ("--base-url", "--api-key-env"):   # the CLI no longer takes an address or a key's name per job
        proc = cli("generate", "--docs", str(doc), "--name", "g", flag, "x", home=home, check=False)
        assert proc.returncode == 2 and "unrecognized arguments" in proc.stderr
    proc = cli("generate-stop", "7", home=home, check=False)
    assert proc.returncode == 1 and proc.stderr.strip() == "error: no job 7"


# ── end to end against a real llama.cpp server ──────────────────────────────


def _secrets(home: Path, text: str) -> Path:
    path = home / ".streamlit" / "secrets.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _small_doc(tmp_path: Path) -> Path:
    text = documents.read_document(RAW / "chinh_sach_doi_tra.md")
    doc = tmp_path / "doi_tra.md"
    doc.write_text("\n\n".join(documents.paragraphs(text)[:6]), encoding="utf-8")
    return doc


def _assert_finished_honestly(out: dict, job: dict) -> None:
    """Either pairs landed as a dataset version, or every malformed answer is reported with its chunk."""
    assert job["state"] == "succeeded", job["error"]
    assert out["chunks_done"] == out["chunks_total"] == 1
    assert out["tokens_in"] > 0 and out["tokens_out"] > 0  # llama.cpp reports usage
    rejects = generations.rejects(job)
    assert out["failed_chunks"] == len(rejects)
    for r in rejects:
        assert r["doc"] == "doi_tra.md" and r["chunk"] == 0 and r["attempts"]
        assert all(a["reason"] for a in r["attempts"])
    lines = Path(out["pairs_file"]).read_text(encoding="utf-8").splitlines()
    assert len(lines) == out["pairs"]
    if out["pairs"]:
        version = versions.get_version(out["dataset_version"])
        assert version["source"] == "generate" and version["rows_total"] == out["pairs"]
        lineage = json.loads(version["lineage"])["generation"]
        assert lineage["prompt"] == Path(lineage["prompt_file"]).read_text(encoding="utf-8")
        assert lineage["prompt_sha256"] and lineage["job_id"] == job["id"]
        rows = versions.load_rows(version["id"], "train") + versions.load_rows(version["id"], "test")
        assert all(r["output"].strip() and r["instruction"].strip() for r in rows)
    else:
        assert out["dataset_version"] is None and out["failed_chunks"] == 1
        assert out["malformed_answers"] >= 1


@pytest.mark.slow
def test_cli_generate_local_end_to_end(home, tmp_path, worker_env):
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
    job = queue.get_job(out["job"])
    _assert_finished_honestly(out, job)
    assert proc.returncode == (0 if out["pairs"] else 1)
    # the template is saved beside the generated pairs, exactly as given
    assert (Path(job["job_dir"]) / "prompt.txt").read_text(encoding="utf-8") == prompt.read_text(encoding="utf-8")
    assert (Path(job["job_dir"]) / "llama-server.log").exists()
    assert worker_pythons(home) == {"generate": {str(worker_env)}}  # an app-free worker, llama.cpp's server too
    print("local generation:", {k: out[k] for k in ("pairs", "malformed_answers", "tokens_in", "tokens_out", "elapsed_s")})


@pytest.mark.slow
def test_the_local_llama_cpp_server_refuses_a_request_without_its_key(tmp_path):
    """The server a local generation (or judge) starts on loopback, as the worker starts it (no key given):
    it makes its own key and refuses any request without it, so another user of the machine cannot use it."""
    from core import models

    with endpoint.LocalServer(models.gguf_path(lambda m: None), log_path=tmp_path / "srv.log") as server:
        assert server.api_key and server.api_key not in (tmp_path / "srv.log").read_text(errors="replace")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(server.base_url + "/models", timeout=30)
        assert refused.value.code == 401
        wrong = urllib.request.Request(server.base_url + "/models", headers={"Authorization": "Bearer nope"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(wrong, timeout=30)
        assert refused.value.code == 401
        text, _ = endpoint.chat(endpoint.Backend(base_url=server.base_url, model="gemma", max_tokens=16),
                                [{"role": "user", "content": "Xin chào"}], server.api_key)
        assert isinstance(text, str)


@pytest.mark.slow
def test_openai_compatible_endpoint_with_a_key_that_is_never_written(home, tmp_path, monkeypatch):
    """A real llama.cpp server that demands an API key: the worker reads it from the named variable; no
    file the studio writes (DuckDB, job config, status, logs, pairs, Parquet) holds it."""
    from core import models

    secret = "sk-vitune-TEST-" + os.urandom(6).hex()
    gguf = models.gguf_path(lambda m: None)
    with endpoint.LocalServer(gguf, log_path=tmp_path / "srv.log", api_key=secret) as server:
        monkeypatch.setenv("VITUNE_TEST_KEY", secret)
        _secrets(home, f'[endpoints.llama]\nbase_url = "{server.base_url}"\nmodel = "gemma"\n'
                       'api_key_env = "VITUNE_TEST_KEY"\nmax_tokens = 160\nstructured = true\n')
        job = generations.submit([_small_doc(tmp_path)], "gen-remote", endpoint="llama", n_pairs=1, max_chunks=1,
                              max_retries=1, actor=person("tester"))
        job = supervisor.wait(job["id"], timeout=600, poll=0.5)
        out = {**job["result"]}
        _assert_finished_honestly(out, job)

        # a wrong key: refused at once (HTTP 401), the job fails with a clear, key-free reason
        wrong = "sk-wrong-" + os.urandom(6).hex()
        monkeypatch.setenv("VITUNE_TEST_KEY", wrong)
        bad = supervisor.wait(generations.submit([_small_doc(tmp_path)], "gen-bad", endpoint="llama", max_chunks=1,
                                                 actor=OPERATOR)["id"],
                        timeout=120, poll=0.5)
        assert bad["state"] == "failed" and "HTTP 401" in bad["error"] and wrong not in bad["error"]

    monkeypatch.delenv("VITUNE_TEST_KEY")
    missing = supervisor.wait(generations.submit([_small_doc(tmp_path)], "gen-nokey", endpoint="llama",
                                                 actor=OPERATOR)["id"], timeout=120)
    assert missing["state"] == "failed" and "VITUNE_TEST_KEY (its API key) is not set" in missing["error"]
    leaked = [str(p) for p in home.rglob("*") if p.is_file()
              and (secret.encode() in p.read_bytes() or wrong.encode() in p.read_bytes())]
    assert leaked == []
    assert any(p.name == "studio.duckdb" for p in home.rglob("*"))  # the database was among the files read
    assert secret.encode() not in json.dumps(store.rows("SELECT * FROM jobs"), default=str).encode()


@pytest.mark.slow
def test_stop_keeps_what_was_made(home, tmp_path):
    """A STOP file ends the loop after the current request; the job succeeds with what it has."""
    import time

    job = generations.submit([RAW / "quy_trinh_cskh.md"], "gen-stop", local=True, n_pairs=1, max_retries=0,
                          prompt="Tạo {n_pairs} cặp hỏi đáp (mảng JSON) từ: {chunk}",
                          max_tokens=64, chunk_chars=300, overlap=0, actor=OPERATOR)
    deadline = time.monotonic() + 300
    while not generations.live(job := queue.get_job(job["id"])).get("in_flight"):  # the first request is out
        supervisor.tick()
        assert job["state"] in ("queued", "running") and time.monotonic() < deadline, job["error"]
        time.sleep(0.2)
    generations.request_stop(job, actor=OPERATOR)
    job = supervisor.wait(job["id"], timeout=300, poll=0.5)
    out = job["result"]
    assert job["state"] == "succeeded", job["error"]
    assert out["stopped"] == "stopped by the user"
    assert out["chunks_done"] == 1 and out["chunks_total"] > 10
    lines = Path(out["pairs_file"]).read_text(encoding="utf-8").splitlines()
    assert len(lines) == out["pairs"] and out["failed_chunks"] == len(generations.rejects(job)) == 1 - min(out["pairs"], 1)
    assert (out["dataset_version"] is not None) == (out["pairs"] > 0)


# ── endpoints: server-side configuration, keys for one worker only ─────────


def test_endpoints_are_configured_on_the_server_and_named_by_the_page(home, monkeypatch):
    """An admin may add an endpoint only on a host the server allows and with a key the server holds,
    chosen by name; what a browser types cannot send a secret to another host."""
    from core import secrets
    from core.access.principal import AccessDenied
    from core.datasets.generation import endpoints

    admin = person("an", "admin")
    monkeypatch.setenv("HF_TOKEN", "hf_secret_never_sent")
    with pytest.raises(documents.GenerateError, match=r"anything.example:8080 is not an allowed endpoint host .*none"):
        endpoints.add("evil", "http://anything.example:8080/v1", "m", actor=admin)
    monkeypatch.setenv(secrets.HOSTS_VAR, "vllm.noibo.lan:8000, 127.0.0.1")
    with pytest.raises(documents.GenerateError, match="vllm.noibo.lan:9000 is not an allowed"):
        endpoints.add("noibo", "http://vllm.noibo.lan:9000/v1", "m", actor=admin)     # the port is part of it
    with pytest.raises(documents.GenerateError, match="no key named 'hf_token' on the server"):
        endpoints.add("noibo", "http://vllm.noibo.lan:8000/v1", "m", key="HF_TOKEN", actor=admin)
    with pytest.raises(documents.GenerateError, match="user name or password"):
        endpoints.add("noibo", "http://u:p@vllm.noibo.lan:8000/v1", "m", actor=admin)
    with pytest.raises(AccessDenied):
        endpoints.add("noibo", "http://vllm.noibo.lan:8000/v1", "m", actor=person("kỹ-sư", "engineer"))
    monkeypatch.setenv(secrets.KEY_PREFIX + "NOIBO", "sk-noibo-" + os.urandom(4).hex())
    added = endpoints.add("noibo", "http://vllm.noibo.lan:8000/v1", "qwen", key="noibo", actor=admin)
    assert added.public()["key"] == "noibo" and os.environ[secrets.KEY_PREFIX + "NOIBO"] not in json.dumps(added.public())
    assert store.get_setting("endpoints")[0]["key"] == "noibo"     # the name of the key, never its value
    # the file's endpoints come first and cannot be redefined from the studio
    _secrets(home, '[endpoints.openai]\nbase_url = "https://api.openai.com/v1"\nmodel = "gpt-4o-mini"\n'
                   'api_key = "sk-file-abcdef"\nprice_in_per_mtok = 0.15\n')
    assert [(e.name, e.source) for e in endpoints.configured()] == [("openai", "secrets file"), ("noibo", "studio")]
    with pytest.raises(documents.GenerateError, match="defined in .*secrets.toml; change it there"):
        endpoints.add("openai", "http://127.0.0.1:1/v1", "m", actor=admin)
    listed = cli("endpoints", "list", home=home).stdout
    assert "openai" in listed and "noibo" in listed and "sk-file-abcdef" not in listed
    refused = cli("endpoints", "add", "x", "--base-url", "http://10.0.0.5/v1", "--model", "m", home=home, check=False)
    assert refused.returncode == 1 and "10.0.0.5 is not an allowed endpoint host" in refused.stderr
    # the job records where it goes and the key's stand-in, not the key
    job = generations.submit([RAW / "quy_trinh_cskh.md"], "g", endpoint="noibo", actor=OPERATOR)
    cfg = queue.get_job(job["id"])["config"]
    assert cfg["endpoint"] == "noibo" and cfg["backend"]["base_url"] == "http://vllm.noibo.lan:8000/v1"
    assert cfg["backend"]["api_key_env"] == secrets.JOB_KEY_VAR
    supervisor.cancel(job["id"], actor=OPERATOR)
    # a host taken off the server's list is refused the next time
    monkeypatch.setenv(secrets.HOSTS_VAR, "127.0.0.1")
    with pytest.raises(documents.GenerateError, match="no longer an allowed host"):
        generations.submit([RAW / "quy_trinh_cskh.md"], "g", endpoint="noibo", actor=OPERATOR)
    endpoints.remove("noibo", actor=admin)
    assert [e.name for e in endpoints.configured()] == ["openai"]
    # a broken secrets file is named, and so is a key that cannot go into a header (without showing it)
    _secrets(home, '[endpoints.a]\nbase_url = "http://127.0.0.1:1/v1"\nmodel = "m"\napi_key = "sk-abcd\\nefgh"\n')
    with pytest.raises(documents.GenerateError, match=r"\[endpoints.a\]: the API key contains .* line break") as got:
        endpoints.key_of(endpoints.get("a"))
    assert "abcd" not in str(got.value) and "efgh" not in str(got.value)
    _secrets(home, "[endpoints.a\n")
    proc = cli("endpoints", "list", home=home, check=False)
    assert proc.returncode == 1 and "secrets.toml: not valid TOML" in proc.stderr and "Traceback" not in proc.stderr


class _FakeEndpoint:
    """A real OpenAI-compatible HTTP server on loopback: answers one valid pair and records each request's
    Authorization header and the environment of every studio worker alive at that moment (/proc)."""

    def __init__(self, home: Path, redirect_to: str | None = None):
        import http.server
        import threading

        seen = self.seen = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                seen.append({"auth": self.headers.get("Authorization"), "workers": outer.worker_envs(home)})
                if redirect_to:
                    self.send_response(302)
                    self.send_header("Location", redirect_to)
                    self.end_headers()
                    return
                body = json.dumps({"choices": [{"message": {"content": json.dumps(
                    [{"instruction": "Thời hạn đổi trả là bao lâu?", "input": "", "output": "Trong 30 ngày."}],
                    ensure_ascii=False)}}], "usage": {"prompt_tokens": 10, "completion_tokens": 5}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def worker_envs(home: Path) -> list[dict]:
        out = []
        for proc in Path("/proc").iterdir():
            try:
                if b"core.worker" not in (proc / "cmdline").read_bytes():
                    continue
                env = dict(kv.split("=", 1) for kv in (proc / "environ").read_bytes().decode(errors="replace")
                           .split("\0") if "=" in kv)
            except OSError:
                continue
            if env.get("VITUNE_HOME") == str(home):
                out.append(env)
        return out

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_a_worker_gets_its_own_endpoint_key_and_no_other(home, tmp_path, monkeypatch):
    """Real workers calling a real loopback endpoint: the generation job's worker holds its endpoint's key
    (and sends it); a job for a keyless endpoint holds no key at all; the keys in the server's environment
    (named keys, the variable a file endpoint reads) reach no worker; the app never puts a key into its own
    environment; no file of the studio holds a key."""
    from core import secrets

    keyed, other, file_var = ("sk-keyed-" + os.urandom(5).hex(), "sk-other-" + os.urandom(5).hex(),
                              "sk-var-" + os.urandom(5).hex())
    monkeypatch.setenv(secrets.KEY_PREFIX + "OTHER", other)
    monkeypatch.setenv("VITUNE_TEST_OPENAI_KEY", file_var)
    fake = _FakeEndpoint(home)
    try:
        _secrets(home, f'[endpoints.keyed]\nbase_url = "{fake.url}"\nmodel = "m"\napi_key = "{keyed}"\n\n'
                       f'[endpoints.open]\nbase_url = "{fake.url}"\nmodel = "m"\n\n'
                       f'[endpoints.remote]\nbase_url = "https://api.example.com/v1"\nmodel = "m"\n'
                       f'api_key_env = "VITUNE_TEST_OPENAI_KEY"\n')
        doc = _small_doc(tmp_path)
        first = supervisor.wait(generations.submit([doc], "keyed", endpoint="keyed", max_chunks=1, n_pairs=1,
                                                   actor=OPERATOR)["id"], timeout=300, poll=0.3)
        assert first["state"] == "succeeded", first["error"]
        assert first["result"]["pairs"] == 1 and first["result"]["dataset_version"]
        second = supervisor.wait(generations.submit([doc], "open", endpoint="open", max_chunks=1, n_pairs=1,
                                                    actor=OPERATOR)["id"], timeout=300, poll=0.3)
        assert second["state"] == "succeeded", second["error"]
    finally:
        fake.close()
    assert [s["auth"] for s in fake.seen] == [f"Bearer {keyed}", None]
    (with_key,), (without,) = (s["workers"] for s in fake.seen)
    assert with_key[secrets.JOB_KEY_VAR] == keyed and secrets.JOB_KEY_VAR not in without
    for env in (with_key, without):
        assert other not in env.values() and file_var not in env.values(), "a server key reached a worker"
        assert secrets.KEY_PREFIX + "OTHER" not in env and "VITUNE_TEST_OPENAI_KEY" not in env
    assert secrets.JOB_KEY_VAR not in os.environ and keyed not in os.environ.values()
    leaked = [str(p) for p in home.rglob("*") if p.is_file() and p.name != "secrets.toml"
              and any(k.encode() in p.read_bytes() for k in (keyed, other, file_var))]
    assert leaked == []


def test_a_redirect_is_not_followed_with_the_key(home, tmp_path):
    """An endpoint that answers 302 elsewhere: the worker stops there and the other address sees nothing."""
    elsewhere = _FakeEndpoint(home)
    moved = _FakeEndpoint(home, redirect_to=elsewhere.url + "/chat/completions")
    key = "sk-moved-" + os.urandom(5).hex()
    try:
        _secrets(home, f'[endpoints.moved]\nbase_url = "{moved.url}"\nmodel = "m"\napi_key = "{key}"\n')
        job = supervisor.wait(generations.submit([_small_doc(tmp_path)], "moved", endpoint="moved", max_chunks=1,
                                                 actor=OPERATOR)["id"], timeout=300, poll=0.3)
    finally:
        moved.close()
        elsewhere.close()
    assert job["state"] == "failed" and "HTTP 302, a redirect" in job["error"] and key not in job["error"]
    assert len(moved.seen) == 1 and elsewhere.seen == []


def test_an_error_never_shows_the_key_whatever_raised_it():
    """http.client refuses a header with a line break and names the header in its message (escaped):
    the endpoint's error is scrubbed of the key in every form."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        url = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
        key = "sk-abcd1234\nefgh5678"
        with pytest.raises(endpoint.BackendError) as got:
            endpoint.chat(endpoint.Backend(base_url=url, model="m"), [{"role": "user", "content": "x"}], key)
    message = str(got.value)
    assert "failed: ValueError" in message and "***" in message
    for piece in ("abcd1234", "efgh5678", "sk-abcd"):
        assert piece not in message, message
