"""The queue with real worker processes training the default model for a few steps."""
import json
import os
import signal
import time

import psutil
import pytest

from core import store
from core.datasets import importer
from core.jobs import queue, supervisor
from core.training import config, presets, runs
from tests.conftest import OPERATOR, approve_review, cli, person, tiny_pairs, write_jsonl


def _quick(steps: int = 2) -> config.TrainConfig:
    return presets.preset("quick test (CPU, 20 steps)", max_steps=steps, max_seq_length=128)


@pytest.fixture
def version(home, default_model):
    v, _ = importer.import_files([write_jsonl(home / "d.jsonl", tiny_pairs(16))], "tiny", actor=OPERATOR)
    assert approve_review(v["id"])["reviewed"]
    return v["id"]


def _wait_for(predicate, timeout=120, poll=0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        supervisor.tick()
        got = predicate()
        if got:
            return got
        time.sleep(poll)
    raise AssertionError("timed out")


def test_one_job_per_slot_fifo_and_the_worker_outlives_its_starter(home, version):
    first = runs.submit_train(version, _quick(3), actor=person("an"))
    second = runs.submit_train(version, _quick(2), actor=person("binh"))
    # a separate, short-lived process starts the first job and exits: the worker must live on
    cli("jobs", "tick", home=home)
    running = store.rows("SELECT id FROM jobs WHERE state = 'running'")
    assert running == [{"id": first["id"]}]
    for _ in range(3):
        supervisor.tick()
        assert store.one("SELECT count(*) AS n FROM jobs WHERE state = 'running'")["n"] <= 1
    done = supervisor.wait(first["id"], timeout=900)
    assert done["state"] == "succeeded", done["error"]
    metrics = runs.run_metrics(first["run_id"])
    assert list(metrics["step"]) == [1, 2, 3] and metrics["loss"].notna().all()
    assert runs.get_run(first["run_id"])["adapter_dir"].endswith("adapter")
    assert supervisor.wait(second["id"], timeout=900)["state"] == "succeeded"


@pytest.mark.slow   # several trainings of the default model: minutes
def test_killed_worker_fails_with_log_tail_and_next_job_starts(home, version):
    victim = runs.submit_train(version, _quick(50), actor=person("an"))
    waiting = runs.submit_train(version, _quick(2), actor=person("binh"))
    job = _wait_for(lambda: (j := queue.get_job(victim["id"]))["state"] == "running" and queue.progress(j) and j)
    os.kill(job["pid"], signal.SIGKILL)
    while psutil.pid_exists(job["pid"]) and psutil.Process(job["pid"]).status() != psutil.STATUS_ZOMBIE:
        time.sleep(0.05)   # the kernel has not taken it down yet
    done = supervisor.tick()   # the very next tick notices the death (a count of ticks, not seconds)
    assert victim["id"] in done["settled"] and waiting["id"] in done["started"]
    failed = queue.get_job(victim["id"])
    assert "died without finishing" in failed["error"]
    assert "backend: hf" in failed["log_tail"]
    assert queue.get_job(waiting["id"])["state"] == "running"
    assert supervisor.wait(waiting["id"], timeout=900)["state"] == "succeeded"


def test_cancel_queued_and_running(home, version):
    running = runs.submit_train(version, _quick(50), actor=OPERATOR)
    queued = runs.submit_train(version, _quick(2), actor=OPERATOR)
    job = _wait_for(lambda: (j := queue.get_job(running["id"]))["state"] == "running" and j)
    assert supervisor.cancel(queued["id"], actor=person("lan", 'admin'))["state"] == "cancelled"
    assert supervisor.cancel(running["id"], actor=person("lan", 'admin'))["state"] == "cancelled"
    time.sleep(0.5)
    with pytest.raises(ProcessLookupError):
        os.kill(job["pid"], 0)
    supervisor.tick()
    assert queue.get_job(running["id"])["state"] == "cancelled"
    with pytest.raises(queue.JobError, match="already ended"):
        supervisor.cancel(running["id"], actor=OPERATOR)


def test_a_failing_job_reports_its_error(home, version):
    not_a_model = home / "models" / "base" / "no-such-model"   # with a config.json it passes the submit check,
    not_a_model.mkdir(parents=True)                              # then fails to load
    (not_a_model / "config.json").write_text("{}")
    cfg = _quick(2)
    cfg.base_model = str(not_a_model)
    job = supervisor.wait(runs.submit_train(version, cfg, actor=OPERATOR)["id"], timeout=120)
    assert job["state"] == "failed"
    assert job["error"].startswith("ValueError: ")   # the loader's own words
    assert "Traceback (most recent call last)" in job["log_tail"] and job["log_tail"].endswith("job failed")


def test_config_yaml_round_trip_and_refusals(tmp_path):
    cfg = presets.preset("r=32 (quality)")
    assert config.from_yaml(config.to_yaml(cfg)) == cfg
    assert (cfg.lora_r, cfg.learning_rate, cfg.optim, cfg.packing) == (32, 2e-4, "adamw_8bit", True)
    with pytest.raises(ValueError, match="unknown training setting"):
        config.from_yaml("lora_rank: 8")
    with pytest.raises(ValueError, match="lora_r must be positive"):
        config.from_yaml("lora_r: 0")


@pytest.mark.slow   # several trainings of the default model: minutes
def test_cancel_then_resume_from_the_last_checkpoint(home, version):
    cfg = _quick(8)
    cfg.save_steps = 2
    job = runs.submit_train(version, cfg, actor=person("an"))
    run_dir = home / "data" / "runs" / job["run_id"]
    _wait_for(lambda: runs.checkpoints(run_dir) and runs.run_metrics(job["run_id"])["step"].max() >= 3, timeout=900)
    supervisor.cancel(job["id"], actor=person("an", 'admin'))
    with pytest.raises(queue.JobError, match="no job"):
        runs.resume(job["id"] + 1000, actor=OPERATOR)
    step, path = runs.checkpoints(run_dir)[-1]
    assert step >= 2 and step % 2 == 0

    # through the Train page, as a person would: the button names the checkpoint's step
    from tests.test_pages import _clean, _run

    at = _run("train", person("tester"))
    next(b for b in at.button if b.label == f"Resume from the checkpoint at step {step}").click().run()
    _clean(at)
    again = queue.get_job(runs.get_run(job["run_id"])["job_id"])
    assert again["id"] != job["id"] and again["owner"] == "tester"
    assert again["config"]["resume_from"] == str(path) and again["run_id"] == job["run_id"]
    assert runs.run_metrics(job["run_id"])["step"].max() == step  # the curve is cut back to the checkpoint
    assert runs.get_run(job["run_id"])["job_id"] == again["id"]
    with pytest.raises(queue.JobError, match="moved on"):
        runs.resume(job["id"], actor=OPERATOR)
    done = supervisor.wait(again["id"], timeout=900)
    assert done["state"] == "succeeded", done["error"]
    assert done["result"]["resumed_from"] == str(path)
    metrics = runs.run_metrics(job["run_id"])
    assert list(metrics["step"]) == list(range(1, 9)) and metrics["loss"].notna().all()
    assert f"resuming from {path}" in (run_dir / "worker.log").read_text()
    assert store.one("SELECT count(*) AS n FROM audit_log WHERE action = 'job.resumed'")["n"] == 1


def test_resume_refuses_what_cannot_resume(home, version):
    job = runs.submit_train(version, _quick(50), actor=OPERATOR)
    with pytest.raises(queue.JobError, match="only a failed or cancelled job"):
        runs.resume(job["id"], actor=OPERATOR)
    supervisor.cancel(job["id"], actor=OPERATOR)
    with pytest.raises(queue.JobError, match="saved no checkpoint"):
        runs.resume(job["id"], actor=OPERATOR)


@pytest.mark.slow   # several trainings of the default model: minutes
def test_eval_loss_on_the_test_split_keeps_the_best_checkpoint(home, version):
    cfg = _quick(4)
    cfg.save_steps, cfg.eval_steps = 2, 2
    done = supervisor.wait(runs.submit_train(version, cfg, actor=OPERATOR)["id"], timeout=900)
    assert done["state"] == "succeeded", done["error"]
    metrics = runs.run_metrics(done["run_id"])
    evals = metrics.dropna(subset=["eval_loss"])
    assert list(evals["step"]) == [2, 4] and (evals["eval_loss"] > 0).all()
    assert metrics["loss"].notna().all()  # the eval lines merged into their steps, not replacing them
    assert done["result"]["best_checkpoint"].rsplit("-", 1)[-1] in ("2", "4")
    assert done["result"]["best_eval_loss"] == pytest.approx(evals["eval_loss"].min())
    with pytest.raises(ValueError, match="multiple of eval_steps"):
        presets.preset("quick test (CPU, 20 steps)", save_steps=5, eval_steps=2)


# ── slots ────────────────────────────────────────────────────────────────────


def _visible_devices(pid: int) -> str | None:
    """The CUDA_VISIBLE_DEVICES a live worker was started with."""
    return psutil.Process(pid).environ().get("CUDA_VISIBLE_DEVICES")


def test_two_gpu_slots_take_two_jobs_and_a_third_waits_for_one(home, version, monkeypatch):
    """VITUNE_SLOTS=gpu:0,gpu:1 on a machine without a GPU: the scheduling is the same. One tick starts the
    two oldest jobs, one per slot, each worker seeing its own GPU only; the third waits until a slot frees.
    (The jobs are cancelled as soon as they are checked: nothing trains.)"""
    monkeypatch.setenv("VITUNE_SLOTS", "gpu:0,gpu:1")
    jobs = [runs.submit_train(version, _quick(500), actor=OPERATOR)["id"] for _ in range(3)]
    try:
        assert supervisor.tick()["started"] == jobs[:2]
        a, b, c = (queue.get_job(j) for j in jobs)
        assert [(a["state"], a["slot"]), (b["state"], b["slot"])] == [("running", "gpu:0"), ("running", "gpu:1")]
        assert (c["state"], c["slot"]) == ("queued", None)
        assert (_visible_devices(a["pid"]), _visible_devices(b["pid"])) == ("0", "1")
        assert supervisor.tick()["started"] == [] and queue.get_job(c["id"])["state"] == "queued"   # both busy
        supervisor.cancel(b["id"], actor=OPERATOR)
        assert supervisor.tick()["started"] == [c["id"]]
        c = queue.get_job(c["id"])
        assert (c["state"], c["slot"], _visible_devices(c["pid"])) == ("running", "gpu:1", "1")
        assert queue.get_job(a["id"])["slot"] == "gpu:0"
    finally:
        for job_id in jobs:
            if queue.get_job(job_id)["state"] in ("queued", "running"):
                supervisor.cancel(job_id, actor=OPERATOR)


# ── backends ─────────────────────────────────────────────────────────────────


def _no_cuda() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the refusal is for one without")


@pytest.mark.parametrize("backend", ["unsloth", "hf-bnb"])
def test_a_cuda_backend_is_refused_without_cuda(backend):
    from core.training import trainer

    _no_cuda()
    with pytest.raises(RuntimeError, match=f"^backend '{backend}' needs CUDA, and this machine has none$"):
        trainer.choose_backend(backend)


def test_without_cuda_auto_and_hf_train_on_transformers():
    from core.training import trainer

    _no_cuda()
    assert trainer.choose_backend("auto") == trainer.choose_backend("hf") == "hf"


def test_a_training_job_that_asks_for_unsloth_without_cuda_fails_with_the_reason(home, version):
    _no_cuda()
    cfg = _quick(2)
    cfg.backend = "unsloth"
    job = supervisor.wait(runs.submit_train(version, cfg, actor=OPERATOR)["id"], timeout=900)
    assert job["state"] == "failed"
    assert job["error"] == "RuntimeError: backend 'unsloth' needs CUDA, and this machine has none"
    assert "backend: " not in job["log_tail"]   # refused before any model was loaded
    assert runs.get_run(job["run_id"])["adapter_dir"] is None


# ── ETA ──────────────────────────────────────────────────────────────────────


def test_eta_is_the_steps_left_at_the_jobs_pace(tmp_path):
    from core.jobs.files import Status

    job = {"state": "running", "job_dir": str(tmp_path)}
    Status(tmp_path).update(progress={"done": 10, "total": 40, "label": "steps", "per_s": 2.0})  # as a worker writes it
    assert queue.eta_seconds(job) == 15.0            # (40 - 10) steps at 2 steps/s, read from status.json
    assert queue.eta_seconds(job, {"done": 39, "total": 40, "per_s": 0.25}) == 4.0   # progress already read


@pytest.mark.parametrize("state, progress", [
    ("queued", {"done": 10, "total": 40, "per_s": 2.0}),     # not running: no ETA
    ("succeeded", {"done": 40, "total": 40, "per_s": 2.0}),
    ("running", {"done": 40, "total": 40, "per_s": 2.0}),    # all done: nothing left to time
    ("running", {"done": 0, "total": 40, "per_s": None}),    # no pace yet (before the first step)
    ("running", {"done": 0, "total": 40, "per_s": 0}),
    ("running", {"done": 3, "total": 0, "per_s": 1.0}),      # no total known
    ("running", None),                                       # no progress written yet
])
def test_no_eta_without_a_running_job_its_pace_and_what_is_left(tmp_path, state, progress):
    from core.jobs.files import Status

    if progress is not None:
        Status(tmp_path).update(progress=progress)
    assert queue.eta_seconds({"state": state, "job_dir": str(tmp_path)}) is None


def test_the_base_model_is_one_of_the_base_model_folder_or_one_an_admin_allowed(home, version):
    """An engineer cannot name any server folder as the base model (a file-system oracle; another project's
    merged export whose path is known): only folders under models/base (the home's, or the default model's) and
    what an admin has allowed (audited; the CLI and the Admin page)."""
    from core import base_models
    from core.access.principal import AccessDenied

    merged = home / "data" / "runs" / "run-of-another-project" / "merged"   # e.g. another project's merged export
    merged.mkdir(parents=True)
    (merged / "config.json").write_text("{}")
    refusal = "not an allowed base model (a model folder under {base}, the default model, or a model an admin has " \
              "allowed: `python -m core models allow NAME`)".format(base=home / "models" / "base")
    for name in (str(merged), str(home / "no-such-folder"), "../../etc", "someone/a-model"):
        cfg = _quick(2)
        cfg.base_model = name
        with pytest.raises(ValueError) as refused:   # the same words whether the folder exists or not
            runs.submit_train(version, cfg, actor=person("an"))
        assert str(refused.value) == f"{name}: {refusal}"
    with pytest.raises(ValueError, match="not an allowed base model"):
        from core.evaluation import evaluations
        evaluations.submit(base_model=str(merged), dataset_version_id=version, actor=person("an"))
    assert store.one("SELECT count(*) AS n FROM jobs")["n"] == 0
    with pytest.raises(AccessDenied):
        base_models.allow(str(merged), actor=person("an"))
    base_models.allow(str(merged), actor=person("quan", "admin"))
    cli("models", "allow", "someone/a-model", home=home)
    assert base_models.allowed() == [str(merged), "someone/a-model"]
    assert cli("models", "allowed", home=home).stdout.splitlines()[-2:] == [str(merged), "someone/a-model"]
    changes = store.rows("SELECT actor, subject FROM audit_log WHERE action = 'setting.changed' ORDER BY ts")
    assert [(c["actor"], c["subject"]) for c in changes] == [("quan", base_models.SETTING),
                                                             (OPERATOR.name, base_models.SETTING)]
    for name in (str(merged), "someone/a-model"):
        cfg = _quick(2)
        cfg.base_model = name
        assert runs.submit_train(version, cfg, actor=person("an"))["state"] == "queued"
    mine = home / "models" / "base" / "gemma-vi"   # the home's base-model folder needs no allowing
    mine.mkdir(parents=True)
    (mine / "config.json").write_text("{}")
    cfg = _quick(2)
    cfg.base_model = str(mine)
    assert runs.submit_train(version, cfg, actor=person("an"))["state"] == "queued"
    cli("models", "disallow", "someone/a-model", home=home)
    cfg.base_model = "someone/a-model"
    with pytest.raises(ValueError, match="not an allowed base model"):
        runs.submit_train(version, cfg, actor=person("an"))
