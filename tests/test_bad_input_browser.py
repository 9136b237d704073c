"""The bad-file corpus (tests/bad_corpus.py) pushed through the Datasets, Generate pairs and Deploy pages of
the real server (scripts/serve.py) in real Chromium, as a person would: upload the file, type the path,
edit the Modelfile, press the button. Every case ends in a visible message that names the file (and its
line, where there is one) or the path, never in a traceback or Streamlit's exception box, and nothing
is created or queued for what was refused. A document only the generation worker may parse (a PDF's
pages) fails there, in a worker process, and its one-line reason shows on the page; a zip bomb is refused
from its zip directory and never opened by the web process."""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from core.datasets import versions as ds_versions
from core.jobs import queue, supervisor
from core.jobs.files import STATUS
from tests import bad_corpus
from tests.conftest import (APP, OPERATOR, free_port, settled as _idle, start_studio, studio_home as _home,
                            unfolded as _unfolded)

pytestmark = pytest.mark.extended

EXCEPTION = '[data-testid="stException"]'
ALERT = '[data-testid="stAlert"]'
IMPORT_BOX = '[data-testid="stExpander"]'   # the first on the Datasets page: "Import a file"


def _cancel_leftovers() -> None:
    for job in queue.list_jobs(actor=OPERATOR):
        if job["state"] in ("queued", "running"):
            supervisor.cancel(job["id"], actor=OPERATOR)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    return bad_corpus.build(tmp_path_factory.mktemp("bad-corpus"))


@pytest.fixture(scope="module")
def studio(tmp_path_factory, corpus):
    """A studio on a home of its own (operator mode on loopback: no account yet), with the corpus's bad
    folders, and a link out of it, under its import root."""
    home = tmp_path_factory.mktemp("bad-browser-home")
    root = home / "data" / "imports"
    root.mkdir(parents=True)
    for name in ("plain_folder", "broken_hf", "bad_arrow", "hf_outside"):
        shutil.copytree(corpus[name], root / name)
    (root / "link_out.jsonl").symlink_to("/etc/passwd")
    proc = start_studio(home, port := free_port())
    with _home(home):
        yield {"home": home, "url": f"http://127.0.0.1:{port}", "pid": proc.pid, "root": root}
        proc.terminate()
        proc.wait(20)
        _cancel_leftovers()


@pytest.fixture
def page(chromium):
    """A tab of its own (a browser context: no session shared with another case)."""
    context = chromium.new_context(viewport={"width": 1400, "height": 1400})
    p = context.new_page()
    p.set_default_timeout(60_000)
    yield p
    context.close()


def _clean(page) -> None:
    """Nothing on the page but the studio's own messages: no exception box, no trace, no unforeseen error."""
    body = page.inner_text("body")
    assert page.locator(EXCEPTION).count() == 0, page.locator(EXCEPTION).first.inner_text()
    assert "Traceback" not in body and 'File "' not in body, body[-3000:]
    assert "an unexpected error" not in body, body[-3000:]


def _alert(page, text: str | re.Pattern, timeout: float = 120_000) -> str:
    """Wait for the message (st.error/warning/success/info) that contains ``text`` (or matches it); return
    its whole text."""
    found = page.locator(ALERT).filter(has_text=text).first
    try:
        found.wait_for(timeout=timeout)
    except Exception:
        state = [a.get_attribute("data-test-script-state") for a in page.locator(APP).all()]
        raise AssertionError(f"no message containing {text!r}; the page's messages: "
                             f"{page.locator(ALERT).all_inner_texts()}; its script {state}; the first expander's text "
                             f"{[t[:2000] for t in page.locator(IMPORT_BOX).all_inner_texts()[:1]]}") from None
    _clean(page)
    return found.inner_text()


def _open(page, url: str, path: str, heading: str, below: str) -> None:
    """The page, run to its end (``below``: a heading under the form)."""
    page.goto(url + path)
    page.get_by_role("heading", name=heading).first.wait_for()
    page.get_by_role("heading", name=below).first.wait_for()
    _idle(page)
    _clean(page)


