"""Who acts, and what each role may do. Every state-changing function in ``core`` takes the acting
``Principal`` and calls ``require`` before it changes anything, so a page that forgets to hide a
button is still refused, and the audit log records the signed-in identity, never a typed name.

Roles, each including the ones below it:

- **admin**: users and roles, projects, the gate's thresholds and whether the LLM judge gates, generation
  endpoints, the workers' interpreter, deleting releases;
- **engineer**: datasets, pair generation, training, evaluation and its LLM judge, export, deploy and rollback, demo links,
  and the gate and review overrides (each with a reason, recorded under the engineer's identity);
- **reviewer**: the review sample (drawing it, deciding its pairs) and blind preference votes in the playground;
- **viewer**: read-only: leaderboards, reports, the playground.

A client opening a demo link acts as a **demo** principal: it may ask the models its link grants,
and nothing else. The CLI acts as the machine's **operator** (an admin, its OS user name recorded);
so does the machine's own browser while no account exists (``web_operator``: operator mode, decided in
``core.access.binding``), except that it may not make accounts: the first admin is made on the server.
"""
from __future__ import annotations

import getpass
from dataclasses import dataclass, field

ROLES = ("viewer", "reviewer", "engineer", "admin")
RANK = {role: i for i, role in enumerate(ROLES, start=1)}

# the least role each action needs
ACTIONS: dict[str, str] = {
    "read": "viewer",
    "playground.ask": "viewer",
    "review.start": "reviewer",
    "review.decide": "reviewer",
    "votes.record": "reviewer",            # a blind preference vote in the playground
    "dataset.import": "engineer",
    "dataset.generate": "engineer",
    "train.submit": "engineer",
    "job.cancel": "engineer",
    "job.resume": "engineer",
    "evaluate.submit": "engineer",
    "judge.run": "engineer",               # an LLM judge over an evaluation's examples, the votes or the reviews
    "export.submit": "engineer",
    "deploy.release": "engineer",
    "release.rollback": "engineer",
    "gate.override": "engineer",           # deploy a run the gate refuses: the reason and the identity are recorded
    "review.override": "engineer",         # train an unreviewed version: likewise
    "demo.create": "engineer",
    "demo.revoke": "engineer",
    "project.create": "admin",
    "gate.thresholds": "admin",
    "judge.gate": "admin",                 # let the LLM judge's mean gate a release; its limits (audited)
    "endpoint.manage": "admin",
    "release.delete": "admin",
    "users.manage": "admin",
    "settings.workers": "admin",
    "settings.models": "admin",            # the base models the studio may load (core.base_models)
}
DEFAULT_PROJECT = "default"


class AccessDenied(PermissionError):
    """An action the acting principal may not take, in one line."""


@dataclass(frozen=True)
class Principal:
    name: str                                  # what the audit log records: "chi", "chi@saoviet.vn", "root"
    role: str                                  # admin | engineer | reviewer | viewer | demo
    kind: str                                  # local | oidc | operator | demo | system
    projects: frozenset[str] | None = None     # the projects it may see; None: all of them
    grant: dict = field(default_factory=dict)  # a demo link's runs and releases
    session: str | None = None                 # the sign-in session it came from (local accounts)
    web: bool = False                          # the operator of a browser (operator mode), not of the CLI

    @property
    def label(self) -> str:
        return f"{self.name} ({self.role})"

    def sees(self, project: str | None) -> bool:
        if self.kind == "demo":
            return project == self.grant.get("project")
        return self.projects is None or (project or DEFAULT_PROJECT) in self.projects

    def may(self, action: str) -> bool:
        if self.kind == "demo":
            return action in ("read", "playground.ask")
        return RANK.get(self.role, 0) >= RANK[ACTIONS[action]]


def require(actor: Principal | None, action: str, project: str | None = None) -> Principal:
    """The actor, when it may take ``action`` (in ``project``); else AccessDenied naming who, what and why."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action '{action}'")
    if not isinstance(actor, Principal):
        raise AccessDenied(f"{action.replace('.', ' ')} needs a signed-in user; nobody is signed in")
    if not actor.may(action):
        need = ACTIONS[action] if actor.kind != "demo" else "a team account"
        raise AccessDenied(f"{actor.label} may not {action.replace('.', ' ')}: that needs {need}")
    if project is not None and not actor.sees(project):
        raise AccessDenied(f"{actor.label} has no access to project '{project}'")
    return actor


def visible(actor: Principal, projects: list[str] | None = None) -> list[str] | None:
    """The projects a listing may show: ``projects`` (or all) cut to what the actor sees. None: no limit."""
    require(actor, "read")
    if actor.kind == "demo":
        return [actor.grant.get("project") or DEFAULT_PROJECT]
    if actor.projects is None:
        return projects
    return [p for p in (projects or sorted(actor.projects)) if p in actor.projects]


def os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "operator"


def operator() -> Principal:
    """The machine's operator: the CLI."""
    return Principal(name=os_user(), role="admin", kind="operator")


def web_operator() -> Principal:
    """The machine's operator in its own browser, before any account exists (operator mode): an admin that
    may not make accounts (``core.access.accounts``)."""
    return Principal(name=os_user(), role="admin", kind="operator", web=True)


def system(name: str, role: str = "engineer", project: str | None = None) -> Principal:
    """The studio acting for a job's owner (e.g. the supervisor landing a generation's pairs)."""
    return Principal(name=name, role=role, kind="system",
                     projects=frozenset([project]) if project else None)
