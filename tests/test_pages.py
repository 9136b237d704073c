"""Streamlit AppTest for every page, on an empty studio and on one with a finished pipeline."""
import json

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import OPERATOR, REPO, open_tab, person

PAGES = ["datasets", "generate", "train", "evaluate", "playground", "deploy"]


def _run(page: str, principal=None, **state) -> AppTest:
    """A page as app.py runs it for a signed-in principal (the machine's operator unless given)."""
    at = AppTest.from_file(str(REPO / "pages" / f"{page}.py"), default_timeout=120)
    for k, v in state.items():
        at.session_state[k] = v
    at.session_state["principal"] = principal or OPERATOR
    return at.run()


def _clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


EMPTY = {  # what each page says on a studio with nothing in it
    "datasets": ("info", "No dataset versions yet: import a file or the sample data."),
    "generate": ("info", "No generations yet."),
    "train": ("info", "Import a dataset version on the Datasets page first."),
    "evaluate": ("info", "No evaluations yet."),
    "playground": ("info", "Train a run on the Train page first."),
    "deploy": ("info", "Train and evaluate a run first."),
}


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_on_an_empty_studio(home, page):
    at = _run(page)
    _clean(at)
    kind, text = EMPTY[page]
    assert text in [x.value for x in getattr(at, kind)]
    if page in ("datasets", "generate"):   # the upload limit of .streamlit/config.toml, stated on the page
        assert at.get("file_uploader")[0].proto.label.endswith("(up to 200 MB a file)")


def test_app_navigation_without_serve_py_is_no_operator_and_a_bad_demo_link(home):
    """No account yet, but app.py run without scripts/serve.py's server (as ``streamlit run app.py`` or AppTest
    runs it: no request the server marked as the operator's): no operator mode, only how to make the first
    admin. ``?demo=`` with a token that is no link shows nothing but that. (Operator mode itself, sign-in,
    roles and real demo links: tests/test_access.py and tests/test_access_browser.py.)"""
    from core.jobs import supervisor

    try:
        at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60).run()
        assert not at.exception, [e.value for e in at.exception]
        assert at.title[0].value == "ViTune Studio" and len(at.title) == 1
        assert [e.value for e in at.error] == [
            "No account exists yet, and this browser is not the machine's operator (operator mode is for the browser "
            "of the user who started the studio with scripts/serve.py on loopback): create the first admin on the "
            "server with `python -m core users add NAME --role admin`."]
        assert not at.info   # no "Operator mode" banner
        demo = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
        demo.query_params["demo"] = "1"
        demo.run()
        assert demo.title[0].value == "ViTune Studio" and len(demo.title) == 1
        assert [e.value for e in demo.error] == ["This demo link is not valid: it has expired or been revoked. "
                                                 "Ask the team for a new one."]
        assert supervisor._background["thread"].is_alive()  # app.py started its supervisor in this process
    finally:
        # otherwise it would tick on in the test process, for whatever VITUNE_HOME later tests set, and
        # start the jobs they mean to leave queued (workers that outlive the test session)
        supervisor.stop_background()
    assert "thread" not in supervisor._background


def test_datasets_page_imports_the_samples(home):
    at = _run("datasets")
    next(b for b in at.button if b.label.startswith("Import the sample data")).click().run()
    _clean(at)
    from core.datasets import versions as ds_versions

    versions = ds_versions.list_versions(OPERATOR)
    assert {v["name"] for v in versions} == {"general-vi", "sample-cskh-hopdong", "sample-ghichu-noibo"}
    assert versions[0]["name"] == "sample-ghichu-noibo"  # the newest: the one the Train page offers first
    assert any("sample-ghichu-noibo" in str(s.value) for s in at.success)


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_with_a_finished_pipeline(pipeline, monkeypatch, page):
    """Each page shows the pipeline's work: its dataset version, run, evaluation and verdict."""
    monkeypatch.setenv("VITUNE_HOME", str(pipeline["home"]))
    at = _run(page)
    _clean(at)
    evaluation = pipeline["evaluation"]
    if page == "datasets":
        table = at.dataframe[0].value
        assert pipeline["dataset"] in list(table["id"])
        assert "reviewed by construction" in table.loc[table["id"] == pipeline["dataset"], "review"].iloc[0]
    elif page == "generate":
        assert "No generations yet." in [i.value for i in at.info]
    elif page == "train":
        assert any(pipeline["dataset"] in o for o in at.selectbox[0].options)
        assert any(s.label == "Run" and pipeline["run"] in s.options for s in at.selectbox)
    elif page == "evaluate":
        board = at.dataframe[0].value
        row = board[board["run"] == pipeline["run"]].iloc[0]
        assert row["gate"] == ("PASS" if evaluation["passed"] else "FAIL") and row["n"] == evaluation["n"]
        assert {m.label: m.value for m in at.metric}["BLEU"] == f"{evaluation['bleu']:.4f}"
    elif page == "playground":
        assert any(o.startswith(pipeline["run"]) for o in at.selectbox[0].options)
        assert {m.label: m.value for m in at.metric}["Gate"] == "PASS"
    elif page == "deploy":
        assert any(pipeline["run"] in str(o) for o in at.selectbox[0].options)
        assert at.success[0].value.startswith(f"Releasable: the latest held-out evaluation {evaluation['evaluation']} "
                                              f"covers {evaluation['n']} of {evaluation['n']} pairs")