def _upload(page, files: list[Path]) -> None:
    """The files into the page's uploader (its <input type=file>), each shown as a chip once there."""
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files([str(f) for f in files])
    for f in files:
        _chip(page, f.name).wait_for()


def _chip(page, name: str):
    """The uploader's chip of a file (by its full name: the chip shortens a long one)."""
    return page.locator('[data-testid="stFileChip"]').filter(
        has=page.locator(f'[data-testid="stFileChipName"][title="{name}"]')).first


def _uploads_left(home: Path) -> list[Path]:
    return [p for p in (home / "data" / "uploads").glob("*/*")]


def _versions() -> list[dict]:
    return ds_versions.list_versions(OPERATOR)


# ── Datasets ─────────────────────────────────────────────────────────────────

# a file that keeps nothing: the message that names it (and its line)
REFUSED_DATASETS = {
    "empty.jsonl": "empty.jsonl: no rows found (the file is empty); nothing was imported",
    "no_header.csv": "no_header.csv: no rows found (the file is empty)",
    "header_only.csv": "header_only.csv: no rows found (nothing but a header or blank lines)",
    # random bytes, new at each build: a newline may come before the first bad byte (as in test_bad_input)
    "binary.jsonl": re.compile(r"binary\.jsonl: not UTF-8 \(line \d+, byte \d+"),
    "binary.csv": "binary.csv: not UTF-8 (line 2, byte",
    "png_as.csv": "png_as.csv: not UTF-8 (line 1, byte 0",
    "cp1258_no_flag.jsonl": "cp1258_no_flag.jsonl: not UTF-8 (line 1, byte",
    "only_bad_rows.jsonl": "first: only_bad_rows.jsonl line 1: invalid JSON",
    "not_json.json": "first: not_json.json line 1: invalid JSON",
    "unclosed_array.json": "unclosed_array.json: the JSON array is not closed (line 1)",
    "nul_bytes.csv": "first: nul_bytes.csv line 2: field 'instruction'",
    "not_parquet.parquet": "not_parquet.parquet: not a readable Parquet file",
    "truncated.parquet": "truncated.parquet: not a readable Parquet file",
    "wrong_columns.parquet": "first: wrong_columns.parquet line 1: missing field 'instruction'",
    # 2.3 KB that decode to 18.6 GB: refused from its metadata, in the import's own process
    "bomb.parquet": "bomb.parquet: its columns instruction, input, output decode to more than the import limit of 2.0 GB",
}
# a file with some good rows: the version of those rows, and the first rejected row named
PARTIAL_DATASETS = {
    "some_bad_rows.jsonl": (2, "1 of 3 rows were rejected (first: some_bad_rows.jsonl line 2: invalid JSON"),
    "one_huge_line.jsonl": (1, "1 of 2 rows were rejected (first: one_huge_line.jsonl line 1: line too long"),
    "huge_line.csv": (1, "1 of 2 rows were rejected (first: huge_line.csv line 2: line too long"),
    "deep_nesting.jsonl": (1, "1 of 2 rows were rejected (first: deep_nesting.jsonl line 1: invalid JSON (nested too "
                              "deeply)"),
}


def _unfold_import(page):
    """The import form's name box, its expander unfolded and done unfolding (it is folded away once a
    version exists)."""
    box = page.locator(IMPORT_BOX).first
    if not box.locator("details").first.evaluate("d => d.open"):   # the page has settled: this is its state
        page.get_by_text("Import a file", exact=True).click()
    _unfolded(box)
    form_name = page.get_by_label("Name of the dataset version")
    form_name.wait_for(state="visible")
    return form_name


def _import(page, url: str, *, files: list[Path] = (), path: str = "", name: str = "bad") -> None:
    _open(page, url, "/", "Datasets", "Dataset versions")
    form_name = _unfold_import(page)
    if files:
        _upload(page, list(files))
    if path:
        page.get_by_label(re.compile(r"^…or a file or folder under the import root")).fill(path)
    form_name.fill(name)
    page.get_by_role("button", name="Import", exact=True).click()


