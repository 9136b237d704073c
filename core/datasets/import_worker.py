"""An import's own process: ``python -m core.datasets.import_worker WORK`` reads ``WORK/spec.json``, runs
``core.datasets.importer.prepare`` (read, check, clean, split; the version's Parquet files written into the
folder the spec names) and writes ``WORK/result.json``: what the version's record needs and the report, or the
error in one line. It opens no database: the caller records the version.

It is the process the kernel's out-of-memory killer takes first (``oom_score_adj`` 1000), and it may be held to
an address space (``VITUNE_IMPORT_MEMORY``, e.g. ``8GB``): a file that gets past every check and still
takes too much memory kills this process, never the web app that asked for the import (its sessions, its
supervisor thread), the way a generation job's worker parses documents away from it.
"""
from __future__ import annotations

import dataclasses
import json
import re
import sys
from pathlib import Path

from core.jobs.files import write_json_atomic


def _expendable() -> str | None:
    """First in line for the out-of-memory killer, and held to ``VITUNE_IMPORT_MEMORY`` when set (returned)."""
    import os
    import resource

    try:
        Path("/proc/self/oom_score_adj").write_text("1000")
    except OSError:
        pass   # not Linux, or not allowed: the address-space limit (when set) still holds
    limit = os.environ.get("VITUNE_IMPORT_MEMORY", "").strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMG]?)B?", limit.upper())
    if m:
        scale = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}[m.group(2)]
        size = int(float(m.group(1)) * scale)
        resource.setrlimit(resource.RLIMIT_AS, (size, resource.RLIM_INFINITY))
        return limit
    return None


def main(argv: list[str]) -> int:
    work = Path(argv[1])
    limit = _expendable()
    spec = json.loads((work / "spec.json").read_text(encoding="utf-8"))
    names = ", ".join(Path(f).name for f in spec["files"]) or "the import"
    from core.datasets import importer, rows

    try:
        made, report = importer.prepare(spec)
        out = {"made": made, "report": dataclasses.asdict(report)}
    except rows.EncodingError as exc:
        out = {"error": {"kind": "encoding", "problem": exc.problem, "named": exc.named}}
    except rows.DatasetError as exc:
        out = {"error": {"kind": "dataset", "message": str(exc)}}
    except MemoryError:
        out = {"error": {"kind": "dataset", "message": f"{names}: the import needs more memory than its process may "
                                                       f"take ({limit or 'the machine'}); nothing was imported"}}
    except Exception as exc:   # the edge of this process: one line, the trace in the error log
        from core import errors

        out = {"error": {"kind": "dataset", "message": f"{names}: the import failed: "
                                                       f"{errors.report(exc, 'dataset import')}"}}
    write_json_atomic(work / "result.json", out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
