"""Streamlit AppTest for every page, on an empty studio and on one with a finished pipeline."""
import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import REPO

PAGES = ["datasets", "train", "evaluate", "playground", "deploy"]


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


@pytest.mark.slow
def test_deploy_page_exports_shows_the_modelfile_preflights_and_manages_releases(pipeline, monkeypatch):
    monkeypatch.setenv("VITUNE_HOME", str(pipeline["home"]))
    monkeypatch.setenv("VITUNE_SLOTS", "cpu")
    at = _run("deploy")
    at.text_input[0].set_value("vi-page:v1")
    at.selectbox[1].set_value("q8_0")
    if not pipeline["evaluation"]["passed"]:
        at.text_input[1].set_value("page test")
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
    assert any(m.label == "Preflight" and m.value == "passed" for m in at.metric)
    at.selectbox[-1].set_value(rel["id"])
    next(b for b in at.button if b.label.startswith("Delete")).click().run()
    _clean(at)
    assert deploy.get_release(rel["id"])["state"] == "deleted"