@pytest.mark.parametrize("name", list(REFUSED_DATASETS))
def test_a_bad_dataset_upload_is_refused_with_its_name_and_line(studio, corpus, page, name):
    before = len(_versions())
    _import(page, studio["url"], files=[corpus[name]], name="bad-" + name.split(".")[0].replace("_", "-"))
    shown = _alert(page, REFUSED_DATASETS[name])
    assert page.get_by_text("Created dataset version").count() == 0, shown
    assert len(_versions()) == before
    assert _uploads_left(studio["home"]) == []     # the upload went when its import ended
    import psutil

    assert psutil.Process(studio["pid"]).memory_info().rss < 2 * 1024**3   # the web process never held the rows


@pytest.mark.parametrize("name", list(PARTIAL_DATASETS))
def test_a_file_with_some_bad_rows_makes_a_version_of_the_good_ones(studio, corpus, page, name):
    kept, rejected = PARTIAL_DATASETS[name]
    label = "part-" + name.split(".")[0].replace("_", "-")
    _import(page, studio["url"], files=[corpus[name]], name=label)
    created = _alert(page, "Created dataset version")
    _alert(page, rejected)
    version_id = re.search(r"Created dataset version (\S+) \(", created).group(1)
    version = ds_versions.get_version(version_id, OPERATOR)
    assert (version["name"], version["rows_total"]) == (label, kept)
    rows = ds_versions.load_rows(version_id, "train") + ds_versions.load_rows(version_id, "test")
    assert len(rows) == kept and all(r["output"] for r in rows)
    if name == "some_bad_rows.jsonl":
        assert sorted(r["output"] for r in rows) == sorted([bad_corpus.PAIR["output"], "Dạ, có ạ."])
    # the new version is listed at once, below the form, with its review status
    page.get_by_role("heading", name="Dataset versions").wait_for()
    _clean(page)
    assert _uploads_left(studio["home"]) == []


def test_one_unreadable_file_among_good_ones_stops_the_import_and_is_the_one_named(studio, corpus, page, tmp_path):
    before = len(_versions())
    good = tmp_path / "hỏi đáp (bản 2).jsonl"
    good.write_text(json.dumps(bad_corpus.PAIR, ensure_ascii=False) + "\n", encoding="utf-8")
    _import(page, studio["url"], files=[good, corpus["binary.jsonl"]], name="lan-lon")
    _alert(page, REFUSED_DATASETS["binary.jsonl"])
    assert len(_versions()) == before and _uploads_left(studio["home"]) == []
    # a file with a broken row is named as its owner named it (not as the server stored it)
    good.write_text(json.dumps(bad_corpus.PAIR, ensure_ascii=False) + "\n{hỏng\n", encoding="utf-8")
    _import(page, studio["url"], files=[good], name="ten-tieng-viet")
    _alert(page, "1 of 2 rows were rejected (first: hỏi đáp (bản 2).jsonl line 2: invalid JSON")


def test_a_file_type_the_uploader_does_not_take_never_reaches_the_server(studio, corpus, page):
    before = len(_versions())
    _open(page, studio["url"], "/", "Datasets", "Dataset versions")
    _unfold_import(page)
    _upload(page, [corpus["unknown_type.xlsx"]])
    chip = _chip(page, "unknown_type.xlsx")
    chip.get_by_text(re.compile("files are not allowed")).wait_for()   # Streamlit's own refusal, at the file
    page.get_by_label("Name of the dataset version").fill("xlsx")
    page.get_by_role("button", name="Import", exact=True).click()
    _alert(page, "Choose at least one file (or a path on the server)")
    assert len(_versions()) == before and _uploads_left(studio["home"]) == []


SERVER_PATHS = {
    # typed into the path box: what the page says (the web app reads nothing outside the import root)
    "/": "/: outside the import root {root}",
    "/etc/passwd": "/etc/passwd: outside the import root {root}",
    "../x": "../x: outside the import root {root}",
    "../../../../etc/shadow": "../../../../etc/shadow: outside the import root {root}",
    "link_out.jsonl": "link_out.jsonl: outside the import root {root}",      # a link in the root that leads out
    "no_such_file.jsonl": "no_such_file.jsonl: no such file or folder under the import root {root}",
    "plain_folder": "plain_folder: a folder must be one saved by datasets (save_to_disk): no .arrow files",
    "broken_hf": "broken_hf/dataset_dict.json: invalid JSON at line 1 (Expecting property name enclosed in double "
                 "quotes); not a folder saved by datasets (save_to_disk), or a damaged one",
    "bad_arrow": "bad_arrow/data-00000-of-00001.arrow: not a readable Arrow file (Not an Arrow file)",
    "hf_outside": "hf_outside: '../outside.arrow' leads outside the folder",
}


