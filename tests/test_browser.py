"""A real browser (Playwright driving Debian's Chromium) opens every page of a running studio."""
import os
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import OPERATOR, free_port, start_studio
from tests.test_access_browser import ARGS

pytestmark = pytest.mark.slow

PAGES = {"": "Datasets", "generate": "Generate pairs", "train": "Train", "evaluate": "Evaluate", "playground": "Playground", "deploy": "Deploy"}
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def studio(pipeline):
    proc = start_studio(pipeline["home"], port := free_port())
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


def test_every_page_opens_without_an_exception(studio):
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: scripts/test.sh installs it")
    from playwright.sync_api import sync_playwright

    shots = os.environ.get("VITUNE_SCREENSHOTS")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        for path, title in PAGES.items():
            page.goto(f"{studio}/{path}")
            page.get_by_role("heading", name=title).first.wait_for(timeout=60_000)
            page.wait_for_timeout(2500)  # let fragments and charts render
            assert page.locator('[data-testid="stException"]').count() == 0, f"exception on /{path}"
            assert "Traceback" not in page.inner_text("body")
            # client.toolbarMode "minimal": no Streamlit "Deploy" button or developer menu for a visitor
            assert page.locator('[data-testid="stAppDeployButton"]').count() == 0
            assert page.locator('[data-testid="stMainMenu"]').count() == 0
            if shots:
                page.screenshot(path=str(Path(shots) / f"{(path or 'datasets')}.png"), full_page=True)
        page.goto(f"{studio}/?demo=1")   # no such demo link: nothing of the studio shows (real links: test_access_browser)
        page.get_by_text("This demo link is not valid").first.wait_for(timeout=60_000)
        assert page.locator('[data-testid="stSidebarNav"]').count() == 0
        browser.close()


@pytest.fixture
def empty_studio(tmp_path):
    proc = start_studio(tmp_path, port := free_port())
    yield f"http://127.0.0.1:{port}", tmp_path
    proc.terminate()
    proc.wait(10)


def test_the_deploy_page_judges_the_gguf_that_ships(studio, pipeline, pipeline_ggufs):
    """The pipeline run (its merged model passes) on the Deploy page: each quantization shows the gate's record
    for its own file; a release of a GGUF whose own evaluation fails is refused on the page, naming that
    evaluation's scores, and one whose evaluation passes is said to pass."""
    from playwright.sync_api import sync_playwright

    from core import store
    from tests.conftest import studio_home

    with studio_home(pipeline["home"]):
        rows = {q: store.one("SELECT * FROM evaluations WHERE id = ?", [pipeline_ggufs[q]["evaluation"]])
                for q in ("q8_0", "q4_k_m")}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1400})
        page.set_default_timeout(60_000)
        page.goto(f"{studio}/deploy")
        page.get_by_role("heading", name="Deploy").first.wait_for()
        page.get_by_text("Releasable:").first.wait_for()   # the merged model's verdict
        for quant in ("q4_k_m", "q8_0"):
            row = rows[quant]
            box = page.locator(".st-key-deploy_quant")
            # each option reads "q8_0 · PPL … · KL …" once the export's quantization cost is measured
            if not box.get_by_role("combobox").input_value().startswith(quant):
                box.get_by_role("button", name="Open").click()
                page.get_by_role("option", name=re.compile(rf"^{quant}( ·|$)")).click()
            page.get_by_text(f"for {quant}: what a release of this GGUF is judged on").first.wait_for()
            if row["passed"]:
                page.get_by_text(f"A release of {quant} passes the gate.").wait_for()
                continue
            scores = f"BLEU {row['bleu']:.3f}, ROUGE-L {row['rouge_l']:.3f} is below the gate"
            warning = page.get_by_text(f"A release of {quant} is refused as it stands")
            warning.wait_for()
            assert scores in warning.inner_text()
            page.get_by_role("button", name="1 · Export and write the Modelfile").click()
            error = page.locator('[data-testid="stAlertContentError"]').filter(has_text="is refused")
            error.wait_for(timeout=120_000)
            assert f"the {quant} GGUF's own evaluation {row['id']} (n=22): {scores}" in error.inner_text()
            assert page.get_by_role("button", name="Download Modelfile").count() == 0   # nothing prepared
        assert page.locator('[data-testid="stException"]').count() == 0
        browser.close()


