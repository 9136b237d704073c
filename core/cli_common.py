"""What the commands of ``python -m core`` share: the actor they act as, printing a result, failing in
one line, the files they write, argparse types for numbers, a job's progress on stderr.

The commands live in their stages (``core/<stage>/commands.py``) and ``core/cli.py`` assembles them;
both import from here, never from each other (an import circle). The names keep the leading underscore
they had in ``cli.py``: they are the commands' own, not an API of ``core``."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _actor():
    """The CLI acts as the machine's operator: an admin, its OS user name recorded in the audit log."""
    from core.access import principal

    return principal.operator()


def _print(obj, as_json: bool) -> None:
    if as_json:
        print(json.dumps(obj, ensure_ascii=False, indent=2, default=str))
    else:
        for k, v in obj.items():
            print(f"{k}: {v}")


def _fail(message: str, code: int = 1) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


class OutputError(RuntimeError):
    """A file the command was told to write cannot be written."""


def _check_output(path: str | Path) -> Path:
    """An output file the command can write: not a folder, in a folder that exists (checked before the
    command does its work, so that a typo in --out costs nothing)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: a folder; give a file name to write")
    parent = path.parent
    if not parent.is_dir():
        what = "is a file, not a folder" if parent.exists() else "does not exist"
        raise OutputError(f"cannot write {path}: the folder {parent} {what}")
    return path


def _write(path: str | Path, text: str) -> Path:
    """Write a command's output file, or say in one line why it cannot be written."""
    path = _check_output(path)
    try:
        path.write_text(text, encoding="utf-8")
    except IsADirectoryError:
        raise OutputError(f"{path}: a folder; give a file name to write") from None
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


# argparse types: a bad number is a usage error (exit 2) naming the option, never a traceback further on

def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _seconds(text: str) -> float:
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, not '{text}'") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not '{text}'")
    return value


def _progress_printer(label: str):
    from core.jobs import queue

    last = {"text": None}

    def show(job) -> None:
        text = queue.describe(job, every_s=10)   # a compile shows as a phase with its time, not as 0/s
        if text != last["text"]:
            print(text, file=sys.stderr, flush=True)
            last["text"] = text

    return show