@pytest.mark.parametrize("typed", list(SERVER_PATHS))
def test_a_server_path_outside_the_import_root_or_a_bad_folder_is_named(studio, page, typed):
    before = len(_versions())
    _import(page, studio["url"], path=typed, name="path")
    shown = _alert(page, SERVER_PATHS[typed].format(root=studio["root"].resolve()))
    assert "root:x:0:0" not in page.inner_text("body"), shown   # nothing of the file outside is shown
    assert len(_versions()) == before


# ── Generate pairs ───────────────────────────────────────────────────────────

# refused when the job is asked for, by check_document's cheap checks (no document is parsed in the web
# process: the .docx's zip directory is read, nothing is unpacked)
REFUSED_DOCUMENTS = {
    "empty.txt": "empty.txt: the file is empty",
    "not_a_docx.docx": "not_a_docx.docx: not a readable .docx file (not a zip archive",
    "bomb.docx": "bomb.docx: unpacks to 300 MB, over the 200 MB limit for a .docx (a zip bomb",
    "not_utf8.txt": "not_utf8.txt: not UTF-8 text (byte 6: invalid continuation byte); save it as UTF-8 first",
    "image.png.md": "image.png.md: not UTF-8 text (byte 0: invalid start byte); save it as UTF-8 first",
}
# queued: only the worker parses them, and the job fails there with the document's one-line reason
WORKER_DOCUMENTS = {
    "pages_10000.pdf": "pages_10000.pdf: 10,000 pages, over the limit of 2,000 pages for a document",
    "not_a_pdf.pdf": "not_a_pdf.pdf: not a readable PDF",
    "no_text.pdf": "no_text.pdf: no text found (a scanned PDF? it has no text layer; OCR it first)",
}


def _generate(page, url: str, docs: list[Path], *, name: str = "sinh-tu-tai-lieu", prompt: str | None = None):
    _open(page, url, "/generate", "Generate pairs", "Generations")
    _upload(page, docs)
    page.get_by_label("Name of the dataset version").fill(name)
    if prompt is not None:
        page.get_by_label(re.compile(r"^Prompt template")).fill(prompt)
    page.get_by_role("button", name="Queue generation").click()


def _generate_jobs() -> list[dict]:
    return queue.list_jobs(500, "generate", actor=OPERATOR)


def _mapped(pid: int, library: str) -> bool:
    """Whether the process has loaded a shared library whose path contains ``library``."""
    return library in Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.parametrize("name", list(REFUSED_DOCUMENTS))
def test_a_bad_document_is_refused_before_anything_is_queued(studio, corpus, page, name):
    before = len(_generate_jobs())
    _generate(page, studio["url"], [corpus[name]])
    _alert(page, REFUSED_DOCUMENTS[name])
    assert page.get_by_text("Queued generation job").count() == 0
    assert len(_generate_jobs()) == before
    assert _uploads_left(studio["home"]) == []
    # python-docx parses with lxml, which the web process has never loaded: it opened no .docx at all
    assert not _mapped(studio["pid"], "lxml")


def test_a_document_type_the_uploader_does_not_take_is_refused_at_the_file(studio, corpus, page):
    before = len(_generate_jobs())
    _open(page, studio["url"], "/generate", "Generate pairs", "Generations")
    _upload(page, [corpus["unknown.doc"]])
    chip = _chip(page, "unknown.doc")
    chip.get_by_text(re.compile("files are not allowed")).wait_for()
    page.get_by_label("Name of the dataset version").fill("doc-cu")
    page.get_by_role("button", name="Queue generation").click()
    _alert(page, "Choose at least one document and give the version a name.")
    assert len(_generate_jobs()) == before


