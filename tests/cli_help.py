"""The ``--help`` of ``python -m core`` and of every command under it, as the golden file
``tests/data/cli_help.json`` keeps it: ``tests/test_cli.py`` compares today's parser with that file, so
that moving the commands about cannot change a byte of what a person reads.

``walk()`` goes down the argparse tree (commands, and their commands if one ever has some) and formats
each parser's help as ``--help`` prints it, 100 columns wide. ``python tests/cli_help.py`` writes the file
again: only for a change of the help that is meant, and with the studio's own interpreter (argparse's
layout differs between Python versions)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "tests" / "data" / "cli_help.json"
COLUMNS = "100"


def walk(parser: argparse.ArgumentParser | None = None) -> dict[str, str]:
    """{the command line before ``--help``: what it prints}, the top-level parser first, then every
    command in the order ``--help`` lists them, each followed by its own commands."""
    if parser is None:
        from core import cli

        parser = cli.build_parser()
    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = COLUMNS   # argparse's formatter reads the width from here
    try:
        out: dict[str, str] = {}
        _walk(parser, out)
        return out
    finally:
        if before is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = before


def _walk(parser: argparse.ArgumentParser, out: dict[str, str]) -> None:
    out[parser.prog] = parser.format_help()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):   # an alias names the same parser twice
                _walk(child, out)


def write(path: Path = GOLDEN) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(walk(), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return path


if __name__ == "__main__":   # python tests/cli_help.py: write the golden file from today's parser
    sys.path.insert(0, str(REPO))
    print(f"wrote {write()}")