@pytest.mark.slow
def test_playground_chats_with_the_tuned_run(pipeline, monkeypatch):
    from core.playground import playground

    monkeypatch.setenv("VITUNE_HOME", str(pipeline["home"]))
    at = _run("playground")
    assert at.selectbox(key="chat_model").value == f"run:{pipeline['run']}"
    at.chat_input[0].set_value("Xin chào").run()
    _clean(at)
    assert [t["role"] for t in at.session_state["chats"][f"run:{pipeline['run']}"]] == ["user", "assistant"]
    for job in playground.servers():
        playground.stop(job["id"], actor=OPERATOR)


@pytest.mark.slow
def test_playground_streams_a_run_and_its_exported_gguf_side_by_side(pipeline, monkeypatch):
    from core.playground import playground

    monkeypatch.setenv("VITUNE_HOME", str(pipeline["home"]))
    at = _run("playground")
    at.radio(key="mode").set_value("Side by side").run()
    targets = playground.targets_for(OPERATOR, None, playground.models_for(OPERATOR), [])
    [export] = [t["id"] for t in targets if t["kind"] == "gguf" and t.get("run_id") == pipeline["run"]
                and " q8_0 " in t["label"]]
    at.selectbox(key="side_a").set_value(f"run:{pipeline['run']}")
    at.selectbox(key="side_b").set_value(export)
    at.slider(key="max_new").set_value(32)
    next(b for b in at.button if b.label == "Ask both").click().run()
    _clean(at)
    last = at.session_state["side_last"]
    assert (last["a"], last["b"]) == (f"run:{pipeline['run']}", export) and last["a_answer"] and last["b_answer"]
    for job in playground.servers():
        playground.stop(job["id"], actor=OPERATOR)


def test_evaluate_page_leaderboard_comparison_and_drill_down(home):
    from tests.test_evaluate import BASE_PREDS, TUNED_PREDS, store_evaluation

    store_evaluation(home, "eval-base", BASE_PREDS)
    store_evaluation(home, "eval-tuned", TUNED_PREDS)
    store_evaluation(home, "eval-other", TUNED_PREDS[:2], dataset="ds-y")
    at = _run("evaluate")
    _clean(at)
    board = at.dataframe[0].value
    assert sorted(board["evaluation"]) == ["eval-base", "eval-other", "eval-tuned"]
    next(s for s in at.selectbox if s.label == "Dataset version").set_value("ds-x").run()
    _clean(at)
    assert sorted(at.dataframe[0].value["evaluation"]) == ["eval-base", "eval-tuned"]
    assert {b.label for b in at.get("download_button")} >= {"Download the report (HTML)", "Download the examples (CSV)"}
    # compare: A = base (the one before), B = tuned
    open_tab(at, "evaluate-tab", "Compare")
    assert not any(s.label == "Dataset version" for s in at.selectbox)   # the leaderboard's tab did not run
    next(s for s in at.selectbox if s.label == "A (before)").set_value("eval-base")
    next(s for s in at.selectbox if s.label == "B (after)").set_value("eval-tuned")
    at.run()
    _clean(at)
    metrics = {m.label: m for m in at.metric}
    assert metrics["Better examples"].value == "4" and metrics["Worse examples"].value == "0"
    assert metrics["ROUGE-L (shared)"].delta.startswith("+")
    # drill-down: reference and prediction side by side, the differing words highlighted
    open_tab(at, "evaluate-tab", "Examples")
    next(s for s in at.selectbox if s.label == "Evaluation").set_value("eval-tuned").run()
    _clean(at)
    htmls = [h.proto.body for h in at.get("html")]
    assert any('vt-diff-ref' in h and 'vt-chg' in h for h in htmls)
    assert any('vt-diff-pred' in h for h in htmls)




