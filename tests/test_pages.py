"""Streamlit AppTest for every page, on an empty studio and on one with a finished pipeline."""
import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import REPO

PAGES = ["datasets", "generate", "train", "evaluate", "playground", "deploy"]


def _run(page: str, **state) -> AppTest:
    at = AppTest.from_file(str(REPO / "pages" / f"{page}.py"), default_timeout=120)
    for k, v in state.items():
        at.session_state[k] = v
    at.session_state["user"] = "tester"
    return at.run()


def _clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_on_an_empty_studio(home, page):
    _clean(_run(page))


def test_app_navigation_and_demo_mode(home):
    from core import jobs

    try:
        at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60).run()
        _clean(at)
        assert at.title[0].value == "Datasets"
        demo = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
        demo.query_params["demo"] = "1"
        demo.run()
        _clean(demo)
        assert demo.title[0].value.startswith("Playground")
        assert jobs._background["thread"].is_alive()  # app.py started its supervisor in this process
    finally:
        # otherwise it would tick on in the test process, for whatever VITUNE_HOME later tests set, and
        # start the jobs they mean to leave queued (workers that outlive the test session)
        jobs.stop_background()
    assert "thread" not in jobs._background


def test_datasets_page_imports_the_samples(home):
    at = _run("datasets")
    next(b for b in at.button if b.label.startswith("Import the sample data")).click().run()
    _clean(at)
    from core import datasets

    versions = datasets.list_versions()
    assert {v["name"] for v in versions} == {"general-vi", "sample-cskh-hopdong", "sample-ghichu-noibo"}
    assert versions[0]["name"] == "sample-ghichu-noibo"  # the newest: the one the Train page offers first
    assert any("sample-ghichu-noibo" in str(s.value) for s in at.success)


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_with_a_finished_pipeline(pipeline, monkeypatch, page):
    monkeypatch.setenv("VITUNE_HOME", str(pipeline["home"]))
    at = _run(page)
    _clean(at)
    if page == "evaluate":
        assert any(m.label == "BLEU" for m in at.metric)
    if page == "deploy":
        assert any(pipeline["run"] in str(o) for o in at.selectbox[0].options)


@pytest.mark.slow
def test_playground_answers_side_by_side(pipeline, monkeypatch):
    monkeypatch.setenv("VITUNE_HOME", str(pipeline["home"]))
    at = _run("playground")
    next(b for b in at.button if b.label == "Ask").click().run()
    _clean(at)
    labels = [m.value for m in at.markdown]
    assert "**Tuned**" in labels and "**Base**" in labels


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
    next(s for s in at.selectbox if s.label == "A (before)").set_value("eval-base")
    next(s for s in at.selectbox if s.label == "B (after)").set_value("eval-tuned")
    at.run()
    _clean(at)
    metrics = {m.label: m for m in at.metric}
    assert metrics["Better examples"].value == "4" and metrics["Worse examples"].value == "0"
    assert metrics["ROUGE-L (shared)"].delta.startswith("+")
    # drill-down: reference and prediction side by side, the differing words highlighted
    next(s for s in at.selectbox if s.label == "Evaluation").set_value("eval-tuned").run()
    _clean(at)
    htmls = [h.proto.body for h in at.get("html")]
    assert any('vt-diff-ref' in h and 'vt-chg' in h for h in htmls)
    assert any('vt-diff-pred' in h for h in htmls)




def test_gate_thresholds_saved_from_the_page_are_audited(home):
    at = _run("evaluate")
    next(n for n in at.number_input if n.label == "BLEU must exceed").set_value(0.4)
    next(n for n in at.number_input if n.label == "ROUGE-L must exceed").set_value(0.5)
    next(b for b in at.button if b.label == "Save thresholds").click().run()
    _clean(at)
    from core import evaluate, store

    assert evaluate.thresholds() == {"bleu": 0.4, "rouge_l": 0.5}
    audit = store.rows("SELECT actor, action, subject FROM audit_log")
    assert audit == [{"actor": "tester", "action": "setting.changed", "subject": "thresholds"}]

