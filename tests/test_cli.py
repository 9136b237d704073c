import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

COMMANDS = ["models", "dataset", "review", "train", "jobs", "evaluate", "ask", "generate", "generate-stop", "gate",
            "score", "export", "modelfile", "deploy", "releases"]


def test_help_lists_every_command_and_imports_nothing_heavy():
    code = ("import sys, runpy; sys.argv = ['core', '--help']\n"
            "try:\n    runpy.run_module('core', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print('HEAVY', sorted(m for m in ('torch', 'transformers', 'streamlit', 'duckdb') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY []"
    for command in COMMANDS:
        assert command in proc.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    proc = subprocess.run([sys.executable, "-m", "core", command, "--help"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0 and "usage:" in proc.stdout


def test_heavy_libraries_are_not_imported_for_score_and_dataset():
    code = ("import sys, core.cli, core.evaluation.scoring, core.datasets.importer, core.datasets.review; "
            "print(sorted(m for m in ('torch', 'transformers', 'streamlit') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.stdout.strip() == "[]"


def test_the_help_of_every_command_is_byte_for_byte_the_golden_file():
    """``--help`` of the top level and of every command, walked from today's parser, is what
    tests/data/cli_help.json keeps (written from the parser before the commands moved into their stages;
    ``python tests/cli_help.py`` writes it again for a change that is meant)."""
    from tests import cli_help

    golden = json.loads(cli_help.GOLDEN.read_text(encoding="utf-8"))
    now = cli_help.walk()
    assert list(now) == list(golden)   # the same commands, in the same order
    for command, text in golden.items():
        assert now[command] == text, command
    proc = subprocess.run([sys.executable, "-m", "core", "--help"], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": cli_help.COLUMNS})
    assert proc.returncode == 0 and proc.stdout == golden["python -m core"]   # what a terminal gets, too
