"""The studio at team scale: a year of a small team's history, a roomful of open browsers.

    .venv/bin/python bench/scale.py                          # seed a fresh home, then time everything
    .venv/bin/python bench/scale.py --home /tmp/scale-home   # seed it once (kept), time it; again: reuse it
    .venv/bin/python bench/scale.py --home H --seed-only     # only seed (the seed's time is printed)
    .venv/bin/python bench/scale.py --home H --profile       # connections and queries of one `dataset list`

Seeds a studio home through the studio's own functions (``import_files`` and the review sample for
dataset versions, ``submit_train`` and ``evaluations.submit`` for jobs, whose results are written
into their job folders the way a worker writes them and settled the way a supervisor tick settles
them): 203 dataset versions (the samples, 160 imports with a review each way, 40 child versions of
failed reviews), 1,000 succeeded training runs with 50 metric rows each, 1,000 evaluations with 20
examples each, and the audit rows all that writes. Then, against the studio's web server
(``scripts/serve.py``):

* every page's render in Chromium (Playwright): from ``goto`` until the page's heading is shown and
  the script run has ended (``data-test-script-state="notRunning"``), median of ``--rounds``;
* ``python -m core dataset list``, ``evaluate list`` and ``jobs list``, each ``--cli-runs`` times
  (median and max), with the server idle;
* the same CLI calls with ``--tabs`` browser tabs open on the Train page (its live view refreshes
  every 2 s), and the server's CPU share meanwhile;
* the Train page's sweep view (issue 25): a 3 × 3 sweep seeded through ``sweeps.submit``, each run's
  training settled (which queues its evaluation) and each evaluation settled; in Chromium, the Train page
  until the sweep view's heading has rendered (``--sweep-only``: that alone); without a browser
  (``--seed-only``, the small CPU pass of tests/test_benches.py), ``sweeps.view`` and the Train page's
  script run under AppTest.

Targets on the 2-core machine (issue 14): every page ≤ 1.0 s, every listing ≤ 0.5 s, ≤ 2× that with
8 tabs open; the seed ≤ 60 s; the sweep view ≤ 1.0 s (issue 25). Results go to ``bench/results/scale-DATE-LABEL.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PAGES = {"": "Datasets", "generate": "Generate pairs", "train": "Train", "evaluate": "Evaluate",
         "playground": "Playground", "deploy": "Deploy", "admin": "Admin"}
SWEEP_VIEW = "Train: sweep view"   # the Train page until the newest sweep's view has rendered
SWEEP_SWITCH = "Train: another sweep picked"   # on the open Train page, until the picked sweep's view has rendered
LISTINGS = {"dataset list": ["dataset", "list"], "evaluate list": ["evaluate", "list"], "jobs list": ["jobs", "list"]}
WORDS = ("khách hàng hợp đồng dịch vụ thanh toán bảo hành sản phẩm yêu cầu hỗ trợ điều khoản thời hạn giao hàng "
         "đổi trả hoá đơn tài khoản mật khẩu ngân hàng chuyển khoản phí lãi suất bên mua bên bán trách nhiệm "
         "bồi thường vi phạm chấm dứt gia hạn phụ lục xin chào cảm ơn quý khách vui lòng liên hệ tổng đài").split()


# ── seeding ──────────────────────────────────────────────────────────────────


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choices(WORDS, k=n)).capitalize() + "."


def _pairs(rng: random.Random, n: int, tag: int) -> list[dict]:
    return [{"instruction": f"{_sentence(rng, 8)} (mã {tag}-{i})", "input": _sentence(rng, 6) if i % 3 else "",
             "output": _sentence(rng, 24)} for i in range(n)]


def _perturb(rng: random.Random, text: str, share: float) -> str:
    words = text.split()
    return " ".join(rng.choice(WORDS) if rng.random() < share else w for w in words)


def seed(home: Path, imports: int = 160, n_runs: int = 1000, n_evals: int = 1000, metric_rows: int = 50,
         examples: int = 20, rows_per_version: int = 30, batch: int = 100) -> dict:
    """Fill ``home`` through the studio's functions; returns the seconds of each phase and what was made."""
    os.environ["VITUNE_HOME"] = str(home)
    sys.path.insert(0, str(REPO))
    from core import store
    from core.access.principal import operator
    from core.datasets import importer, review, samples, versions
    from core.evaluation import evaluations
    from core.jobs import queue, supervisor
    from core.jobs.files import METRICS, STATUS, write_json_atomic
    from core.training import presets, runs

    rng = random.Random(14)
    who = operator()
    took: dict[str, float] = {}
    t0 = time.perf_counter()
    samples.import_samples(actor=who)
    src = Path(home) / "bench-src"
    src.mkdir(parents=True, exist_ok=True)
    trainable = [v["id"] for v in versions.list_versions(who) if review.is_reviewed(v["id"])]
    for start in range(0, imports, 10):
        with store.transaction():  # every studio call inside joins it: ten versions, one commit
            for i in range(start, min(start + 10, imports)):
                trainable += _seed_version(rng, src, i, rows_per_version, who)
    took["versions"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    cfg = presets.preset(presets.DEMO_PRESET)
    jobs = []
    for start in range(0, n_runs, batch):
        with store.transaction():
            for n in range(start, min(start + batch, n_runs)):
                job = runs.submit_train(trainable[n % len(trainable)], cfg, actor=who)
                job_dir = Path(job["job_dir"])
                lines = []
                for step in range(1, metric_rows + 1):
                    lines.append({"step": step, "epoch": step / metric_rows, "loss": 3.0 * 0.97 ** step + rng.random() * 0.05,
                                  "learning_rate": 5e-4 * (1 - step / metric_rows), "grad_norm": 1 + rng.random(),
                                  "tokens_per_s": 900 + rng.random() * 100, "ts": time.time()})
                    if step % 10 == 0:
                        lines.append({"step": step, "eval_loss": 3.1 * 0.97 ** step, "ts": time.time()})
                (job_dir / METRICS).write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
                write_json_atomic(job_dir / STATUS, {"state": "succeeded", "result": {
                    "adapter_dir": str(job_dir / "adapter"), "backend": "hf", "steps": metric_rows,
                    "train_loss": lines[-2]["loss"], "train_runtime_s": 60.0}})
                jobs.append(job)
    took["runs_submit"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    _settle(jobs, batch)
    took["runs_settle"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    rows_of: dict[str, list[dict]] = {}
    evals = []
    for start in range(0, min(n_evals, len(jobs)), batch):
        with store.transaction():
            for n in range(start, min(start + batch, n_evals, len(jobs))):
                job = jobs[n]
                ev = evaluations.submit(job["run_id"], limit=examples, actor=who)
                version = job["dataset_version_id"]
                rows = rows_of.setdefault(version, versions.load_rows(version, "train") + versions.load_rows(version, "test"))
                picked = [rows[i % len(rows)] for i in range(examples)]
                share = 0.1 + 0.6 * ((n * 37) % 100) / 100  # some pass the gate, most do not
                _ended_evaluation(ev, picked, [_perturb(rng, r["output"], share) for r in picked])
                evals.append(ev)
    took["evals_submit"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    _settle(evals, batch)
    took["evals_settle"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    _seed_sweep(rng, trainable[0], who, metric_rows, examples)
    took["sweep"] = time.perf_counter() - t0

    counts = store.one("""SELECT (SELECT count(*) FROM dataset_versions) AS versions,
                                 (SELECT count(*) FROM runs) AS runs,
                                 (SELECT count(*) FROM metrics) AS metric_rows,
                                 (SELECT count(*) FROM evaluations) AS evaluations,
                                 (SELECT count(*) FROM sweeps) AS sweeps,
                                 (SELECT count(*) FROM sweep_runs) AS sweep_runs,
                                 (SELECT count(*) FROM evaluation_examples) AS examples,
                                 (SELECT count(*) FROM audit_log) AS audit_rows,
                                 (SELECT count(*) FROM jobs WHERE state <> 'succeeded') AS unsettled""")
    took["total"] = sum(took.values())
    return {"seconds": took, "made": counts, "db_mb": Path(store.paths.db_path()).stat().st_size / 1e6}


SWEEP_NAME = "r-and-lr"   # the seeded sweep: 3 ranks × 3 learning rates, each run trained and evaluated


def _ended_evaluation(ev: dict, picked: list[dict], preds: list[str]) -> None:
    """What an evaluation worker leaves when it ends: its scored predictions of ``picked`` and its status.json
    (the seeded studio's evaluations are settled from these as a tick settles a real one)."""
    from core.evaluation import scoring
    from core.jobs.files import STATUS, write_json_atomic

    refs = [r["output"] for r in picked]
    scores = scoring.score(refs, preds, ev["config"]["thresholds"])
    out = Path(ev["job_dir"]) / "predictions.jsonl"
    out.write_text("".join(json.dumps({"idx": i, "instruction": r["instruction"], "input": r["input"],
                                       "reference": ref, "prediction": p, **per}, ensure_ascii=False) + "\n"
                           for i, (r, ref, p, per) in enumerate(zip(picked, refs, preds, scores.per_example))),
                   encoding="utf-8")
    write_json_atomic(Path(ev["job_dir"]) / STATUS, {"state": "succeeded", "result": {
        **scores.summary(), "duration_s": 30.0, "generation_s": 25.0, "scoring_s": 0.1, "examples_per_s": 0.8,
        "prompt_format": "chat", "predictions": str(out)}})


def _seed_sweep(rng: random.Random, version: str, who, metric_rows: int, examples: int, name: str = SWEEP_NAME) -> str:
    """A 3 × 3 sweep through ``sweeps.submit``; each training job's result written the way a worker writes it
    and settled the way a tick settles it (which queues each run's evaluation), then each evaluation likewise."""
    from core.datasets import versions
    from core.jobs.files import METRICS, STATUS, write_json_atomic
    from core.jobs.queue import get_job
    from core import store
    from core.training import sweeps

    started = sweeps.submit({"name": name, "preset": "demo pass (CPU, 40 steps)",
                             "grid": {"r": [8, 16, 32], "lr": [1e-4, 2e-4, 5e-4]}, "evaluate": {"limit": examples}},
                            version, actor=who)
    jobs = []
    for n, made in enumerate(started["runs"]):
        job = get_job(made["job"])
        job_dir = Path(job["job_dir"])
        lines = [{"step": step, "loss": (2.0 + n * 0.1) * 0.97 ** step + rng.random() * 0.05, "learning_rate": 1e-4,
                  "grad_norm": 1.0, "tokens_per_s": 900.0, "ts": time.time()} for step in range(1, metric_rows + 1)]
        (job_dir / METRICS).write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
        write_json_atomic(job_dir / STATUS, {"state": "succeeded", "result": {
            "adapter_dir": str(job_dir / "adapter"), "backend": "hf", "steps": metric_rows,
            "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "train_runtime_s": 60.0}})
        jobs.append(job)
    _settle(jobs, len(jobs))
    evals = store.rows("SELECT id, config FROM jobs WHERE kind = 'evaluate' AND run_id IN (SELECT run_id FROM sweep_runs "
                       "WHERE sweep_id = ?) ORDER BY id", [started["id"]])
    rows = versions.load_rows(version, "train") + versions.load_rows(version, "test")
    for n, ev in enumerate(evals):
        ev = get_job(ev["id"])
        picked = [rows[i % len(rows)] for i in range(examples)]
        _ended_evaluation(ev, picked, [_perturb(rng, r["output"], 0.1 + 0.07 * n) for r in picked])
    _settle(evals, len(evals))
    return started["id"]


OTHER_SWEEP = "r-and-lr-again"   # a second seeded sweep: the one the Train page switches to (``time_sweep_switch``)


def ensure_second_sweep(home: Path) -> str:
    """A second sweep like the first (seeded and settled the same way) in a home that has one: what picking another
    sweep on the open Train page switches to. Returns its id (the existing one when there is one already)."""
    os.environ["VITUNE_HOME"] = str(home)
    sys.path.insert(0, str(REPO))
    from core import store
    from core.access.principal import operator

    got = store.one("SELECT id FROM sweeps WHERE name = ?", [OTHER_SWEEP])
    if got:
        return got["id"]
    first = store.one("SELECT dataset_version_id FROM sweeps WHERE name = ?", [SWEEP_NAME])
    if not first:
        raise SystemExit(f"{home} has no sweep: seed it with today's bench/scale.py")
    return _seed_sweep(random.Random(25), first["dataset_version_id"], operator(), 50, 4, name=OTHER_SWEEP)


def time_sweep_switch(page, url: str, rounds: int, limit_s: float = 120) -> list[float | None]:
    """The sweep view as a person opens it on the Train page already open: pick the other sweep in the "Sweep"
    select box, until its view (heading, best run, ranking table and loss chart) has rendered and the page's
    script run has ended. Alternates between the two seeded sweeps; ``rounds`` switches."""
    from playwright.sync_api import TimeoutError as Timeout

    if render(page, f"{url}/train", "Sweeps", limit_s) is None:
        return [None] * rounds
    names = [SWEEP_NAME, OTHER_SWEEP]   # the Train page opens on the newest (the other one)
    took: list[float | None] = []
    for i in range(rounds):
        name = names[i % 2]
        option = page.get_by_role("option").filter(has_text=f"{name} ·").first
        for _ in range(10):   # a list opened while the page re-renders closes again: open it again, as a person does
            page.locator(".st-key-sweep-pick").get_by_role("button", name="Open").click()
            try:
                option.wait_for(state="visible", timeout=5_000)
                break
            except Timeout:
                page.keyboard.press("Escape")
        else:
            took.append(None)
            continue
        t0 = time.perf_counter()
        option.click()
        try:
            page.get_by_role("heading", name=f"Sweep {name}", exact=True).wait_for(timeout=limit_s * 1000)
            view = page.locator('[data-testid="stTable"]').filter(has_text="ROUGE-L")
            view.first.wait_for(timeout=limit_s * 1000)
            page.locator(".js-plotly-plot").last.wait_for(timeout=limit_s * 1000)
            page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=limit_s * 1000)
        except Timeout:
            took.append(None)
            continue
        took.append(time.perf_counter() - t0)
    return took


def time_sweep_view(home: Path, rounds: int = 5) -> dict:
    """The sweep view without a browser: its core read (``sweeps.view``) and the Train page's whole script run
    with it (Streamlit's AppTest, the newest sweep shown), median of ``rounds`` after a first run."""
    os.environ["VITUNE_HOME"] = str(home)
    os.environ["VITUNE_LANGUAGE"] = "en"   # the heading it looks for is the English one
    sys.path.insert(0, str(REPO))
    from streamlit.testing.v1 import AppTest

    from core.access.principal import operator
    from core.training import sweeps

    newest = sweeps.list_sweeps(operator(), limit=1)
    if not newest:
        raise SystemExit(f"{home} has no sweep: seed it with today's bench/scale.py")
    sweep_id = newest[0]["id"]
    core_s, page_s = [], []
    sweeps.view(sweep_id)
    for _ in range(rounds):
        t0 = time.perf_counter()
        v = sweeps.view(sweep_id)
        core_s.append(time.perf_counter() - t0)
    for i in range(rounds + 1):
        at = AppTest.from_file(str(REPO / "pages" / "train.py"), default_timeout=600)
        at.session_state["principal"] = operator()
        t0 = time.perf_counter()
        at.run()
        if i:   # the first run imports the page's modules
            page_s.append(time.perf_counter() - t0)
        if at.exception or f"Sweep {v['sweep']['name']}" not in [h.value for h in at.subheader]:
            raise SystemExit(f"the Train page did not show the sweep view: {[e.value for e in at.exception]}")
    return {"sweep": sweep_id, "runs": len(v["runs"]), "best": v["best"], "view_median_s": statistics.median(core_s),
            "train_page_apptest_median_s": statistics.median(page_s), "view_s": core_s, "train_page_apptest_s": page_s}


def _seed_version(rng: random.Random, src: Path, i: int, rows: int, who) -> list[str]:
    """One imported version with its review: 0 reviewed, 1 under way, 2 failed (a child version), 3 none.
    Returns the version's id when it may train."""
    from core.datasets import importer, review

    path = src / f"v{i:03d}.jsonl"
    path.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in _pairs(rng, rows, i)), encoding="utf-8")
    version, _ = importer.import_files([path], f"khach-hang-{i % 12:02d}", seed=i, actor=who)
    kind = i % 4
    if kind == 3:
        return []
    size = review.start(version["id"], seed=i, actor=who)["sample_size"]
    for k in range(1 if kind == 1 else size):
        pending = review.next_item(version["id"])
        review.decide(version["id"], pending["idx"], "rejected" if kind == 2 and k == size - 1 else "approved",
                      actor=who)
    return [version["id"]] if kind == 0 else []


def _settle(jobs: list[dict], batch: int) -> None:
    """What a supervisor tick does with jobs whose workers wrote a result: the kind's ingest, the job's
    state, in one transaction per ``batch`` jobs."""
    from core import store
    from core.jobs import supervisor
    from core.jobs.files import STATUS, read_json
    from core.jobs.queue import get_job

    for start in range(0, len(jobs), batch):
        with store.transaction() as con:
            for job in jobs[start:start + batch]:
                job = get_job(job["id"])
                supervisor._settle(job, read_json(Path(job["job_dir"]) / STATUS))


# ── timing ───────────────────────────────────────────────────────────────────


def _browser(p):
    return p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
        "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-background-timer-throttling",
        "--disable-renderer-backgrounding", "--disable-backgrounding-occluded-windows"])


def render(page, url: str, title: str, limit_s: float) -> float | None:
    """Seconds from navigation until the page's heading shows and its script run has ended; None when
    that takes longer than ``limit_s``."""
    from playwright.sync_api import TimeoutError as Timeout

    t0 = time.perf_counter()
    try:
        page.goto(url, timeout=limit_s * 1000)
        page.get_by_role("heading", name=title).first.wait_for(timeout=limit_s * 1000)
        left = max(1.0, limit_s - (time.perf_counter() - t0))
        page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=left * 1000)
    except Timeout:
        return None
    took = time.perf_counter() - t0
    if page.locator('[data-testid="stException"]').count():
        raise SystemExit(f"{url}: the page shows an exception")
    return took


def _quiet(server_pid: int | None, most_s: float = 180) -> None:
    """Wait until the server is idle again (a page run abandoned by the browser may go on a while)."""
    if server_pid is None:
        return
    import psutil

    proc, until = psutil.Process(server_pid), time.monotonic() + most_s
    while time.monotonic() < until and proc.cpu_percent(interval=1.0) > 25:
        pass


def time_pages(url: str, rounds: int, limit_s: float = 120, server_pid: int | None = None,
               pages: dict | None = None, sweep_view: bool = True) -> dict:
    """Every page (of ``pages``), ``rounds`` times (median), and the Train page's sweep view; a page over
    ``limit_s`` is recorded as such and not tried again."""
    from playwright.sync_api import sync_playwright

    pages = PAGES if pages is None else pages
    got: dict[str, list] = {title: [] for title in pages.values()}
    with sync_playwright() as p:
        browser = _browser(p)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        render(page, url, "Datasets", limit_s)  # warm-up: the server's first run imports the page modules
        for _ in range(rounds):
            for path, title in pages.items():
                if None in got[title]:
                    continue
                took = render(page, f"{url}/{path}", title, limit_s)
                got[title].append(took)
                if took is None:
                    page.goto("about:blank")
                    _quiet(server_pid)
        if sweep_view:   # the Train page until its sweep view (the newest sweep, shown at once) has rendered
            got[SWEEP_VIEW] = [render(page, f"{url}/train", f"Sweep {OTHER_SWEEP}", limit_s) for _ in range(rounds)]
            # and on the open Train page, another sweep picked until its view has rendered
            got[SWEEP_SWITCH] = time_sweep_switch(page, url, rounds, limit_s)
        browser.close()
    out = {}
    for title, v in got.items():
        done = [x for x in v if x is not None]
        out[title] = {"median_s": statistics.median(done) if len(done) == len(v) else None, "runs_s": v,
                      "over_s": limit_s if None in v else None}
    return out


def time_cli(home: Path, runs: int) -> dict:
    env = dict(os.environ, VITUNE_HOME=str(home))
    out = {}
    for name, args in LISTINGS.items():
        took = []
        for _ in range(runs):
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "core", *args], cwd=REPO, env=env, capture_output=True,
                                  text=True)
            took.append(time.perf_counter() - t0)
            if proc.returncode != 0:
                raise SystemExit(f"python -m core {' '.join(args)} failed: {proc.stderr[-2000:]}")
        out[name] = {"median_s": statistics.median(took), "max_s": max(took), "runs_s": took,
                     "lines": len(proc.stdout.splitlines())}
    return out


