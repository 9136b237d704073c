"""Client demo links: an unguessable token that opens the playground for chosen runs or releases.

An engineer creates a link (``create``) for runs and releases of one project, with an expiry and
optional demo prompts; the studio keeps only the token's sha256. Whoever opens
``…/?demo=TOKEN`` acts as a **demo** principal until the link expires or is revoked: it sees the
playground for exactly those models, their gate verdict and scores, and the prompts, and can do
nothing but ask questions. ``?demo=`` with a wrong, expired or revoked token shows nothing.
"""
from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from datetime import timedelta

from core import store
from core.access.principal import AccessDenied, Principal, require

MAX_DAYS = 90


class DemoLinkError(ValueError):
    pass


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _decode(row: dict | None) -> dict | None:
    if row:
        for key in ("runs", "releases", "prompts"):
            if isinstance(row.get(key), str):
                row[key] = json.loads(row[key])
        row.pop("token_hash", None)
    return row


def create(*, actor: Principal, runs: list[str] = (), releases: list[str] = (), prompts: list[str] = (),
           days: float = 7, title: str | None = None) -> tuple[dict, str]:
    """A new link; returns (its record, the token — shown once, never stored)."""
    runs, releases = list(dict.fromkeys(runs)), list(dict.fromkeys(releases))
    if not runs and not releases:
        raise DemoLinkError("a demo link needs at least one run or release")
    if not 0 < days <= MAX_DAYS:
        raise DemoLinkError(f"a demo link expires within 1 minute to {MAX_DAYS} days, not {days}")
    projects = set()
    for run_id in runs:
        row = store.one("SELECT r.project, j.state FROM runs r JOIN jobs j ON j.id = r.job_id WHERE r.id = ?", [run_id])
        if not row or not actor.sees(row["project"]):
            raise DemoLinkError(f"no run '{run_id}'")
        if row["state"] != "succeeded":
            raise DemoLinkError(f"run {run_id} has not finished training ({row['state']})")
        projects.add(row["project"])
    for release_id in releases:
        row = store.one("SELECT project, state FROM releases WHERE id = ?", [release_id])
        if not row or not actor.sees(row["project"]):
            raise DemoLinkError(f"no release '{release_id}'")
        if row["state"] == "deleted":
            raise DemoLinkError(f"release {release_id} is deleted")
        projects.add(row["project"])
    if len(projects) > 1:
        raise DemoLinkError(f"a demo link shows one client's models: these belong to {', '.join(sorted(projects))}")
    project = projects.pop()
    require(actor, "demo.create", project)
    prompts = [p.strip() for p in prompts if p and p.strip()]
    token = secrets.token_urlsafe(24)
    rec = {"id": "demo-" + uuid.uuid4().hex[:10], "token_hash": _hash(token), "project": project,
           "title": (title or "").strip() or None, "runs": json.dumps(runs), "releases": json.dumps(releases),
           "prompts": json.dumps(prompts, ensure_ascii=False), "created_by": actor.name, "created_at": store.now(),
           "expires_at": store.now() + timedelta(days=days)}
    with store.connect() as con:
        con.execute(f"INSERT INTO demo_links ({', '.join(rec)}) VALUES ({', '.join('?' * len(rec))})", list(rec.values()))
        store.audit("demo.created", rec["id"], actor, con=con, project=project, runs=runs, releases=releases,
                    expires_at=rec["expires_at"])
    return get(rec["id"]), token


def get(link_id: str) -> dict | None:
    return _decode(store.one("SELECT * FROM demo_links WHERE id = ?", [link_id]))


def list_links(actor: Principal) -> list[dict]:
    require(actor, "demo.create")
    return [_decode(r) for r in store.rows("SELECT * FROM demo_links ORDER BY created_at DESC")
            if actor.sees(r["project"])]


def revoke(link_id: str, *, actor: Principal) -> dict:
    link = get(link_id)
    if not link or not actor.sees(link["project"]):
        raise DemoLinkError(f"no demo link '{link_id}'")
    require(actor, "demo.revoke", link["project"])
    if link["revoked_at"]:
        raise DemoLinkError(f"demo link {link_id} is already revoked")
    with store.connect() as con:
        con.execute("UPDATE demo_links SET revoked_at = ?, revoked_by = ? WHERE id = ?", [store.now(), actor.name, link_id])
        store.audit("demo.revoked", link_id, actor, con=con, project=link["project"])
    return get(link_id)


def resolve(token: str | None) -> Principal | None:
    """The demo principal of a link's token, while the link is neither expired nor revoked."""
    if not isinstance(token, str) or not token or len(token) > 200:
        return None
    row = store.one("SELECT * FROM demo_links WHERE token_hash = ? AND revoked_at IS NULL AND expires_at > ?",
                    [_hash(token), store.now()])
    if not row:
        return None
    link = _decode(dict(row))
    store.execute("UPDATE demo_links SET last_used_at = ? WHERE id = ?", [store.now(), link["id"]])
    return Principal(name=f"demo:{link['id']}", role="demo", kind="demo", projects=frozenset([link["project"]]),
                     grant={"link": link["id"], "project": link["project"], "runs": link["runs"],
                            "releases": link["releases"], "prompts": link["prompts"], "title": link["title"],
                            "expires_at": str(link["expires_at"])})


def grants(actor: Principal, run_id: str | None = None, release_id: str | None = None) -> bool:
    """Whether a demo principal's link covers this run or release (team principals: always)."""
    if actor.kind != "demo":
        return True
    return (run_id is not None and run_id in actor.grant.get("runs", [])) or \
        (release_id is not None and release_id in actor.grant.get("releases", []))


def require_grant(actor: Principal, run_id: str | None = None, release_id: str | None = None) -> None:
    if not grants(actor, run_id, release_id):
        raise AccessDenied("this demo link does not show that model")
