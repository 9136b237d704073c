import subprocess
import sys
import time

import pytest

from tests.conftest import REPO

COMMANDS = ["models", "dataset", "review", "train", "jobs", "evaluate", "generate", "gate", "score", "export",
            "modelfile", "deploy", "releases"]


def test_help_starts_fast():
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "core", "--help"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0
    assert time.perf_counter() - t0 < 1.0
    for command in COMMANDS:
        assert command in proc.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    proc = subprocess.run([sys.executable, "-m", "core", command, "--help"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0 and "usage:" in proc.stdout


def test_heavy_libraries_are_not_imported_for_score_and_dataset():
    code = ("import sys, core.cli, core.scoring, core.datasets, core.review; "
            "print(sorted(m for m in ('torch', 'transformers', 'streamlit') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.stdout.strip() == "[]"
