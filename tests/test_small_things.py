"""What a new user meets first (issue 13's "small things"): each checked against the real part."""
from __future__ import annotations

import csv
import io
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


def test_a_closed_pipe_ends_a_listing_quietly(home):
    """`python -m core … | head` when head has gone: exit 141 as `ls | head` does, and no traceback."""
    from tests.conftest import cli

    cli("dataset", "import-samples", home=home)   # something to list
    read_end, write_end = os.pipe()
    os.close(read_end)   # the reader is gone before a line is written: every write meets EPIPE
    env = dict(os.environ, VITUNE_HOME=str(home))
    for args in (["dataset", "list"], ["audit"], ["projects", "list"]):
        proc = subprocess.run([sys.executable, "-m", "core", *args], cwd=REPO, env=env, stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=120)
        assert proc.returncode == 141, (args, proc.stderr)
        assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr
    os.close(write_end)


@pytest.mark.parametrize("max_steps, every", [(40, 10), (20, 5), (3, 1), (1000, 200)])
def test_a_short_run_saves_checkpoints_it_can_resume_from(max_steps, every):
    """The demo preset stops at 40 steps; a checkpoint every 200 would leave nothing to resume from."""
    from core.training.config import CHECKPOINTS_PER_RUN
    from core.training.presets import DEMO_PRESET, preset

    cfg = preset(DEMO_PRESET, max_steps=max_steps, save_steps=200)
    assert cfg.checkpoint_steps() == every
    assert max_steps // cfg.checkpoint_steps() >= min(CHECKPOINTS_PER_RUN, max_steps)


def test_a_run_by_epochs_counts_its_steps_for_the_checkpoints():
    from core.training.presets import DEMO_PRESET, preset

    cfg = preset(DEMO_PRESET, max_steps=-1, save_steps=200)
    assert cfg.checkpoint_steps(total_steps=30) == 8     # ceil(30 / 4)
    assert cfg.checkpoint_steps() == 200                   # nothing known of the run's length: as set


def test_eval_loss_checkpoints_fall_on_evaluated_steps():
    from core.training.presets import DEMO_PRESET, preset

    cfg = preset(DEMO_PRESET, max_steps=40, save_steps=200, eval_steps=4)
    assert cfg.checkpoint_steps() == 8   # 10 rounded down to a multiple of the eval steps


def test_csv_exports_neutralise_formulas():
    """A cell a spreadsheet would run (= + - @, a tab or a carriage return first) is quoted away."""
    from core.access import audit

    rows = [{"id": 1, "ts": "2026-12-01 10:00", "actor": "=HYPERLINK(\"http://x\")", "role": "@SUM(A1)",
             "action": "+1", "subject": "-2", "project": "\tcmd", "detail": {"k": "=1"}},
            {"id": 2, "ts": "2026-12-01", "actor": "an", "role": "admin", "action": "gate.override",
             "subject": "run-1", "project": "default", "detail": {}}]
    got = list(csv.reader(io.StringIO(audit.as_csv(rows).lstrip("\ufeff"))))
    assert got[1][2:7] == ["'=HYPERLINK(\"http://x\")", "'@SUM(A1)", "'+1", "'-2", "'\tcmd"]
    assert got[1][7] == '{"k": "=1"}'   # JSON starts with {, harmless
    assert got[2][2:7] == ["an", "admin", "gate.override", "run-1", "default"]


def test_every_folder_of_client_data_is_ignored_by_git():
    def ignored(path: str) -> bool:
        return subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=REPO).returncode == 0

    for path in ("data/uploads/ab12/x.jsonl", "data/generations/g1/generated.jsonl", "data/evaluations/e/x.jsonl",
                 "data/tmp/x", "data/imports/client.csv", "data/datasets/ds-1/train.parquet", "data/runs/r/x",
                 "data/logs/errors.log", "data/studio.duckdb", "models/exports/run/model.gguf",
                 ".streamlit/secrets.toml"):
        assert ignored(path), path
    for path in ("data/samples/customer_care.jsonl", ".streamlit/config.toml", "core/store/connection.py"):
        assert not ignored(path), path


def test_the_studio_shows_visitors_only_its_own_controls():
    """Streamlit's toolbar (its Deploy button, the developer menu) is off however the studio is started:
    in .streamlit/config.toml and in scripts/serve.py's defaults (the browser test looks at the page)."""
    import tomllib

    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
    assert config["client"]["toolbarMode"] == "minimal"
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import serve
    finally:
        sys.path.remove(str(REPO / "scripts"))
    assert serve.DEFAULTS["client.toolbarMode"] == "minimal"
