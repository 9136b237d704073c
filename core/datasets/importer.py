"""Importing files as a dataset version (the Python path; large JSONL goes to ``core.datasets.bulk``).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Iterable

from core import paths, secrets, store, uploads
from core.datasets.bulk import prepare_bulk, wants_bulk
from core.datasets.rows import (DatasetError, EncodingError, ImportReport, content_hash, dedup, mix_general,
                                parse_mapping, read_pairs, split_rows)
from core.access import projects
from core.access.principal import Principal, require
from core.datasets.versions import _new_version_folder, _record_version, get_version, write_splits


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
    isolated: bool = False,
) -> tuple[dict | None, ImportReport]:
    """Import one or more files (or ``datasets`` folders) as a new dataset version.

    ``encoding`` names the files' text encoding when it is not UTF-8 (e.g. ``cp1258``, ``utf-16``);
    ``mapping`` maps file columns to fields (``{"question": "instruction"}`` or ``["question=instruction"]``);
    without it, common aliases (question/answer, prompt/response, …) are recognised and reported.
    ``bulk``: True runs the import in DuckDB SQL (core.datasets.bulk), False in Python; None (default)
    picks DuckDB when a file is over ``bulk.BULK_THRESHOLD_BYTES`` (a Parquet file: what it decodes to).
    ``isolated``: the files are read, checked and written in a process of their own (``prepare`` in
    ``python -m core.datasets.import_worker``), which the kernel's out-of-memory killer takes first: whatever
    a file does to it, the calling process (the web app, its sessions and its supervisor thread) lives on,
    and gets a one-line DatasetError. The pages import this way.
    The version goes into ``project`` (default: "default"), which ``actor`` must be an engineer of.
    Returns (version or None when no row was kept, report)."""
    project = projects.check(actor, project)
    require(actor, "dataset.import", project)
    files = [Path(f) for f in files]
    if not name or not name.strip():
        raise DatasetError("a dataset version needs a name")
    mapping = parse_mapping(mapping)
    general = None
    if general_version:
        got = get_version(general_version, actor)   # one the actor may see
        general = {"id": got["id"], "path": got["path"], "rows_total": got["rows_total"]}
    version_id, folder = _new_version_folder()
    spec = {"files": [str(f) for f in files], "folder": str(folder), "test_fraction": test_fraction, "seed": seed,
            "general": general, "general_ratio": general_ratio, "encoding": encoding, "mapping": mapping,
            "extra_lineage": extra_lineage, "bulk": bulk}
    try:
        made, report = _prepare_isolated(spec) if isolated else prepare(spec)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    if made is None:
        shutil.rmtree(folder, ignore_errors=True)
        return None, report
    version = _record_version(version_id, folder, name.strip(), content_hash=made["content_hash"],
                              rows_train=made["rows_train"], rows_test=made["rows_test"], source=source,
                              parent_id=None, lineage=made["lineage"], report=report.as_dict(), actor=actor,
                              project=project)
    return version, report


def prepare(spec: dict) -> tuple[dict | None, ImportReport]:
    """The files of ``spec`` read, validated, cleaned, de-duplicated, split and mixed, and the version's Parquet
    files written into ``spec["folder"]``: the Python path, or the bulk path (core.datasets.bulk) for large
    files. Returns what the version's record needs (content hash, rows of each split, lineage), or None when no
    row was kept, and the report. Touches no database: it runs in an import process as well as in the caller's."""
    store.crash_point("import.prepare")
    files = [Path(f) for f in spec["files"]]
    encoding, mapping, general = spec.get("encoding"), spec.get("mapping") or {}, spec.get("general")
    bulk = spec.get("bulk")
    if bulk or (bulk is None and any(wants_bulk(f, encoding, mapping) for f in files)):
        return prepare_bulk(files, Path(spec["folder"]), test_fraction=spec["test_fraction"], seed=spec["seed"],
                            general=general, general_ratio=spec["general_ratio"], encoding=encoding, mapping=mapping,
                            extra_lineage=spec.get("extra_lineage"))
    report = ImportReport()
    rows: list[dict] = []
    for f in files:
        rows.extend(read_pairs(f, report, source=f.stem, encoding=encoding, mapping=mapping))
    rows = dedup(rows, report)
    report.rows_kept = len(rows)
    if not rows:
        return None, report
    test_fraction, seed = spec["test_fraction"], spec["seed"]
    train, test = split_rows(rows, test_fraction, seed) if len(rows) > 1 else (rows, [])
    lineage: dict[str, Any] = {"files": [str(f) for f in files], "test_fraction": test_fraction, "seed": seed,
                               "encoding": encoding, "mapping": mapping or None}
    if general:
        import pyarrow.parquet as pq

        pool = [r for s in ("train", "test") for r in pq.read_table(Path(general["path"]) / f"{s}.parquet").to_pylist()]
        before = len(train)
        train = mix_general(train, pool, spec["general_ratio"], seed)
        lineage["general"] = {"version": general["id"], "ratio": spec["general_ratio"], "rows": len(train) - before}
    lineage.update(spec.get("extra_lineage") or {})
    write_splits(Path(spec["folder"]), train, test)
    return {"content_hash": content_hash(train, test), "rows_train": len(train), "rows_test": len(test),
            "lineage": lineage}, report


IMPORT_MEMORY_ENV = "VITUNE_IMPORT_MEMORY"   # e.g. "8GB": the address space an import process may take


def _prepare_isolated(spec: dict) -> tuple[dict | None, ImportReport]:
    """``prepare`` in ``python -m core.datasets.import_worker WORK``: the spec goes in ``WORK/spec.json``, the
    result comes back in ``WORK/result.json``. A process that dies (killed, out of memory) is a DatasetError
    naming the files; nothing of it is left behind."""
    work = paths.data_dir() / "tmp" / f"import-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    work.mkdir(parents=True)
    names = ", ".join(Path(f).name for f in spec["files"]) or "the import"
    try:
        (work / "spec.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
        env = secrets.worker_env(dict(os.environ))   # it needs no endpoint key
        env["VITUNE_HOME"] = str(paths.home())
        env["PYTHONPATH"] = str(paths.REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        with open(work / "import.log", "wb") as log:
            proc = subprocess.run([sys.executable, "-m", "core.datasets.import_worker", str(work)],
                                  cwd=str(paths.REPO_ROOT), env=env, stdin=subprocess.DEVNULL, stdout=log,
                                  stderr=subprocess.STDOUT)
        try:
            out = json.loads((work / "result.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            out = None
        if out is None:
            if proc.returncode < 0:
                how = signal.Signals(-proc.returncode).name
                why = (" (most likely out of memory)" if proc.returncode == -signal.SIGKILL else "")
                raise DatasetError(f"{names}: the import's process was killed by {how}{why}; nothing was imported "
                                   "and the studio goes on")
            from core import errors

            tail = (work / "import.log").read_text(encoding="utf-8", errors="replace")[-4000:]
            line = errors.report(RuntimeError(f"the import process of {names} exited {proc.returncode}:\n{tail}"),
                                 "dataset import")
            raise DatasetError(f"{names}: the import failed: {line}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if "error" in out:
        err = out["error"]
        if err.get("kind") == "encoding":
            raise EncodingError(err["problem"], err["named"])
        raise DatasetError(err["message"])
    return out["made"], ImportReport(**out["report"])


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