def test_gate_thresholds_saved_from_the_page_are_audited(home):
    at = open_tab(_run("evaluate", person("thu", "admin")), "evaluate-tab", "Gate thresholds")
    next(n for n in at.number_input if n.label == "BLEU must exceed").set_value(0.4)
    next(n for n in at.number_input if n.label == "ROUGE-L must exceed").set_value(0.5)
    next(b for b in at.button if b.label == "Save thresholds").click().run()
    _clean(at)
    from core import store
    from core.evaluation import gate

    assert gate.thresholds() == {"bleu": 0.4, "rouge_l": 0.5}
    audit = store.rows("SELECT actor, role, action, subject FROM audit_log")
    assert audit == [{"actor": "thu", "role": "admin", "action": "setting.changed", "subject": "thresholds"}]

@pytest.mark.slow
def test_evaluate_form_queues_a_base_model_evaluation_with_its_decoding(pipeline, monkeypatch):
    monkeypatch.setenv("VITUNE_HOME", str(pipeline["home"]))
    from core.jobs import queue, supervisor
    from core.training import runs

    at = _run("evaluate")
    what = next(s for s in at.selectbox if s.label == "What to evaluate")
    what.set_value(next(o for o in what.options if "without adapter" in o))
    next(n for n in at.number_input if n.label.startswith("Temperature")).set_value(0.7)
    next(n for n in at.number_input if n.label == "Top-p").set_value(0.9)
    next(t for t in at.text_area if t.label.startswith("Stop strings")).set_value("###\nKhách hàng:")
    next(b for b in at.button if b.label == "Queue evaluation").click().run()
    _clean(at)
    job = queue.list_jobs(1, "evaluate")[0]
    try:
        cfg = job["config"]
        assert job["state"] == "queued" and cfg["run_id"] is None and cfg["adapter_dir"] is None
        assert cfg["decoding"]["temperature"] == 0.7 and cfg["decoding"]["top_p"] == 0.9
        assert cfg["decoding"]["stop"] == ["###", "Khách hàng:"] and cfg["limit"] is None   # the whole split
        assert cfg["prompt_format"] == runs.get_run(pipeline["run"])["prompt_format"]
        assert any(s.value.startswith(f"Queued evaluation job {job['id']}") for s in at.success)
    finally:
        supervisor.cancel(job["id"], actor=person("tester", 'admin'))  # leave the shared pipeline's queue as it was
def test_datasets_page_imports_with_encoding_and_mapping(home):
    from tests.conftest import to_cp1258

    path = home / "data" / "imports" / "qa.jsonl"   # under the import root, the one folder the page reads
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(to_cp1258("".join(
        f'{{"hoi": "Câu hỏi {i}?", "dap": "Trả lời {i}."}}\n' for i in range(5)) + "không phải JSON\n"))
    at = _run("datasets")
    at.text_input[0].input(str(path))
    at.text_input[1].input("qa")
    at.selectbox[1].select("Windows-1258 (cp1258)")
    at.text_input[2].input("hoi")
    at.text_input[4].input("dap")
    at.button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert [m.value for m in at.metric][:3] == ["6", "5", "1"]
    assert "Columns mapped: hoi → instruction, dap → output" in [i.value for i in at.info]
    assert any(s.value.startswith("Created dataset version") for s in at.success)
    at.text_input[0].input("missing.jsonl")
    at.button[0].click().run()
    assert [e.value for e in at.error] == [f"missing.jsonl: no such file or folder under the import root "
                                           f"{home / 'data' / 'imports'}"]