def with_tabs(url: str, home: Path, tabs: int, runs: int, server_pid: int, limit_s: float = 120) -> dict:
    """The CLI listings while ``tabs`` browser tabs sit on the Train page; the server's CPU meanwhile."""
    import psutil
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = _browser(p)
        pages = []
        for _ in range(tabs):  # one browser context each: separate windows, none of them in the background
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.goto(f"{url}/train")
            page.get_by_role("heading", name="Train").first.wait_for(timeout=limit_s * 1000)
            pages.append(page)
        time.sleep(4)  # every live view has refreshed at least once
        server = psutil.Process(server_pid)
        cpu0, t0 = server.cpu_times(), time.perf_counter()
        got = time_cli(home, runs)
        cpu1, wall = server.cpu_times(), time.perf_counter() - t0
        browser.close()
    got["server_cpu_share"] = ((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)) / wall
    return got


# ── profiling one listing ────────────────────────────────────────────────────


def profile(home: Path) -> dict:
    """The CLI listings and every page (run by Streamlit's AppTest) in this process, each counting every
    DuckDB open of the studio file, failed opens (another process held it), queries and their seconds
    (patching ``duckdb.connect``, so it works on any version of the store); and one open's cost."""
    import contextlib
    import io

    import duckdb

    os.environ["VITUNE_HOME"] = str(home)
    sys.path.insert(0, str(REPO))
    counts = {"opens": 0, "lock_conflicts": 0, "open_s": 0.0, "queries": 0, "query_s": 0.0}
    real_connect = duckdb.connect

    class Counted:
        def __init__(self, con):
            self._con = con

        def execute(self, *a, **k):
            t = time.perf_counter()
            try:
                return self._con.execute(*a, **k)
            finally:
                counts["queries"] += 1
                counts["query_s"] += time.perf_counter() - t

        def executemany(self, *a, **k):
            counts["queries"] += 1
            return self._con.executemany(*a, **k)

        def cursor(self):
            return Counted(self._con.cursor())

        def __getattr__(self, name):
            return getattr(self._con, name)

    def connect(database=":memory:", *a, **k):
        if database == ":memory:":
            return real_connect(database, *a, **k)
        t = time.perf_counter()
        try:
            con = real_connect(database, *a, **k)
        except duckdb.IOException:
            counts["lock_conflicts"] += 1
            raise
        finally:
            counts["open_s"] += time.perf_counter() - t
        counts["opens"] += 1
        return Counted(con)

    duckdb.connect = connect
    from core import cli

    with contextlib.redirect_stdout(io.StringIO()):
        cli.main(["evaluate", "list"])  # imports and the first open (migration check) are not the listing's
    report: dict = {}

    def measure(name: str, fn) -> None:
        for k in counts:
            counts[k] = 0
        t0 = time.perf_counter()
        fn()
        report[name] = {**counts, "wall_s": time.perf_counter() - t0}

    for name, argv in LISTINGS.items():
        def listing(argv=argv):
            with contextlib.redirect_stdout(io.StringIO()):
                cli.main(argv)
        measure(name, listing)
    from streamlit.testing.v1 import AppTest

    from core.access.principal import operator

    for path, title in PAGES.items():
        page = path or "datasets"

        def run(page=page):
            at = AppTest.from_file(str(REPO / "pages" / f"{page}.py"), default_timeout=600)
            at.session_state["principal"] = operator()
            at.run()
        run()   # the first run of a page imports its modules (and computes what a page keeps)
        measure(f"page {page} (AppTest)", run)
    duckdb.connect = real_connect
    counts = report
    # what one open and close of the file costs here, on its own
    path = str(home / "data" / "studio.duckdb")
    from core import store
    with contextlib.suppress(AttributeError):
        store.close_idle()
    t0 = time.perf_counter()
    for _ in range(20):
        real_connect(path).close()
    counts["one_open_close_s"] = (time.perf_counter() - t0) / 20
    counts["load"] = os.getloadavg()
    return counts


