"""A sweep through the Train page in real Chromium against the real server (issue 25): the 3 × 2 grid (r 4, 8, 16
by learning rate 1e-4, 2e-4) of the default model, 2 steps a run, typed into the page's sweep form, counted,
queued, trained and evaluated by the server's own supervisor, and the sweep view showing it finished with the
best run marked, without a reload. (The same grid runs through the CLI in tests/test_sweeps.py.)"""
from __future__ import annotations

import pytest

from tests.conftest import cli, free_port, settled, start_studio, studio_home, unfolded

pytestmark = pytest.mark.slow   # six trainings and six evaluations of the default model, watched in the browser


@pytest.fixture
def studio(tmp_path):
    cli("dataset", "import-samples", home=tmp_path)
    proc = start_studio(tmp_path, port := free_port())
    yield f"http://127.0.0.1:{port}", tmp_path
    proc.terminate()
    proc.wait(20)


def test_a_sweep_through_the_train_page_runs_to_the_best(studio, chromium):
    url, home = studio
    page = chromium.new_context(viewport={"width": 1400, "height": 1600}).new_page()
    page.set_default_timeout(120_000)
    page.goto(f"{url}/train")
    page.get_by_text("No sweeps yet.").wait_for()
    settled(page)
    expander = page.locator('[data-testid="stExpander"]').filter(has_text="New sweep")
    expander.get_by_text("New sweep").first.click()
    unfolded(expander)
    page.get_by_role("textbox", name="LoRA r values").fill("4, 8, 16")   # (its help icon has the name too)
    page.get_by_role("textbox", name="Learning rates").fill("1e-4, 2e-4")
    page.get_by_role("spinbutton", name="Steps per sweep run (0: by epochs)").fill("2")
    page.get_by_role("spinbutton", name="Held-out pairs evaluated (0: all, as the gate needs)").fill("2")
    page.get_by_role("spinbutton", name="Answer length in the evaluation (tokens)").fill("4")
    page.get_by_role("button", name="Count the runs and estimate the time").click()
    page.get_by_text("6 runs; no time estimate yet").wait_for()
    settled(page)
    page.get_by_role("button", name="Queue the sweep").click()
    page.get_by_text("Queued sweep").wait_for()
    # the server's supervisor trains and evaluates each run; the open page follows the sweep until it ends
    page.get_by_text("sweep finished: 6 of 6 runs trained, 6 evaluated, 0 failed").wait_for(timeout=3_000_000)
    page.get_by_text("Best run: ").wait_for()
    assert page.locator('[data-testid="stException"]').count() == 0

    from core.access.principal import operator
    from core.training import sweeps

    with studio_home(home):
        [s] = sweeps.list_sweeps(operator())
        v = sweeps.view(s["id"])
    assert v["state"] == "finished" and v["counts"] == {"runs": 6, "trained": 6, "evaluated": 6, "failed": 0}
    best = v["runs"][0]
    assert best["best"] and best["run_id"] == v["best"] and all(r["n"] == 2 for r in v["runs"])
    assert page.get_by_text(f"Best run: {best['run_id']} ({best['label']})").count() == 1
