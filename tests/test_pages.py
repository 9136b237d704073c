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
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60).run()
    _clean(at)
    assert at.title[0].value == "Datasets"
    demo = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    demo.query_params["demo"] = "1"
    demo.run()
    _clean(demo)
    assert demo.title[0].value.startswith("Playground")


def test_datasets_page_imports_the_samples(home):
    at = _run("datasets")
    next(b for b in at.button if b.label.startswith("Import the sample data")).click().run()
    _clean(at)
    from core import datasets

    names = {v["name"] for v in datasets.list_versions()}
    assert names == {"general-vi", "sample-cskh-hopdong"}


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