# ── main ─────────────────────────────────────────────────────────────────────


def _table(results: dict) -> str:
    lines = ["| what | median | (max) |", "|---|---|---|"]
    if "seed" in results:
        lines.append(f"| seed ({results['seed']['made']['versions']} versions, {results['seed']['made']['runs']} runs, "
                     f"{results['seed']['made']['evaluations']} evaluations) | {results['seed']['seconds']['total']:.1f} s | |")
    for title, r in results.get("pages", {}).items():
        if r["median_s"] is None:
            lines.append(f"| page {title} | > {r['over_s']:.0f} s | |")
        else:
            lines.append(f"| page {title} | {r['median_s']:.2f} s | ({max(r['runs_s']):.2f} s) |")
    for phase in ("cli", "cli_with_tabs"):
        for name, r in results.get(phase, {}).items():
            if isinstance(r, dict):
                tag = "" if phase == "cli" else f" with {results['tabs']} Train tabs"
                lines.append(f"| `{name}`{tag} | {r['median_s']:.2f} s | ({r['max_s']:.2f} s) |")
    if "cli_with_tabs" in results:
        lines.append(f"| server CPU with {results['tabs']} tabs | {results['cli_with_tabs']['server_cpu_share']:.0%} of a core | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", type=Path, help="studio home to seed (when empty) and time; default: a temporary one")
    ap.add_argument("--seed-only", action="store_true", help="only seed, and time the sweep view without a browser")
    ap.add_argument("--sweep-only", action="store_true",
                    help="in Chromium, time only the Train page's sweep view (no other page, no CLI)")
    ap.add_argument("--pages-only", action="store_true", help="in Chromium, every page and the sweep view; no CLI")
    ap.add_argument("--profile", action="store_true", help="count one `dataset list`'s opens and queries, and stop")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cli-runs", type=int, default=10)
    ap.add_argument("--cli-runs-tabs", type=int, default=5)
    ap.add_argument("--tabs", type=int, default=8)
    ap.add_argument("--page-limit", type=float, default=120, help="seconds after which a page render counts as over")
    ap.add_argument("--imports", type=int, default=160)
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--label", default="run")
    ap.add_argument("--out", type=Path)
    ap.add_argument("_seed", nargs="?", help=argparse.SUPPRESS)   # internal: `scale.py seed` in a subprocess
    args = ap.parse_args(argv)
    if args._seed == "second-sweep":
        print(ensure_second_sweep(args.home))
        return 0
    if args._seed == "seed":
        print(json.dumps(seed(args.home, imports=args.imports, n_runs=args.runs, n_evals=args.runs)))
        return 0
    if args.profile:
        print(json.dumps(profile(args.home), indent=2))
        return 0
    home = args.home or Path(tempfile.mkdtemp(prefix="vitune-scale-"))
    results: dict = {"date": date.today().isoformat(), "label": args.label, "home": str(home),
                     "machine": f"{os.cpu_count()} cores, {_mem_gib():.0f} GiB", "load_before": os.getloadavg()}
    if not (home / "data" / "studio.duckdb").exists():
        home.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "seed", "--home", str(home), "--imports", str(args.imports),
                               "--runs", str(args.runs)], cwd=REPO, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"seeding failed:\n{proc.stderr[-4000:]}")
        results["seed"] = json.loads(proc.stdout.strip().splitlines()[-1])
        results["seed"]["wall_s"] = time.perf_counter() - t0
        print(f"seeded {home} in {results['seed']['seconds']['total']:.1f} s: {results['seed']['made']}", flush=True)
    if args.seed_only:
        results["sweep_view"] = time_sweep_view(home)
        print(json.dumps(results, indent=2, default=str))
        return 0
    sys.path.insert(0, str(REPO))
    from scripts.launch import free_port, start_studio

    # a second sweep, for picking another sweep on the open Train page (in a subprocess, as the seeding: the
    # server opens the home's database next)
    proc = subprocess.run([sys.executable, __file__, "second-sweep", "--home", str(home)], cwd=REPO,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"the second sweep could not be seeded:\n{proc.stderr[-4000:]}")
    port = free_port()
    server = start_studio(home, port, VITUNE_LANGUAGE="en")   # the headings it waits for are the English ones
    url = f"http://127.0.0.1:{port}"
    try:
        results["pages"] = time_pages(url, args.rounds, args.page_limit, server.pid,
                                      pages={} if args.sweep_only else None)
        print(_table(results), flush=True)
        if args.sweep_only or args.pages_only:
            return _save(results, args)
        results["cli"] = time_cli(home, args.cli_runs)
        results["tabs"] = args.tabs
        results["cli_with_tabs"] = with_tabs(url, home, args.tabs, args.cli_runs_tabs, server.pid)
    finally:
        server.terminate()
        server.wait(30)
    return _save(results, args)


def _save(results: dict, args) -> int:
    results["load_after"] = os.getloadavg()
    out = args.out or REPO / "bench" / "results" / f"scale-{results['date']}-{args.label}.json"
    out.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    print(_table(results))
    print(f"load average {results['load_before'][0]:.2f} → {results['load_after'][0]:.2f}; results: {out}")
    return 0


def _mem_gib() -> float:
    import psutil

    return psutil.virtual_memory().total / 2**30


if __name__ == "__main__":
    sys.exit(main())
