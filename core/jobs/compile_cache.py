"""Where a worker's compilers keep what they compiled: under the studio's home, one folder a base model.

The first training step on CUDA compiles for a minute or more (Unsloth's generated modules, torch's
Inductor kernels, Triton's binaries, the autotuning), and so does the first batch of an evaluation
with the static engine. Each of those compilers keeps a cache when told where; by default they write
under ``/tmp`` (lost with the machine) or the worker's working folder. The worker points them at
``HOME/data/cache/compile/<model>/`` before anything imports torch, so the next job of the same model
and shapes reuses them. A variable the environment already sets is left alone (an operator's choice).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from core import paths

# the compilers' own switches: each names a folder its cache goes to
VARIABLES = {
    "TORCHINDUCTOR_CACHE_DIR": "inductor",    # Inductor's FX-graph and AOTAutograd caches, its kernels
    "TRITON_CACHE_DIR": "triton",             # compiled Triton kernels
    "UNSLOTH_COMPILE_LOCATION": "unsloth",    # Unsloth's generated, patched modules
}


def model_key(base_model: str | None) -> str:
    """A folder name for a base model: its last path parts, letters, digits, dots and dashes only."""
    name = (base_model or "unknown").rstrip("/\\")
    parts = [p for p in re.split(r"[/\\]+", name) if p][-2:] or ["unknown"]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", "--".join(parts)).strip("-.")[:120] or "unknown"


def folder(base_model: str | None) -> Path:
    return paths.data_dir() / "cache" / "compile" / model_key(base_model)


def use(base_model: str | None, environ=os.environ) -> dict[str, str]:
    """Point the compilers' caches at this model's folder (where the environment names none); returns
    what was set. Call before torch is imported."""
    root = folder(base_model)
    chosen = {}
    for variable, sub in VARIABLES.items():
        if environ.get(variable):
            continue
        target = root / sub
        target.mkdir(parents=True, exist_ok=True)
        environ[variable] = str(target)
        chosen[variable] = str(target)
    return chosen
