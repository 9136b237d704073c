"""Team access in real Chromium against the real server (scripts/serve.py): the sign-in form, roles,
a viewer's limits, an engineer's recorded override, client demo links, sign-out, a restart, and OIDC
sign-in through Streamlit's st.login against a real OpenID Connect provider on loopback."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from core import store
from core import i18n
from core.access import accounts, demo_links
from core.access.principal import AccessDenied
from core.evaluation import gate
from core.jobs import queue, supervisor
from tests.conftest import OPERATOR, REPO, cli, free_port, choose, person, settled, tiny_pairs, write_jsonl
from tests.oidc_provider import Provider

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
PASSWORDS = {"boss": "mat-khau-cua-boss", "nam": "mat-khau-cua-nam", "vy": "mat-khau-cua-vy"}
PAGE_PATHS = ["/", "/datasets", "/generate", "/train", "/evaluate", "/playground", "/deploy", "/admin", "/no-such-page"]


class Studio:
    """The studio's server on a home of its own, started the way scripts/studio.sh starts it."""

    def __init__(self, home: Path, port: int, secrets: Path | None, slots: str = "cpu"):
        self.home, self.port, self.secrets, self.slots = home, port, secrets, slots
        self.url = f"http://127.0.0.1:{port}"
        self.proc = None

    def start(self) -> "Studio":
        env = dict(os.environ, VITUNE_HOME=str(self.home), VITUNE_SLOTS=self.slots, AUTHLIB_INSECURE_TRANSPORT="1")
        log = open(self.home / f"studio-{self.port}.log", "ab")
        secrets = ["--secrets.files", str(self.secrets)] if self.secrets else []
        self.proc = subprocess.Popen([sys.executable, "scripts/serve.py", "--server.port", str(self.port), *secrets],
                                     cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        for _ in range(240):
            try:
                urllib.request.urlopen(self.url + "/_stcore/health", timeout=1)
                return self
            except Exception:
                assert self.proc.poll() is None, (self.home / f"studio-{self.port}.log").read_text()[-2000:]
                time.sleep(0.5)
        raise AssertionError("the studio did not start")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture(scope="module")
def team(tmp_path_factory, default_model):
    """A studio with accounts (admin boss, engineer nam, viewer vy, a company account), an unreviewed
    dataset version, a finished one-step run, and an OIDC provider on loopback for st.login."""
    home = tmp_path_factory.mktemp("team-home")
    data = write_jsonl(home / "p.jsonl", tiny_pairs(16))
    version = json.loads(cli("dataset", "import", str(data), "--name", "cskh", "--json", home=home).stdout)
    run = json.loads(cli("train", "--dataset", version["dataset_version"], "--preset", "quick test (CPU, 20 steps)",
                         "--max-steps", "1", "--override-review", "a run for the demo link", "--json", home=home).stdout)
    assert run["state"] == "succeeded", run
    env = dict(os.environ, VITUNE_HOME=str(home))
    roles = {"boss": "admin", "nam": "engineer", "vy": "viewer"}
    for name, password in PASSWORDS.items():
        subprocess.run([sys.executable, "-m", "core", "users", "add", name, "--role", roles[name]], input=password + "\n",
                       text=True, check=True, capture_output=True, cwd=REPO, env=env)
    subprocess.run([sys.executable, "-m", "core", "users", "add", "chi@saoviet.vn", "--oidc", "--role", "viewer"],
                   text=True, check=True, capture_output=True, cwd=REPO, env=env)
    provider = Provider({"chi@saoviet.vn": ("Chi Nguyễn", "mk-cong-ty-chi"), "la@ngoai.vn": ("Khách lạ", "mk-la-123")},
                        client_id="vitune-studio", client_secret="bi-mat-client").start()
    port = free_port()
    secrets = home / "secrets.toml"
    secrets.write_text(f"""[auth]
redirect_uri = "http://127.0.0.1:{port}/oauth2callback"
cookie_secret = "a-long-random-cookie-secret-for-the-test"
client_id = "vitune-studio"
client_secret = "bi-mat-client"
server_metadata_url = "{provider.metadata_url}"
""", encoding="utf-8")
    studio = Studio(home, port, secrets).start()
    os.environ["VITUNE_HOME"], previous = str(home), os.environ.get("VITUNE_HOME")
    yield {"home": home, "studio": studio, "provider": provider, "version": version["dataset_version"],
           "run": run["run"]}
    studio.stop()
    provider.stop()
    for job in queue.list_jobs(actor=OPERATOR):
        if job["state"] in ("queued", "running"):
            supervisor.cancel(job["id"], actor=OPERATOR)
    if previous is None:
        os.environ.pop("VITUNE_HOME")
    else:
        os.environ["VITUNE_HOME"] = previous


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


def _nav(page) -> list[str]:
    # the sidebar's caption ("Signed in as …") is sent before st.navigation's message in the same run, so a
    # test that waited for the caption may look before the links arrive: wait for the first link, then read
    links = page.locator('[data-testid="stSidebarNav"] a')
    links.first.wait_for(timeout=30_000)
    return [t.split("\n")[-1] for t in links.all_inner_texts()]


def _sign_in(page, studio, name, password=None, path="/"):
    page.goto(studio.url + path)
    page.wait_for_url(re.compile(r".*/auth/signin.*"), timeout=30_000)
    page.fill("#username", name)
    page.fill("#password", password or PASSWORDS[name])
    page.click("button[type=submit]")
    page.locator('[data-testid="stSidebar"]').get_by_text(f"Signed in as {name}").wait_for(timeout=60_000)


def test_an_unauthenticated_browser_sees_only_the_sign_in_on_every_page_address(team, browser):
    page = browser.new_page()
    for path in PAGE_PATHS:
        page.goto(team["studio"].url + path)
        page.wait_for_url(re.compile(r".*/auth/signin\?next=.*"), timeout=30_000)
        assert page.locator("#username").count() == 1 and page.locator("#password").count() == 1
        assert "Datasets" not in page.inner_text("body") and page.locator('[data-testid="stSidebarNav"]').count() == 0
    assert page.locator("#company").inner_text() == "sign in with your company account"   # [auth] is configured


def test_a_viewer_cannot_reach_train_deploy_or_the_thresholds_and_core_refuses_them_too(team, browser):
    page = browser.new_page()
    _sign_in(page, team["studio"], "vy")
    assert _nav(page) == ["Datasets", "Evaluate", "Playground"]
    for path in ("/train", "/deploy", "/admin", "/generate"):
        page.goto(team["studio"].url + path)
        page.get_by_role("heading", name="Datasets").first.wait_for(timeout=60_000)   # never that page
        assert page.get_by_role("heading", name=re.compile("^(Train|Deploy|Admin|Generate pairs)$")).count() == 0
    page.goto(team["studio"].url + "/evaluate")
    page.get_by_role("heading", name="Evaluate").first.wait_for(timeout=60_000)
    page.get_by_role("tab", name="Gate thresholds").click()
    page.get_by_text("Changing them needs an admin.").wait_for(timeout=30_000)
    assert page.get_by_role("button", name="Save thresholds").count() == 0
    # the same viewer, as the studio resolves it from the browser's own session cookie, is refused by core
    token = next(c["value"] for c in page.context.cookies() if c["name"] == "vitune_session")
    vy = accounts.from_session(token)
    assert (vy.name, vy.role) == ("vy", "viewer")
    with pytest.raises(AccessDenied, match=r"vy \(viewer\) may not gate thresholds"):
        gate.set_thresholds(0.0, 0.0, actor=vy)
    with pytest.raises(AccessDenied, match=r"vy \(viewer\) may not train submit"):
        from core.training import presets, runs

        runs.submit_train(team["version"], presets.preset("guide (r=16)"), actor=vy, override_review="x")


def test_an_engineers_override_is_recorded_under_the_engineers_identity(team, browser):
    page = browser.new_page()
    _sign_in(page, team["studio"], "nam", path="/train")
    page.get_by_role("heading", name="Train").first.wait_for(timeout=60_000)
    page.get_by_label(re.compile("^Override reason")).fill("khách cần demo gấp, đã xem tay")
    page.get_by_role("button", name="Queue training job").click()
    page.get_by_text(re.compile(r"^Queued job \d+ for run")).wait_for(timeout=60_000)
    row = store.one("SELECT actor, role, detail FROM audit_log WHERE action = 'review.override' ORDER BY id DESC LIMIT 1")
    assert (row["actor"], row["role"]) == ("nam", "engineer")
    assert json.loads(row["detail"])["reason"] == "khách cần demo gấp, đã xem tay"
    job = queue.list_jobs(1, "train", actor=OPERATOR)[0]
    assert job["owner"] == "nam"
    supervisor.cancel(job["id"], actor=OPERATOR)


def test_a_wrong_password_leaves_nothing_in_the_log_but_the_attempt(team, browser):
    page = browser.new_page()
    before = store.one("SELECT max(id) AS n FROM audit_log")["n"]
    sessions = store.one("SELECT count(*) AS n FROM sessions")["n"]
    page.goto(team["studio"].url + "/train")
    page.fill("#username", "vy")
    page.fill("#password", "doan-bua-sai")
    page.click("button[type=submit]")
    page.locator(".err").wait_for(timeout=30_000)
    assert page.locator(".err").inner_text() == "wrong name or password" and page.locator("#password").count() == 1
    rows = store.rows("SELECT actor, action, subject, detail FROM audit_log WHERE id > ? ORDER BY id", [before])
    assert [(r["actor"], r["action"], r["subject"]) for r in rows] == [(None, "auth.failed", "vy")]
    assert "doan-bua-sai" not in rows[0]["detail"] and json.loads(rows[0]["detail"])["reason"] == "wrong password"
    assert store.one("SELECT count(*) AS n FROM sessions")["n"] == sessions
    assert not any(c["name"] == "vitune_session" for c in page.context.cookies())
    store.execute("UPDATE users SET failed_attempts = 0 WHERE name = 'vy'")


def test_a_demo_link_shows_exactly_its_models_and_stops_when_revoked_or_expired(team, browser):
    home, studio = team["home"], team["studio"]
    made = cli("demo", "create", "--run", team["run"], "--title", "Trợ lý CSKH — bản thử", "--prompt",
               "Khách hỏi về hoàn tiền", "--base-url", studio.url, "--json", home=home)
    link = json.loads(made.stdout)
    page = browser.new_context().new_page()
    asked = []   # every address the client's browser asks for, from the first load to the expired link
    page.on("request", lambda r: asked.append(r.url))
    page.goto(link["url"])
    # a demo link opens in Vietnamese (this suite runs the team's pages in English: VITUNE_LANGUAGE=en)
    vi = lambda text: i18n.translate(text, "vi")  # noqa: E731
    assert vi("Playground") != "Playground" and vi("Stop") != "Stop"
    page.get_by_role("heading", name=f"{vi('Playground')} — Trợ lý CSKH — bản thử").wait_for(timeout=60_000)
    page.locator('[data-testid="stChatInput"]').wait_for(timeout=60_000)
    assert page.locator('[data-testid="stSidebarNav"]').count() == 0          # no other page to go to
    body = page.inner_text("body")
    assert team["version"] not in body and "Datasets" not in body and vi("Datasets") not in body
    page.locator('[data-testid="stSelectbox"]').first.click()                  # the link's models, and only them
    options = page.get_by_role("option").all_inner_texts()
    assert options == ["Trợ lý CSKH — bản thử"], options                      # named by the link, not by a run id
    page.keyboard.press("Escape")
    page.get_by_role("button", name="Khách hỏi về hoàn tiền").click()            # a curated demo prompt, asked at once
    messages = page.locator('[data-testid="stChatMessage"]')
    messages.nth(1).wait_for(timeout=300_000)                                     # the answer, from an inference worker
    page.get_by_role("button", name=vi("Stop")).wait_for(state="detached", timeout=300_000)   # the stream has ended
    assert "Khách hỏi về hoàn tiền" in messages.nth(0).inner_text()
    assert messages.nth(1).inner_text().strip()
    assert page.locator('[data-testid="stException"]').count() == 0
    # nothing of the studio's ids on the client's page: no dataset version, run, job, base model or file path
    body = page.inner_text("body")
    seen = [t for t in ("ds-", team["version"], team["run"], "run-", "job", "gemma", "/data/", link["id"]) if t in body]
    assert seen == [], (seen, body)
    modes = "|".join(re.escape(m) for m in ("Side by side", "Blind vote", vi("Side by side"), vi("Blind vote")))
    assert page.get_by_text(re.compile(f"^({modes})$")).count() == 0   # a client only chats
    token = link["url"].split("demo=")[1]
    for path in ("/train", "/deploy", "/admin", "/datasets"):                    # typing any address: still the playground
        page.goto(f"{studio.url}{path}?demo={token}")
        page.get_by_role("heading", name=re.compile("^" + re.escape(vi("Playground")))).wait_for(timeout=60_000)
    page.goto(f"{studio.url}/train?demo=not-a-token")
    page.get_by_text("This demo link is not valid").wait_for(timeout=60_000)
    assert page.locator('[data-testid="stSidebarNav"]').count() == 0
    cli("demo", "revoke", link["id"], home=home)
    page.goto(link["url"])
    page.get_by_text("This demo link is not valid").wait_for(timeout=60_000)
    short = json.loads(cli("demo", "create", "--run", team["run"], "--days", "0.0001", "--base-url", studio.url,
                           "--json", home=home).stdout)   # 8.6 s
    page.goto(short["url"])
    page.get_by_role("heading", name=re.compile("^" + re.escape(vi("Playground")))).wait_for(timeout=60_000)
    time.sleep(max(0.0, (demo_links.get(short["id"])["expires_at"].timestamp() - time.time())) + 1)
    page.goto(short["url"])
    page.get_by_text("This demo link is not valid").wait_for(timeout=60_000)
    audit = [r["action"] for r in store.rows("SELECT action FROM audit_log WHERE subject IN (?, ?) ORDER BY id",
                                             [link["id"], short["id"]])]
    assert audit == ["demo.created", "demo.revoked", "demo.created"]
    # the client's browser asked the studio for everything and nothing of any other host (the tab's icon
    # included: a Material icon would have come from Google's font CDN)
    elsewhere = [u for u in asked if not u.startswith((studio.url + "/", "data:", "blob:"))]
    assert asked and not elsewhere, elsewhere


def test_a_sign_in_survives_a_reload_and_a_restart_and_sign_out_ends_it(team, browser):
    context = browser.new_context()
    page = context.new_page()
    _sign_in(page, team["studio"], "boss")
    assert _nav(page) == ["Datasets", "Generate pairs", "Train", "Evaluate", "Playground", "Deploy", "Admin"]
    page.reload()
    page.locator('[data-testid="stSidebar"]').get_by_text("Signed in as boss").wait_for(timeout=60_000)
    team["studio"].stop()
    team["studio"].start()
    page.goto(team["studio"].url + "/admin")
    page.get_by_role("heading", name="Admin").wait_for(timeout=60_000)
    page.locator('[data-testid="stSidebar"]').get_by_text("Signed in as boss").wait_for(timeout=60_000)
    page.get_by_role("tab", name="Audit log").click()
    page.locator("#audit-csv").get_by_text("Download as CSV").wait_for(timeout=30_000)
    page.locator("#signout-link").click()
    page.wait_for_url(re.compile(r".*/auth/signin.*"), timeout=30_000)
    page.goto(team["studio"].url + "/admin")
    page.wait_for_url(re.compile(r".*/auth/signin\?next=/admin"), timeout=30_000)
    assert store.one("SELECT action FROM audit_log WHERE actor = 'boss' ORDER BY id DESC LIMIT 1")["action"] == \
        "auth.signed_out"


def test_oidc_sign_in_end_to_end_against_a_provider_on_loopback(team, browser):
    page = browser.new_context().new_page()
    page.goto(team["studio"].url + "/evaluate")
    page.wait_for_url(re.compile(r".*/auth/signin.*"), timeout=30_000)
    page.locator("#company").click()                                   # → st.login → the provider's form
    page.wait_for_url(re.compile(re.escape(team["provider"].issuer) + r"/authorize.*"), timeout=60_000)
    page.fill("#login_email", "chi@saoviet.vn")
    page.fill("#login_password", "mk-cong-ty-chi")
    page.click("#login_submit")                                         # → /oauth2callback → the studio
    page.locator('[data-testid="stSidebar"]').get_by_text("Signed in as chi@saoviet.vn").wait_for(timeout=60_000)
    assert _nav(page) == ["Datasets", "Evaluate", "Playground"]         # the role an admin gave the email
    assert team["provider"].sign_ins == ["chi@saoviet.vn"]
    # an identity the provider vouches for but no admin has let in: no access
    other = browser.new_context().new_page()
    other.goto(team["studio"].url + "/?signin=oidc")
    other.wait_for_url(re.compile(re.escape(team["provider"].issuer) + r"/authorize.*"), timeout=60_000)
    other.fill("#login_email", "la@ngoai.vn")
    other.fill("#login_password", "mk-la-123")
    other.click("#login_submit")
    other.get_by_text("la@ngoai.vn has no access to this studio").wait_for(timeout=60_000)
    assert other.locator('[data-testid="stSidebarNav"]').count() == 0


# ── the second pass (issue 24) ──────────────────────────────────────────────────────────────────────────────


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """A studio with no slot to run on (so a queued job stays queued), accounts (admin boss, engineer nam, the
    company accounts sep@ (admin) and chi@ (viewer)), a dataset version, and an OIDC provider whose accounts
    include an outsider claiming sep@'s address unverified, and another reissuing chi@'s to someone else."""
    home = tmp_path_factory.mktemp("guarded-home")
    data = write_jsonl(home / "p.jsonl", tiny_pairs(16))
    version = json.loads(cli("dataset", "import", str(data), "--name", "cskh", "--json", home=home).stdout)
    env = dict(os.environ, VITUNE_HOME=str(home))
    for name, role in (("boss", "admin"), ("nam", "engineer")):
        subprocess.run([sys.executable, "-m", "core", "users", "add", name, "--role", role], input=PASSWORDS[name] + "\n",
                       text=True, check=True, capture_output=True, cwd=REPO, env=env)
    for email, role in (("sep@saoviet.vn", "admin"), ("chi@saoviet.vn", "viewer")):
        subprocess.run([sys.executable, "-m", "core", "users", "add", email, "--oidc", "--role", role],
                       text=True, check=True, capture_output=True, cwd=REPO, env=env)
    provider = Provider({
        "chi@saoviet.vn": ("Chi Nguyễn", "mk-cong-ty-chi"),
        "ke-gia@ngoai.vn": ("Kẻ giả", "mk-ke-gia-1", {"email": "sep@saoviet.vn", "email_verified": False}),
        "ke-ngoai@ngoai.vn": ("Kẻ ngoài", "mk-ke-ngoai-1", {"email": "sep@saoviet.vn"}),
        "chi-moi@saoviet.vn": ("Người khác", "mk-chi-moi-1", {"email": "chi@saoviet.vn", "sub": "sub-nguoi-khac"}),
    }, client_id="vitune-studio", client_secret="bi-mat-client").start()
    port = free_port()
    secrets = home / "secrets.toml"
    secrets.write_text(f"""[auth]
redirect_uri = "http://127.0.0.1:{port}/oauth2callback"
cookie_secret = "a-long-random-cookie-secret-for-the-test"
client_id = "vitune-studio"
client_secret = "bi-mat-client"
server_metadata_url = "{provider.metadata_url}"
""", encoding="utf-8")
    studio = Studio(home, port, secrets, slots=",").start()
    os.environ["VITUNE_HOME"], previous = str(home), os.environ.get("VITUNE_HOME")
    yield {"home": home, "studio": studio, "provider": provider, "version": version["dataset_version"]}
    studio.stop()
    provider.stop()
    if previous is None:
        os.environ.pop("VITUNE_HOME")
    else:
        os.environ["VITUNE_HOME"] = previous


def _click_if_there(locator, timeout_ms: int = 3000) -> bool:
    """Click a button that may be gone by now (the page may already have redrawn without it)."""
    try:
        locator.click(timeout=timeout_ms)
        return True
    except Exception:
        return False


def test_a_disabled_engineers_open_train_tab_stops_and_its_cancel_cancels_nothing(guarded, browser):
    """Item 3: the Train tab's live view reruns on its own every 2 s; each of its runs asks again who the browser
    is, so an engineer disabled meanwhile sees the sign-in at the next refresh, and a Cancel pressed after the
    disabling cancels nothing."""
    from core.training import presets, runs

    job = runs.submit_train(guarded["version"], presets.preset("quick test (CPU, 20 steps)"),
                            actor=person("nam", "engineer"), override_review="a job to cancel")
    page = browser.new_context().new_page()
    _sign_in(page, guarded["studio"], "nam", path="/train")
    cancel = page.get_by_role("button", name="Cancel")
    cancel.first.wait_for(timeout=60_000)
    accounts.disable("nam", actor=OPERATOR)
    try:
        _click_if_there(cancel.first)
        page.get_by_text("Sign in to continue.").wait_for(timeout=30_000)
        assert queue.get_job(job["id"])["state"] == "queued"
        assert not store.rows("SELECT id FROM audit_log WHERE action = 'job.cancelled' AND subject = ?",
                              [str(job["id"])])
        assert page.locator('[data-testid="stSidebarNav"]').count() == 0
    finally:
        accounts.reset_password("nam", PASSWORDS["nam"], actor=OPERATOR)   # enables it again, for the tests below
        if queue.get_job(job["id"])["state"] == "queued":
            supervisor.cancel(job["id"], actor=OPERATOR)


def test_a_demoted_engineers_open_generate_tab_stops_nothing(guarded, browser):
    """Item 3: the same for a role taken away: the engineer made a viewer presses Stop on a generation in an open
    Generate pairs tab; nothing is asked of the job, and the tab becomes what a viewer may see."""
    from core.datasets.generation import generations
    from core.datasets.generation.generations import STOP_FILE

    doc = guarded["home"] / "quy-trinh.md"
    doc.write_text("Quy trình đổi trả hàng trong 7 ngày làm việc.", encoding="utf-8")
    job = generations.submit([doc], "sinh-thu", local=True, actor=person("nam", "engineer"))
    page = browser.new_context().new_page()
    _sign_in(page, guarded["studio"], "nam", path="/generate")
    stop = page.get_by_role("button", name="Stop and keep what was made")
    stop.first.wait_for(timeout=60_000)
    accounts.set_role("nam", "viewer", actor=OPERATOR)
    try:
        _click_if_there(stop.first)
        page.get_by_role("heading", name="Datasets").first.wait_for(timeout=30_000)   # a viewer's first page
        assert _nav(page) == ["Datasets", "Evaluate", "Playground"]
        assert not (Path(job["job_dir"]) / STOP_FILE).exists()
    finally:
        accounts.set_role("nam", "engineer", actor=OPERATOR)
        supervisor.cancel(job["id"], actor=OPERATOR)


def _company_sign_in(browser, studio, provider, login: str, password: str):
    page = browser.new_context().new_page()
    page.goto(studio.url + "/?signin=oidc")
    page.wait_for_url(re.compile(re.escape(provider.issuer) + r"/authorize.*"), timeout=60_000)
    page.fill("#login_email", login)
    page.fill("#login_password", password)
    page.click("#login_submit")
    return page


def test_company_sign_in_refuses_an_unverified_email_a_foreign_issuer_and_another_subject(guarded, browser):
    """Item 4, against the real provider on loopback: an outsider whose token says sep@ (an admin's address)
    unverified, or verified by another issuer, is refused; chi@'s first sign-in binds the account to its
    identity, and another identity the provider later gives chi@'s address is refused."""
    studio, provider = guarded["studio"], guarded["provider"]
    page = _company_sign_in(browser, studio, provider, "ke-gia@ngoai.vn", "mk-ke-gia-1")
    page.get_by_text("sep@saoviet.vn has no access to this studio").wait_for(timeout=60_000)
    assert "not verified" in page.inner_text("body") and page.locator('[data-testid="stSidebarNav"]').count() == 0
    provider.speak_as(provider.issuer + "/tenant-ke-la")
    try:
        page = _company_sign_in(browser, studio, provider, "ke-ngoai@ngoai.vn", "mk-ke-ngoai-1")
        page.get_by_text("sep@saoviet.vn has no access to this studio").wait_for(timeout=60_000)
        assert "issuer" in page.inner_text("body") and page.locator('[data-testid="stSidebarNav"]').count() == 0
    finally:
        provider.speak_as(None)
    page = _company_sign_in(browser, studio, provider, "chi@saoviet.vn", "mk-cong-ty-chi")
    page.locator('[data-testid="stSidebar"]').get_by_text("Signed in as chi@saoviet.vn").wait_for(timeout=60_000)
    page = _company_sign_in(browser, studio, provider, "chi-moi@saoviet.vn", "mk-chi-moi-1")
    page.get_by_text("chi@saoviet.vn has no access to this studio").wait_for(timeout=60_000)
    assert "bound to another identity" in page.inner_text("body")
    assert [r["action"] for r in store.rows("SELECT action FROM audit_log WHERE subject = 'sep@saoviet.vn'")] == \
        ["user.added"]


def test_the_audit_export_is_built_on_request_for_a_signed_in_admin_alone(guarded, browser):
    """Item 16: the audit log's CSV is made when it is asked for (a row written after the page was drawn is in
    it) and only for the admin's own signed-in browser: its address gives another browser nothing, nor the
    same browser once signed out."""
    from core.access import projects

    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    _sign_in(page, guarded["studio"], "boss", path="/admin")
    page.get_by_role("tab", name="Audit log").click()
    link = page.get_by_text("Download as CSV")
    link.wait_for(timeout=30_000)
    projects.add_project("sau-khi-ve", actor=OPERATOR)   # after the page was drawn
    with page.expect_download(timeout=30_000) as got:
        link.click()
    download = got.value
    csv_text = Path(download.path()).read_text(encoding="utf-8-sig")
    assert csv_text.startswith("id,ts,actor,role,action,subject,project,detail") and "sau-khi-ve" in csv_text
    url = download.url
    stranger = browser.new_context().request.get(url)
    assert stranger.status == 403 and "sau-khi-ve" not in stranger.text()
    page.goto(guarded["studio"].url + "/auth/signout")
    page.wait_for_url(re.compile(r".*/auth/signin.*"), timeout=30_000)
    after = context.request.get(url)
    assert after.status == 403 and "sau-khi-ve" not in after.text()


@pytest.fixture(scope="module")
def bare_studio(tmp_path_factory):
    """The studio on a laptop: serve.py on loopback, no account yet."""
    home = tmp_path_factory.mktemp("bare-browser-home")
    studio = Studio(home, free_port(), None).start()
    os.environ["VITUNE_HOME"], previous = str(home), os.environ.get("VITUNE_HOME")
    yield {"home": home, "studio": studio}
    studio.stop()
    if previous is None:
        os.environ.pop("VITUNE_HOME")
    else:
        os.environ["VITUNE_HOME"] = previous


def test_operator_mode_is_this_machines_browser_alone_and_makes_no_account(bare_studio, browser):
    """Item 1 in Chromium: the machine's own browser on 127.0.0.1 is the operator, but may not make the first
    admin (nor any account) from the Admin page; the same studio behind a reverse proxy (Caddy's headers), or
    reached under another host name (DNS rebinding), shows only how to make the first admin."""
    from tests.test_access import _relay

    studio = bare_studio["studio"]
    page = browser.new_context().new_page()
    page.goto(studio.url + "/admin")
    page.get_by_text("Operator mode: no account exists yet").wait_for(timeout=60_000)
    page.get_by_role("heading", name="Admin").wait_for(timeout=30_000)
    settled(page)
    form = page.locator('[data-testid="stForm"]').filter(has_text="Add company account")
    form.get_by_label("Email").fill("ke-gian@ngoai.vn")
    choose(page, "oidc-role", "admin")
    form.get_by_role("button", name="Add company account").click()
    page.get_by_text("made on the server").wait_for(timeout=30_000)
    assert not accounts.any_account()
    proxy, port = _relay(studio.port, "--forwarded")
    # a browser whose DNS answers 127.0.0.1 for a name of the attacker's (a page of theirs, rebound)
    rebound = browser.browser_type.launch(executable_path=CHROMIUM, headless=True,
                                          args=ARGS + ["--host-resolver-rules=MAP rebound.example 127.0.0.1"])
    try:
        for seen, url in ((browser.new_context().new_page(), f"http://127.0.0.1:{port}/admin"),
                          (rebound.new_page(), f"http://rebound.example:{studio.port}/admin")):
            seen.goto(url)
            seen.get_by_text("No account exists yet").wait_for(timeout=60_000)
            assert "Operator mode" not in seen.inner_text("body")
            assert seen.locator('[data-testid="stSidebarNav"]').count() == 0
    finally:
        rebound.close()
        proxy.terminate()