def test_datasets_page_imports_a_large_jsonl_through_the_bulk_path(home, monkeypatch):
    """A server-side JSONL over the bulk threshold goes through DuckDB; the page shows the same report."""
    from core.datasets import bulk
    from tests.conftest import tiny_pairs, write_jsonl

    (home / "data" / "imports").mkdir(parents=True, exist_ok=True)
    path = write_jsonl(home / "data" / "imports" / "large.jsonl", tiny_pairs(30) + ["{hỏng", tiny_pairs(1)[0]])
    monkeypatch.setattr(bulk, "BULK_THRESHOLD_BYTES", 1024)
    monkeypatch.setenv("VITUNE_BULK_THRESHOLD_BYTES", "1024")   # the page's import runs in a process of its own
    at = _run("datasets")
    at.text_input[0].input(str(path))
    at.text_input[1].input("large")
    at.button[0].click().run()
    _clean(at)
    assert [m.value for m in at.metric][:5] == ["32", "30", "1", "1", "0"]
    assert any(c.value.startswith("Bulk import in DuckDB:") for c in at.caption)
    assert any(s.value.startswith("Created dataset version") for s in at.success)


def test_datasets_page_review_one_pair_at_a_time(home):
    from core.datasets import importer, review, versions as ds_versions
    from tests.conftest import tiny_pairs, write_jsonl

    v, _ = importer.import_files([write_jsonl(home / "d.jsonl", tiny_pairs(20))], "cskh", actor=OPERATOR)
    chi = person("chi", "reviewer")   # signed in as a reviewer: the page records her identity, no name box
    at = _run("datasets", chi)
    _clean(at)
    assert not any(e.label == "Import a file" for e in at.expander)   # importing is an engineer's
    assert "no review sample has been drawn" in at.info[0].value
    next(b for b in at.button if b.label == "Draw the review sample").click().run()
    _clean(at)
    assert review.status(v["id"])["sample_size"] == 2
    assert at.markdown[0].value.startswith("**Pair 1 of 2**") and "recorded as **chi**" in at.markdown[0].value
    at.text_area[2].input("Dạ, đã sửa câu trả lời.")
    next(b for b in at.button if b.label == "Save edit").click().run()
    _clean(at)
    assert at.markdown[0].value.startswith("**Pair 2 of 2**")
    next(b for b in at.button if b.label == "Approve").click().run()
    _clean(at)
    s = review.status(v["id"])
    assert s["reviewed"] and s["edited"] == 1 and s["approved"] == 1
    assert {i["reviewer"] for i in review.items(s["review"])} == {"chi"}
    assert any("reviewed: 2/2 pairs approved" in x.value for x in at.success)
    assert ds_versions.get_version(s["child_version"])["parent_id"] == v["id"]


def test_train_page_refuses_an_unreviewed_version_unless_overridden(home):
    from core import store
    from core.datasets import importer
    from core.jobs import queue
    from tests.conftest import tiny_pairs, write_jsonl

    v, _ = importer.import_files([write_jsonl(home / "d.jsonl", tiny_pairs(10))], "cskh", actor=OPERATOR)
    at = _run("train", person("tester"))
    assert any("has not passed" in w.value or "no review sample" in w.value for w in at.warning)
    next(b for b in at.button if b.label == "Queue training job").click().run()
    assert len(at.error) == 1 and at.error[0].value.startswith(f"dataset version {v['id']} has not passed")
    assert queue.list_jobs(actor=OPERATOR) == []
    at.text_input[1].input("demo cho khách, đã xem tay")
    next(b for b in at.button if b.label == "Queue training job").click().run()
    assert not at.error and any(s.value.startswith("Queued job") for s in at.success)
    audit = store.rows("SELECT actor, role FROM audit_log WHERE action = 'review.override'")
    assert audit == [{"actor": "tester", "role": "engineer"}]


