"""The audit log, read back: who did what, when, to which object (admins only)."""
from __future__ import annotations

import csv
import io
import json

from core import store
from core.access.principal import Principal, require

EXPORT_LIMIT = 100_000   # the rows of one CSV export from the Admin page


def entries(actor: Principal, *, actor_name: str | None = None, action: str | None = None,
            subject: str | None = None, project: str | None = None, limit: int = 1000) -> list[dict]:
    """Newest first. ``action`` matches a prefix (``release.`` finds every release action)."""
    require(actor, "users.manage")
    where, params = [], []
    if actor_name:
        where.append("actor = ?")
        params.append(actor_name)
    if action:
        where.append("starts_with(action, ?)")
        params.append(action)
    if subject:
        where.append("subject = ?")
        params.append(subject)
    if project:
        where.append("project = ?")
        params.append(project)
    sql = "SELECT id, ts, actor, role, action, subject, project, detail FROM audit_log"
    sql += (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC LIMIT ?"
    rows = store.rows(sql, params + [int(limit)])
    for r in rows:
        r["detail"] = json.loads(r["detail"]) if isinstance(r["detail"], str) else r["detail"]
    return rows


def safe_cell(value) -> str:
    """A CSV cell that a spreadsheet will not run as a formula (a leading = + - @ is quoted away)."""
    text = "" if value is None else value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def as_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    cols = ["id", "ts", "actor", "role", "action", "subject", "project", "detail"]
    writer.writerow(cols)
    for r in rows:
        writer.writerow([safe_cell(r.get(c) if c != "ts" else str(r.get(c))) for c in cols])
    return "\ufeff" + buf.getvalue()
