"""Where the studio keeps its state.

Everything lives under one home folder: the repository root by default (its ``data/`` and
``models/``), or ``$VITUNE_HOME`` when set. Tests point ``VITUNE_HOME`` at a temporary folder.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def home() -> Path:
    env = os.environ.get("VITUNE_HOME")
    root = Path(env).expanduser().resolve() if env else REPO_ROOT
    return root


def data_dir() -> Path:
    return _ensure(home() / "data")


def models_dir() -> Path:
    return _ensure(home() / "models")


def db_path() -> Path:
    return data_dir() / "studio.duckdb"


def datasets_dir() -> Path:
    return _ensure(data_dir() / "datasets")


def runs_dir() -> Path:
    return _ensure(data_dir() / "runs")


def base_models_dir() -> Path:
    return _ensure(models_dir() / "base")


def exports_dir() -> Path:
    return _ensure(models_dir() / "exports")


def samples_dir() -> Path:
    """Sample data ships with the code, so it is always read from the repository."""
    return REPO_ROOT / "data" / "samples"


def default_base_model_dir() -> Path:
    """The embedded default model. Shared across homes unless VITUNE_MODELS_DIR says otherwise,
    so tests with a temporary home reuse the model prepared once by the setup command."""
    env = os.environ.get("VITUNE_DEFAULT_MODEL_DIR")
    if env:
        return Path(env).expanduser().resolve()
    return REPO_ROOT / "models" / "base" / "gemma-3-270m"


def llama_cpp_dir() -> Path:
    """llama.cpp as vendored by the llama-cpp-python sdist that the setup command unpacks."""
    env = os.environ.get("VITUNE_LLAMA_CPP_DIR")
    if env:
        return Path(env).expanduser().resolve()
    return REPO_ROOT / ".cache" / "llama_cpp_python-0.3.36" / "vendor" / "llama.cpp"


PRIVATE_UMASK = 0o077


def private_files() -> None:
    """What this process writes is its user's alone: umask 077 (files 0600, folders 0700), and the home's
    ``data/`` and ``models/`` folders, made by an earlier version without it, closed to other users (when
    this user owns them). The app (scripts/serve.py, app.py), the CLI (``python -m core``) and every worker
    (``python -m core.worker``) call it first: the database holds password hashes and every client's data,
    the job folders their pairs and models. Root on the box reads everything all the same."""
    os.umask(PRIVATE_UMASK)
    for folder in (home() / "data", home() / "models"):
        try:
            if folder.is_dir() and folder.stat().st_uid == os.geteuid() and folder.stat().st_mode & 0o077:
                folder.chmod(0o700)
        except OSError:   # a folder we may not change: its files are what umask made them
            pass


def _ensure(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p