def test_generate_page_lists_generations_and_shows_a_failure_in_one_line(home, monkeypatch):
    from core.datasets.generation import generations
    from core.jobs import queue, supervisor

    monkeypatch.delenv("VITUNE_NO_SUCH_KEY", raising=False)
    (home / ".streamlit").mkdir()
    (home / ".streamlit" / "secrets.toml").write_text(
        '[endpoints.noibo]\nbase_url = "http://127.0.0.1:9/v1"\nmodel = "m"\napi_key_env = "VITUNE_NO_SUCH_KEY"\n')
    job = generations.submit([REPO / "data" / "samples" / "raw" / "quy_trinh_cskh.md"], "gen-page", endpoint="noibo",
                             actor=OPERATOR)
    assert supervisor.wait(job["id"], timeout=120)["state"] == "failed"
    at = _run("generate")
    assert not at.exception, [e.value for e in at.exception]
    assert [e.value for e in at.error] == [f"Job {job['id']} failed: endpoint 'noibo': the environment "
                                           "variable VITUNE_NO_SUCH_KEY (its API key) is not set where the studio runs"]
    assert at.selectbox[0].options == ["Local: the default model through llama.cpp's server", "Endpoint: noibo"]
    assert "{chunk}" in at.text_area[0].value
    # an invalid template is refused with its reason, and nothing is queued
    jobs_before = len(queue.list_jobs(actor=OPERATOR))
    at.get("file_uploader")[0].set_value(("notes.md", "Quy trình xử lý khiếu nại.".encode(), "text/markdown"))
    at.text_input[0].input("x")
    at.text_area[0].input("Không có chỗ cho đoạn văn.")
    at.button[0].click().run()
    assert at.error[0].value == "the prompt template must contain {chunk}, where each document chunk goes"
    assert len(queue.list_jobs(actor=OPERATOR)) == jobs_before
    assert not list((home / "data" / "uploads").glob("*/*"))   # the upload went with the refused request


@pytest.mark.slow
def test_deploy_page_exports_shows_the_modelfile_preflights_and_manages_releases(pipeline, pipeline_ggufs, monkeypatch):
    monkeypatch.setenv("VITUNE_HOME", str(pipeline["home"]))
    monkeypatch.setenv("VITUNE_SLOTS", "cpu")
    at = _run("deploy")
    at.text_input[0].set_value("vi-page:v1")
    assert at.selectbox[1].label == "Quantization" and at.selectbox[1].value == "q8_0"  # the 270M model's default
    # the gate's record for the q8_0 file: the merged model's evaluation and the file's own (pipeline_ggufs)
    assert pipeline["evaluation"]["passed"] and pipeline_ggufs["q8_0"]["passed"], pipeline_ggufs
    assert any(s.value == "A release of q8_0 passes the gate." for s in at.success)
    assert len(at.text_input) == 1  # releasable: no override field
    next(b for b in at.button if b.label.startswith("1 ·")).click().run()
    _clean(at)
    modelfile = next(t for t in at.text_area if t.label == "Modelfile (editable)")
    assert modelfile.value.startswith("FROM ") and 'TEMPLATE """' in modelfile.value
    modelfile.set_value(modelfile.value.replace("PARAMETER temperature 0.7", "PARAMETER temperature 0.2"))
    next(n for n in at.number_input if n.label.startswith("Golden")).set_value(2)
    next(b for b in at.button if b.label.startswith("2 ·")).click().run()
    _clean(at)
    from core.deploy import releases

    rel = releases.get_release(at.session_state["last_release"])
    assert "PARAMETER temperature 0.2" in rel["modelfile"] and rel["preflight"]["n"] == 2
    assert rel["override_reason"] is None and rel["quantization"] == "q8_0" and rel["evaluation_id"]
    # the checks that gate, all passed; the LLM judge is shown where a test before this one judged the run's
    # evaluation, and gates only where an admin lets it (off here)
    checks = rel["gate_record"]["checks"]
    assert [(c["name"], c["passed"]) for c in checks if c["gates"]] == [
        ("merged_model", True), ("gguf", True), ("quant_cost", True)]
    assert {c["name"] for c in checks if not c["gates"]} <= {"judge"}
    assert rel["gate_record"]["checks"][1]["evaluation"] == pipeline_ggufs["q8_0"]["evaluation"]
    assert any(m.label == "Preflight" and m.value == "passed" for m in at.metric)
    # both models against the held-out answers, from the release's own report, and the warning only where due
    held = rel["preflight"]["held_out"]
    shown = {m.label: m.value for m in at.metric}
    assert shown["GGUF vs held-out answers: BLEU / ROUGE-L"] == \
        f"{held['gguf']['bleu']:.3f} / {held['gguf']['rouge_l']:.3f}"
    assert shown["Merged model vs held-out answers: BLEU / ROUGE-L"] == \
        f"{held['merged']['bleu']:.3f} / {held['merged']['rouge_l']:.3f}"
    assert any("against the held-out answers of the same prompts" in c.value for c in at.caption)
    assert any("quantization costs this run its gate" in w.value for w in at.warning) == \
        held["gguf_below_gate_where_merged_passes"]
    at.selectbox[-1].set_value(rel["id"])
    next(b for b in at.button if b.label.startswith("Delete")).click().run()
    _clean(at)
    assert releases.get_release(rel["id"])["state"] == "deleted"


