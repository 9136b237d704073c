"""A real browser (Playwright driving Debian's Chromium) opens every page of a running studio."""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

PAGES = {"": "Datasets", "train": "Train", "evaluate": "Evaluate", "playground": "Playground", "deploy": "Deploy"}
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def studio(pipeline):
    port = _free_port()
    env = dict(os.environ, VITUNE_HOME=str(pipeline["home"]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.headless", "true",
         "--browser.gatherUsageStats", "false", "--server.address", "127.0.0.1"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(url + "/_stcore/health", timeout=1)
            break
        except Exception:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("the studio did not start: " + proc.stdout.read().decode()[-2000:])
    yield url
    proc.terminate()
    proc.wait(10)


def test_every_page_opens_without_an_exception(studio):
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: scripts/test.sh installs it")
    from playwright.sync_api import sync_playwright

    shots = os.environ.get("VITUNE_SCREENSHOTS")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        for path, title in PAGES.items():
            page.goto(f"{studio}/{path}")
            page.get_by_role("heading", name=title).first.wait_for(timeout=60_000)
            page.wait_for_timeout(2500)  # let fragments and charts render
            assert page.locator('[data-testid="stException"]').count() == 0, f"exception on /{path}"
            assert "Traceback" not in page.inner_text("body")
            if shots:
                page.screenshot(path=str(Path(shots) / f"{(path or 'datasets')}.png"), full_page=True)
        page.goto(f"{studio}/?demo=1")
        page.get_by_role("heading", name="Playground").first.wait_for(timeout=60_000)
        assert page.get_by_text("Read-only demo").count() == 1
        browser.close()
