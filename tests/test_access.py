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
from core.deploy import exporter, exports, releases
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
    with pytest.raises(AccessDenied, match=r"^too many attempts: try again in (2\d|30) s$"):   # the name is not named
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


def test_a_demo_links_view_shows_its_models_and_nothing_of_the_studios_ids(home, tmp_path):
    """What a client's page is built from (``playground.demo_view``): the link's title and prompts, its models
    named by the link with a verdict written for a client and their scores. No dataset version, run id,
    base model, job id or path, whether the gate passed or not; a deleted release's model is gone."""
    from tests.conftest import grow_studio

    grow_studio(home, 1, runs_each=2)   # two evaluated runs: the newest passes the gate, the other does not
    newest, older = [r["id"] for r in runs.list_runs(OPERATOR, state="succeeded")][:2]
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + bytes(32))
    rel = releases.create_and_record({"run_id": older, "name": "vi-demo:v1", "quantization": "q8_0", "gguf": str(gguf),
                                      "gguf_sha256": exporter.sha256(gguf), "verdict": None}, "FROM x\n", None,
                                     actor=OPERATOR, on_progress=lambda m: None)
    link, token = demo_links.create(actor=OPERATOR, runs=[newest], releases=[rel["id"]], title="Trợ lý CSKH",
                                    prompts=["Khách hỏi về hoàn tiền"])
    client = demo_links.resolve(token)
    view = playground.demo_view(client)
    assert view["title"] == "Trợ lý CSKH" and view["prompts"] == ["Khách hỏi về hoàn tiền"]
    assert [m["label"] for m in view["models"]] == ["Trợ lý CSKH — model 1", "Trợ lý CSKH — model 2"]
    passing, failing = view["models"]
    assert passing["releasable"] and passing["verdict"].startswith("Passed the studio's quality check")
    assert not failing["releasable"] and failing["verdict"] == ("Still being improved: it has not passed the "
                                                                 "studio's quality check yet.")
    shown = json.dumps(view, ensure_ascii=False, default=str) + json.dumps(
        playground.targets_for(client), ensure_ascii=False, default=str)
    studio_ids = [newest, older, rel["id"], link["id"], "ds-", "run-", "rel-", "job", "gemma", "/", "eval"]
    studio_ids += [v["id"] for v in versions.list_versions(OPERATOR)] + [v["name"] for v in versions.list_versions(OPERATOR)]
    assert [i for i in studio_ids if i in shown] == []
    # what a failed answer tells the client: not the job nor the log
    failed = playground.PlaygroundError("the model could not be served (inference job 7 failed): OSError in "
                                        f"{home}/data/inference/x/worker.log")
    assert playground.client_message(failed) == "The model could not answer just now; please try again in a moment."
    with pytest.raises(AccessDenied, match="this demo link does not show that model"):
        next(playground.demo_stream(client, "model-3", [{"role": "user", "content": "Xin chào"}]))
    # the release deleted: its model leaves the client's page at the next load
    releases.delete_release(rel["id"], actor=OPERATOR)
    assert [m["label"] for m in playground.demo_view(demo_links.resolve(token))["models"]] == ["Trợ lý CSKH"]


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


# ── the second pass (issue 24): what an attacker on the team's network, or a careless teammate, tried ──────


def _signed_in_cookie(base: str, name: str, password: str, address: str | None = None) -> dict[str, str]:
    """The session cookie of a sign-in through the real form (empty when refused)."""
    status, headers, _ = _sign_in_post(base, name, password, address)
    for value in headers.get_all("Set-Cookie") or []:
        if value.startswith("vitune_session="):
            return {"vitune_session": value.split(";")[0].split("=", 1)[1]}
    return {}


