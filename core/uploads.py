"""Files uploaded through a page: kept under ``data/uploads/`` only while their import or generation needs
them. ``save`` writes one into a folder of its own; ``remove`` takes it away again (the Datasets page when
its import ends, the generation worker once it has read its documents), whatever the outcome.

Worker side too: this module imports only the standard library and ``core.paths``.
"""
from __future__ import annotations

import re
import shutil
import unicodedata
import uuid
from pathlib import Path
from typing import BinaryIO

from core import paths


def uploads_dir() -> Path:
    return paths.data_dir() / "uploads"


def clean_name(filename: str) -> str:
    """The file's own name (no folders, so no ``../``) as its owner wrote it, so that a message about it names
    the file they know ("tải lên.jsonl"): letters of any script, digits, spaces, brackets, '.', '_' and '-' (NFC);
    anything else becomes '_'."""
    name = unicodedata.normalize("NFC", Path(str(filename).replace("\\", "/")).name)
    name = re.sub(r" {2,}", " ", re.sub(r"[^\w ().-]+", "_", name)).strip(" ._")
    return name or "upload"


def save(filename: str, data: bytes | BinaryIO) -> Path:
    """Write an upload (bytes, or a file object read in blocks) to a folder of its own under data/uploads/."""
    folder = uploads_dir() / uuid.uuid4().hex[:12]
    folder.mkdir(parents=True)
    target = folder / clean_name(filename)
    if isinstance(data, (bytes, bytearray, memoryview)):
        target.write_bytes(data)
    else:
        data.seek(0)
        with target.open("wb") as out:
            shutil.copyfileobj(data, out, 1024 * 1024)
    return target


def is_upload(path: str | Path) -> bool:
    try:
        return Path(path).resolve().parent.parent == uploads_dir().resolve()
    except OSError:
        return False


def remove(files) -> int:
    """Remove the uploads among ``files`` (each with its folder); other paths are left alone. Returns how
    many were removed."""
    removed = 0
    for f in files or []:
        if is_upload(f):
            shutil.rmtree(Path(f).resolve().parent, ignore_errors=True)
            removed += 1
    return removed
