"""Accounts, passwords and sign-in sessions.

Local accounts keep an argon2id hash of their password (argon2-cffi), never the password. OIDC
accounts (``st.login`` with a company Google Workspace or Microsoft account) are rows keyed by the
identity's email, so that an admin gives each one a role; an email without a row gets no access.
The first admin is made by the CLI (``python -m core users add NAME --role admin``), never by the web.

Sessions: signing in creates a random token for the browser's cookie; only its sha256 is stored,
with an expiry (14 days), so a sign-in survives a reload and a restart of the studio, and signing out
(or disabling the account) revokes it. Five wrong passwords in a row slow the account down: from the
fifth, every further attempt must wait (30 s, doubling, at most 15 minutes) and is refused unchecked
until then. Every attempt is audited, with the name and never the password.
"""
from __future__ import annotations

import hashlib
import json
import re
import secrets
from datetime import timedelta
from typing import Any

from core import store
from core.access.principal import RANK, ROLES, AccessDenied, Principal, require

SESSION_DAYS = 14
FREE_ATTEMPTS = 5
FIRST_DELAY_S = 30
MAX_DELAY_S = 15 * 60
MIN_PASSWORD = 10
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,39}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class AccountError(ValueError):
    """A request about an account that cannot be done, in one line."""


def _hasher():
    from argon2 import PasswordHasher

    return PasswordHasher()


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _decode(row: dict | None) -> dict | None:
    if row is not None:
        row["projects"] = json.loads(row["projects"]) if isinstance(row.get("projects"), str) else row.get("projects")
        row.pop("password_hash", None)
    return row


def any_account() -> bool:
    return bool(store.one("SELECT count(*) AS n FROM users")["n"])


def any_admin() -> bool:
    return bool(store.one("SELECT count(*) AS n FROM users WHERE role = 'admin' AND NOT disabled")["n"])


def get_user(name: str) -> dict | None:
    return _decode(store.one("SELECT * FROM users WHERE name = ?", [name]))


def list_users(actor: Principal) -> list[dict]:
    require(actor, "users.manage")
    return [_decode(r) for r in store.rows("SELECT * FROM users ORDER BY kind, name")]


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise AccountError(f"unknown role '{role}' (one of: {', '.join(reversed(ROLES))})")
    return role


def _check_password(password: str) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise AccountError(f"a password needs at least {MIN_PASSWORD} characters")
    return password


def _check_projects(projects: list[str] | None) -> list[str] | None:
    if projects is None:
        return None
    known = {r["name"] for r in store.rows("SELECT name FROM projects")}
    unknown = sorted(set(projects) - known)
    if unknown:
        raise AccountError(f"no project {', '.join(unknown)} (create it first: python -m core projects add NAME)")
    return sorted(set(projects))


def add_user(name: str, role: str, *, actor: Principal, password: str | None = None, oidc: bool = False,
             projects: list[str] | None = None) -> dict:
    """A local account (with a password) or an OIDC account (an email, no password)."""
    require(actor, "users.manage")
    name = (name or "").strip().lower()
    if oidc:
        if not _EMAIL.match(name):
            raise AccountError(f"'{name}' is not an email address: an OIDC account is the identity's email")
    elif not _NAME.match(name):
        raise AccountError(f"'{name}' is not a valid account name (2–40 of a–z, 0–9, '.', '_', '-')")
    _check_role(role)
    if get_user(name):
        raise AccountError(f"an account named {name} already exists")
    digest = None if oidc else _hasher().hash(_check_password(password or ""))
    projects = _check_projects(projects)
    with store.connect() as con:
        con.execute("""INSERT INTO users (name, kind, role, password_hash, projects, created_by, created_at)
                       VALUES (?, ?, ?, ?, ?, ?, ?)""",
                    [name, "oidc" if oidc else "local", role, digest,
                     json.dumps(projects) if projects is not None else None, actor.name, store.now()])
        store.audit("user.added", name, actor, con=con, kind="oidc" if oidc else "local", role=role, projects=projects)
    return get_user(name)


def _existing(name: str) -> dict:
    user = get_user(name)
    if not user:
        raise AccountError(f"no account named {name}")
    return user


def _last_admin(user: dict) -> bool:
    return user["role"] == "admin" and not user["disabled"] and \
        store.one("SELECT count(*) AS n FROM users WHERE role = 'admin' AND NOT disabled")["n"] <= 1


def set_role(name: str, role: str, *, actor: Principal) -> dict:
    require(actor, "users.manage")
    user = _existing(name)
    _check_role(role)
    if role != "admin" and _last_admin(user):
        raise AccountError(f"{name} is the last admin; make another admin first")
    with store.connect() as con:
        con.execute("UPDATE users SET role = ? WHERE name = ?", [role, name])
        store.audit("user.role_changed", name, actor, con=con, old=user["role"], new=role)
    return get_user(name)


def set_projects(name: str, projects: list[str] | None, *, actor: Principal) -> dict:
    """Limit an account to some projects (None: every project)."""
    require(actor, "users.manage")
    user = _existing(name)
    projects = _check_projects(projects)
    with store.connect() as con:
        con.execute("UPDATE users SET projects = ? WHERE name = ?",
                    [json.dumps(projects) if projects is not None else None, name])
        store.audit("user.projects_changed", name, actor, con=con, old=user["projects"], new=projects)
    return get_user(name)


