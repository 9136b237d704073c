"""A second box through Ray (issue 25; core/jobs/ray_cluster.py, docs/scale.md).

The default set checks what needs no cluster: the address and resource settings (who may set them, the audit,
the environment's override, the clear messages on bad input), what a job asks of a cluster and the command it
runs there, the failed job's words, and that a studio pointed at a cluster that does not answer keeps its jobs
queued (nothing local starts in their place) and says why.

The slow test runs a real cluster on loopback (tests/ray_loopback.py): a head, and a second node that alone
declares the resource the studio's jobs ask, so a job must run there; a training job of the default model runs on
that node while the Train page follows it live in Chromium, its adapter is evaluated afterwards (on the cluster
too), and a second training whose node is killed mid-run fails with the node named and resumes from its last
checkpoint on a new node, to success. The studio's home is shared by the nodes at the same path (loopback: the
same disk): the filesystem this is tested on.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from core import store
from core.access.principal import AccessDenied
from core.datasets import importer
from core.jobs import queue, ray_cluster, supervisor
from core.training import presets, runs
from tests.conftest import OPERATOR, approve_review, cli, person, tiny_pairs, write_jsonl


# ── without a cluster ─────────────────────────────────────────────────────────


def test_the_address_and_resource_are_checked_with_clear_messages():
    assert ray_cluster.check_address(" 10.0.0.5:8265 ") == "http://10.0.0.5:8265"
    assert ray_cluster.check_address("https://ray.saoviet.vn:443") == "https://ray.saoviet.vn:443"
    for bad, words in [("", "empty"), ("ray://10.0.0.5:10001", "Ray Client address"),
                       ("10.0.0.5", "port"), ("http://10.0.0.5:notaport", "not a number"),
                       ("ftp://10.0.0.5:21", "http:// or https://"), ("http://10.0.0.5:8265/jobs", "without a path")]:
        with pytest.raises(ValueError, match=words):
            ray_cluster.check_address(bad)
    assert ray_cluster.check_resource(" vitune_worker ") == "vitune_worker"
    assert ray_cluster.check_resource("") is None
    for bad in ("GPU", "two words", "ổ"):
        with pytest.raises(ValueError, match="custom Ray resource"):
            ray_cluster.check_resource(bad)


def test_setting_the_cluster_is_an_admins_checked_and_audited(home, monkeypatch):
    monkeypatch.delenv(ray_cluster.ADDRESS_ENV, raising=False)
    with pytest.raises(AccessDenied, match="may not settings workers"):
        ray_cluster.set_cluster("http://127.0.0.1:8265", actor=person("an", "engineer"))
    port = _closed_port()
    with pytest.raises(ray_cluster.RayError, match=f"127.0.0.1:{port} does not answer"):
        ray_cluster.set_cluster(f"127.0.0.1:{port}", "vitune_worker", actor=OPERATOR)
    assert ray_cluster.address() is None   # nothing recorded
    proc = cli("jobs", "ray", f"127.0.0.1:{port}", home=home, check=False)
    assert proc.returncode == 1 and "does not answer" in proc.stderr and "nothing was recorded" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = cli("jobs", "ray", "10.0.0.5", home=home, check=False)
    assert proc.returncode == 1 and "give the dashboard's port too" in proc.stderr
    assert cli("jobs", "ray", home=home).stdout.startswith("jobs run in local workers")

    # the environment overrides the setting (a value stored as an admin's check would have stored it)
    store.set_setting(ray_cluster.ADDRESS_SETTING, "http://10.0.0.5:8265", OPERATOR)
    store.set_setting(ray_cluster.RESOURCE_SETTING, "vitune_worker", OPERATOR)
    assert (ray_cluster.address(), ray_cluster.resource()) == ("http://10.0.0.5:8265", "vitune_worker")
    monkeypatch.setenv(ray_cluster.ADDRESS_ENV, "10.0.0.6:8265")
    assert ray_cluster.address() == "http://10.0.0.6:8265"
    monkeypatch.setenv(ray_cluster.ADDRESS_ENV, "")
    assert ray_cluster.address() is None   # set and empty: local workers, whatever the setting says
    monkeypatch.delenv(ray_cluster.ADDRESS_ENV)
    assert "submitted to the Ray cluster at http://10.0.0.5:8265" in cli("jobs", "ray", home=home).stdout
    assert ray_cluster.set_cluster(None, actor=OPERATOR).startswith("jobs run in local workers")
    assert ray_cluster.address() is None
    changed = store.rows("SELECT subject, detail FROM audit_log WHERE action = 'setting.changed' ORDER BY id")
    assert [c["subject"] for c in changed][-2:] == ["ray_address", "ray_resource"]


def _closed_port() -> int:
    from tests.conftest import free_port

    return free_port()   # free: nothing listens there


def test_what_a_job_asks_of_the_cluster_and_the_command_it_runs(home):
    train = {"id": 7, "kind": "train", "job_dir": str(home / "data" / "runs" / "run a"), "config": {"config": {"gpus": 2}}}
    evaluate = {"id": 8, "kind": "evaluate", "job_dir": str(home / "e"), "config": {}}
    assert ray_cluster.resources(train, None) == {"entrypoint_num_gpus": 2.0}
    assert ray_cluster.resources(evaluate, None) == {"entrypoint_num_gpus": 1.0}
    assert ray_cluster.resources(train, "vitune_worker") == {"entrypoint_resources": {"vitune_worker": 2.0}}
    assert ray_cluster.resources({**train, "config": {"config": {}}}, "w") == {"entrypoint_resources": {"w": 1.0}}
    cmd = ray_cluster.entrypoint(train, "/opt/py env/bin/python")
    assert cmd.endswith(f"exec '/opt/py env/bin/python' -m core.worker '{train['job_dir']}' "
                        f">> '{train['job_dir']}/worker.log' 2>&1")
    env = ray_cluster.worker_env({"VITUNE_LANGUAGE": "en", "VITUNE_ENDPOINT_KEY": "sk-secret", "HF_HUB_OFFLINE": "1",
                                  "CUDA_VISIBLE_DEVICES": "3", "PATH": "/x", "VITUNE_RAY_ADDRESS": "http://h:1"})
    assert env["VITUNE_HOME"] == str(home) and env["HF_HUB_OFFLINE"] == "1" and env["VITUNE_LANGUAGE"] == "en"
    assert not {"VITUNE_ENDPOINT_KEY", "CUDA_VISIBLE_DEVICES", "PATH", "VITUNE_RAY_ADDRESS"} & set(env)
    assert ray_cluster.new_submission_id(train).startswith("vitune-7-")
    assert ray_cluster.new_submission_id(train) != ray_cluster.new_submission_id(train)


def test_the_words_of_a_job_that_ended_on_the_cluster():
    lost = ray_cluster.RayState(
        "FAILED", error_type="JOB_SUPERVISOR_ACTOR_DIED", node="ef50502c48bd437942859d4ba46a",
        message="Job supervisor actor died: The actor died unexpectedly before finishing this task.\n"
                "\tclass_name: JobSupervisor\n\tactor_id: f29aea41bddc\n"
                "The actor died because its node has died. Node Id: ef50502c48bd437942859d4ba46a\n"
                "\tthe actor's node was terminated unexpectedly: health check failed due to missing too many heartbeats")
    said = ray_cluster.describe_end(lost, "vitune-3-ab")
    assert said.startswith("the Ray node running it was lost (node ef50502c48bd…, Ray job vitune-3-ab)")
    assert "its node has died" in said and "actor_id" not in said and "\n" not in said
    assert ray_cluster.node_lost(lost)
    crashed = ray_cluster.RayState("FAILED", exit_code=-9, node="abc", message="Job entrypoint command failed with exit code -9")
    assert not ray_cluster.node_lost(crashed)
    assert ray_cluster.describe_end(crashed, "s").startswith("the worker on the Ray cluster ended without finishing")
    assert "exit code -9" in ray_cluster.describe_end(crashed, "s")
    assert ray_cluster.describe_end(ray_cluster.RayState("STOPPED"), "s").startswith("stopped on the Ray cluster")
    assert ray_cluster.not_started(ray_cluster.RayState("FAILED", error_type="JOB_SUPERVISOR_ACTOR_START_TIMEOUT"))


@pytest.fixture
def version(home, default_model):
    v, _ = importer.import_files([write_jsonl(home / "d.jsonl", tiny_pairs(16))], "tiny", actor=OPERATOR)
    assert approve_review(v["id"])["reviewed"]
    return v["id"]


def test_a_cluster_that_does_not_answer_keeps_the_jobs_queued_and_says_why(home, version, monkeypatch):
    monkeypatch.setenv(ray_cluster.ADDRESS_ENV, f"127.0.0.1:{_closed_port()}")
    cfg = presets.preset("quick test (CPU, 20 steps)", max_steps=2, max_seq_length=128)
    job = runs.submit_train(version, cfg, actor=OPERATOR)
    done = supervisor.tick()
    assert "does not answer" in done["ray_error"] and done["started"] == []
    got = queue.get_job(job["id"])
    assert (got["state"], got["ray_job"], got["pid"]) == ("queued", None, None)   # no local worker in its place
    assert not (Path(job["job_dir"]) / "status.json").exists()
    assert supervisor.cancel(job["id"], actor=OPERATOR)["state"] == "cancelled"   # a queued job cancels as ever
    monkeypatch.setenv(ray_cluster.ADDRESS_ENV, "not an address")
    assert "VITUNE_RAY_ADDRESS" in supervisor.tick()["ray_error"]   # a bad variable: said, and the tick goes on
