"""Dataset versions: immutable sets of pairs, their records, and reading their rows.

A version's rows live in Parquet files under ``data/datasets/<id>/`` (``train.parquet`` and
``test.parquet``) and its record (content hash, parent, counts, lineage, import report, who, when)
in DuckDB. Runs and evaluations reference a version by id.
"""
from __future__ import annotations

import json
import uuid
from pathlib import Path

from core import paths, store
from core.access import projects
from core.access.principal import Principal
from core.datasets.rows import FIELDS, DatasetError, content_hash, hash_rows

BATCH_ROWS = 10_000   # rows of a version read at a time where a whole split is gone through


def _new_version_folder() -> tuple[str, Path]:
    version_id = "ds-" + uuid.uuid4().hex[:10]
    folder = paths.datasets_dir() / version_id
    folder.mkdir(parents=True)
    return version_id, folder


def _write_version(
    name: str,
    train: list[dict],
    test: list[dict],
    *,
    source: str,
    parent_id: str | None,
    lineage: dict,
    report: dict,
    actor: Principal,
    project: str,
) -> dict:
    version_id, folder = _new_version_folder()
    write_splits(folder, train, test)
    return _record_version(version_id, folder, name, content_hash=content_hash(train, test),
                           rows_train=len(train), rows_test=len(test), source=source, parent_id=parent_id,
                           lineage=lineage, report=report, actor=actor, project=project)


