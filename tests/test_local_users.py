"""What another user of the same machine can read of the studio (issue 24, item 7): the CLI and the
workers write files for their own user alone (umask 077), whatever umask started them; the inference
worker's token is not in job.json (test_playground.py checks it, with a real worker); the local
llama.cpp server of generation demands a key (test_generate.py, with the real server)."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, cli, tiny_pairs, write_jsonl


@pytest.fixture
def open_umask():
    """This process (and what it starts) under the usual umask 022, as a shell would start the studio."""
    before = os.umask(0o022)
    yield
    os.umask(before)


def _readable_by_others(root: Path, skip: set[Path] = frozenset()) -> list[str]:
    return sorted(f"{p.relative_to(root)} {stat.filemode(p.stat().st_mode)}" for p in [root, *root.rglob("*")]
                  if p not in skip and not p.is_symlink() and p.stat().st_mode & 0o077)


def test_what_the_cli_writes_is_its_users_alone(tmp_path, open_umask):
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    (home / "data").mkdir(mode=0o755)   # made by an earlier version, open to all: closed again
    pairs = write_jsonl(tmp_path / "p.jsonl", tiny_pairs(12))
    cli("dataset", "import", str(pairs), "--name", "rieng", home=home)
    written = [p for p in (home / "data").rglob("*") if p.is_file()]
    assert any(p.name == "studio.duckdb" for p in written) and any(p.suffix == ".parquet" for p in written), written
    assert _readable_by_others(home / "data") == []
    assert stat.S_IMODE((home / "data").stat().st_mode) == 0o700


def test_what_a_worker_writes_is_its_users_alone(tmp_path, open_umask):
    """``python -m core.worker`` started under umask 022 (by a supervisor that was): its status, its error
    and whatever else it writes in the job folder are closed to other users."""
    job_dir = tmp_path / "job"
    job_dir.mkdir(mode=0o700)
    (job_dir / "job.json").write_text(json.dumps({"kind": "judge", "job_id": 1}))   # no backend: it fails at once
    env = dict(os.environ, VITUNE_HOME=str(tmp_path / "home"), PYTHONPATH=str(REPO))
    python = os.environ.get("VITUNE_WORKER_PYTHON") or sys.executable
    proc = subprocess.run([python, "-m", "core.worker", str(job_dir)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    status = json.loads((job_dir / "status.json").read_text())
    assert status["state"] == "failed"
    assert _readable_by_others(job_dir, {job_dir / "job.json"}) == []
