"""The Vietnamese interface in real Chromium against the real server (scripts/serve.py, its default language
Vietnamese), on a studio with the sample data imported: each of the six pages shows its heading in
Vietnamese, and no line on it (the page, its sidebar, the navigation) is one of the catalogue's English strings."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from core import i18n
from tests.conftest import cli, free_port, start_studio
from tests.test_access_browser import ARGS, CHROMIUM
from tests.test_i18n import _english_labels

pytestmark = pytest.mark.extended

SIX = {"": "Datasets", "generate": "Generate pairs", "train": "Train", "evaluate": "Evaluate",
       "playground": "Playground", "deploy": "Deploy"}


@pytest.fixture(scope="module")
def studio(tmp_path_factory, default_model):
    home = tmp_path_factory.mktemp("vi-home")
    cli("dataset", "import-samples", home=home)
    proc = start_studio(home, port := free_port(), VITUNE_LANGUAGE="vi")
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(20)


def test_the_six_pages_show_no_english_label_in_chromium(studio):
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: scripts/test.sh installs it")
    english = _english_labels()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_context(viewport={"width": 1400, "height": 1600}).new_page()
        for path, title in SIX.items():
            page.goto(f"{studio}/{path}")
            heading = i18n.translate(title, "vi")
            assert heading != title
            page.get_by_role("heading", name=re.compile("^" + re.escape(heading))).first.wait_for(timeout=120_000)
            page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(timeout=120_000)
            assert page.locator('[data-testid="stException"]').count() == 0, path
            text = page.inner_text("body")   # the page, its sidebar and the navigation
            lines = {line.strip() for line in text.splitlines() if line.strip()}
            left = sorted(lines & english)
            assert left == [], (path, left)
        browser.close()
