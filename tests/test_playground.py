"""The playground's inference workers, with real processes: a model answers from a worker on loopback
(never inside the web process), the worker is reused, ends when idle, is evicted when a training job
needs its slot, refuses requests without its token, and a model that cannot load is a clear error."""
import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

import subprocess
import sys

import pytest

from core import paths, store
from core.datasets import importer
from core.evaluation import inference
from core.evaluation.inference import Decoding
from core.jobs import queue, supervisor
from core.playground import playground
from core.training import presets, runs
from tests.conftest import OPERATOR, REPO, approve_review, person, tiny_pairs, write_jsonl

pytestmark = pytest.mark.slow
QUESTION = "Khách hàng phàn nàn về hóa đơn sai, phải xử lý thế nào?"


def _until_ended(job_id: int, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while (job := queue.get_job(job_id))["state"] not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, job
        supervisor.tick()
        time.sleep(0.5)
    return job


def test_a_model_answers_from_its_inference_worker_as_it_does_in_process(home, default_model):
    base = str(default_model)
    answer = playground.ask(base, None, "chat", QUESTION, decoding=Decoding(max_new_tokens=24), actor=person("tester"))
    loaded = inference.load(base, None, "chat")   # the same load the worker makes, here for comparison
    assert answer == inference.ask(loaded, QUESTION, decoding=Decoding(max_new_tokens=24)) and answer
    again = playground.ask(base, None, "chat", "Xin chào", decoding=Decoding(max_new_tokens=8), actor=OPERATOR)
    [job] = playground.servers()
    assert job["kind"] == "inference" and job["state"] == "running" and job["slot"] == "cpu"
    assert job["server"]["weights_gib"] > 0.2 and job["server"]["port"] and again
    assert len(queue.list_jobs(10, "inference")) == 1  # the second question reused the worker
    playground.stop(job["id"], actor=person("tester", 'admin'))
    assert queue.get_job(job["id"])["state"] == "cancelled"


def test_requests_without_the_token_are_refused(home, default_model):
    """The worker's token reaches it through its environment: no file of the job holds it (another local
    user who could read one would have the model); without it, the worker answers 401."""
    job = playground.ensure(str(default_model), None, "chat", actor=OPERATOR)
    token = job["config"]["token"].encode()
    assert [p.name for p in Path(job["job_dir"]).rglob("*") if p.is_file() and token in p.read_bytes()] == []
    assert "token" not in json.loads((Path(job["job_dir"]) / "job.json").read_text())
    url = f"http://127.0.0.1:{job['server']['port']}/health"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=10)
    assert refused.value.code == 401
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {job['config']['token']}"})
    assert json.loads(urllib.request.urlopen(req, timeout=10).read())["ok"] is True
    playground.stop(job["id"], actor=OPERATOR)


def test_an_idle_worker_ends_by_itself(home, default_model):
    job = playground.ensure(str(default_model), None, "chat", idle_s=2, actor=OPERATOR)
    ended = _until_ended(job["id"])
    assert ended["state"] == "succeeded" and ended["result"]["reason"] == "idle"
    assert playground.servers() == []


def test_a_training_job_evicts_the_inference_worker_from_its_slot(home, default_model):
    resident = playground.ensure(str(default_model), None, "chat", actor=OPERATOR)
    version, _ = importer.import_files([write_jsonl(home / "p.jsonl", tiny_pairs(12))], "p", actor=OPERATOR)
    approve_review(version["id"])
    job = runs.submit_train(version["id"], presets.preset("quick test (CPU, 20 steps)", max_steps=1), actor=person("tester"))
    done = supervisor.tick()
    assert done["evicted"] == [resident["id"]] and done["started"] == [job["id"]]
    evicted = queue.get_job(resident["id"])
    assert evicted["state"] == "cancelled" and evicted["error"] == f"evicted: train job {job['id']} needed slot cpu"
    # a question now starts a new worker beside the training job (the CPU has the memory)
    answer = playground.ask(str(default_model), None, "chat", "Xin chào", decoding=Decoding(max_new_tokens=4), actor=OPERATOR)
    assert answer and queue.get_job(job["id"])["state"] == "running"
    supervisor.cancel(job["id"], actor=OPERATOR)
    for j in playground.servers():
        playground.stop(j["id"], actor=OPERATOR)


