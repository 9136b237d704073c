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
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core import store
from core.access.principal import AccessDenied
from core.datasets import importer
from core.jobs import queue, ray_cluster, supervisor
from core.training import presets, runs
from tests.conftest import OPERATOR, REPO, approve_review, cli, person, tiny_pairs, write_jsonl


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
    assert [c["subject"] for c in changed][-3:] == ["ray_address", "ray_resource", "ray_ship"]


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


def test_the_admin_page_sets_and_clears_the_cluster(home, monkeypatch):
    from tests.test_pages import _clean, _run

    monkeypatch.delenv(ray_cluster.ADDRESS_ENV, raising=False)
    at = _run("admin", person("quan", "admin"))
    _clean(at)
    assert "jobs run in local workers (no Ray cluster)" in [x.value for x in at.info]
    port = _closed_port()
    next(t for t in at.text_input if t.label == "Ray dashboard address").input(f"127.0.0.1:{port}")
    next(b for b in at.button if b.label == "Use this cluster").click().run()
    assert [e.value for e in at.error] == [f"the Ray cluster at http://127.0.0.1:{port} does not answer "
                                           f"(ConnectionError: Failed to connect to Ray at address: "
                                           f"http://127.0.0.1:{port}.)"]
    assert ray_cluster.address() is None
    next(t for t in at.text_input if t.label == "Ray dashboard address").input("10.0.0.5")
    next(b for b in at.button if b.label == "Use this cluster").click().run()
    assert [e.value for e in at.error] == ["http://10.0.0.5: give the dashboard's port too (Ray's default is 8265)"]
    store.set_setting(ray_cluster.ADDRESS_SETTING, "http://10.0.0.5:8265", OPERATOR)   # as a check that passed would
    at = _run("admin", person("quan", "admin"))
    assert any("submitted to the Ray cluster at http://10.0.0.5:8265" in x.value for x in at.info)
    next(b for b in at.button if b.label == "Back to local workers").click().run()
    _clean(at)
    assert ray_cluster.address() is None and "jobs run in local workers (no Ray cluster)" in [x.value for x in at.success]
    last = store.rows("SELECT actor, subject FROM audit_log WHERE action = 'setting.changed' ORDER BY id")[-3:]
    assert last == [{"actor": "quan", "subject": s} for s in ("ray_address", "ray_resource", "ray_ship")]