@pytest.mark.slow
def test_evaluate_form_queues_a_base_model_evaluation_with_its_decoding(pipeline, monkeypatch):
    monkeypatch.setenv("VITUNE_HOME", str(pipeline["home"]))
    from core import jobs

    at = _run("evaluate")
    what = next(s for s in at.selectbox if s.label == "What to evaluate")
    what.set_value(next(o for o in what.options if "without adapter" in o))
    next(n for n in at.number_input if n.label.startswith("Temperature")).set_value(0.7)
    next(n for n in at.number_input if n.label == "Top-p").set_value(0.9)
    next(t for t in at.text_area if t.label.startswith("Stop strings")).set_value("###\nKhách hàng:")
    next(b for b in at.button if b.label == "Queue evaluation").click().run()
    _clean(at)
    job = jobs.list_jobs(1, "evaluate")[0]
    try:
        cfg = job["config"]
        assert job["state"] == "queued" and cfg["run_id"] is None and cfg["adapter_dir"] is None
        assert cfg["decoding"]["temperature"] == 0.7 and cfg["decoding"]["top_p"] == 0.9
        assert cfg["decoding"]["stop"] == ["###", "Khách hàng:"] and cfg["limit"] == 20
        assert cfg["prompt_format"] == jobs.get_run(pipeline["run"])["prompt_format"]
        assert any(s.value.startswith(f"Queued evaluation job {job['id']}") for s in at.success)
    finally:
        jobs.cancel(job["id"], actor="tester")  # leave the shared pipeline's queue as it was
def test_datasets_page_imports_with_encoding_and_mapping(home):
    from tests.conftest import to_cp1258

    path = home / "qa.jsonl"
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
    at.text_input[0].input(str(home / "missing.jsonl"))
    at.button[0].click().run()
    assert [e.value for e in at.error] == [f"{home / 'missing.jsonl'}: no such file or folder"]


def test_datasets_page_imports_a_large_jsonl_through_the_bulk_path(home, monkeypatch):
    """A server-side JSONL over the bulk threshold goes through DuckDB; the page shows the same report."""
    from core import bulk_import
    from tests.conftest import tiny_pairs, write_jsonl

    path = write_jsonl(home / "large.jsonl", tiny_pairs(30) + ["{hỏng", tiny_pairs(1)[0]])
    monkeypatch.setattr(bulk_import, "BULK_THRESHOLD_BYTES", 1024)
    at = _run("datasets")
    at.text_input[0].input(str(path))
    at.text_input[1].input("large")
    at.button[0].click().run()
    _clean(at)
    assert [m.value for m in at.metric][:5] == ["32", "30", "1", "1", "0"]
    assert any(c.value.startswith("Bulk import in DuckDB:") for c in at.caption)
    assert any(s.value.startswith("Created dataset version") for s in at.success)


def test_datasets_page_review_one_pair_at_a_time(home):
    from core import datasets, review
    from tests.conftest import tiny_pairs, write_jsonl

    v, _ = datasets.import_files([write_jsonl(home / "d.jsonl", tiny_pairs(20))], "cskh")
    at = _run("datasets")
    _clean(at)
    assert "no review sample has been drawn" in at.info[0].value
    next(b for b in at.button if b.label == "Draw the review sample").click().run()
    _clean(at)
    assert review.status(v["id"])["sample_size"] == 2
    assert at.markdown[0].value.startswith("**Pair 1 of 2**")
    at.text_input(key="reviewer").input("Chi")
    at.text_area[2].input("Dạ, đã sửa câu trả lời.")
    next(b for b in at.button if b.label == "Save edit").click().run()
    _clean(at)
    assert at.markdown[0].value.startswith("**Pair 2 of 2**")
    next(b for b in at.button if b.label == "Approve").click().run()
    _clean(at)
    s = review.status(v["id"])
    assert s["reviewed"] and s["edited"] == 1 and s["approved"] == 1
    assert {i["reviewer"] for i in review.items(s["review"])} == {"Chi"}
    assert any("reviewed: 2/2 pairs approved" in x.value for x in at.success)
    assert datasets.get_version(s["child_version"])["parent_id"] == v["id"]


