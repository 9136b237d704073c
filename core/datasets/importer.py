"""Importing files as a dataset version (the Python path; large JSONL goes to ``core.datasets.bulk``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

from core import paths, uploads
from core.datasets.bulk import import_bulk, wants_bulk
from core.datasets.rows import (DatasetError, ImportReport, dedup, mix_general, parse_mapping, read_pairs,
                                split_rows)
from core.access import projects
from core.access.principal import Principal, require
from core.datasets.versions import _write_version, get_version, load_rows


def import_files(
    files: Iterable[str | Path],
    name: str,
    *,
    test_fraction: float = 0.1,
    seed: int = 42,
    general_version: str | None = None,
    general_ratio: float = 0.05,
    actor: Principal,
    project: str | None = None,
    encoding: str | None = None,
    mapping: dict[str, str] | Iterable[str] | None = None,
    source: str = "import",
    extra_lineage: dict | None = None,
    bulk: bool | None = None,
) -> tuple[dict | None, ImportReport]:
    """Import one or more files (or ``datasets`` folders) as a new dataset version.

    ``encoding`` names the files' text encoding when it is not UTF-8 (e.g. ``cp1258``, ``utf-16``);
    ``mapping`` maps file columns to fields (``{"question": "instruction"}`` or ``["question=instruction"]``);
    without it, common aliases (question/answer, prompt/response, …) are recognised and reported.
    ``bulk``: True runs the import in DuckDB SQL (core.datasets.bulk), False in Python; None (default)
    picks DuckDB when a JSONL file is over ``bulk.BULK_THRESHOLD_BYTES``.
    The version goes into ``project`` (default: "default"), which ``actor`` must be an engineer of.
    Returns (version or None when no row was kept, report)."""
    project = projects.check(actor, project)
    require(actor, "dataset.import", project)
    files = [Path(f) for f in files]
    if not name or not name.strip():
        raise DatasetError("a dataset version needs a name")
    mapping = parse_mapping(mapping)
    if general_version:
        get_version(general_version, actor)   # one the actor may see
    if bulk or (bulk is None and any(wants_bulk(f, encoding) for f in files)):
        return import_bulk(
            files, name.strip(), test_fraction=test_fraction, seed=seed, general_version=general_version,
            general_ratio=general_ratio, actor=actor, project=project, encoding=encoding, mapping=mapping,
            source=source, extra_lineage=extra_lineage)
    report = ImportReport()
    rows: list[dict] = []
    for f in files:
        rows.extend(read_pairs(f, report, source=f.stem, encoding=encoding, mapping=mapping))
    rows = dedup(rows, report)
    report.rows_kept = len(rows)
    if not rows:
        return None, report
    train, test = split_rows(rows, test_fraction, seed) if len(rows) > 1 else (rows, [])
    lineage: dict[str, Any] = {"files": [str(f) for f in files], "test_fraction": test_fraction, "seed": seed,
                               "encoding": encoding, "mapping": mapping or None}
    if general_version:
        general = load_rows(general_version, "train") + load_rows(general_version, "test")
        before = len(train)
        train = mix_general(train, general, general_ratio, seed)
        lineage["general"] = {"version": general_version, "ratio": general_ratio, "rows": len(train) - before}
    lineage.update(extra_lineage or {})
    version = _write_version(
        name.strip(),
        train,
        test,
        source=source,
        parent_id=None,
        lineage=lineage,
        report=report.as_dict(),
        actor=actor,
        project=project,
    )
    return version, report


def save_upload(filename: str, data) -> Path:
    """Keep an uploaded file (bytes, or the upload's file object) under data/uploads/ for its import;
    ``remove_uploads`` takes it away when the import ends (``core.uploads``)."""
    return uploads.save(filename, data)


def remove_uploads(files) -> int:
    """Remove the uploads among ``files`` (paths elsewhere are left alone)."""
    return uploads.remove(files)


IMPORT_ROOT_ENV = "VITUNE_IMPORT_ROOT"


def import_root() -> Path:
    """The one folder a page may import from by path ("a file or folder on the server"):
    ``$VITUNE_IMPORT_ROOT``, else ``data/imports/`` under the studio's home (made when missing)."""
    env = os.environ.get(IMPORT_ROOT_ENV)
    root = Path(env).expanduser() if env else paths.data_dir() / "imports"
    if not env:
        root.mkdir(parents=True, exist_ok=True)
    return root.resolve()


def server_path(text: str) -> Path:
    """A path typed into a page, as a file or folder under the import root (relative to it, or absolute
    inside it; links are followed first, so none leads out). DatasetError naming the root otherwise: the
    web app reads nothing else of the server's filesystem. (The CLI reads what its user can.)"""
    root = import_root()
    raw = (text or "").strip()
    if not raw:
        raise DatasetError("give a path under the import root")
    if "\x00" in raw:
        raise DatasetError(f"{raw!r} is not a path")
    target = (root / Path(raw).expanduser()).resolve()
    if target != root and not target.is_relative_to(root):
        raise DatasetError(f"{raw}: outside the import root {root}; copy the file there (or set "
                           f"{IMPORT_ROOT_ENV}), or import it with `python -m core dataset import`")
    if not target.exists():
        raise DatasetError(f"{raw}: no such file or folder under the import root {root}")
    return target
