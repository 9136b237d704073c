"""Team access in ``core``, where the CLI and every page pass: roles refuse what they may not do (and
nothing is written), projects keep one client's work from another's, accounts keep only argon2 hashes
and slow down a guessed password, sessions end on sign-out, and ``serve.py`` will not listen beyond
loopback without an admin account and HTTPS. (The same in a real browser: test_access_browser.py.)"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from core import store
from core.access import accounts, binding, demo_links, projects
from core.access.principal import ACTIONS, RANK, ROLES, AccessDenied, Principal, require
from core.datasets import importer, review, samples, versions
from core.datasets.generation import endpoints, generations
from core.deploy import exports, releases
from core.evaluation import evaluations, gate
from core.playground import playground
from core.jobs import queue, supervisor
from core.training import presets, runs
from tests.conftest import OPERATOR, REPO, free_port, person, tiny_pairs, write_jsonl
from tests.test_evaluate import store_evaluation


def test_each_role_may_exactly_what_its_rank_allows():
    for role in ROLES:
        who = person("x", role)
        for action, need in ACTIONS.items():
            assert who.may(action) == (RANK[role] >= RANK[need]), (role, action)
    demo = Principal(name="demo:d", role="demo", kind="demo", grant={"project": "default"})
    assert [a for a in ACTIONS if demo.may(a)] == ["read", "playground.ask"]
    with pytest.raises(AccessDenied, match="train submit needs a signed-in user; nobody is signed in"):
        require(None, "train.submit")
    with pytest.raises(AccessDenied, match=r"an \(reviewer\) may not train submit: that needs engineer"):
        require(person("an", "reviewer"), "train.submit")


def _counts() -> dict:
    return {t: store.one(f"SELECT count(*) AS n FROM {t}")["n"]
            for t in ("dataset_versions", "jobs", "runs", "reviews", "users", "projects", "demo_links", "settings")}


def test_core_refuses_a_viewer_every_state_change_and_writes_nothing(home, tmp_path):
    path = write_jsonl(home / "p.jsonl", tiny_pairs(12))
    version, _ = importer.import_files([path], "p", actor=OPERATOR)
    job = runs.submit_train(version["id"], presets.preset("quick test (CPU, 20 steps)"), actor=OPERATOR,
                            override_review="a queued run to refuse things on")
    viewer = person("vy", "viewer")
    before, audit_before = _counts(), store.one("SELECT count(*) AS n FROM audit_log")["n"]
    doc = tmp_path / "d.md"
    doc.write_text("Quy trình đổi trả hàng trong 7 ngày.", encoding="utf-8")
    attempts = {
        "import": lambda: importer.import_files([path], "again", actor=viewer),
        "samples": lambda: samples.import_samples(actor=viewer),
        "review start": lambda: review.start(version["id"], actor=viewer),
        "train": lambda: runs.submit_train(version["id"], presets.preset("guide (r=16)"), actor=viewer,
                                           override_review="x"),
        "cancel": lambda: supervisor.cancel(job["id"], actor=viewer),
        "resume": lambda: runs.resume(job["id"], actor=viewer),
        "thresholds": lambda: gate.set_thresholds(0.0, 0.0, actor=viewer),
        "generate": lambda: generations.submit([doc], "g", local=True, actor=viewer),
        "endpoint": lambda: endpoints.add("x", "http://x/v1", "m", actor=viewer),
        "users": lambda: accounts.add_user("ke-trom", "admin", actor=viewer, password="mat-khau-du-dai"),
        "projects": lambda: projects.add_project("acme", actor=viewer),
        "workers": lambda: supervisor.set_worker_python(sys.executable, actor=viewer),
    }
    for what, call in attempts.items():
        with pytest.raises(AccessDenied, match=r"vy \(viewer\) may not"):
            call()
    assert _counts() == before, "a refused action wrote something"
    assert store.one("SELECT count(*) AS n FROM audit_log")["n"] == audit_before
    # what a viewer may do: read
    assert [v["id"] for v in versions.list_versions(viewer)] == [version["id"]]
    assert [r["id"] for r in runs.list_runs(viewer)] == [job["run_id"]]
    supervisor.cancel(job["id"], actor=OPERATOR)


def test_an_engineers_override_is_recorded_under_the_engineers_identity(home):
    version, _ = importer.import_files([write_jsonl(home / "p.jsonl", tiny_pairs(12))], "p", actor=OPERATOR)
    nam = person("nam", "engineer")
    job = runs.submit_train(version["id"], presets.preset("quick test (CPU, 20 steps)"), actor=nam,
                            override_review="khách cần gấp")
    rows = store.rows("SELECT actor, role, action, subject, detail FROM audit_log WHERE action IN "
                      "('review.override', 'job.submitted') ORDER BY id")
    assert [(r["actor"], r["role"], r["action"]) for r in rows] == [("nam", "engineer", "review.override"),
                                                                    ("nam", "engineer", "job.submitted")]
    assert json.loads(rows[0]["detail"])["reason"] == "khách cần gấp" and job["owner"] == "nam"
    with pytest.raises(AccessDenied, match=r"chi \(reviewer\) may not train submit"):   # nor override, then
        runs.submit_train(version["id"], presets.preset("quick test (CPU, 20 steps)"), actor=person("chi", "reviewer"),
                          override_review="tôi muốn")
    supervisor.cancel(job["id"], actor=nam)


def test_a_user_limited_to_one_project_sees_nothing_of_another(home):
    for name in ("acme", "beta"):
        projects.add_project(name, actor=OPERATOR)
    a, _ = importer.import_files([write_jsonl(home / "a.jsonl", tiny_pairs(12))], "a", actor=OPERATOR, project="acme")
    b, _ = importer.import_files([write_jsonl(home / "b.jsonl", tiny_pairs(14))], "b", actor=OPERATOR, project="beta")
    ja = runs.submit_train(a["id"], presets.preset("quick test (CPU, 20 steps)"), actor=OPERATOR, override_review="t")
    jb = runs.submit_train(b["id"], presets.preset("quick test (CPU, 20 steps)"), actor=OPERATOR, override_review="t")
    store_evaluation(home, "eval-a", ["Dạ"], dataset=a["id"], project="acme")
    store_evaluation(home, "eval-b", ["Dạ"], dataset=b["id"], project="beta")
    assert runs.get_run(jb["run_id"])["project"] == "beta" and queue.get_job(jb["id"])["project"] == "beta"
    ana = person("ana", "engineer", projects=["acme"])
    assert [v["id"] for v in versions.list_versions(ana)] == [a["id"]]
    assert [v["id"] for v in versions.list_versions(ana, "beta")] == []
    assert [r["id"] for r in runs.list_runs(ana)] == [ja["run_id"]]
    assert [e["id"] for e in evaluations.leaderboard(ana)] == ["eval-a"]
    assert [e["id"] for e in evaluations.list_evaluations(ana)] == ["eval-a"]
    assert {j["id"] for j in queue.list_jobs(actor=ana)} == {ja["id"]}
    assert releases.list_releases(ana) == [] and [p["name"] for p in projects.list_projects(ana)] == ["acme"]
    for fetch in (lambda: versions.get_version(b["id"], ana), lambda: runs.get_run(jb["run_id"], ana),
                  lambda: evaluations.get_evaluation("eval-b", ana)):
        with pytest.raises(Exception, match="^no (dataset version|run|evaluation) '"):  # as if it did not exist
            fetch()
    with pytest.raises(AccessDenied, match="ana \\(engineer\\) has no access to project 'beta'"):
        importer.import_files([home / "b.jsonl"], "b2", actor=ana, project="beta")
    with pytest.raises(queue.JobError, match="no job"):
        supervisor.cancel(jb["id"], actor=ana)
    # the operator sees both; a listing for one project shows that one
    assert {v["project"] for v in versions.list_versions(OPERATOR)} == {"acme", "beta"}
    assert [v["id"] for v in versions.list_versions(OPERATOR, "beta")] == [b["id"]]
    for job in (ja, jb):
        supervisor.cancel(job["id"], actor=OPERATOR)
    with pytest.raises(accounts.AccountError, match="no project nope"):
        accounts.add_user("x1", "viewer", actor=OPERATOR, password="mat-khau-du-dai", projects=["nope"])


def test_accounts_keep_a_hash_slow_down_a_guessed_password_and_sessions_end(home, monkeypatch):
    with pytest.raises(accounts.AccountError, match="at least 10 characters"):
        accounts.add_user("lan", "engineer", actor=OPERATOR, password="ngan")
    with pytest.raises(accounts.AccountError, match="not a valid account name"):
        accounts.add_user("Lan Nguyen!", "engineer", actor=OPERATOR, password="mat-khau-du-dai")
    accounts.add_user("lan", "engineer", actor=OPERATOR, password="mat-khau-du-dai")
    stored = store.one("SELECT password_hash FROM users WHERE name = 'lan'")["password_hash"]
    assert stored.startswith("$argon2id$") and "mat-khau" not in stored
    who, token = accounts.sign_in("lan", "mat-khau-du-dai", source="127.0.0.1")
    assert who.name == "lan" and who.role == "engineer" and who.kind == "local"
    assert accounts.from_session(token).name == "lan" and accounts.from_session(token + "x") is None
    before = store.one("SELECT count(*) AS n FROM audit_log")["n"]
    with pytest.raises(AccessDenied, match="^wrong name or password$"):
        accounts.sign_in("lan", "sai-mat-khau")
    with pytest.raises(AccessDenied, match="^wrong name or password$"):   # the same words for an unknown name
        accounts.sign_in("khong-co", "sai-mat-khau")
    rows = store.rows("SELECT actor, action, subject, detail FROM audit_log ORDER BY id")[before:]
    assert [(r["action"], r["subject"], r["actor"]) for r in rows] == [("auth.failed", "lan", None),
                                                                      ("auth.failed", "khong-co", None)]
    assert all("sai-mat-khau" not in r["detail"] for r in rows)   # the attempt, never the password
    assert store.one("SELECT count(*) AS n FROM sessions")["n"] == 1
    for _ in range(3):
        with pytest.raises(AccessDenied, match="wrong name or password"):
            accounts.sign_in("lan", "sai-mat-khau")
    # the fifth wrong password in a row: from now on, 30 s, doubling, before any attempt is even checked
    with pytest.raises(AccessDenied, match="wrong name or password"):
        accounts.sign_in("lan", "sai-mat-khau")
    with pytest.raises(AccessDenied, match=r"too many wrong passwords for lan: try again in 3\d s"):
        accounts.sign_in("lan", "mat-khau-du-dai")
    assert accounts.delay_after(5) == 30 and accounts.delay_after(6) == 60 and accounts.delay_after(20) == 900
    accounts.sign_out(token)
    assert accounts.from_session(token) is None
    assert store.one("SELECT action FROM audit_log ORDER BY id DESC LIMIT 1")["action"] == "auth.signed_out"
    accounts.reset_password("lan", "mat-khau-moi-dai", actor=OPERATOR)   # also lifts the slow-down
    who, token = accounts.sign_in("lan", "mat-khau-moi-dai")
    accounts.disable("lan", actor=OPERATOR)
    assert accounts.from_session(token) is None
    with pytest.raises(AccessDenied, match="wrong name or password"):
        accounts.sign_in("lan", "mat-khau-moi-dai")


def test_the_last_admin_stays_an_admin(home):
    accounts.add_user("boss", "admin", actor=OPERATOR, password="mat-khau-du-dai")
    with pytest.raises(accounts.AccountError, match="boss is the last admin"):
        accounts.set_role("boss", "viewer", actor=OPERATOR)
    with pytest.raises(accounts.AccountError, match="boss is the last admin"):
        accounts.disable("boss", actor=OPERATOR)
    accounts.add_user("boss2", "admin", actor=OPERATOR, password="mat-khau-du-dai")
    assert accounts.set_role("boss", "viewer", actor=OPERATOR)["role"] == "viewer"


def test_the_cli_reads_a_password_from_stdin_never_from_an_argument(home):
    env = dict(os.environ, VITUNE_HOME=str(home))
    proc = subprocess.run([sys.executable, "-m", "core", "users", "add", "thu", "--role", "admin"], input="mat-khau-cua-thu\n",
                          text=True, capture_output=True, cwd=REPO, env=env)
    assert proc.returncode == 0 and proc.stdout.split()[:3] == ["thu", "local", "admin"]
    assert accounts.sign_in("thu", "mat-khau-cua-thu")[0].role == "admin"
    proc = subprocess.run([sys.executable, "-m", "core", "users", "add", "x", "--role", "viewer", "--password", "p"],
                          text=True, capture_output=True, cwd=REPO, env=env)
    assert proc.returncode == 2 and "unrecognized arguments: --password" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "core", "users", "add", "bad", "--role", "king"], input="x" * 12,
                          text=True, capture_output=True, cwd=REPO, env=env)
    assert proc.returncode == 2 and "invalid choice: 'king'" in proc.stderr
    listed = subprocess.run([sys.executable, "-m", "core", "users", "list"], text=True, capture_output=True, cwd=REPO,
                            env=env).stdout
    assert listed.split()[:5] == ["thu", "local", "admin", "active", "every"]
    audit = store.rows("SELECT actor, role, action, subject FROM audit_log WHERE action = 'user.added'")
    assert audit == [{"actor": OPERATOR.name, "role": "admin", "action": "user.added", "subject": "thu"}]


def test_demo_principals_ask_their_runs_and_nothing_else(home):
    version, _ = importer.import_files([write_jsonl(home / "p.jsonl", tiny_pairs(12))], "p", actor=OPERATOR)
    job = runs.submit_train(version["id"], presets.preset("quick test (CPU, 20 steps)"), actor=OPERATOR,
                            override_review="demo")
    with pytest.raises(demo_links.DemoLinkError, match="has not finished training"):
        demo_links.create(actor=OPERATOR, runs=[job["run_id"]])
    with pytest.raises(demo_links.DemoLinkError, match="at least one run or release"):
        demo_links.create(actor=OPERATOR)
    with pytest.raises(demo_links.DemoLinkError, match="no run 'run-nope'"):
        demo_links.create(actor=OPERATOR, runs=["run-nope"])
    supervisor.cancel(job["id"], actor=OPERATOR)
    assert demo_links.resolve("not-a-token") is None and demo_links.resolve(None) is None
    demo = Principal(name="demo:x", role="demo", kind="demo", grant={"project": "default", "runs": []})
    for call in (lambda: importer.import_files([home / "p.jsonl"], "x", actor=demo),
                 lambda: review.start(version["id"], actor=demo),
                 lambda: exports.submit(job["run_id"], actor=demo)):
        with pytest.raises(AccessDenied):
            call()
    with pytest.raises(AccessDenied, match="this demo link does not show that model"):
        playground.ask_run(job["run_id"], "Xin chào", actor=demo)


def test_binding_beyond_loopback_needs_an_admin_and_https(home, tmp_path):
    assert binding.is_loopback("127.0.0.1") and binding.is_loopback("::1") and binding.is_loopback("localhost")
    assert not binding.is_loopback("0.0.0.0") and not binding.is_loopback("192.168.1.20")
    assert binding.refusal("127.0.0.1") is None
    assert "no admin account exists" in binding.refusal("0.0.0.0")
    accounts.add_user("boss", "admin", actor=OPERATOR, password="mat-khau-du-dai")
    assert "without HTTPS" in binding.refusal("0.0.0.0")
    assert "does not exist" in binding.refusal("0.0.0.0", str(tmp_path / "c.pem"), str(tmp_path / "k.pem"))
    cert, key = _self_signed(tmp_path)
    assert binding.refusal("0.0.0.0", str(cert), str(key)) is None


def _self_signed(folder):
    """A self-signed certificate for 127.0.0.1 (cryptography comes with Authlib)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vitune-test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def _serve(home, *args):
    """serve.py in its own process; its output goes to a file (a pipe nobody reads would stall it)."""
    env = dict(os.environ, VITUNE_HOME=str(home))
    log = open(home / f"serve-{time.time_ns()}.log", "w+")
    proc = subprocess.Popen([sys.executable, "scripts/serve.py", *args], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT, text=True)
    proc.log = log
    return proc


