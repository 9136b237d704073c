"""What the studio does with an error nobody foresaw: one line for the person in front of it, the
whole trace in the studio's error log (``data/logs/errors.log``).

Errors the studio foresees (a bad file, an unknown id, a refused role) are raised as exceptions whose
text is already that line (``DatasetError``, ``JobError``, ``AccessDenied``, …) and are shown as
they are. Everything else reaches the edge (``core.cli.main`` for a command, ``app.py`` for a page),
which calls ``report`` and shows its line. Worker side too: this module imports only the standard
library and ``core.paths``.
"""
from __future__ import annotations

import os
import time
import traceback
from pathlib import Path

from core import paths

MAX_LOG_BYTES = 10 * 1024**2   # the log is started again (the old one kept as errors.log.1) beyond this


def log_path() -> Path:
    return paths.data_dir() / "logs" / "errors.log"


def foreseen(exc: BaseException) -> bool:
    """One of the studio's own errors, whose text is already the message (a bad file, an unknown id)."""
    return isinstance(exc, (ValueError, RuntimeError)) and type(exc).__module__.startswith("core")


def describe(exc: BaseException) -> str:
    """The exception's whole text, with its type when the text alone says little (not one of the studio's
    own errors, or no text at all): what a failed job records as its error."""
    text = str(exc).strip()
    name = type(exc).__name__
    if not text:
        return name
    return text if foreseen(exc) else f"{name}: {text}"


def one_line(exc: BaseException) -> str:
    """The exception as one line: its first line of text, with its type when the text alone says little."""
    return (describe(exc).splitlines() or [""])[0].strip()


def report(exc: BaseException, where: str) -> str:
    """Write the trace of ``exc`` (raised in ``where``: a command or a page) to the error log and return
    the line to show: what went wrong, and where the trace is. Never raises (a log that cannot be
    written is named in the line instead)."""
    line = one_line(exc)
    try:
        path = log_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.stat().st_size > MAX_LOG_BYTES:
            os.replace(path, path.with_name(path.name + ".1"))
        trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        with path.open("a", encoding="utf-8") as fh:
            fh.write(f"── {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()} {where}\n{trace}\n")
        return f"{line} (an unexpected error; the details are in {path})"
    except OSError as log_error:
        return f"{line} (an unexpected error; the error log could not be written: {log_error.strerror})"