def _sign_in_post(base: str, name: str, password: str, address: str | None = None, body: bytes | None = None):
    """GET the sign-in form for its CSRF token, POST ``name`` and ``password`` (from ``address``, as a reverse
    proxy on loopback says with X-Forwarded-For): (status, headers, the error the form shows, '' if none)."""
    import re
    import urllib.parse

    from tests.st_client import StClient

    client = StClient(base, headers={"X-Forwarded-For": address} if address else {})
    status, headers, page = client.request("GET", "/auth/signin")
    assert status == 200, status
    csrf = re.search(rb'name="csrf" value="([^"]+)"', page).group(1).decode()
    client.cookies["vitune_csrf"] = csrf
    form = body if body is not None else urllib.parse.urlencode(
        {"username": name, "password": password, "csrf": csrf, "next": "/"}).encode()
    status, headers, _ = client.request("POST", "/auth/signin", form,
                                        {"Content-Type": "application/x-www-form-urlencoded"})
    error = ""
    if status == 303 and "error=" in (headers.get("Location") or ""):
        error = urllib.parse.parse_qs(urllib.parse.urlsplit(headers["Location"]).query)["error"][0]
    return status, headers, error


@pytest.fixture(scope="module")
def served_studio(tmp_path_factory):
    """``scripts/serve.py`` on loopback for a home with an admin, an engineer and a viewer (passwords typed
    at the CLI's prompt, as a person does)."""
    from tests.conftest import start_studio

    home = tmp_path_factory.mktemp("served-home")
    env = dict(os.environ, VITUNE_HOME=str(home))
    for name, role in (("boss", "admin"), ("nam", "engineer"), ("vy", "viewer")):
        subprocess.run([sys.executable, "-m", "core", "users", "add", name, "--role", role],
                       input=f"mat-khau-cua-{name}\n", text=True, check=True, capture_output=True, cwd=REPO, env=env)
    port = free_port()
    proc = start_studio(home, port)
    yield {"home": home, "url": f"http://127.0.0.1:{port}", "port": port}
    proc.terminate()
    proc.wait(30)


@pytest.fixture
def served(served_studio, monkeypatch):
    """That studio, and the core calls of the test process on its home."""
    monkeypatch.setenv("VITUNE_HOME", str(served_studio["home"]))
    return served_studio


def _audit_since(before: int, action: str = "auth.failed") -> list[dict]:
    rows = store.rows("SELECT subject, detail FROM audit_log WHERE id > ? AND action = ? ORDER BY id", [before, action])
    return [{"subject": r["subject"], **json.loads(r["detail"])} for r in rows]


def _last_audit_id() -> int:
    return store.one("SELECT coalesce(max(id), 0) AS n FROM audit_log")["n"]


def test_forty_parallel_wrong_passwords_get_five_checks_and_then_the_slow_down(served):
    """Item 5: the attempt is counted before its password is checked, so 40 POSTs at once get exactly the five
    free checks; every other one is refused unchecked, the right password too, until the wait is over."""
    from concurrent.futures import ThreadPoolExecutor

    before = _last_audit_id()
    with ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(lambda i: _sign_in_post(served["url"], "nam", f"doan-sai-lan-{i:02d}", "198.51.100.5"),
                                range(40)))
    errors = [error for _, _, error in answers]
    assert errors.count("wrong name or password") == accounts.FREE_ATTEMPTS, [(s, e) for s, _, e in answers]
    assert all(status == 303 for status, _, _ in answers)
    slowed = [e for e in errors if e != "wrong name or password"]
    assert len(slowed) == 40 - accounts.FREE_ATTEMPTS and all(e.startswith("too many attempts: try again in ")
                                                              for e in slowed), slowed
    reasons = [row["reason"] for row in _audit_since(before)]
    assert reasons.count("wrong password") == accounts.FREE_ATTEMPTS and reasons.count("slowed down") == 35
    assert _sign_in_post(served["url"], "nam", "mat-khau-cua-nam", "198.51.100.5")[2].startswith("too many attempts")
    accounts.reset_password("nam", "mat-khau-cua-nam", actor=OPERATOR)   # lifts the slow-down
    assert _signed_in_cookie(served["url"], "nam", "mat-khau-cua-nam", "198.51.100.6")