def test_a_model_that_cannot_load_is_a_clear_error_not_a_hang(home, tmp_path):
    """A folder that is no model is refused before any worker starts; one that looks like a model (a
    config.json) but cannot load fails its worker, and the page hears so instead of waiting."""
    base = paths.base_models_dir()  # only the base-model folder (or an allowed name) is served at all
    (base / "not-a-model").mkdir(parents=True)
    with pytest.raises(playground.PlaygroundError, match=r"not-a-model: a folder without config.json is not a model"):
        playground.ensure(str(base / "not-a-model"), None, "chat", timeout=300, actor=OPERATOR)
    assert store.one("SELECT count(*) AS n FROM jobs")["n"] == 0
    (base / "broken-model").mkdir()
    (base / "broken-model" / "config.json").write_text("{}")
    with pytest.raises(playground.PlaygroundError, match=r"the model could not be served \(inference job \d+ failed\)"):
        playground.ensure(str(base / "broken-model"), None, "chat", timeout=300, actor=OPERATOR)


def test_a_gpu_without_the_memory_fails_the_worker_with_the_reason(home, default_model, tmp_path, monkeypatch):
    """On a GPU slot the supervisor asks nvidia-smi for free memory before it starts a worker (a stand-in
    nvidia-smi here, since no GPU exists: it says 512 MiB are free)."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\necho 512\n")
    (fake / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("VITUNE_SLOTS", "gpu:0")
    with pytest.raises(playground.PlaygroundError, match=r"no GPU has the \d+\.\d GiB this model needs free "
                                                         r"\(gpu:0: 0\.5 GiB\)"):
        playground.ensure(str(default_model), None, "chat", timeout=60, actor=OPERATOR)
    assert store.one("SELECT count(*) AS n FROM jobs WHERE pid IS NOT NULL")["n"] == 0  # nothing was started


def test_waiting_for_a_worker_to_load_does_not_tick_the_supervisor(home, default_model, tmp_path, monkeypatch):
    """``ensure`` waits for the worker to load without a supervisor tick (each one asks nvidia-smi for the GPUs
    and their free memory) every 0.2 s: the ticks and the nvidia-smi processes of a wait are counted, and do
    not grow with the load's length. (A stand-in nvidia-smi, as above: one GPU with 80 GB free; it writes a
    line per process; the worker, told CUDA device 0, loads on the CPU.)"""
    fake, calls = tmp_path / "bin", tmp_path / "smi-calls"
    fake.mkdir()
    (fake / "nvidia-smi").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n'
                                     'case "$1" in -L) echo "GPU 0: Stand-in (UUID: GPU-0)";; *) echo 81920;; esac\n')
    (fake / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("VITUNE_SLOTS")
    before = supervisor.ticks()
    job = playground.ensure(str(default_model), None, "chat", actor=OPERATOR)
    ticks, spawned = supervisor.ticks() - before, len(calls.read_text().splitlines())
    assert job["slot"] == "gpu:0" and job["server"]["load_s"] > 0
    print(f"loaded in {job['server']['load_s']} s: {ticks} tick(s), {spawned} nvidia-smi process(es)")
    assert ticks == 1 and spawned <= 2   # the tick that started it: nvidia-smi -L and one memory query
    playground.stop(job["id"], actor=OPERATOR)


def test_the_web_process_never_loads_a_model_for_the_playground(home, default_model):
    """playground.ask in a fresh interpreter: torch is never imported there, the answer still comes."""
    code = ("import sys; from core.playground import playground; from core.evaluation.inference import Decoding; "
            "from core.access.principal import operator; me = operator(); "
            f"a = playground.ask({str(default_model)!r}, None, 'chat', 'Xin chào', decoding=Decoding(max_new_tokens=4), "
            "actor=me); [playground.stop(j['id'], actor=me) for j in playground.servers()]; "
            "print(bool(a), 'torch' in sys.modules, 'transformers' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.stdout.split() == ["True", "False", "False"], proc.stderr[-2000:]