def write_splits(folder: Path, train: list[dict], test: list[dict]) -> None:
    """A version's ``train.parquet`` and ``test.parquet`` from its rows (no database: an import process writes them)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for split, rows in (("train", train), ("test", test)):
        cols = {k: [r[k] for r in rows] for k in FIELDS + ("source",)}
        pq.write_table(pa.table(cols), folder / f"{split}.parquet")


def _record_version(version_id: str, folder: Path, name: str, *, content_hash: str, rows_train: int,
                    rows_test: int, source: str, parent_id: str | None, lineage: dict, report: dict,
                    actor: Principal, project: str) -> dict:
    """The version's record and audit entry, once its ``train.parquet`` and ``test.parquet`` are in
    ``folder`` (written by pyarrow here, or by DuckDB's COPY in core.datasets.bulk)."""
    record = {
        "id": version_id,
        "name": name,
        "parent_id": parent_id,
        "content_hash": content_hash,
        "source": source,
        "rows_total": rows_train + rows_test,
        "rows_train": rows_train,
        "rows_test": rows_test,
        "path": str(folder),
        "lineage": json.dumps(lineage, ensure_ascii=False),
        "report": json.dumps(report, ensure_ascii=False),
        "created_by": actor.name,
        "created_at": store.now(),
        "project": project,
    }
    with store.connect() as con:
        cols = ", ".join(record)
        con.execute(
            f"INSERT INTO dataset_versions ({cols}) VALUES ({', '.join('?' * len(record))})",
            list(record.values()),
        )
    store.audit("dataset.created", version_id, actor, project=project, name=name, rows=record["rows_total"])
    return record


def derive_version(parent: dict, train: list[dict], test: list[dict], *, source: str, lineage: dict,
                   actor: Principal) -> dict:
    """A new version made from ``parent`` (an edit): same name, project and ``parent_id`` set, lineage kept."""
    report = {"rows_kept": len(train) + len(test), "derived_from": parent["id"]}
    return _write_version(parent["name"], train, test, source=source, parent_id=parent["id"],
                          lineage=lineage, report=report, actor=actor, project=parent["project"])


def derive_changed(parent: dict, changes: dict[tuple[str, int], dict | None], *, source: str, lineage: dict,
                   actor: Principal) -> dict:
    """A new version made from ``parent`` (its record) with ``changes``: {(split, row index): the row's new
    fields, or None to drop the row}; same name and project, ``parent_id`` set. The parent's splits are read
    and the child's written ``BATCH_ROWS`` rows at a time (its content hash fed as they go), so a version of
    millions of rows costs a batch of memory, not the whole version."""
    import hashlib

    import pyarrow as pa
    import pyarrow.parquet as pq

    version_id, folder = _new_version_folder()
    h = hashlib.sha256()
    counts = {}
    columns = list(FIELDS) + ["source"]
    schema = pa.schema([(c, pa.string()) for c in columns])
    for split in ("train", "test"):
        counts[split] = 0
        start = 0
        with pq.ParquetWriter(folder / f"{split}.parquet", schema) as writer:
            source_file = pq.ParquetFile(Path(parent["path"]) / f"{split}.parquet")
            for batch in source_file.iter_batches(batch_size=BATCH_ROWS, columns=columns):
                rows = batch.to_pylist()
                kept = []
                for i, row in enumerate(rows, start=start):
                    if (split, i) in changes:
                        if changes[(split, i)] is None:
                            continue
                        row = {**row, **changes[(split, i)]}
                    kept.append(row)
                start += len(rows)
                if kept:
                    writer.write_table(pa.Table.from_pylist(kept, schema=schema))
                hash_rows(h, split, kept)
                counts[split] += len(kept)
    report = {"rows_kept": counts["train"] + counts["test"], "derived_from": parent["id"]}
    return _record_version(version_id, folder, parent["name"], content_hash=h.hexdigest(), rows_train=counts["train"],
                           rows_test=counts["test"], source=source, parent_id=parent["id"], lineage=lineage,
                           report=report, actor=actor, project=parent["project"])


def list_versions(actor: Principal, project: str | None = None) -> list[dict]:
    """The versions of ``project`` (or of every project the actor sees), newest first."""
    cond, params = projects.where(actor, project)
    return store.rows(f"SELECT * FROM dataset_versions WHERE {cond} ORDER BY created_at DESC", params)


def get_version(version_id: str, actor: Principal | None = None) -> dict:
    """A version by id. With ``actor``, one of another project is no version at all (as if it did not exist)."""
    got = store.one("SELECT * FROM dataset_versions WHERE id = ?", [version_id])
    if not got or (actor is not None and not actor.sees(got["project"])):
        raise DatasetError(f"no dataset version '{version_id}'")
    return got


def find_by_name(name: str, project: str | None = None) -> dict | None:
    if project:
        return store.one("SELECT * FROM dataset_versions WHERE name = ? AND project = ? ORDER BY created_at DESC "
                         "LIMIT 1", [name, project])
    return store.one("SELECT * FROM dataset_versions WHERE name = ? ORDER BY created_at DESC LIMIT 1", [name])


def load_rows(version_id: str, split: str = "train") -> list[dict]:
    import pyarrow.parquet as pq

    version = get_version(version_id)
    if split not in ("train", "test"):
        raise DatasetError(f"unknown split '{split}' (train or test)")
    return pq.read_table(Path(version["path"]) / f"{split}.parquet").to_pylist()


def head_rows(version: dict, split: str = "train", n: int = 200) -> list[dict]:
    """The first ``n`` rows of one split of a version (its record, as a listing returned it), reading no
    more of the Parquet file than those rows."""
    import pyarrow.parquet as pq

    if split not in ("train", "test"):
        raise DatasetError(f"unknown split '{split}' (train or test)")
    out: list[dict] = []
    for batch in pq.ParquetFile(Path(version["path"]) / f"{split}.parquet").iter_batches(batch_size=max(1, n)):
        out.extend(batch.to_pylist())
        if len(out) >= n:
            break
    return out[:n]


def take_rows(version_id: str, split: str, indices: list[int]) -> list[dict]:
    """Only the rows at ``indices`` (from 0) of one split, in that order: only the Parquet row groups that hold
    them are read, and only those rows become Python (a version may hold millions)."""
    import bisect

    import pyarrow as pa
    import pyarrow.parquet as pq

    if not indices:
        return []
    if split not in ("train", "test"):
        raise DatasetError(f"unknown split '{split}' (train or test)")
    version = get_version(version_id)
    pf = pq.ParquetFile(Path(version["path"]) / f"{split}.parquet")
    starts, at = [], 0
    for g in range(pf.metadata.num_row_groups):
        starts.append(at)
        at += pf.metadata.row_group(g).num_rows
    if any(not 0 <= i < at for i in indices):
        raise DatasetError(f"{version_id} has {at} {split} rows; no row {max(indices)}")
    wanted: dict[int, list[int]] = {}
    for i in dict.fromkeys(indices):
        wanted.setdefault(bisect.bisect_right(starts, i) - 1, []).append(i)
    found: dict[int, dict] = {}
    for g, rows in wanted.items():
        group = pf.read_row_group(g, columns=list(FIELDS) + ["source"])
        for i, row in zip(rows, group.take(pa.array([i - starts[g] for i in rows])).to_pylist()):
            found[i] = row
    return [dict(found[i]) for i in indices]


def lineage_chain(version_id: str) -> list[dict]:
    """The version and its ancestors, newest first (one query, however long the chain)."""
    got = store.rows(
        """WITH RECURSIVE chain(id, depth) AS (
               SELECT id, 0 FROM dataset_versions WHERE id = ?
               UNION ALL
               SELECT v.parent_id, c.depth + 1 FROM chain c JOIN dataset_versions v ON v.id = c.id
               WHERE v.parent_id IS NOT NULL AND c.depth < 1000)
           SELECT v.* FROM chain c JOIN dataset_versions v ON v.id = c.id ORDER BY c.depth""", [version_id])
    if not got:
        raise DatasetError(f"no dataset version '{version_id}'")
    return got