def test_a_prompt_template_without_chunk_is_refused_and_nothing_queued(studio, corpus, page, tmp_path):
    before = len(_generate_jobs())
    good = tmp_path / "quy trình chăm sóc.md"
    good.write_text("Quy trình xử lý khiếu nại: tiếp nhận, xác minh, phản hồi trong 24 giờ.\n", encoding="utf-8")
    _generate(page, studio["url"], [good], prompt=corpus["prompt_without_chunk.txt"].read_text(encoding="utf-8"))
    _alert(page, "the prompt template must contain {chunk}, where each document chunk goes")
    _generate(page, studio["url"], [good], prompt="   ")
    _alert(page, "the prompt template is empty")
    assert len(_generate_jobs()) == before
    assert _uploads_left(studio["home"]) == []


def test_one_bad_document_among_good_ones_refuses_the_job_and_is_the_one_named(studio, corpus, page, tmp_path):
    before = len(_generate_jobs())
    good = tmp_path / "quy trình đổi trả.md"
    good.write_text("Khách được đổi trả trong 7 ngày nếu còn hóa đơn.\n", encoding="utf-8")
    _generate(page, studio["url"], [good, corpus["bomb.docx"]])
    _alert(page, REFUSED_DOCUMENTS["bomb.docx"])
    assert len(_generate_jobs()) == before and _uploads_left(studio["home"]) == []


@pytest.mark.parametrize("name", list(WORKER_DOCUMENTS))
def test_a_document_only_the_worker_may_parse_fails_there_and_the_page_says_why(studio, corpus, page, name):
    _generate(page, studio["url"], [corpus[name]], name="tu-" + name.split(".")[0].replace("_", "-"))
    queued = _alert(page, "Queued generation job")
    job_id = int(re.search(r"Queued generation job (\d+)", queued).group(1))
    failed = f"Job {job_id} failed: {WORKER_DOCUMENTS[name]}"
    for _ in range(90):   # the page's table of generations: reloaded until the job has ended
        _open(page, studio["url"], "/generate", "Generate pairs", "Generations")
        if page.locator(ALERT).filter(has_text=f"Job {job_id} failed").count():
            break
        page.wait_for_timeout(2000)
    shown = _alert(page, failed)
    assert "\n" not in shown.strip() and "Traceback" not in shown     # the reason in one line
    job = queue.get_job(job_id)
    assert job["state"] == "failed" and WORKER_DOCUMENTS[name] in job["error"]
    status = json.loads((Path(job["job_dir"]) / STATUS).read_text(encoding="utf-8"))
    assert status["pid"] != studio["pid"]    # the document was read by the worker, not by the web process
    assert not _mapped(studio["pid"], "lxml")
    assert _uploads_left(studio["home"]) == []   # and removed by it once read


# ── Deploy ───────────────────────────────────────────────────────────────────


@pytest.fixture(scope="module")
def deploy_studio(pipeline):
    """A studio on the pipeline's home: a run that passed the gate, and its exports (q8_0 among them)."""
    proc = start_studio(pipeline["home"], port := free_port())
    with _home(pipeline["home"]):
        yield {"home": pipeline["home"], "url": f"http://127.0.0.1:{port}", "run": pipeline["run"]}
        proc.terminate()
        proc.wait(20)
        _cancel_leftovers()


BAD_NAMES = ["../../etc/evil", "gemma vi cskh", "Gemma3-VI:v1", "cskh:v1:v2", "cskh/..:v1", "-cskh", "x" * 81]
BAD_SYSTEMS = {
    'Trả lời ngắn.""" \nFROM /etc/passwd': 'the system text contains """, which would end the Modelfile block early',
    'Luôn nói "dạ"': 'the system text ends with a double quote (")',
}


