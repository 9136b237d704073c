"""Shared fixtures. Every test runs against a temporary studio home (VITUNE_HOME); the embedded
default model is the one the setup command prepared under models/base/."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from core import paths  # noqa: E402


def cli(*args: str, home: Path, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``python -m core …`` for real, in its own process, against ``home``."""
    env = dict(os.environ, VITUNE_HOME=str(home), PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, "-m", "core", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"python -m core {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_studio(home: Path, port: int) -> subprocess.Popen:
    """The studio's web app, started the way scripts/studio.sh starts it, on loopback; waits until healthy."""
    import time
    import urllib.request

    env = dict(os.environ, VITUNE_HOME=str(home), VITUNE_SLOTS="cpu")
    log = Path(home) / f"studio-{port}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "scripts/serve.py", "--server.port", str(port), "--server.address",
                                 "127.0.0.1"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    for _ in range(240):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1)
            return proc
        except Exception:
            if proc.poll() is not None:
                break
            time.sleep(0.5)
    proc.kill()
    raise AssertionError("the studio did not start: " + log.read_text(errors="replace")[-2000:])


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


def approve_review(version_id: str, reviewer: str = "tester") -> dict:
    """Draw the version's review sample and approve every pair (so that it may train)."""
    from core import review

    review.start(version_id)
    while (item := review.next_item(version_id)) is not None:
        review.decide(version_id, item["idx"], "approved", reviewer)
    return review.status(version_id)


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory, default_model) -> dict:
    """The whole default pipeline once, through the CLI: samples → train the demo sample (internal notes)
    with the demo preset (40 steps) → evaluate (20 held-out pairs), which passes the gate → export (f16,
    q8_0, q4_k_m). Later tests (pages, browser, deploy) reuse it; a test that needs a failing run makes its own."""
    home = tmp_path_factory.mktemp("pipeline-home")
    out = {"home": home}
    proc = cli("dataset", "import-samples", home=home)
    out["dataset"] = proc.stdout.split()[0]
    proc = cli("train", "--dataset", out["dataset"], "--preset", "demo pass (CPU, 40 steps)", "--json", home=home)
    train = json.loads(proc.stdout)
    out["run"] = train["run"]
    out["train"] = train
    proc = cli("evaluate", "--run", out["run"], "--limit", "20", "--max-new-tokens", "48", "--json", home=home)
    out["evaluation"] = json.loads(proc.stdout)
    proc = cli("export", "--run", out["run"], "--quant", "f16", "q8_0", "q4_k_m", "--json", home=home)
    out["export"] = json.loads(proc.stdout)
    return out
