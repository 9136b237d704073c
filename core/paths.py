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


def _ensure(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p