def _modelfile_cases(built: str) -> list[tuple[str, str]]:
    """(an edited Modelfile, the message it gets): each adds a line that a release may not have. No two
    messages in a row are the same, so that each case waits for its own (not the one before it, still shown)."""
    base = built.rstrip("\n")
    at = len(base.split("\n")) + 1          # the added line's number
    gguf = next(line for line in base.split("\n") if line.startswith("FROM ")).split(" ", 1)[1]
    return [
        (f"{base}\nADAPTER /tmp/lora.gguf\n", f"line {at}: ADAPTER is not allowed in a release"),
        (f"{base}\n# Ollama reads directives in any case\nadapter ./lora.gguf\n",
         f"line {at + 1}: ADAPTER is not allowed in a release"),
        (f'{base}\nMESSAGE user "Xin chào"\n', f"line {at}: MESSAGE is not allowed in a release"),
        (f"{base}\nFROM {gguf}\n", f"line {at}: a second FROM (Ollama would keep only the last)"),
        (f"{base}\nFROM /etc/passwd\n", f"line {at}: FROM must stay {gguf}"),
        (f'{base}\nTEMPLATE """{{{{ .Prompt }}}}"""\n', f"line {at}: TEMPLATE is the training prompt format"),
        (f"{base}\nLICENSE MIT\n", f"line {at}: LICENSE is not allowed in a release"),
        (f"{base}\nPARAMETER temperature nóng\n", f"line {at}: PARAMETER temperature takes a number, not 'nóng'"),
        (f"{base}\nPARAMETER num_ctx 2048.5\n", f"line {at}: PARAMETER num_ctx takes an integer, not '2048.5'"),
        (f"{base}\nPARAMETER bogus 1\n", f"line {at}: unknown PARAMETER 'bogus'"),
        (f'{base}\nSYSTEM """Trả lời\n', f"line {at}: a quoted value is not closed before the end of the file"),
        (f"{base}\nxin chào\n", f"line {at}: 'xin' is not a Modelfile directive"),
    ]


def test_bad_deploy_input_is_refused_with_its_reason_and_nothing_is_exported_or_released(deploy_studio, page):
    from core.deploy import releases

    url = deploy_studio["url"]
    _open(page, url, "/deploy", "Deploy", "Releases")
    page.get_by_text("Releasable:").first.wait_for()

    def jobs_of(kind):
        return len(queue.list_jobs(1000, kind, actor=OPERATOR))

    jobs, released = len(queue.list_jobs(1000, actor=OPERATOR)), len(releases.list_releases(OPERATOR))
    exports, preflights, evaluations = jobs_of("export"), jobs_of("preflight"), jobs_of("evaluate")
    export = page.get_by_role("button", name="1 · Export and write the Modelfile")
    name, system = page.get_by_label("Ollama model name"), page.get_by_label("System text")
    for bad in BAD_NAMES:
        name.fill(bad)
        export.click()
        _alert(page, f"'{bad}' is not a valid Ollama model name: use lower-case letters, digits")
    name.fill("gemma3-vi-cskh:bad-input")
    for text, message in BAD_SYSTEMS.items():
        system.fill(text)
        export.click()
        _alert(page, message)
    assert len(queue.list_jobs(1000, actor=OPERATOR)) == jobs   # nothing was exported for a refused request
    system.fill("Bạn là trợ lý CSKH. Trả lời bằng tiếng Việt.")
    export.click()
    page.get_by_role("button", name="Download Modelfile").wait_for(timeout=600_000)
    _clean(page)
    # the pipeline's export, reused (where no test before this one evaluated the q8_0 GGUF itself, the export
    # step evaluates it: an evaluate job, and no other)
    assert jobs_of("export") == exports
    after_export = len(queue.list_jobs(1000, actor=OPERATOR))
    assert after_export - jobs == jobs_of("evaluate") - evaluations <= 1
    box = page.get_by_label("Modelfile (editable)")
    built = box.input_value()
    assert built.startswith("FROM ") and 'SYSTEM """Bạn là trợ lý CSKH.' in built
    release = page.get_by_role("button", name="2 · Preflight, create in Ollama and record the release")
    for edited, message in _modelfile_cases(built):
        box.fill(edited)
        release.click()
        _alert(page, message)
    # nothing reached the preflight, Ollama or the release records
    assert len(queue.list_jobs(1000, actor=OPERATOR)) == after_export and jobs_of("preflight") == preflights
    assert len(releases.list_releases(OPERATOR)) == released