def _import_form(at: AppTest, *, path: str = "", name: str = "v", upload=None, encoding=None) -> AppTest:
    if upload:
        at.get("file_uploader")[0].set_value(upload)
    at.text_input[0].input(path)
    at.text_input[1].input(name)
    if encoding:
        at.selectbox[1].select(encoding)
    return next(b for b in at.button if b.label == "Import").click().run()


def test_datasets_page_reads_server_paths_only_under_the_import_root(home, tmp_path):
    from tests.conftest import tiny_pairs, write_jsonl

    root = home / "data" / "imports"
    outside = write_jsonl(tmp_path / "outside.jsonl", tiny_pairs(4))
    at = _run("datasets")
    for typed in ("/", "/etc/passwd", "../studio.duckdb", str(outside)):
        _import_form(at, path=typed)
        assert [e.value for e in at.error] == [f"{typed}: outside the import root {root}; copy the file there (or set "
                                               "VITUNE_IMPORT_ROOT), or import it with `python -m core dataset import`"]
    (root / "link.jsonl").symlink_to(outside)   # a link inside the root that leads out of it
    _import_form(at, path="link.jsonl")
    assert at.error[0].value.startswith("link.jsonl: outside the import root")
    (root / "team").mkdir()
    write_jsonl(root / "team" / "ok.jsonl", tiny_pairs(4))
    _import_form(at, path="team/ok.jsonl", name="ok")
    _clean(at)
    assert any(s.value.startswith("Created dataset version") for s in at.success)


def test_datasets_page_upload_is_removed_and_the_new_version_listed_at_once(home):
    from tests.conftest import tiny_pairs

    at = _run("datasets")
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in tiny_pairs(6)) + "{hỏng\n"
    _import_form(at, name="tai-len", upload=("tải lên.jsonl", body.encode(), "application/json"))
    _clean(at)
    assert [w.value for w in at.warning] == ["1 of 7 rows were rejected (first: tải lên.jsonl line 7: invalid JSON "
                                             "(Expecting property name enclosed in double quotes)); the valid rows "
                                             "were kept"]
    created = next(s.value for s in at.success if s.value.startswith("Created dataset version"))
    version_id = created.split()[3]
    table = next(d.value for d in at.dataframe if "hash" in d.value.columns)   # the versions table, this run
    assert list(table["id"]) == [version_id]
    assert not list((home / "data" / "uploads").glob("*/*"))   # removed once the import ended
    # an upload that keeps nothing: the reason, no word of kept rows, and the upload is gone too
    _import_form(at, name="hong", upload=("hong.jsonl", b"{nope\n[1]\n", "application/json"))
    assert not at.warning
    assert [e.value for e in at.error] == ["no valid rows were found (2 of 2 rejected, first: hong.jsonl line 1: "
                                           "invalid JSON (Expecting property name enclosed in double quotes)); "
                                           "nothing was imported"]
    assert not list((home / "data" / "uploads").glob("*/*"))


def test_datasets_page_refuses_a_2_kb_parquet_bomb_from_its_metadata_in_an_import_process(home):
    """A 2.3 KB Parquet upload that decodes to 18.6 GB: the page names the problem, keeps nothing, and the page (the
    web app's process) was never at risk: the file is read in an import process of its own."""
    from tests.test_large_files import parquet_bomb

    bomb = parquet_bomb(home / "bomb.parquet").read_bytes()
    at = _run("datasets")
    _import_form(at, name="bom", upload=("bom.parquet", bomb, "application/octet-stream"))
    assert not at.exception, [e.value for e in at.exception]
    assert [e.value for e in at.error] == [
        "bom.parquet: its columns instruction, input, output decode to more than the import limit of 2.0 GB (counted "
        "from its metadata and dictionaries; nothing was decoded): a compressed or dictionary-encoded file much "
        "larger than it looks; split it into smaller files"]
    assert not list((home / "data" / "uploads").glob("*/*")) and not list((home / "data" / "datasets").iterdir())