def test_train_page_refuses_an_unreviewed_version_unless_overridden(home):
    from core import datasets, jobs, store
    from tests.conftest import tiny_pairs, write_jsonl

    v, _ = datasets.import_files([write_jsonl(home / "d.jsonl", tiny_pairs(10))], "cskh")
    at = _run("train")
    assert any("has not passed" in w.value or "no review sample" in w.value for w in at.warning)
    next(b for b in at.button if b.label == "Queue training job").click().run()
    assert len(at.error) == 1 and at.error[0].value.startswith(f"dataset version {v['id']} has not passed")
    assert jobs.list_jobs() == []
    at.text_input[1].input("demo cho khách, đã xem tay")
    next(b for b in at.button if b.label == "Queue training job").click().run()
    assert not at.error and any(s.value.startswith("Queued job") for s in at.success)
    audit = store.rows("SELECT actor FROM audit_log WHERE action = 'review.override'")
    assert audit == [{"actor": "tester"}]


def test_generate_page_lists_generations_and_shows_a_failure_in_one_line(home, monkeypatch):
    from core import generate, jobs

    monkeypatch.delenv("VITUNE_NO_SUCH_KEY", raising=False)
    backend = generate.Backend(base_url="http://127.0.0.1:9/v1", model="m", api_key_env="VITUNE_NO_SUCH_KEY")
    job = generate.submit([REPO / "data" / "samples" / "raw" / "quy_trinh_cskh.md"], "gen-page", backend=backend)
    assert jobs.wait(job["id"], timeout=120)["state"] == "failed"
    at = _run("generate")
    assert not at.exception, [e.value for e in at.exception]
    assert [e.value for e in at.error] == [f"Job {job['id']} failed: GenerateError: the environment variable "
                                           "VITUNE_NO_SUCH_KEY (the API key) is not set for the worker; set it "
                                           "where the studio runs, or in Streamlit secrets"]
    assert "{chunk}" in at.text_area[0].value
    # an invalid template is refused with a message, nothing queued (the form needs files: none given)
    at.text_input[0].input("x").run()
    at.button[0].click().run()
    assert any("Choose at least one document" in w.value for w in at.warning)


@pytest.mark.slow
def test_deploy_page_exports_shows_the_modelfile_preflights_and_manages_releases(pipeline, monkeypatch):
    monkeypatch.setenv("VITUNE_HOME", str(pipeline["home"]))
    monkeypatch.setenv("VITUNE_SLOTS", "cpu")
    at = _run("deploy")
    at.text_input[0].set_value("vi-page:v1")
    assert at.selectbox[1].label == "Quantization" and at.selectbox[1].value == "q8_0"  # the 270M model's default
    assert pipeline["evaluation"]["passed"] and len(at.text_input) == 1  # releasable: no override field
    next(b for b in at.button if b.label.startswith("1 ·")).click().run()
    _clean(at)
    modelfile = next(t for t in at.text_area if t.label == "Modelfile (editable)")
    assert modelfile.value.startswith("FROM ") and 'TEMPLATE """' in modelfile.value
    modelfile.set_value(modelfile.value.replace("PARAMETER temperature 0.7", "PARAMETER temperature 0.2"))
    next(n for n in at.number_input if n.label.startswith("Golden")).set_value(2)
    next(b for b in at.button if b.label.startswith("2 ·")).click().run()
    _clean(at)
    from core import deploy

    rel = deploy.get_release(at.session_state["last_release"])
    assert "PARAMETER temperature 0.2" in rel["modelfile"] and rel["preflight"]["n"] == 2
    assert rel["override_reason"] is None and rel["quantization"] == "q8_0" and rel["evaluation_id"]
    assert any(m.label == "Preflight" and m.value == "passed" for m in at.metric)
    at.selectbox[-1].set_value(rel["id"])
    next(b for b in at.button if b.label.startswith("Delete")).click().run()
    _clean(at)
    assert deploy.get_release(rel["id"])["state"] == "deleted"
