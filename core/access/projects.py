"""Projects: one per client. Every dataset version, run, evaluation, release and job belongs to one;
listings show the chosen project's, and an account limited to some projects sees nothing of others."""
from __future__ import annotations

import re

from core import store
from core.access.principal import DEFAULT_PROJECT, AccessDenied, Principal, require, visible

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


class ProjectError(ValueError):
    pass


def list_projects(actor: Principal) -> list[dict]:
    """The projects the actor may see."""
    allowed = visible(actor)
    got = store.rows("SELECT * FROM projects ORDER BY name = 'default' DESC, name")
    return [p for p in got if allowed is None or p["name"] in allowed]


def add_project(name: str, title: str | None = None, *, actor: Principal) -> dict:
    require(actor, "project.create")
    name = (name or "").strip().lower()
    if not _NAME.match(name):
        raise ProjectError(f"'{name}' is not a valid project name (1–40 of a–z, 0–9, '_', '-')")
    if store.one("SELECT name FROM projects WHERE name = ?", [name]):
        raise ProjectError(f"project {name} already exists")
    with store.connect() as con:
        con.execute("INSERT INTO projects VALUES (?, ?, ?, ?)", [name, title or name, actor.name, store.now()])
        store.audit("project.created", name, actor, con=con, project=name, title=title)
    return store.one("SELECT * FROM projects WHERE name = ?", [name])


def check(actor: Principal, project: str | None) -> str:
    """The project (default when None), which must exist and which the actor must see."""
    project = project or DEFAULT_PROJECT
    if not store.one("SELECT name FROM projects WHERE name = ?", [project]):
        raise ProjectError(f"no project '{project}' (see `python -m core projects list`)")
    if not actor.sees(project):
        raise AccessDenied(f"{actor.label} has no access to project '{project}'")
    return project


def where(actor: Principal, project: str | None, column: str = "project") -> tuple[str, list]:
    """A SQL condition (and its parameters) for the rows a listing may show: the chosen project (or all
    the actor sees, when None)."""
    allowed = visible(actor, [project] if project else None)
    if allowed is None:
        return "TRUE", []
    if not allowed:
        return "FALSE", []
    return f"{column} IN ({', '.join('?' * len(allowed))})", list(allowed)
