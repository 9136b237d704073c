"""The queue with real worker processes training the default model for a few steps."""
import json
import os
import signal
import time

import pytest

from core import config, datasets, jobs, store
from tests.conftest import approve_review, cli, tiny_pairs, write_jsonl


def _quick(steps: int = 2) -> config.TrainConfig:
    return config.preset("quick test (CPU, 20 steps)", max_steps=steps, max_seq_length=128)


@pytest.fixture
def version(home, default_model):
    v, _ = datasets.import_files([write_jsonl(home / "d.jsonl", tiny_pairs(16))], "tiny")
    assert approve_review(v["id"])["reviewed"]
    return v["id"]


def _wait_for(predicate, timeout=120, poll=0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs.tick()
        got = predicate()
        if got:
            return got
        time.sleep(poll)
    raise AssertionError("timed out")


def test_one_job_per_slot_fifo_and_the_worker_outlives_its_starter(home, version):
    first = jobs.submit_train(version, _quick(3), owner="an")
    second = jobs.submit_train(version, _quick(2), owner="binh")
    # a separate, short-lived process starts the first job and exits: the worker must live on
    cli("jobs", "tick", home=home)
    running = store.rows("SELECT id FROM jobs WHERE state = 'running'")
    assert running == [{"id": first["id"]}]
    for _ in range(3):
        jobs.tick()
        assert store.one("SELECT count(*) AS n FROM jobs WHERE state = 'running'")["n"] <= 1
    done = jobs.wait(first["id"], timeout=300)
    assert done["state"] == "succeeded", done["error"]
    metrics = jobs.run_metrics(first["run_id"])
    assert list(metrics["step"]) == [1, 2, 3] and metrics["loss"].notna().all()
    assert jobs.get_run(first["run_id"])["adapter_dir"].endswith("adapter")
    assert jobs.wait(second["id"], timeout=300)["state"] == "succeeded"


def test_killed_worker_fails_with_log_tail_and_next_job_starts(home, version):
    victim = jobs.submit_train(version, _quick(50), owner="an")
    waiting = jobs.submit_train(version, _quick(2), owner="binh")
    job = _wait_for(lambda: (j := jobs.get_job(victim["id"]))["state"] == "running" and jobs.progress(j) and j)
    os.kill(job["pid"], signal.SIGKILL)
    t0 = time.monotonic()
    failed = _wait_for(lambda: (j := jobs.get_job(victim["id"]))["state"] == "failed" and j, timeout=10, poll=0.2)
    assert time.monotonic() - t0 < 5
    assert "died without finishing" in failed["error"]
    assert "backend: hf" in failed["log_tail"]
    assert jobs.get_job(waiting["id"])["state"] == "running"
    assert jobs.wait(waiting["id"], timeout=300)["state"] == "succeeded"


def test_cancel_queued_and_running(home, version):
    running = jobs.submit_train(version, _quick(50))
    queued = jobs.submit_train(version, _quick(2))
    job = _wait_for(lambda: (j := jobs.get_job(running["id"]))["state"] == "running" and j)
    assert jobs.cancel(queued["id"], actor="lan")["state"] == "cancelled"
    assert jobs.cancel(running["id"], actor="lan")["state"] == "cancelled"
    time.sleep(0.5)
    with pytest.raises(ProcessLookupError):
        os.kill(job["pid"], 0)
    jobs.tick()
    assert jobs.get_job(running["id"])["state"] == "cancelled"
    with pytest.raises(jobs.JobError, match="already ended"):
        jobs.cancel(running["id"])


def test_a_failing_job_reports_its_error(home, version):
    cfg = _quick(2)
    cfg.base_model = str(home / "no-such-model")
    job = jobs.wait(jobs.submit_train(version, cfg)["id"], timeout=120)
    assert job["state"] == "failed"
    assert "no-such-model" in job["error"] and job["log_tail"]


def test_config_yaml_round_trip_and_refusals(tmp_path):
    cfg = config.preset("r=32 (quality)")
    assert config.from_yaml(config.to_yaml(cfg)) == cfg
    assert (cfg.lora_r, cfg.learning_rate, cfg.optim, cfg.packing) == (32, 2e-4, "adamw_8bit", True)
    with pytest.raises(ValueError, match="unknown training setting"):
        config.from_yaml("lora_rank: 8")
    with pytest.raises(ValueError, match="lora_r must be positive"):
        config.from_yaml("lora_r: 0")


def test_cancel_then_resume_from_the_last_checkpoint(home, version):
    cfg = _quick(8)
    cfg.save_steps = 2
    job = jobs.submit_train(version, cfg, owner="an")
    run_dir = home / "data" / "runs" / job["run_id"]
    _wait_for(lambda: jobs.checkpoints(run_dir) and jobs.run_metrics(job["run_id"])["step"].max() >= 3, timeout=300)
    jobs.cancel(job["id"], actor="an")
    with pytest.raises(jobs.JobError, match="no job"):
        jobs.resume(job["id"] + 1000)
    step, path = jobs.checkpoints(run_dir)[-1]
    assert step >= 2 and step % 2 == 0

    # through the Train page, as a person would: the button names the checkpoint's step
    from tests.test_pages import _clean, _run

    at = _run("train")
    next(b for b in at.button if b.label == f"Resume from the checkpoint at step {step}").click().run()
    _clean(at)
    again = jobs.get_job(jobs.get_run(job["run_id"])["job_id"])
    assert again["id"] != job["id"] and again["owner"] == "tester"
    assert again["config"]["resume_from"] == str(path) and again["run_id"] == job["run_id"]
    assert jobs.run_metrics(job["run_id"])["step"].max() == step  # the curve is cut back to the checkpoint
    assert jobs.get_run(job["run_id"])["job_id"] == again["id"]
    with pytest.raises(jobs.JobError, match="moved on"):
        jobs.resume(job["id"])
    done = jobs.wait(again["id"], timeout=300)
    assert done["state"] == "succeeded", done["error"]
    assert done["result"]["resumed_from"] == str(path)
    metrics = jobs.run_metrics(job["run_id"])
    assert list(metrics["step"]) == list(range(1, 9)) and metrics["loss"].notna().all()
    assert f"resuming from {path}" in (run_dir / "worker.log").read_text()
    assert store.one("SELECT count(*) AS n FROM audit_log WHERE action = 'job.resumed'")["n"] == 1


def test_resume_refuses_what_cannot_resume(home, version):
    job = jobs.submit_train(version, _quick(50))
    with pytest.raises(jobs.JobError, match="only a failed or cancelled job"):
        jobs.resume(job["id"])
    jobs.cancel(job["id"])
    with pytest.raises(jobs.JobError, match="saved no checkpoint"):
        jobs.resume(job["id"])


def test_eval_loss_on_the_test_split_keeps_the_best_checkpoint(home, version):
    cfg = _quick(4)
    cfg.save_steps, cfg.eval_steps = 2, 2
    done = jobs.wait(jobs.submit_train(version, cfg)["id"], timeout=300)
    assert done["state"] == "succeeded", done["error"]
    metrics = jobs.run_metrics(done["run_id"])
    evals = metrics.dropna(subset=["eval_loss"])
    assert list(evals["step"]) == [2, 4] and (evals["eval_loss"] > 0).all()
    assert metrics["loss"].notna().all()  # the eval lines merged into their steps, not replacing them
    assert done["result"]["best_checkpoint"].rsplit("-", 1)[-1] in ("2", "4")
    assert done["result"]["best_eval_loss"] == pytest.approx(evals["eval_loss"].min())
    with pytest.raises(ValueError, match="multiple of eval_steps"):
        config.preset("quick test (CPU, 20 steps)", save_steps=5, eval_steps=2)
