"""Jobs queued while nobody has the studio open still run: the web server starts the supervisor
before any page is requested, and ``python -m core jobs supervise`` runs it headless."""
import time

import pytest

from core.jobs import queue
from tests.conftest import cli, free_port, start_studio

pytestmark = [pytest.mark.slow, pytest.mark.extended]


def _queue(home, dataset: str) -> int:
    out = cli("train", "--dataset", dataset, "--preset", "quick test (CPU, 20 steps)", "--max-steps", "2",
              "--no-wait", "--json", home=home).stdout
    import json

    return json.loads(out)["job"]


def _wait_state(job_id: int, states: tuple, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = queue.get_job(job_id)  # reads only: this test process never ticks
        if job["state"] in states:
            return job
        time.sleep(1)
    raise AssertionError(f"job {job_id} still {queue.get_job(job_id)['state']} after {timeout:.0f} s")


def test_queued_jobs_run_without_a_page_view_and_under_the_headless_supervisor(home, default_model):
    dataset = cli("dataset", "import-samples", home=home).stdout.split()[0]

    # 1. queued while the studio is down; the studio comes up and nobody opens a page
    first = _queue(home, dataset)
    assert queue.get_job(first)["state"] == "queued"
    studio = start_studio(home, free_port())  # waits for /_stcore/health only: no session runs app.py
    try:
        done = _wait_state(first, ("succeeded", "failed"), timeout=240)
    finally:
        studio.terminate()
        studio.wait(timeout=30)
    assert done["state"] == "succeeded", done["error"]

    # 2. no web app at all: two jobs queued, the headless supervisor runs them one after the other
    second, third = _queue(home, dataset), _queue(home, dataset)
    proc = cli("jobs", "supervise", "--until-idle", "--interval", "0.5", home=home, timeout=400)
    b, c = queue.get_job(second), queue.get_job(third)
    assert (b["state"], c["state"]) == ("succeeded", "succeeded"), (b["error"], c["error"])
    assert b["finished_at"] <= c["started_at"], "two jobs ran at once on the one CPU slot"
    lines = proc.stdout.splitlines()
    assert f"job {second} (train): started" in lines and f"job {third} (train): succeeded" in lines
    assert lines.index(f"job {second} (train): succeeded") < lines.index(f"job {third} (train): started")