def test_datasets_page_names_its_own_encoding_control(home):
    from tests.conftest import to_cp1258

    at = _run("datasets")
    _import_form(at, name="cp", upload=("cp.jsonl", to_cp1258('{"instruction": "Hỏi", "output": "Đáp"}\n'),
                                        "application/json"))
    assert [e.value for e in at.error] == ["cp.jsonl: not UTF-8 (line 1, byte 19: invalid continuation byte); choose "
                                           "its encoding under Encoding (Windows-1258 or UTF-16) or save it as UTF-8"]
    assert "--encoding" not in at.error[0].value
    _import_form(at, name="cp", upload=("cp.jsonl", b'{"a": 1}\n', "application/json"), encoding="UTF-16 LE (no BOM)")
    assert [e.value for e in at.error] == ["cp.jsonl: line 1 cannot be read as utf-16-le (truncated data); choose "
                                           "another one under Encoding"]


def test_dataset_text_and_model_output_show_as_text_not_markdown(home):
    from core.datasets import importer
    from tests.conftest import tiny_pairs, write_jsonl
    from tests.test_evaluate import store_evaluation

    evil = "[bấm vào đây](http://evil.example/x) ![ảnh](http://evil.example/p.png) **đậm**"
    importer.import_files([write_jsonl(home / "d.jsonl", tiny_pairs(4))], evil, actor=OPERATOR)
    at = _run("datasets")
    _clean(at)
    shown = [m.value for m in at.markdown]
    assert not any("](http" in m for m in shown)   # no link or image markdown reaches the page
    assert any(r"\[bấm vào đây\]\(http\://evil\.example/x\)" in m for m in shown)   # the name, escaped
    store_evaluation(home, "eval-md", ["x"] * 4, refs=[evil] * 4)
    at = _run("evaluate")
    shown = []
    for tab in ("Leaderboard", "Compare", "Examples", "Preference votes", "Gate thresholds"):
        open_tab(at, "evaluate-tab", tab)
        _clean(at)
        assert not any("](http" in m.value for m in at.markdown), tab
        shown += [t.value for t in at.text]
    assert "Câu hỏi 0" in shown


def test_an_unexpected_error_on_a_page_is_one_line_and_its_trace_goes_to_the_error_log(home, monkeypatch):
    """A dataset version whose files a teammate deleted: the page shows one line, app.py's edge logs the trace.
    (AppTest carries no request, so no identity a request would resolve to: the operator's is given here.)"""
    import shutil

    from core.access.principal import web_operator
    from pages import common

    monkeypatch.setattr(common, "resolve", lambda: (web_operator(), None))

    from core import errors
    from core.datasets import importer
    from core.jobs import supervisor
    from tests.conftest import tiny_pairs, write_jsonl

    v, _ = importer.import_files([write_jsonl(home / "d.jsonl", tiny_pairs(6))], "gone", actor=OPERATOR)
    shutil.rmtree(home / "data" / "datasets" / v["id"])
    try:
        at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60).run()
    finally:
        supervisor.stop_background()
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.error) == 1 and "\n" not in at.error[0].value
    assert at.error[0].value.endswith(f"(an unexpected error; the details are in {errors.log_path()})")
    assert "train.parquet" in at.error[0].value
    log = errors.log_path().read_text(encoding="utf-8")
    assert "the Datasets page" in log and "Traceback (most recent call last)" in log