def disable(name: str, *, actor: Principal) -> dict:
    require(actor, "users.manage")
    user = _existing(name)
    if _last_admin(user):
        raise AccountError(f"{name} is the last admin; make another admin first")
    with store.connect() as con:
        con.execute("UPDATE users SET disabled = true WHERE name = ?", [name])
        con.execute("UPDATE sessions SET revoked_at = ? WHERE user_name = ? AND revoked_at IS NULL", [store.now(), name])
        store.audit("user.disabled", name, actor, con=con)
    return get_user(name)


def reset_password(name: str, password: str, *, actor: Principal) -> dict:
    require(actor, "users.manage")
    user = _existing(name)
    if user["kind"] != "local":
        raise AccountError(f"{name} signs in through OIDC: it has no password here")
    digest = _hasher().hash(_check_password(password))
    with store.connect() as con:
        con.execute("UPDATE users SET password_hash = ?, failed_attempts = 0, locked_until = NULL, disabled = false "
                    "WHERE name = ?", [digest, name])
        con.execute("UPDATE sessions SET revoked_at = ? WHERE user_name = ? AND revoked_at IS NULL", [store.now(), name])
        store.audit("user.password_reset", name, actor, con=con)
    return get_user(name)


# ── signing in ───────────────────────────────────────────────────────────────


def _principal(user: dict, session: str | None = None) -> Principal:
    projects = user.get("projects")
    return Principal(name=user["name"], role=user["role"], kind=user["kind"],
                     projects=frozenset(projects) if projects is not None else None, session=session)


def delay_after(failures: int) -> int:
    """Seconds an account must wait after ``failures`` wrong passwords in a row."""
    if failures < FREE_ATTEMPTS:
        return 0
    return min(FIRST_DELAY_S * 2 ** (failures - FREE_ATTEMPTS), MAX_DELAY_S)


def sign_in(name: str, password: str, *, source: str | None = None) -> tuple[Principal, str]:
    """Check a local account's password. Returns (principal, session token for the cookie); raises
    AccessDenied with one line that never says whether the name or the password was wrong."""
    name = (name or "").strip().lower()
    refused = AccessDenied("wrong name or password")
    with store.connect() as con:
        cur = con.execute("SELECT * FROM users WHERE name = ?", [name])
        cols = [d[0] for d in cur.description]
        got = cur.fetchone()
        user = dict(zip(cols, got)) if got else None
        now = store.now()
        if user is None or user["kind"] != "local" or user["disabled"]:
            store.audit("auth.failed", name, None, con=con, source=source, reason="unknown or disabled account")
            raise refused
        if user["locked_until"] and user["locked_until"] > now:
            wait = int((user["locked_until"] - now).total_seconds()) + 1
            store.audit("auth.failed", name, None, con=con, source=source, reason="slowed down")
            raise AccessDenied(f"too many wrong passwords for {name}: try again in {wait} s")
        from argon2 import exceptions

        try:
            _hasher().verify(user["password_hash"], password or "")
        except (exceptions.VerifyMismatchError, exceptions.InvalidHashError, exceptions.VerificationError):
            failures = int(user["failed_attempts"]) + 1
            wait = delay_after(failures)
            con.execute("UPDATE users SET failed_attempts = ?, locked_until = ? WHERE name = ?",
                        [failures, now + timedelta(seconds=wait) if wait else None, name])
            store.audit("auth.failed", name, None, con=con, source=source, reason="wrong password",
                        failures=failures, slowed_for_s=wait)
            raise refused from None
        token = secrets.token_urlsafe(32)
        con.execute("UPDATE users SET failed_attempts = 0, locked_until = NULL, last_sign_in = ? WHERE name = ?",
                    [now, name])
        con.execute("INSERT INTO sessions VALUES (?, ?, ?, ?, NULL)",
                    [_token_hash(token), name, now, now + timedelta(days=SESSION_DAYS)])
        store.audit("auth.signed_in", name, user["name"], con=con, source=source, kind="local")
    return _principal(user, _token_hash(token)), token


def from_session(token: str | None) -> Principal | None:
    """The principal behind a session cookie's token, while the session and its account are valid."""
    if not isinstance(token, str) or not token or len(token) > 200:
        return None
    row = store.one("""SELECT u.*, s.token_hash FROM sessions s JOIN users u ON u.name = s.user_name
                       WHERE s.token_hash = ? AND s.revoked_at IS NULL AND s.expires_at > ? AND NOT u.disabled""",
                    [_token_hash(token), store.now()])
    return _principal(_decode(dict(row)), row["token_hash"]) if row else None


def sign_out(token: str | None) -> None:
    if not token:
        return
    row = store.one("SELECT user_name FROM sessions WHERE token_hash = ? AND revoked_at IS NULL", [_token_hash(token)])
    if row:
        with store.connect() as con:
            con.execute("UPDATE sessions SET revoked_at = ? WHERE token_hash = ?", [store.now(), _token_hash(token)])
            store.audit("auth.signed_out", row["user_name"], row["user_name"], con=con)


def from_oidc(email: str | None) -> Principal | None:
    """The principal of an identity signed in through ``st.login``: its email must have an OIDC account."""
    if not email:
        return None
    user = get_user(email.strip().lower())
    if not user or user["kind"] != "oidc" or user["disabled"]:
        return None
    return _principal(user)


def role_at_least(principal: Principal, role: str) -> bool:
    return principal.kind != "demo" and RANK.get(principal.role, 0) >= RANK[role]


def describe(user: dict[str, Any]) -> str:
    scope = "every project" if user.get("projects") is None else ", ".join(user["projects"]) or "no project"
    state = "disabled" if user.get("disabled") else "active"
    return f"{user['name']:<28} {user['kind']:<6} {user['role']:<9} {state:<9} {scope}"