def test_one_address_trying_many_names_is_slowed_down_with_the_same_words(served):
    """Items 5 and 17: an address that tries many names (one guess each, under every name's own limit) is slowed
    down; the slow-down reads the same for a real name and an unknown one, and names neither."""
    address, free = "203.0.113.9", 20
    errors = [_sign_in_post(served["url"], f"khong-co-{i}", "doan-sai-mat-khau", address)[2] for i in range(free)]
    assert set(errors) == {"wrong name or password"}
    unknown = _sign_in_post(served["url"], "khong-co-nua", "doan-sai-mat-khau", address)[2]
    real = _sign_in_post(served["url"], "vy", "mat-khau-cua-vy", address)[2]   # even the right password waits
    assert unknown.startswith("too many attempts: try again in ") and real.startswith("too many attempts: try again in ")
    assert "vy" not in real and "khong-co" not in unknown
    assert _signed_in_cookie(served["url"], "vy", "mat-khau-cua-vy", "203.0.113.10")   # another address is not
    assert accounts.ADDRESS_FREE_ATTEMPTS == free


def test_an_unknown_name_costs_a_password_check_and_is_slowed_down_like_a_real_one(home):
    """Item 17: no account-name oracle. An unknown name gets an argon2 check as a real one does (counted, and
    in CPU time), the same refusal, and the same slow-down in the same words."""
    accounts.add_user("lan", "engineer", actor=OPERATOR, password="mat-khau-du-dai")
    accounts.sign_in("lan", "mat-khau-du-dai")   # the hasher's first use (the library's loading) is behind us
    spent = {}
    for name in ("lan", "khong-co-ai"):
        checks, cpu = accounts.password_checks(), time.process_time()
        for _ in range(accounts.FREE_ATTEMPTS):
            with pytest.raises(AccessDenied, match="^wrong name or password$"):
                accounts.sign_in(name, "doan-sai-mat-khau", source=f"addr-{name}")
        spent[name] = (accounts.password_checks() - checks, time.process_time() - cpu)
        with pytest.raises(AccessDenied) as slowed:
            accounts.sign_in(name, "doan-sai-mat-khau", source=f"addr-{name}")
        assert str(slowed.value) in {f"too many attempts: try again in {s} s" for s in range(25, 32)}, slowed.value
    assert spent["lan"][0] == spent["khong-co-ai"][0] == accounts.FREE_ATTEMPTS, spent
    assert spent["khong-co-ai"][1] > 0.5 * spent["lan"][1], spent   # the same work, not a tenth of it


def test_a_huge_account_name_is_bounded_in_the_form_the_request_and_the_audit_log(served):
    """Item 18: an anonymous POST with a 1,000,000-character name stores no such thing, nor does a direct call;
    the form's fields say how long they may be."""
    before = _last_audit_id()
    status, _, _ = _sign_in_post(served["url"], "a" * 1_000_000, "doan-sai-mat-khau", "198.51.100.77")
    assert status == 413   # the body is capped before anything reads it
    longest = store.one("SELECT max(length(subject)) AS n, max(length(detail)) AS d FROM audit_log WHERE id > ?", [before])
    assert (longest["n"] or 0) <= accounts.NAME_MAX and (longest["d"] or 0) <= 1000, longest
    with pytest.raises(AccessDenied, match="^wrong name or password$"):
        accounts.sign_in("b" * 1_000_000, "doan-sai-mat-khau", source="198.51.100.78")
    row = store.one("SELECT subject, detail FROM audit_log ORDER BY id DESC LIMIT 1")
    assert len(row["subject"]) <= accounts.NAME_MAX and json.loads(row["detail"])["name_length"] == 1_000_000
    from tests.st_client import StClient

    form = StClient(served["url"]).request("GET", "/auth/signin")[2].decode()
    assert f'name="username" maxlength="{accounts.NAME_MAX}"' in form
    assert f'name="password" type="password" maxlength="{accounts.PASSWORD_MAX}"' in form