def test_a_shipped_job_takes_its_folder_and_the_files_its_payload_names_under_the_data_folder(home):
    from core import paths

    data = paths.data_dir()
    run_dir = data / "runs" / "run-a"
    (run_dir / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    (run_dir / "job.json").write_text("{}")
    (run_dir / "checkpoints" / "checkpoint-2" / "trainer_state.json").write_text("{}")
    version = data / "datasets" / "v1"
    version.mkdir(parents=True)
    (version / "train.parquet").write_bytes(b"PAR1")
    (version / "test.parquet").write_bytes(b"PAR1")
    outside = home.parent / f"{home.name}-elsewhere.txt"
    outside.write_text("not the studio's")
    job = {"id": 3, "kind": "train", "job_dir": str(run_dir),
           "config": {"train_file": str(version / "train.parquet"), "nested": [{"test_file": str(version / "test.parquet")}],
                      "resume_from": str(run_dir / "checkpoints" / "checkpoint-2"), "notes": str(outside),
                      "missing": str(data / "no-such-file"), "text": "/ not a path\n"}}
    staged = ray_cluster.stage(job, "vitune-3-abc")
    got = sorted(str(p.relative_to(staged / "root")) for p in (staged / "root").rglob("*") if p.is_file())
    want = sorted(str(p).lstrip("/") for p in (run_dir / "job.json", run_dir / "checkpoints" / "checkpoint-2" /
                                               "trainer_state.json", version / "train.parquet", version / "test.parquet"))
    assert got == want   # the job folder whole, the named files under data/; nothing from outside the home


def test_what_a_node_sends_back_lands_only_in_the_homes_data_folder(home):
    from core.jobs.ray_ship import HomeWriter

    writer = HomeWriter(str(home))
    target = home / "data" / "runs" / "run-a" / "worker.log"
    assert writer.write(str(target), b"line 1\n", 0) == 7
    writer.write(str(target), b"line 2\n", 7)
    writer.write(str(target), b"line 1\nline 2\n", 0)   # a log sent again from its start: the same file
    assert target.read_bytes() == b"line 1\nline 2\n"
    writer.write(str(target.with_name("status.json")), b'{"state": "succeeded"}')
    assert json.loads(target.with_name("status.json").read_text()) == {"state": "succeeded"}
    for bad in (str(home / "studio.txt"), str(home / "data" / ".." / "x"), "relative/path", "/etc/passwd"):
        with pytest.raises(ValueError, match="not under the studio's data folder"):
            writer.write(bad, b"x")


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


# ── on a real cluster: a head and a second node on loopback ──────────────────


@pytest.fixture(scope="module")
def ray_cluster_on_loopback():
    """A Ray head (no resource for the studio's jobs) and a second node that alone declares ``vitune_worker``,
    each its own ``ray start`` process tree with its own temp dir; every process they started is stopped in the
    teardown, whatever happened."""
    from tests.ray_loopback import LoopbackCluster

    cluster = LoopbackCluster()
    try:
        cluster.start_head()
        cluster.add_node({"vitune_worker": 1})
        yield cluster
    finally:
        left = cluster.stop()
        import psutil

        alive = [p for p in psutil.process_iter(["cmdline"])
                 if str(cluster.root) in " ".join(p.info["cmdline"] or []) and p.status() != psutil.STATUS_ZOMBIE]
        assert not alive, f"Ray processes left after the teardown: {[p.pid for p in alive]} (killed: {left})"


def _wait(what: str, until, timeout: float = 900, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        got = until()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(poll)


@pytest.mark.slow   # two trainings of the default model on a loopback Ray cluster, one of them resumed, and an evaluation
def test_a_second_node_trains_is_watched_live_and_a_lost_node_resumes_from_its_checkpoint(
        ray_cluster_on_loopback, tmp_path, chromium, default_model):
    from tests.conftest import free_port, start_studio, studio_home

    cluster = ray_cluster_on_loopback
    head, node = cluster.nodes
    home = tmp_path
    cli("dataset", "import-samples", home=home)
    version = next(v["id"] for v in json.loads(cli("dataset", "list", "--json", home=home).stdout)
                   if v["name"] == "sample-ghichu-noibo")
    # the admin points the studio at the cluster: checked (the Job API answers) and audited
    said = cli("jobs", "ray", cluster.address, "--resource", "vitune_worker", home=home).stdout
    assert f"submitted to the Ray cluster at {cluster.address}" in said and "'vitune_worker'" in said
    # 1. a training job, first claimed by a supervisor killed before it could submit it (SIGKILL between the
    #    claim and Ray's submit_job): the id it recorded is unknown to the cluster, and the next tick queues the job
    #    again; the studio's supervisor submits it then, and only the second node has what it asks
    queued = json.loads(cli("train", "--dataset", version, "--preset", "quick test (CPU, 20 steps)",
                            "--max-steps", "3", "--no-wait", "--json", home=home).stdout)
    run_id = queued["run"]
    crashed = subprocess.run([sys.executable, "-m", "core", "jobs", "tick"], cwd=REPO, capture_output=True,
                             env={**os.environ, "VITUNE_HOME": str(home), store.CRASH_AT_ENV: "ray.claimed"})
    assert crashed.returncode == -9, crashed.stderr
    with studio_home(home):
        claimed = queue.get_job(queued["job"])
    assert claimed["state"] == "running" and claimed["ray_job"] and claimed["ray_node"] is None
    assert ray_cluster.state(cluster.address, claimed["ray_job"]).status == ray_cluster.MISSING

    studio = start_studio(home, port := free_port())
    context = chromium.new_context(viewport={"width": 1400, "height": 1400})
    try:
        page = context.new_page()
        page.set_default_timeout(120_000)
        page.goto(f"http://127.0.0.1:{port}/train")
        page.get_by_text(f"Run {run_id}: running", exact=True).wait_for(timeout=300_000)
        page.get_by_text(f"node {node.node_id}.").wait_for(timeout=120_000)   # the Ray caption names the node
        page.get_by_text(f"Run {run_id}: succeeded", exact=True).wait_for(timeout=900_000)
        assert page.locator('[data-testid="stException"]').count() == 0
        with studio_home(home):
            job = queue.get_job(runs.get_run(run_id)["job_id"])
            assert job["id"] == claimed["id"] and job["ray_job"] != claimed["ray_job"]   # submitted once, anew
            assert job["ray_job"].startswith(f"vitune-{job['id']}-") and job["ray_node"] == node.node_id
            assert job["pid"] is None and job["slot"] == "ray"
            assert list(runs.run_metrics(run_id)["step"]) == [1, 2, 3]
            adapter = Path(runs.get_run(run_id)["adapter_dir"])
            audit = store.rows("SELECT subject, actor FROM audit_log WHERE action = 'setting.changed'")
        assert (adapter / "adapter_config.json").exists()   # the node wrote it into the studio's (shared) home
        assert {a["subject"] for a in audit} >= {"ray_address", "ray_resource"}
        log = (Path(job["job_dir"]) / "worker.log").read_text()
        assert "job succeeded" in log   # the worker's log, where a local worker's goes

        # 2. its adapter evaluated afterwards (the CLI waits; the evaluation goes to the cluster as well)
        ev = json.loads(cli("evaluate", "--run", run_id, "--limit", "2", "--max-new-tokens", "4", "--json",
                            home=home).stdout)
        with studio_home(home):
            ev_job = queue.list_jobs(1, kind="evaluate")[0]
        assert ev_job["state"] == "succeeded" and ev_job["ray_node"] == node.node_id
        assert ev_job["config"]["evaluation_id"] == ev["evaluation"] and ev_job["run_id"] == run_id

        # 3. a longer training whose node is lost mid-run (every process of it killed at once)
        queued = json.loads(cli("train", "--dataset", version, "--preset", "quick test (CPU, 20 steps)",
                                "--max-steps", "8", "--no-wait", "--json", home=home).stdout)
        run_id = queued["run"]
        run_dir = home / "data" / "runs" / run_id
        with studio_home(home):
            first = _wait("a checkpoint, and a step after it", lambda: runs.checkpoints(run_dir) and (
                runs.run_metrics(run_id)["step"].max() or 0) >= 3 and queue.get_job(runs.get_run(run_id)["job_id"]))
        assert first["ray_node"] == node.node_id and first["state"] == "running"
        cluster.kill_node(node)
        with studio_home(home):
            failed = _wait("the job failed", lambda: (j := queue.get_job(first["id"]))["state"] == "failed" and j,
                           timeout=120)
        assert failed["error"].startswith("the Ray node running it was lost (node "), failed["error"]
        assert node.node_id[:12] in failed["error"]
        assert "resumed from its checkpoint at step " in failed["error"], failed["error"]
        resumed_id = int(failed["error"].rsplit("as job ", 1)[1])
        # the resumed job waits on the cluster for a node with the resource: the page says so
        page.get_by_text("waiting for a node with the resources it asks").wait_for(timeout=120_000)

        # a new node joins; the resumed job runs there, from the checkpoint, to the end
        again = cluster.add_node({"vitune_worker": 1})
        page.get_by_text(f"Run {run_id}: succeeded", exact=True).wait_for(timeout=900_000)
        with studio_home(home):
            done = queue.get_job(resumed_id)
            metrics = list(runs.run_metrics(run_id)["step"])
            resumed = store.rows("SELECT actor, detail FROM audit_log WHERE action = 'job.resumed'")
        assert done["state"] == "succeeded" and done["ray_node"] == again.node_id, done
        assert done["result"]["resumed_from"] == done["config"]["resume_from"]
        assert metrics == list(range(1, 9))
        assert [r["actor"] for r in resumed] == ["supervisor"]
        assert page.locator('[data-testid="stException"]').count() == 0

        # 4. cancel stops the worker on its node (Ray's stop_job), as a local cancel stops a local worker
        queued = json.loads(cli("train", "--dataset", version, "--preset", "quick test (CPU, 20 steps)",
                                "--no-wait", "--json", home=home).stdout)
        with studio_home(home):
            running = _wait("the worker running on the new node", lambda: (j := queue.get_job(queued["job"]))[
                "ray_node"] == again.node_id and queue.status(j).get("state") == "running" and j, timeout=300)
        pid = queue.status(running)["pid"]
        assert cli("jobs", "cancel", str(running["id"]), home=home).stdout.strip() == f"job {running['id']}: cancelled"
        with studio_home(home):
            assert queue.get_job(running["id"])["state"] == "cancelled"
        assert ray_cluster.state(cluster.address, running["ray_job"]).status == "STOPPED"
        import psutil

        _wait("the stopped worker gone", lambda: not psutil.pid_exists(pid)
              or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, timeout=60)
    finally:
        context.close()
        studio.terminate()
        studio.wait(30)


@pytest.mark.slow   # a training of the default model and an evaluation on a node that does not see the home
def test_a_node_that_does_not_see_the_home_gets_the_job_shipped_and_sends_its_files_back(
        ray_cluster_on_loopback, tmp_path, default_model):
    """The studio's home hidden from the node (an empty tmpfs over it in the node's own mount namespace): the
    job's inputs go with it (Ray's working_dir), its files come back through an actor on the head node."""
    import psutil

    from tests.conftest import studio_home

    cluster, home = ray_cluster_on_loopback, tmp_path
    cli("dataset", "import-samples", home=home)
    version = next(v["id"] for v in json.loads(cli("dataset", "list", "--json", home=home).stdout)
                   if v["name"] == "sample-ghichu-noibo")
    node = cluster.add_node({"vitune_ship": 1}, hide=(home,))
    said = cli("jobs", "ray", cluster.address, "--resource", "vitune_ship", "--ship", home=home).stdout
    assert "shipped to its node" in said
    train = subprocess.Popen([sys.executable, "-m", "core", "train", "--dataset", version, "--preset",
                              "quick test (CPU, 20 steps)", "--max-steps", "3", "--json"], cwd=REPO,
                             env={**os.environ, "VITUNE_HOME": str(home)}, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        def worker() -> psutil.Process | None:
            if train.poll() is not None:
                raise AssertionError(f"the training ended before its worker was seen: {train.communicate()}")
            for p in psutil.process_iter(["cmdline"]):
                cmd = p.info["cmdline"] or []
                if "core.worker" in cmd and cmd[-1].startswith(str(home)):
                    return p
            return None

        p = _wait("the worker on the node", worker, timeout=300, poll=0.2)
        # it runs where the home is an empty folder: the studio's database is not there, nor any dataset
        assert os.readlink(f"/proc/{p.pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
        assert (home / "data" / "studio.duckdb").exists()
        assert not Path(f"/proc/{p.pid}/root{home}/data/studio.duckdb").exists()
        out, err = train.communicate(timeout=900)
    finally:
        if train.poll() is None:
            train.kill()
    assert train.returncode == 0, err[-3000:]
    run_id = json.loads(out)["run"]
    with studio_home(home):
        job = queue.get_job(runs.get_run(run_id)["job_id"])
        run_dir = Path(runs.get_run(run_id)["run_dir"])
        assert job["state"] == "succeeded" and job["ray_node"] == node.node_id
        assert list(runs.run_metrics(run_id)["step"]) == [1, 2, 3]   # its curve came back as it trained
        adapter = Path(runs.get_run(run_id)["adapter_dir"])
        assert runs.checkpoints(run_dir), "no checkpoint came back"
    assert (adapter / "adapter_config.json").exists() and list(adapter.glob("adapter_model.*"))
    assert (run_dir / "worker.log").read_text().rstrip().endswith("job succeeded")
    assert not (home / "data" / "ray-ship").exists() or not any((home / "data" / "ray-ship").iterdir())

    # its adapter evaluated on that node too: the adapter and the held-out split shipped there
    ev = json.loads(cli("evaluate", "--run", run_id, "--limit", "2", "--max-new-tokens", "4", "--json",
                        home=home).stdout)
    with studio_home(home):
        ev_job = queue.list_jobs(1, kind="evaluate")[0]
    assert ev_job["state"] == "succeeded" and ev_job["ray_node"] == node.node_id
    assert ev_job["config"]["evaluation_id"] == ev["evaluation"]
