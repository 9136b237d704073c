"""Start the studio's web app in the background on loopback, the way scripts/studio.sh starts it, and
wait until it answers: for the browser tests and bench/scale.py (``from scripts.launch import …``)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_studio(home: Path, port: int, **env_extra: str) -> subprocess.Popen:
    """``scripts/serve.py`` on 127.0.0.1:``port`` for the studio home ``home`` (one CPU slot), its output in
    ``home/studio-PORT.log``; RuntimeError with the log's tail when it does not come up within 2 minutes."""
    env = dict(os.environ, VITUNE_HOME=str(home), VITUNE_SLOTS="cpu", **env_extra)
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
    raise RuntimeError("the studio did not start: " + log.read_text(errors="replace")[-2000:])