def test_the_whole_pipeline_by_clicking_through_the_browser(empty_studio):
    """Import the samples → train the demo sample with the page's default preset (40 steps) → watch the
    loss → evaluate the whole held-out split (the page's default) → see the gate pass → export GGUF at the page's default (q8_0), see the Modelfile,
    preflight and record the release without an override, all by clicking, as a person would."""
    from playwright.sync_api import sync_playwright

    url, home = empty_studio
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1400})
        page.set_default_timeout(60_000)

        page.goto(url)
        page.get_by_role("button", name="Import the sample data").click()
        page.get_by_text("Sample dataset version").wait_for()

        page.goto(f"{url}/train")
        page.get_by_role("button", name="Queue training job").wait_for()
        # the demo sample is offered first, with the page's default preset
        assert page.get_by_role("combobox", name="Dataset version").input_value().startswith("sample-ghichu-noibo")
        assert page.get_by_role("combobox", name="Preset").input_value() == "demo pass (CPU, 40 steps)"
        page.get_by_role("button", name="Queue training job").click()
        queued = page.get_by_text("Queued job")
        queued.wait_for()
        run_id = queued.inner_text().rstrip(".").split()[-1]
        page.get_by_text(f"Run {run_id}: succeeded", exact=True).wait_for(timeout=420_000)
        assert page.locator('[data-testid="stPlotlyChart"]').count() >= 1

        page.goto(f"{url}/evaluate")
        page.get_by_role("button", name="Queue evaluation").click()
        page.get_by_text("Queued evaluation job").wait_for()
        for _ in range(180):
            page.wait_for_timeout(2000)
            page.reload()
            page.get_by_role("heading", name="Evaluate").first.wait_for()
            page.wait_for_timeout(1500)
            if page.get_by_text("Gate", exact=True).count():
                break
        gate = page.locator('[data-testid="stMetric"]').filter(has_text="Gate").inner_text()
        assert "PASS" in gate, gate

        page.goto(f"{url}/deploy")
        page.get_by_role("heading", name="Deploy").first.wait_for()
        page.get_by_text("Releasable:").first.wait_for()
        assert page.get_by_text("Not releasable").count() == 0
        assert page.get_by_label("Override reason (required: the gate has not passed)").count() == 0
        # the default for a model under a billion parameters: q8_0 (q4_k_m loses its stop; test_pipeline)
        assert page.get_by_role("combobox", name="Quantization").input_value().startswith("q8_0")
        page.get_by_role("button", name="1 · Export and write the Modelfile").click()
        # export, then the q8_0 file's own evaluation (deploy runs it where it has none), then the Modelfile
        page.get_by_role("button", name="Download Modelfile").wait_for(timeout=600_000)
        page.get_by_role("button", name="2 · Preflight, create in Ollama and record the release").click()
        released = page.get_by_role("heading", name=re.compile(r"^Release rel-"))
        released.or_(page.locator('[data-testid="stAlertContentError"]')).first.wait_for(timeout=600_000)
        assert released.count(), page.locator('[data-testid="stAlertContentError"]').first.inner_text()
        assert page.locator('[data-testid="stException"]').count() == 0
        browser.close()
    from core.deploy import releases

    os.environ["VITUNE_HOME"], previous = str(home), os.environ.get("VITUNE_HOME")
    try:
        listed = releases.list_releases(OPERATOR)
    finally:
        if previous is None:
            os.environ.pop("VITUNE_HOME")
        else:
            os.environ["VITUNE_HOME"] = previous
    assert len(listed) == 1 and listed[0]["modelfile"].startswith("FROM ")
    assert listed[0]["override_reason"] is None and listed[0]["quantization"] == "q8_0"
    assert listed[0]["evaluation_id"] and listed[0]["preflight"]["passed"]
