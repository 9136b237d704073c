"""Shared fixtures. Every test runs against a temporary studio home (VITUNE_HOME); the embedded
default model is the one the setup command prepared under models/base/."""
from __future__ import annotations

import json
import os
import subprocess
import sys
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


def tiny_pairs(n: int = 24) -> list[dict]:
    return [{"instruction": f"Trả lời khách hàng về đơn hàng số {i}.",
             "input": f"Tôi bị trừ tiền hai lần cho đơn {i}.",
             "output": f"Dạ, Sao Việt sẽ hoàn tiền đơn {i} trong 7 ngày làm việc."} for i in range(n)]


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory, default_model) -> dict:
    """The whole default pipeline once, through the CLI: samples → train (20 steps) → evaluate (20
    held-out pairs) → gate → export (f16, q8_0, q4_k_m). Later tests (pages, browser, deploy) reuse it."""
    home = tmp_path_factory.mktemp("pipeline-home")
    out = {"home": home}
    proc = cli("dataset", "import-samples", home=home)
    out["dataset"] = proc.stdout.split()[0]
    proc = cli("train", "--dataset", out["dataset"], "--preset", "quick test (CPU, 20 steps)", "--json", home=home)
    train = json.loads(proc.stdout)
    out["run"] = train["run"]
    out["train"] = train
    proc = cli("evaluate", "--run", out["run"], "--limit", "20", "--max-new-tokens", "48", "--json", home=home)
    out["evaluation"] = json.loads(proc.stdout)
    proc = cli("export", "--run", out["run"], "--quant", "f16", "q8_0", "q4_k_m", "--json", home=home)
    out["export"] = json.loads(proc.stdout)
    return out