def _output(proc) -> str:
    proc.log.flush()
    proc.log.seek(0)
    return proc.log.read()


@pytest.mark.slow
def test_serve_refuses_beyond_loopback_then_serves_https_with_a_secure_cookie(home, tmp_path):
    import ssl
    import urllib.parse
    import urllib.request

    port = free_port()
    proc = _serve(home, "--server.address", "0.0.0.0", "--server.port", str(port))
    proc.wait(timeout=120)
    assert proc.returncode == 2 and _output(proc).strip().splitlines() == [
        "error: refusing to serve on 0.0.0.0: beyond loopback every page needs a sign-in, and no admin account "
        "exists; create one first: python -m core users add NAME --role admin"]
    accounts.add_user("boss", "admin", actor=OPERATOR, password="mat-khau-du-dai")
    proc = _serve(home, "--server.address", "0.0.0.0", "--server.port", str(port))
    proc.wait(timeout=120)
    assert proc.returncode == 2 and "without HTTPS" in _output(proc)
    cert, key = _self_signed(tmp_path)
    proc = _serve(home, "--server.address", "0.0.0.0", "--server.port", str(port), "--server.sslCertFile", str(cert),
                  "--server.sslKeyFile", str(key))
    try:
        ctx = ssl.create_default_context(cafile=str(cert))
        for _ in range(120):
            try:
                urllib.request.urlopen(f"https://127.0.0.1:{port}/_stcore/health", context=ctx, timeout=2)
                break
            except Exception:
                assert proc.poll() is None, _output(proc)
                time.sleep(0.5)

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *a, **kw):
                return None

        opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx), NoRedirect)
        # every page address sends a browser without a session to the sign-in form
        with pytest.raises(urllib.error.HTTPError) as moved:
            opener.open(f"https://127.0.0.1:{port}/train", timeout=10)
        assert moved.value.code == 303 and moved.value.headers["Location"] == "/auth/signin?next=/train"
        moved.value.close()
        form = opener.open(f"https://127.0.0.1:{port}/auth/signin", timeout=10)
        form.read()
        form.close()
        csrf_cookie = form.headers["Set-Cookie"].split(";")[0]
        csrf = csrf_cookie.split("=", 1)[1]
        assert "Secure" in form.headers["Set-Cookie"] and "HttpOnly" in form.headers["Set-Cookie"]
        body = urllib.parse.urlencode({"username": "boss", "password": "mat-khau-du-dai", "csrf": csrf, "next": "/"})
        req = urllib.request.Request(f"https://127.0.0.1:{port}/auth/signin", data=body.encode(),
                                     headers={"Cookie": csrf_cookie})
        with pytest.raises(urllib.error.HTTPError) as signed:
            opener.open(req, timeout=30)
        signed.value.close()
        session = [h for h in signed.value.headers.get_all("Set-Cookie") if h.startswith("vitune_session=")]
        assert signed.value.code == 303 and len(session) == 1
        assert "; HttpOnly" in session[0] and "; Secure" in session[0] and "samesite=lax" in session[0].lower()
        token = session[0].split(";")[0].split("=", 1)[1]
        assert accounts.from_session(token).name == "boss"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError("serve.py did not stop on SIGTERM: " + _output(proc)[-2000:]) from None
