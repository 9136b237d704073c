"""Shared fixtures. Every test runs against a temporary studio home (VITUNE_HOME); the embedded
default model is the one the setup command prepared under models/base/."""
from __future__ import annotations

import json
import contextlib
import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from core import paths
from core.access.principal import Principal, operator  # noqa: E402
from scripts import launch  # noqa: E402
from scripts.launch import free_port  # noqa: E402,F401  (the tests' port picker)

OPERATOR = operator()   # who the CLI acts as: the machine's operator (an admin)


def person(name: str, role: str = "engineer", projects: list[str] | None = None) -> Principal:
    """A signed-in team member (as the web app resolves one from its session)."""
    return Principal(name=name, role=role, kind="local", projects=frozenset(projects) if projects is not None else None)


def cli(*args: str, home: Path, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``python -m core …`` for real, in its own process, against ``home``."""
    env = dict(os.environ, VITUNE_HOME=str(home), PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, "-m", "core", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"python -m core {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def start_studio(home: Path, port: int, **env_extra: str) -> subprocess.Popen:
    """The studio's web app, started the way scripts/studio.sh starts it, on loopback; waits until healthy
    (``env_extra``: more of the server's environment, e.g. ``VITUNE_LANGUAGE="vi"``)."""
    try:
        return launch.start_studio(home, port, **env_extra)
    except RuntimeError as exc:
        raise AssertionError(str(exc)) from None


@contextlib.contextmanager
def studio_home(home: Path):
    """Core calls of the test process go to the studio's home (the server's own, read alongside it)."""
    previous = os.environ.get("VITUNE_HOME")
    os.environ["VITUNE_HOME"] = str(home)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("VITUNE_HOME", None)
        else:
            os.environ["VITUNE_HOME"] = previous


@pytest.fixture(scope="module")
def chromium():
    """Debian's Chromium, headless, as tests/test_access_browser.py starts it; one for a module's cases."""
    from playwright.sync_api import sync_playwright

    from tests.test_access_browser import ARGS, CHROMIUM

    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: scripts/test.sh installs it")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="session", autouse=True)
def worker_env(tmp_path_factory) -> Path:
    """Every worker the tests start runs under an interpreter that cannot import DuckDB, streamlit or
    plotly, as on a GPU host whose worker environment is the GPU package set alone (tests/worker_env.py)."""
    from tests import worker_env as env

    python = env.build(tmp_path_factory.mktemp("worker-env") / "venv")
    before = os.environ.get("VITUNE_WORKER_PYTHON")
    os.environ["VITUNE_WORKER_PYTHON"] = str(python)
    # endpoints and their keys come from each test's own home: none from the machine running the tests
    for var in [v for v in os.environ if v.startswith("VITUNE_ENDPOINT_") or v == "VITUNE_SECRETS"]:
        os.environ.pop(var)
    # the playground's inference workers a test starts end a minute after its last question
    os.environ.setdefault("VITUNE_PLAYGROUND_IDLE_S", "60")
    # the tests that read the pages' words read them in English, as the pages are written; the Vietnamese
    # interface (everyone's default, and a demo link's) is tests/test_i18n.py's
    os.environ["VITUNE_LANGUAGE"] = "en"
    yield python
    if before is None:
        os.environ.pop("VITUNE_WORKER_PYTHON", None)
    else:
        os.environ["VITUNE_WORKER_PYTHON"] = before


def _cmdline(pid: int) -> bytes:
    """A live process's command line (empty once it has ended: a zombie has none)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _leftover_workers(under: Path) -> list[tuple[int, str, str]]:
    """Job workers still running from this test session's folders: (pid, kind, job folder). Inference workers
    are left out (they end by themselves once idle, and use no CPU while they wait)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in argv if a]
        if "core.worker" not in args:
            continue
        job_dir = Path(args[args.index("core.worker") + 1]) if args.index("core.worker") + 1 < len(args) else None
        if job_dir is None or not str(job_dir).startswith(str(under)):
            continue
        try:
            kind = json.loads((job_dir / "job.json").read_text(encoding="utf-8")).get("kind", "?")
        except (OSError, ValueError):
            kind = "?"
        if kind != "inference":
            found.append((int(proc.name), kind, str(job_dir)))
    return found


@pytest.fixture(scope="module", autouse=True)
def no_leftover_workers(request, tmp_path_factory):
    """A module that ends with a training, export or evaluation worker still running (its CLI timed out, its
    studio was stopped mid-job) would share the two cores with every later module: the worker runs in its
    own session, so nothing else stops it. Each is stopped here and named in the session's summary; one that has
    written its end (status.json) is first given a minute to exit by itself."""
    yield
    import signal
    import time

    from core.jobs.files import TERMINAL

    for pid, kind, job_dir in _leftover_workers(tmp_path_factory.getbasetemp()):
        try:
            ended = json.loads((Path(job_dir) / "status.json").read_text(encoding="utf-8")).get("state") in TERMINAL
        except (OSError, ValueError):
            ended = False
        if ended:   # it has written its end and is on its way out (the interpreter's own teardown): let it go
            deadline = time.monotonic() + 60
            while _cmdline(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if not _cmdline(pid):
                continue
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            continue
        LEFTOVERS.append(f"{request.module.__name__}: a {kind} worker (pid {pid}, {job_dir}) was still running")


# Each test's time as it ends, for the long ones: CI stops the whole run at its limit, and a run stopped there
# prints no --durations table, so the log says on the spot where the minutes went.
LONG_TEST_S = float(os.environ.get("VITUNE_LONG_TEST_S", "30"))
_spent: dict[str, float] = {}


def pytest_runtest_logreport(report):
    _spent[report.nodeid] = _spent.get(report.nodeid, 0.0) + report.duration


def pytest_runtest_logfinish(nodeid, location):
    spent = _spent.pop(nodeid, 0.0)
    if spent >= LONG_TEST_S:
        import time

        sys.stdout.write(f"\n[{time.strftime('%H:%M:%S')}] {spent:.0f} s (setup, call, teardown): {nodeid}\n")
        sys.stdout.flush()


LEFTOVERS: list[str] = []


def pytest_terminal_summary(terminalreporter):
    for line in LEFTOVERS:
        terminalreporter.write_line(f"left running, stopped at the module's end: {line}")


def worker_pythons(home: Path) -> dict[str, set[str]]:
    """For each job kind in a studio home, the interpreters its workers ran under (from their logs)."""
    import re

    found: dict[str, set[str]] = {}
    for log in Path(home).rglob("worker.log"):
        for m in re.finditer(r"job \d+ \((\w+)\) started in .* under (\S+)", log.read_text(errors="replace")):
            found.setdefault(m.group(1), set()).add(m.group(2))
    return found


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("VITUNE_HOME", str(tmp_path))
    monkeypatch.setenv("VITUNE_SLOTS", "cpu")
    return tmp_path


@pytest.fixture(scope="session")
def default_model() -> Path:
    path = paths.default_base_model_dir()
    if not (path / "vitune.json").exists():
        pytest.fail("the default model is not prepared: run `python -m core models fetch-default` (scripts/setup.sh does)")
    return path


@pytest.fixture(scope="session")
def tokenizer(default_model):
    from core.models import load_tokenizer

    return load_tokenizer(str(default_model))


APP = '[data-testid="stApp"]'   # a Streamlit page's root in Chromium


def settled(page, timeout_s: float = 300) -> None:
    """Until a Chromium page's script run has ended (Streamlit marks the app's root with its state): a
    person acts on a page that has settled, and what the next run shows belongs to what they did."""
    page.wait_for_timeout(300)
    page.locator(f'{APP}[data-test-script-state="notRunning"]').wait_for(timeout=timeout_s * 1000)


def choose(page, key: str, label: str, tries: int = 10) -> None:
    """Pick ``label`` in the selectbox of widget key ``key`` as a person would: open its list, click the option.
    A list opened while the page re-renders (a rerun that replaces the widget) closes again before its
    options show (seen in CI on a loaded machine: the option never appeared in 30 s); a person opens it
    again, and so does this, until the option is there."""
    box = page.locator(f".st-key-{key}")
    option = page.get_by_role("option", name=label, exact=True)
    for _ in range(tries):
        box.get_by_role("button", name="Open").click()
        try:
            option.wait_for(state="visible", timeout=5_000)
        except Exception:   # playwright's TimeoutError: the list closed or never opened
            page.keyboard.press("Escape")
            continue
        option.click()
        return
    raise AssertionError(f"the list of {key} never showed {label!r}")


def unfolded(expander, timeout_s: float = 60) -> None:
    """Until an expander (a locator of ``[data-testid="stExpander"]``) is open and done unfolding.
    Streamlit animates an expander's height as it opens, and the content scrolls inside it meanwhile: a
    click aimed at a button in it during those ~0.3 s can find the button moved away between the press
    and the release, and the click goes to the form around it (seen: an Import press that never
    submitted). Done means open, its height the same for three frames, and nothing scrolled inside."""
    details = expander.locator("details").first.element_handle(timeout=timeout_s * 1000)
    page = expander.page
    page.evaluate("() => { window.__unfolding = {height: -1, same: 0}; }")
    page.wait_for_function(
        """(d) => {
             const s = window.__unfolding, h = d.getBoundingClientRect().height;
             s.same = d.open && h === s.height && d.scrollHeight <= d.clientHeight + 1 && d.scrollTop === 0
               ? s.same + 1 : 0;
             s.height = h;
             return s.same >= 3;
           }""", arg=details, polling="raf", timeout=timeout_s * 1000)


def open_tab(at, key: str, english: str):
    """Pick a tab of ``st.tabs(..., key=key, on_change="rerun")`` as a click does (only the open tab's
    content runs), by its label in the page's language; runs the page again."""
    from core import i18n

    at.session_state[key] = i18n.translate(english, at.session_state["lang"])
    return at.run()


def write_jsonl(path: Path, rows: list) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write((row if isinstance(row, str) else json.dumps(row, ensure_ascii=False)) + "\n")
    return path


_TONES = "\u0300\u0301\u0303\u0309\u0323"


def to_cp1258(text: str) -> bytes:
    """Text as Windows-1258 writes Vietnamese: precomposed vowels (ơ, ư, â, …), combining tone marks."""
    out = []
    for ch in unicodedata.normalize("NFC", text):
        parts = unicodedata.normalize("NFD", ch)
        tones = "".join(p for p in parts if p in _TONES)
        out.append(unicodedata.normalize("NFC", "".join(p for p in parts if p not in _TONES)) + tones)
    return "".join(out).encode("cp1258")


def tiny_pairs(n: int = 24) -> list[dict]:
    return [{"instruction": f"Trả lời khách hàng về đơn hàng số {i}.",
             "input": f"Tôi bị trừ tiền hai lần cho đơn {i}.",
             "output": f"Dạ, Sao Việt sẽ hoàn tiền đơn {i} trong 7 ngày làm việc."} for i in range(n)]


def grow_studio(home: Path, groups: int, runs_each: int = 4) -> None:
    """``groups`` more groups of dataset versions through the studio's functions, each group: a version
    with no review, one whose review failed (and its child version without the rejected pair), one whose
    review is under way, and a reviewed one, newest; then ``runs_each`` succeeded runs (10 metric rows)
    on the reviewed one, each evaluated (every other one passing the gate, the newest passing)."""
    from core import store
    from core.datasets import importer, review, versions
    from core.evaluation import evaluations, scoring
    from core.jobs import supervisor
    from core.jobs.files import METRICS, STATUS, read_json, write_json_atomic
    from core.jobs.queue import get_job
    from core.training import presets, runs

    base = versions.find_by_name("base")
    if base is None:
        base, _ = importer.import_files([write_jsonl(home / "base.jsonl", tiny_pairs(30))], "base", actor=OPERATOR)
    pairs = versions.load_rows(base["id"], "train")
    cfg = presets.preset(presets.DEMO_PRESET)
    for _ in range(groups):
        with store.transaction() as con:   # every studio call inside joins it: one commit a group
            made = {}
            for kind in ("none", "failed", "under way", "reviewed"):
                made[kind] = versions.derive_version(base, pairs, pairs[:3], source="review", lineage={"kind": kind},
                                                     actor=OPERATOR)["id"]
                if kind == "none":
                    continue
                size = review.start(made[kind], actor=OPERATOR)["sample_size"]
                for k in range(1 if kind == "under way" else size):
                    item = review.next_item(made[kind])
                    review.decide(made[kind], item["idx"], "rejected" if kind == "failed" and k == 0 else "approved",
                                  actor=OPERATOR)
            for n in range(runs_each):
                job = runs.submit_train(made["reviewed"], cfg, actor=OPERATOR)
                folder = Path(job["job_dir"])
                (folder / METRICS).write_text("".join(json.dumps({"step": s, "loss": 2.0 / s, "learning_rate": 1e-4,
                                                                  "grad_norm": 1.0, "tokens_per_s": 900.0}) + "\n"
                                                      for s in range(1, 11)), encoding="utf-8")
                write_json_atomic(folder / STATUS, {"state": "succeeded", "result": {"adapter_dir": str(folder / "a")}})
                supervisor._settle(get_job(job["id"]), read_json(folder / STATUS))   # as a tick does
                ev = evaluations.submit(job["run_id"], limit=4, actor=OPERATOR)
                refs = [p["output"] for p in pairs[:4]]
                preds = refs if (runs_each - 1 - n) % 2 == 0 else ["Dạ."] * 4   # the newest passes
                scores = scoring.score(refs, preds, ev["config"]["thresholds"])
                out = Path(ev["job_dir"]) / "predictions.jsonl"
                out.write_text("".join(json.dumps({"idx": i, "instruction": p["instruction"], "input": p["input"],
                                                   "reference": r, "prediction": q, **per}, ensure_ascii=False) + "\n"
                                       for i, (p, r, q, per) in enumerate(zip(pairs, refs, preds, scores.per_example))),
                               encoding="utf-8")
                write_json_atomic(Path(ev["job_dir"]) / STATUS, {"state": "succeeded", "result": {
                    **scores.summary(), "prompt_format": "chat", "predictions": str(out)}})
                supervisor._settle(get_job(ev["id"]), read_json(Path(ev["job_dir"]) / STATUS))


def approve_review(version_id: str, reviewer: str = "tester") -> dict:
    """Draw the version's review sample and approve every pair (so that it may train)."""
    from core.datasets import review

    review.start(version_id, actor=person(reviewer, "reviewer"))
    while (item := review.next_item(version_id)) is not None:
        review.decide(version_id, item["idx"], "approved", actor=person(reviewer, "reviewer"))
    return review.status(version_id)


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory, default_model) -> dict:
    """The whole default pipeline once, through the CLI: samples → train the demo sample (internal notes)
    with the demo preset (40 steps) → evaluate the whole held-out split (22 pairs), which passes the gate → export (f16,
    q8_0, q4_k_m). Later tests (pages, browser, deploy) reuse it; a test that needs a failing run makes its own."""
    home = tmp_path_factory.mktemp("pipeline-home")
    out = {"home": home}
    proc = cli("dataset", "import-samples", home=home)
    out["dataset"] = proc.stdout.split()[0]
    proc = cli("train", "--dataset", out["dataset"], "--preset", "demo pass (CPU, 40 steps)", "--json", home=home)
    train = json.loads(proc.stdout)
    out["run"] = train["run"]
    out["train"] = train
    proc = cli("evaluate", "--run", out["run"], "--max-new-tokens", "48", "--json", home=home)
    out["evaluation"] = json.loads(proc.stdout)
    proc = cli("export", "--run", out["run"], "--quant", "f16", "q8_0", "q4_k_m", "--json", home=home)
    out["export"] = json.loads(proc.stdout)
    return out


@pytest.fixture(scope="session")
def pipeline_ggufs(pipeline) -> dict:
    """The pipeline run's exported q8_0 and q4_k_m GGUFs evaluated through the CLI (llama.cpp, batched, on the
    whole held-out split, decoded like the run's own evaluation), once: the gate's own evaluations of the files a
    release ships (issue 28). ``{quantization: the CLI's JSON}``, and ``seconds`` each took."""
    import time

    out: dict = {"seconds": {}}
    for quant in ("q8_0", "q4_k_m"):
        t0 = time.perf_counter()
        proc = cli("evaluate", "--run", pipeline["run"], "--gguf", quant, "--json", home=pipeline["home"])
        out[quant] = json.loads(proc.stdout)
        out["seconds"][quant] = round(time.perf_counter() - t0, 1)
    return out