def test_an_upload_needs_a_signed_in_session_allowed_to_upload(served):
    """Item 9: Streamlit's upload route takes a file only into a session whose signed-in identity may import or
    generate; the app's shell (any ?demo=…) or a viewer's session gets 403, and nothing is stored."""
    from tests.st_client import StClient

    line = b'{"instruction": "a", "output": "b"}\n'
    for query, cookies in (("demo=anything", {}), ("", {}),
                           ("", _signed_in_cookie(served["url"], "vy", "mat-khau-cua-vy", "198.51.100.20"))):
        with StClient(served["url"], query=query, cookies=cookies) as app:
            assert app.session_id
            status, body = app.upload(line)
            assert status == 403, (query, cookies, status, body)
    with StClient(served["url"], cookies=_signed_in_cookie(served["url"], "boss", "mat-khau-cua-boss",
                                                           "198.51.100.21")) as app:
        assert "Signed in as **boss**" in app.texts()
        assert app.upload(line)[0] == 204
    # and a request body anywhere else is capped
    status, _, _ = StClient(served["url"]).request("POST", "/auth/signin", b"x" * (2 << 20),
                                                   {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 413


def _relay(target: int, *flags: str, user: int | None = None) -> tuple[subprocess.Popen, int]:
    """tests/relay.py in front of the studio (under OS user ``user`` when given): (process, its port)."""
    port = free_port()
    # another user cannot read this interpreter's tree (it may live under /root): the system's Python runs it
    prefix = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", "/usr/bin/python3"] \
        if user is not None else [sys.executable]
    proc = subprocess.Popen(prefix + [str(REPO / "tests" / "relay.py"), str(port), str(target), *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout.readline().strip() == "ready", proc.communicate(timeout=10)
    return proc, port


@pytest.fixture
def bare(tmp_path, monkeypatch):
    """``scripts/serve.py`` on loopback for a home with no account yet: the operator's studio on a laptop."""
    from tests.conftest import start_studio

    monkeypatch.setenv("VITUNE_HOME", str(tmp_path))
    port = free_port()
    proc = start_studio(tmp_path, port)
    yield {"home": tmp_path, "url": f"http://127.0.0.1:{port}", "port": port}
    proc.terminate()
    proc.wait(30)


OPERATOR_MODE = "Operator mode: no account exists yet"
NO_ACCOUNT = "No account exists yet"


def test_operator_mode_is_the_machines_own_browser_alone(bare):
    """Item 1: before any account exists, the studio (started by serve.py on loopback) acts as the operator for
    a request from this machine's own user on loopback and nobody else: not for a reverse proxy's visitor (it
    says so with X-Forwarded-For), not for another OS user's program opening 127.0.0.1, not for a page that
    reached 127.0.0.1 under another host name (DNS rebinding). Those see how to make the first admin, and may
    not upload."""
    from tests.st_client import StClient

    line = b'{"instruction": "a", "output": "b"}\n'
    with StClient(bare["url"]) as app:
        assert OPERATOR_MODE in app.texts()
        assert app.upload(line)[0] == 204
    proxy, port = _relay(bare["port"], "--forwarded")
    others = [("a reverse proxy's visitor", StClient(f"http://127.0.0.1:{port}")),
              ("a page under another host name", StClient(f"http://rebound.example:{bare['port']}",
                                                          connect_to=("127.0.0.1", bare["port"])))]
    as_root = os.geteuid() == 0 and os.path.exists("/usr/bin/python3")
    if as_root:   # another OS user (nobody) opening 127.0.0.1: a relay running as that user
        stranger, stranger_port = _relay(bare["port"], user=65534)
        others.append(("another OS user", StClient(f"http://127.0.0.1:{stranger_port}")))
    try:
        for who, client in others:
            with client as app:
                text = app.texts()
                assert OPERATOR_MODE not in text and NO_ACCOUNT in text, (who, text)
                assert app.upload(line)[0] == 403, who
    finally:
        proxy.terminate()
        if as_root:
            stranger.terminate()
    assert not accounts.any_account()


def test_streamlit_run_app_py_is_not_operator_mode(tmp_path):
    """Item 1: ``streamlit run app.py`` (no serve.py, every interface) shows how to make the first admin, never
    the operator's studio."""
    from tests.st_client import StClient

    port = free_port()
    env = dict(os.environ, VITUNE_HOME=str(tmp_path), VITUNE_SLOTS=",")
    log = open(tmp_path / "streamlit-run.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                             "--server.headless", "true", "--browser.gatherUsageStats", "false"],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        import urllib.request

        for _ in range(240):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1)
                break
            except Exception:
                assert proc.poll() is None, (tmp_path / "streamlit-run.log").read_text()[-2000:]
                time.sleep(0.5)
        with StClient(f"http://127.0.0.1:{port}") as app:
            text = app.texts()
        assert OPERATOR_MODE not in text and NO_ACCOUNT in text, text
    finally:
        proc.terminate()
        proc.wait(30)


def test_no_account_is_made_from_a_page_in_operator_mode(home):
    """Item 1: the first admin is made on the server, never by a web page: the browser's operator may not add
    an account (of any role, a company email included), while the CLI's operator may."""
    from core.access.principal import web_operator

    browser = web_operator()
    assert browser.role == "admin" and browser.kind == "operator"
    for name, oidc in (("boss@saoviet.vn", True), ("boss", False)):
        with pytest.raises(accounts.AccountError, match="made on the server"):
            accounts.add_user(name, "admin", actor=browser, oidc=oidc, password=None if oidc else "mat-khau-du-dai")
    assert not accounts.any_account() and store.one("SELECT count(*) AS n FROM audit_log")["n"] == 0
    assert accounts.add_user("boss@saoviet.vn", "admin", actor=OPERATOR, oidc=True)["role"] == "admin"


def test_company_sign_in_needs_a_verified_email_from_the_pinned_issuer_and_stays_bound_to_its_subject(home):
    """Item 4: an ID token's email gets its account's role only when the provider says it verified it, the token
    comes from the configured issuer (the one discovery names: the metadata URL without its well-known path,
    or [auth] issuer), and, where configured, from the tenant or Workspace domain; the first sign-in binds the
    account to the identity's (iss, sub), and another identity with the same email is refused after that."""
    iss = "https://login.example.com/tenant-sao-viet/v2.0"
    config = {"server_metadata_url": iss + "/.well-known/openid-configuration"}
    accounts.add_user("chi@saoviet.vn", "viewer", actor=OPERATOR, oidc=True)
    accounts.add_user("sep@saoviet.vn", "admin", actor=OPERATOR, oidc=True)
    chi = {"iss": iss, "sub": "sub-chi", "email": "chi@saoviet.vn", "email_verified": True, "name": "Chi"}
    refused = {
        "not verified": [{**chi, "email_verified": False}, {**chi, "email_verified": "false"},
                         {k: v for k, v in chi.items() if k != "email_verified"}],
        "issuer": [{**chi, "iss": "https://login.example.com/tenant-ke-la/v2.0"}],
        "no account": [{**chi, "email": "la@ngoai.vn"}],
    }
    for reason, tokens in refused.items():
        for claims in tokens:
            with pytest.raises(accounts.OidcRefused) as why:
                accounts.from_oidc(claims, config)
            assert reason in str(why.value), (claims, why.value)
    assert store.one("SELECT oidc_subject FROM users WHERE name = 'chi@saoviet.vn'")["oidc_subject"] is None
    who = accounts.from_oidc(chi, config)
    assert (who.name, who.role, who.kind) == ("chi@saoviet.vn", "viewer", "oidc")
    bound = store.one("SELECT oidc_issuer, oidc_subject FROM users WHERE name = 'chi@saoviet.vn'")
    assert (bound["oidc_issuer"], bound["oidc_subject"]) == (iss, "sub-chi")
    assert accounts.from_oidc(chi, config) == who   # the same identity, again
    with pytest.raises(accounts.OidcRefused, match="bound to another identity"):
        accounts.from_oidc({**chi, "sub": "sub-nguoi-khac"}, config)   # the email, reissued to someone else
    audit = [r["action"] for r in store.rows("SELECT action FROM audit_log WHERE subject = 'chi@saoviet.vn' ORDER BY id")]
    assert audit == ["user.added", "user.oidc_bound"]
    accounts.unbind_oidc("chi@saoviet.vn", actor=OPERATOR)   # an admin lets the next sign-in bind it again
    assert accounts.from_oidc({**chi, "sub": "sub-moi"}, config).name == "chi@saoviet.vn"
    # an explicit issuer, a tenant (Entra's tid) and a Workspace domain (Google's hd)
    entra = {"server_metadata_url": "https://login.microsoftonline.com/organizations/v2.0/.well-known/openid-configuration",
             "issuer": "https://login.microsoftonline.com/11111111-2222/v2.0", "tenant": "11111111-2222"}
    sep = {"iss": entra["issuer"], "sub": "sub-sep", "tid": "11111111-2222", "email": "sep@saoviet.vn",
           "xms_edov": True}   # Entra sends no email_verified: its optional xms_edov claim, in the pinned tenant
    with pytest.raises(accounts.OidcRefused, match="tenant"):
        accounts.from_oidc({**sep, "tid": "99999999-0000"}, entra)
    with pytest.raises(accounts.OidcRefused, match="not verified"):
        accounts.from_oidc({**sep, "xms_edov": False}, entra)
    assert accounts.from_oidc(sep, entra).role == "admin"
    google = {"server_metadata_url": "https://accounts.google.com/.well-known/openid-configuration",
              "hosted_domain": "saoviet.vn"}
    lan = {"iss": "https://accounts.google.com", "sub": "g-1", "email": "lan@saoviet.vn", "email_verified": True}
    accounts.add_user("lan@saoviet.vn", "engineer", actor=OPERATOR, oidc=True)
    with pytest.raises(accounts.OidcRefused, match="domain"):
        accounts.from_oidc(lan, google)          # a personal Google account that uses the same address
    assert accounts.from_oidc({**lan, "hd": "saoviet.vn"}, google).role == "engineer"
    accounts.disable("lan@saoviet.vn", actor=OPERATOR)
    with pytest.raises(accounts.OidcRefused, match="no account"):
        accounts.from_oidc({**lan, "hd": "saoviet.vn"}, google)


def test_odd_sign_in_input_is_answered_with_the_form_never_a_traceback(served):
    """Kept so (issue 24): whatever a POST to the sign-in form carries, the answer is the form again with one
    line, never a 500: no CSRF token, more fields than the form has, bytes that are not UTF-8, a multipart
    body, a NUL in the name, an empty body."""
    import re
    import urllib.parse

    from tests.st_client import StClient

    client = StClient(served["url"], headers={"X-Forwarded-For": "198.51.100.99"})
    page = client.request("GET", "/auth/signin")[2]
    csrf = re.search(rb'name="csrf" value="([^"]+)"', page).group(1).decode()
    client.cookies["vitune_csrf"] = csrf
    form = "application/x-www-form-urlencoded"
    bodies = {
        "no csrf": (urllib.parse.urlencode({"username": "boss", "password": "x"}).encode(), form),
        "many fields": ("&".join(f"f{i}=v" for i in range(50)).encode() + f"&csrf={csrf}".encode(), form),
        "not utf-8": (b"username=\xff\xfe&password=\xc3\x28&csrf=" + csrf.encode(), form),
        "multipart": (b"--b\r\nContent-Disposition: form-data; name=\"username\"\r\n\r\nboss\r\n--b--\r\n",
                      "multipart/form-data; boundary=b"),
        "nul": (urllib.parse.urlencode({"username": "bo\x00ss", "password": "mat-khau-sai-roi", "csrf": csrf}).encode(),
                form),
        "empty": (b"", form),
    }
    for what, (body, kind) in bodies.items():
        status, headers, _ = client.request("POST", "/auth/signin", body, {"Content-Type": kind})
        assert status == 303 and headers["Location"].startswith("/auth/signin?error="), (what, status)
