"""An interpreter like a GPU host's worker environment: every package of this checkout's ``.venv``
except the app side (DuckDB, streamlit, plotly), which it cannot import at all.

It is a real virtual environment (``python -m venv``) whose only site folder links each entry of
``.venv``'s site-packages but those packages and their metadata; ``conftest.py`` makes it the
interpreter of every worker the tests start (``VITUNE_WORKER_PYTHON``), so each job kind runs across
the boundary for real."""
from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

APP_SIDE = ("duckdb", "_duckdb", "_duckdb-stubs", "adbc_driver_duckdb", "streamlit", "plotly", "_plotly_utils")


def _top_name(entry: str) -> str:
    """``duckdb-2.0.1.dist-info`` → ``duckdb``; ``_duckdb.cpython-311-x86_64-linux-gnu.so`` → ``_duckdb``."""
    name = entry.split(".", 1)[0] if not entry.endswith("-stubs") else entry
    return name.split("-", 1)[0] if not name.endswith("-stubs") else name


def build(target: Path, without: tuple[str, ...] = APP_SIDE) -> Path:
    """Make the environment in ``target`` (once) and return its python."""
    python = target / "bin" / "python"
    if python.exists():
        return python
    base = getattr(sys, "_base_executable", None) or sys.executable
    subprocess.run([base, "-m", "venv", "--without-pip", str(target)], check=True, capture_output=True)
    source = Path(sysconfig.get_paths()["purelib"])
    linked = target / "linked-site-packages"
    linked.mkdir()
    for entry in source.iterdir():
        if _top_name(entry.name) in without or entry.name == "__pycache__":
            continue
        (linked / entry.name).symlink_to(entry)
    own = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              check=True, capture_output=True, text=True).stdout.strip())
    # addsitedir also runs the linked .pth files (e.g. setuptools' distutils-precedence.pth)
    (own / "vitune-linked.pth").write_text(f"import site; site.addsitedir({str(linked)!r})\n")
    return python


if __name__ == "__main__":  # python tests/worker_env.py DIR: make one by hand, to try a worker in it
    print(build(Path(sys.argv[1]).resolve()))