def test_an_unexpected_error_in_a_live_view_is_one_line_there_and_the_page_goes_on(home, monkeypatch):
    """A live view (a fragment refreshed every 2 s) runs alone on its refreshes, outside app.py's edge, so it
    has an edge of its own: the queue failing to read (a fault injected where the jobs are listed) shows
    one line in the Train page's jobs view, the trace goes to the error log, and the page around it is whole."""
    from core import errors
    from core.datasets import importer
    from core.jobs import queue
    from core.training import presets, runs
    from tests.conftest import tiny_pairs, write_jsonl

    v, _ = importer.import_files([write_jsonl(home / "d.jsonl", tiny_pairs(6))], "cskh", actor=OPERATOR)
    job = runs.submit_train(v["id"], presets.preset("demo pass (CPU, 40 steps)"), actor=OPERATOR,
                            override_review="a test's run")   # queued: no supervisor runs here

    def unreadable(*args, **kwargs):
        raise OSError("the job folders' disk is gone")

    monkeypatch.setattr(queue, "list_jobs", unreadable)
    at = _run("train")
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.error) == 1 and "\n" not in at.error[0].value and "disk is gone" in at.error[0].value
    assert any(b.label == "Queue training job" for b in at.button)                 # the form above it
    assert at.subheader[0].value == "Jobs"
    assert any(s.label == "Run" and s.value == job["run_id"] for s in at.selectbox)   # the runs below it
    assert any(c.value == f"Run {job['run_id']}: queued" for c in at.caption)
    assert "the Train page (jobs)" in errors.log_path().read_text(encoding="utf-8")


def test_a_viewer_cannot_make_the_datasets_page_load_a_tokenizer_from_any_folder(home, tmp_path, default_model,
                                                                                 monkeypatch):
    """The base-model selectbox's value comes back from the browser as a label, and Streamlit keeps any value
    whose label (``display_name``: a folder's last name) is an option's: a viewer sending the path of any folder
    named like the default model's gets a refusal, and no tokenizer is read there."""
    import shutil

    from streamlit.proto.WidgetStates_pb2 import WidgetState
    from streamlit.testing.v1 import element_tree

    from core.datasets import importer
    from tests.conftest import tiny_pairs, write_jsonl

    importer.import_files([write_jsonl(home / "d.jsonl", tiny_pairs(6))], "v", actor=OPERATOR)
    elsewhere = tmp_path / "another-project" / default_model.name
    elsewhere.mkdir(parents=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(default_model / name, elsewhere / name)
    at = _run("datasets", person("xem", "viewer"))
    _clean(at)
    box = next(s for s in at.selectbox if s.label == "Base model's tokenizer")
    sent = WidgetState(id=box.id, string_value=str(elsewhere))   # what a browser's crafted message carries
    real = element_tree.Selectbox._widget_state
    monkeypatch.setattr(element_tree.Selectbox, "_widget_state",
                        property(lambda self: sent if self.id == sent.id else real.fget(self)))
    import tokenizers

    opened, from_file = [], tokenizers.Tokenizer.from_file
    monkeypatch.setattr(tokenizers.Tokenizer, "from_file", lambda path: opened.append(path) or from_file(path))
    at.run()
    assert box.id == next(s for s in at.selectbox if s.label == "Base model's tokenizer").id
    assert not at.exception, [e.value for e in at.exception]
    assert [e.value for e in at.error] == [
        f"{elsewhere}: not an allowed base model (a model folder under {home / 'models' / 'base'}, the default "
        "model, or a model an admin has allowed: `python -m core models allow NAME`)"]
    assert opened == [] and "over max_seq_length" not in [m.label for m in at.metric]


def test_admin_page_allows_and_takes_back_a_base_model(home):
    from core import base_models, store

    at = _run("admin", person("quan", "admin"))
    _clean(at)
    assert "Nothing else is allowed yet." in [x.value for x in at.info]
    field = next(t for t in at.text_input if t.label == "Model hub name or folder")
    field.input("unsloth/gemma-4-E4B-it")
    next(b for b in at.button if b.label == "Allow").click().run()
    _clean(at)
    assert base_models.allowed() == ["unsloth/gemma-4-E4B-it"]
    next(t for t in at.text_input if t.label == "Model hub name or folder").input("not a name")
    next(b for b in at.button if b.label == "Allow").click().run()
    assert [e.value for e in at.error] == ["not a name: neither a model hub name (org/name) nor a folder (give it as "
                                           "an absolute path)"]
    next(t for t in at.text_input if t.label == "Model hub name or folder").input("unsloth/gemma-4-E4B-it")
    next(b for b in at.button if b.label == "Take back").click().run()
    _clean(at)
    assert base_models.allowed() == []
    audit = store.rows("SELECT actor, action, subject FROM audit_log ORDER BY ts")
    assert audit == [{"actor": "quan", "action": "setting.changed", "subject": base_models.SETTING}] * 2
