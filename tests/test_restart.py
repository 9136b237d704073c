"""The shared queue through real browsers and a real app process: two sessions submit at once, the
app is killed mid-job and started again, and nothing is lost."""
import os
import signal
import threading
import time

import pytest

from tests.conftest import OPERATOR, approve_review, free_port, start_studio, tiny_pairs, write_jsonl
from tests.test_browser import CHROMIUM

pytestmark = pytest.mark.slow

STEPS = 20  # long enough that the app is killed while the first job is mid-way


def _queue_from(page, url: str) -> None:
    page.goto(f"{url}/train")
    page.get_by_role("button", name="Queue training job").wait_for()
    page.get_by_label("Max steps (0: use epochs)").fill(str(STEPS))


def test_two_sessions_one_slot_and_an_app_restart_mid_job(home, default_model):
    from playwright.sync_api import sync_playwright

    from core import store
    from core.datasets import importer
    from core.jobs import queue
    from core.training import runs

    version, _ = importer.import_files([write_jsonl(home / "d.jsonl", tiny_pairs(16))], "tiny", actor=OPERATOR)
    assert approve_review(version["id"])["reviewed"]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    app = start_studio(home, port)

    most_running = []
    stop = threading.Event()

    def watch():  # the invariant, sampled the whole time: never two jobs running on the one slot
        while not stop.is_set():
            most_running.append(store.one("SELECT count(*) AS n FROM jobs WHERE state = 'running'")["n"])
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
                "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"])
            an, binh = (browser.new_context().new_page() for _ in range(2))  # two separate browser sessions
            for page in (an, binh):
                page.set_default_timeout(90_000)
                _queue_from(page, url)
            watcher.start()
            # both click at (almost) the same moment
            an.get_by_role("button", name="Queue training job").click(no_wait_after=True)
            binh.get_by_role("button", name="Queue training job").click(no_wait_after=True)
            for who, page in (("an", an), ("binh", binh)):
                try:
                    page.get_by_text("Queued job").wait_for()
                except Exception:   # say what the page showed instead (a refusal, an error, nothing)
                    alerts = page.locator('[data-testid="stAlert"]').all_inner_texts()
                    pytest.fail(f"{who}'s page never said 'Queued job'; its messages: {alerts}; "
                                f"jobs: {[(j['id'], j['state']) for j in queue.list_jobs()]}")
            first, second = sorted(queue.list_jobs(), key=lambda j: j["id"])
            assert first["run_id"] != second["run_id"]

            # the first job runs and has logged some steps: kill the app hard
            deadline = time.monotonic() + 300
            while not (len(runs.run_metrics(first["run_id"])) >= 2 and queue.get_job(first["id"])["state"] == "running"):
                assert time.monotonic() < deadline, f"the first job never got going: {queue.list_jobs()}"
                time.sleep(0.5)
            worker_pid = queue.get_job(first["id"])["pid"]
            app.send_signal(signal.SIGKILL)
            app.wait(10)
            os.kill(worker_pid, 0)  # the worker lives on without the app
            time.sleep(6)  # it keeps training while no app is there to ingest
            assert queue.get_job(first["id"])["state"] == "running"

            app = start_studio(home, port)
            page = browser.new_context().new_page()
            page.set_default_timeout(90_000)
            page.goto(f"{url}/train")  # a bookmarked page, first thing after the restart
            deadline = time.monotonic() + 600
            while queue.get_job(second["id"])["state"] in ("queued", "running"):
                assert time.monotonic() < deadline, f"the jobs did not finish after the restart: {queue.list_jobs()}"
                time.sleep(1)
            page.reload()
            page.get_by_role("heading", name="Train").first.wait_for()
            page.get_by_text(f"Run {second['run_id']}: succeeded", exact=True).wait_for()
            browser.close()
    finally:
        stop.set()
        app.kill()
        app.wait(10)
    watcher.join(5)

    assert max(most_running) == 1 and len(most_running) > 20
    a, b = queue.get_job(first["id"]), queue.get_job(second["id"])
    assert (a["state"], b["state"]) == ("succeeded", "succeeded"), (a["error"], b["error"])
    assert b["started_at"] >= a["finished_at"]  # first come, first served, one at a time
    for job in (a, b):  # the whole loss curve, the steps trained while the app was down included
        metrics = runs.run_metrics(job["run_id"])
        assert list(metrics["step"]) == list(range(1, STEPS + 1)) and metrics["loss"].notna().all()
