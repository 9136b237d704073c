"""Accounts, passwords and sign-in sessions.

Local accounts keep an argon2id hash of their password (argon2-cffi), never the password. OIDC
accounts (``st.login`` with a company Google Workspace or Microsoft account) are rows keyed by the
identity's email, so that an admin gives each one a role; an email without a row gets no access, and
neither does an ID token whose email the provider has not verified, that another issuer (or tenant, or
Workspace domain, where configured) signed, or whose subject is not the one the account was bound to at
its first sign-in (``from_oidc``). The first admin is made by the CLI (``python -m core users add NAME
--role admin``), never by the web: the browser's operator (operator mode) may make no account at all.

Sessions: signing in creates a random token for the browser's cookie; only its sha256 is stored,
with an expiry (14 days), so a sign-in survives a reload and a restart of the studio, and signing out
(or disabling the account) revokes it.

Slowing down a guesser (``sign_in``): every attempt is counted, under the typed name and under the
client's address, *before* its password is checked, in one step that no parallel attempt can overtake.
From the fifth attempt in a row under a name (the twentieth from an address within 15 minutes), every
further one must wait (30 s, doubling, at most 15 minutes) and is refused unchecked until then. A name
without an account is counted, checked against a stand-in hash and slowed down exactly as a real one,
in the same words, so that the answer and its time say nothing about which names exist. What is stored
of a typed name is bounded (``NAME_MAX``). Every attempt is audited, with the name and never the
password.
"""
from __future__ import annotations

import functools
import hashlib
import json
import re
import secrets
import threading
from datetime import timedelta
from typing import Any, Mapping

from core import store
from core.access.principal import RANK, ROLES, AccessDenied, Principal, require
from core.i18n import M

SESSION_DAYS = 14
FREE_ATTEMPTS = 5                 # wrong passwords in a row under one name before it is slowed down
ADDRESS_FREE_ATTEMPTS = 20        # attempts from one client address (within ADDRESS_FORGET_S) before it is
ADDRESS_FORGET_S = 15 * 60        # an address quiet this long starts again from nothing
FIRST_DELAY_S = 30
MAX_DELAY_S = 15 * 60
MIN_PASSWORD = 10
NAME_MAX = 100                    # what is kept of a typed account name (the form's field, the audit log)
PASSWORD_MAX = 1024
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
    if len(password) > PASSWORD_MAX:
        raise AccountError(f"a password has at most {PASSWORD_MAX} characters")
    return password


def _check_projects(projects: list[str] | None) -> list[str] | None:
    if projects is None:
        return None
    known = {r["name"] for r in store.rows("SELECT name FROM projects")}
    unknown = sorted(set(projects) - known)
    if unknown:
        raise AccountError(f"no project {', '.join(unknown)} (create it first: python -m core projects add NAME)")
    return sorted(set(projects))


def _not_in_operator_mode(actor: Principal) -> None:
    """The browser's operator (operator mode: no account exists yet) makes no account and changes none."""
    if actor.kind == "operator" and getattr(actor, "web", False):
        raise AccountError("accounts are made on the server while none exists, not from a page in operator mode: "
                           "python -m core users add NAME --role admin")


def add_user(name: str, role: str, *, actor: Principal, password: str | None = None, oidc: bool = False,
             projects: list[str] | None = None) -> dict:
    """A local account (with a password) or an OIDC account (an email, no password)."""
    require(actor, "users.manage")
    _not_in_operator_mode(actor)
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
    _not_in_operator_mode(actor)
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
    _not_in_operator_mode(actor)
    user = _existing(name)
    projects = _check_projects(projects)
    with store.connect() as con:
        con.execute("UPDATE users SET projects = ? WHERE name = ?",
                    [json.dumps(projects) if projects is not None else None, name])
        store.audit("user.projects_changed", name, actor, con=con, old=user["projects"], new=projects)
    return get_user(name)


def disable(name: str, *, actor: Principal) -> dict:
    require(actor, "users.manage")
    _not_in_operator_mode(actor)
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
    _not_in_operator_mode(actor)
    user = _existing(name)
    if user["kind"] != "local":
        raise AccountError(f"{name} signs in through OIDC: it has no password here")
    digest = _hasher().hash(_check_password(password))
    with store.connect() as con:
        con.execute("UPDATE users SET password_hash = ?, failed_attempts = 0, locked_until = NULL, disabled = false "
                    "WHERE name = ?", [digest, name])
        con.execute("DELETE FROM sign_in_throttle WHERE key = ?", [_NAME_KEY + name])   # lifts the slow-down
        con.execute("UPDATE sessions SET revoked_at = ? WHERE user_name = ? AND revoked_at IS NULL", [store.now(), name])
        store.audit("user.password_reset", name, actor, con=con)
    return get_user(name)


# ── signing in ───────────────────────────────────────────────────────────────


def _principal(user: dict, session: str | None = None) -> Principal:
    projects = user.get("projects")
    return Principal(name=user["name"], role=user["role"], kind=user["kind"],
                     projects=frozenset(projects) if projects is not None else None, session=session)


def delay_after(failures: int, free: int = FREE_ATTEMPTS) -> int:
    """Seconds to wait after ``failures`` counted attempts in a row (``free`` of them are free)."""
    if failures < free:
        return 0
    return min(FIRST_DELAY_S * 2 ** min(failures - free, 20), MAX_DELAY_S)


_NAME_KEY, _ADDRESS_KEY = "name:", "address:"
_attempts = threading.Lock()       # counting an attempt is one step: no parallel attempt overtakes it
_checks = {"password": 0}           # argon2 verifications made by this process (password_checks)
_checks_lock = threading.Lock()


def password_checks() -> int:
    """How many passwords this process has checked with argon2 (a real hash or the stand-in)."""
    return _checks["password"]


@functools.lru_cache(maxsize=1)
def _stand_in_hash() -> str:
    """A hash of a random password, with the same parameters as the accounts': what a name without an
    account is checked against, so that it costs what a real name costs."""
    return _hasher().hash(secrets.token_urlsafe(24))


def _password_matches(digest: str | None, password: str) -> bool:
    from argon2 import exceptions

    with _checks_lock:
        _checks["password"] += 1
    try:
        _hasher().verify(digest or _stand_in_hash(), password)
    except (exceptions.VerifyMismatchError, exceptions.InvalidHashError, exceptions.VerificationError):
        return False
    return digest is not None


def _count_attempt(con, name: str, address: str, now) -> tuple[int, int]:
    """Count an attempt under its name and its address before its password is checked. Returns (seconds it
    must still wait: 0 when it may be checked, the name's attempts in a row counting this one)."""
    keys = [_NAME_KEY + name, _ADDRESS_KEY + address]
    with _attempts:
        rows = {r[0]: r for r in con.execute(
            "SELECT key, failures, locked_until, last_failure FROM sign_in_throttle WHERE key IN (?, ?)", keys).fetchall()}
        wait = max([(r[2] - now).total_seconds() for r in rows.values() if r[2] is not None and r[2] > now] or [0])
        if wait > 0:
            return int(wait) + 1, int(rows[keys[0]][1]) if keys[0] in rows else 0
        counted = 0
        for key, free in ((keys[0], FREE_ATTEMPTS), (keys[1], ADDRESS_FREE_ATTEMPTS)):
            old = rows.get(key)
            before = int(old[1]) if old else 0
            if key is keys[1] and old and old[3] is not None and (now - old[3]).total_seconds() > ADDRESS_FORGET_S:
                before = 0   # a quiet address starts again
            failures = before + 1
            delay = delay_after(failures, free)
            con.execute("INSERT OR REPLACE INTO sign_in_throttle VALUES (?, ?, ?, ?)",
                        [key, failures, now + timedelta(seconds=delay) if delay else None, now])
            counted = counted or failures
        if not rows:   # now and then, forget what nobody has tried for a day
            con.execute("DELETE FROM sign_in_throttle WHERE last_failure < ? AND (locked_until IS NULL OR locked_until < ?)",
                        [now - timedelta(days=1), now])
    return 0, counted


def _signed_in(con, name: str, address: str) -> None:
    """A right password: the name starts again from nothing; its address's count loses this attempt."""
    with _attempts:
        con.execute("DELETE FROM sign_in_throttle WHERE key = ?", [_NAME_KEY + name])
        con.execute("""UPDATE sign_in_throttle SET failures = greatest(failures - 1, 0),
                              locked_until = CASE WHEN failures - 1 < ? THEN NULL ELSE locked_until END
                       WHERE key = ?""", [ADDRESS_FREE_ATTEMPTS, _ADDRESS_KEY + address])


def sign_in(name: str, password: str, *, source: str | None = None) -> tuple[Principal, str]:
    """Check a local account's password. Returns (principal, session token for the cookie); raises
    AccessDenied with one line that never says whether the name or the password was wrong, nor whether
    the name exists (see the module's docstring: counting, slowing down, the same time for any name)."""
    typed = name if isinstance(name, str) else ""
    name = typed.strip().lower()[:NAME_MAX]
    password = password if isinstance(password, str) else ""
    address = (source or "unknown")[:64]
    extra = {"name_length": len(typed)} if len(typed) > NAME_MAX else {}
    refused = AccessDenied("wrong name or password")
    with store.connect() as con:
        now = store.now()
        wait, failures = _count_attempt(con, name, address, now)
        if wait:
            store.audit("auth.failed", name, None, con=con, source=source, reason="slowed down", **extra)
            raise AccessDenied(f"too many attempts: try again in {wait} s")
        cur = con.execute("SELECT * FROM users WHERE name = ?", [name])
        cols = [d[0] for d in cur.description]
        got = cur.fetchone()
        user = dict(zip(cols, got)) if got else None
        usable = user is not None and user["kind"] == "local" and not user["disabled"] and len(typed) <= NAME_MAX
        fits = len(password) <= PASSWORD_MAX
        matches = _password_matches(user["password_hash"] if usable and fits else None, password[:PASSWORD_MAX])
        if not (usable and fits and matches):
            store.audit("auth.failed", name, None, con=con, source=source,
                        reason="wrong password" if usable else "unknown or disabled account",
                        failures=failures, slowed_for_s=delay_after(failures), **extra)
            raise refused
        _signed_in(con, name, address)
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


class OidcRefused(AccessDenied):
    """A company (OIDC) identity that gets no access; ``reason`` is a ``core.i18n.M`` for the page."""

    def __init__(self, reason: M, email: str | None = None):
        super().__init__(str(reason))
        self.reason, self.email = reason, email


def expected_issuer(config: Mapping[str, Any]) -> str | None:
    """The issuer a provider's ID tokens must name: ``issuer`` where configured, else the one OpenID Connect
    discovery gives its metadata address (the address without ``/.well-known/openid-configuration``)."""
    if config.get("issuer"):
        return str(config["issuer"]).rstrip("/")
    url = str(config.get("server_metadata_url") or "")
    suffix = "/.well-known/openid-configuration"
    return url[: -len(suffix)].rstrip("/") if url.endswith(suffix) else None


def _true(value) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def from_oidc(claims: Mapping[str, Any], config: Mapping[str, Any]) -> Principal:
    """The principal of an identity signed in through ``st.login`` (``claims``: its ID token's, as ``st.user``
    has them; ``config``: its provider's section of ``[auth]``). Raises ``OidcRefused`` unless the provider
    verified the email (``email_verified``; Entra's ``xms_edov`` within a configured tenant), the token comes
    from the expected issuer (and the configured ``tenant`` / Workspace ``hosted_domain``), the email has an
    active OIDC account, and the account is unbound or bound to this same (issuer, subject). The first
    sign-in that passes binds the account."""
    email = str(claims.get("email") or "").strip().lower()
    if not email:
        raise OidcRefused(M("the provider sent no email address for this identity"))
    issuer, subject = str(claims.get("iss") or "").rstrip("/"), str(claims.get("sub") or "")
    want = expected_issuer(config)
    if not want or issuer != want:
        raise OidcRefused(M("the token's issuer {got} is not the configured issuer {want}", got=issuer or "(none)",
                            want=want or "(none)"), email)
    tenant = str(config.get("tenant") or "")
    if tenant and str(claims.get("tid") or "") != tenant:
        raise OidcRefused(M("the token's tenant {got} is not the configured tenant {want}",
                            got=claims.get("tid") or "(none)", want=tenant), email)
    domain = str(config.get("hosted_domain") or "").lower()
    if domain and str(claims.get("hd") or "").lower() != domain:
        raise OidcRefused(M("the identity's Workspace domain {got} is not the configured domain {want}",
                            got=claims.get("hd") or "(none)", want=domain), email)
    verified = _true(claims.get("email_verified")) or (
        "email_verified" not in claims and tenant and _true(claims.get("xms_edov")))
    if not verified:
        raise OidcRefused(M("the provider has not verified the email address {email}", email=email), email)
    user = get_user(email)
    if not user or user["kind"] != "oidc" or user["disabled"]:
        raise OidcRefused(M("{email} has no account here", email=email), email)
    if not subject:
        raise OidcRefused(M("the provider sent no subject for this identity"), email)
    if user.get("oidc_subject") is None:   # its first sign-in: bound to this identity from now on
        with store.connect() as con:
            done = con.execute("UPDATE users SET oidc_issuer = ?, oidc_subject = ? WHERE name = ? AND oidc_subject IS NULL "
                               "RETURNING name", [issuer, subject, email]).fetchall()
            if done:
                store.audit("user.oidc_bound", email, email, con=con, issuer=issuer, oidc_subject=subject)
        user = get_user(email)
    if (user.get("oidc_issuer"), user.get("oidc_subject")) != (issuer, subject):
        raise OidcRefused(M("{email} is bound to another identity of the provider; an admin can release it "
                            "(python -m core users unbind {email})", email=email), email)
    return _principal(user)


def unbind_oidc(name: str, *, actor: Principal) -> dict:
    """Release a company account's binding: its next sign-in binds it to that identity."""
    require(actor, "users.manage")
    _not_in_operator_mode(actor)
    user = _existing(name)
    if user["kind"] != "oidc":
        raise AccountError(f"{name} is a local account: it has no company identity to release")
    with store.connect() as con:
        con.execute("UPDATE users SET oidc_issuer = NULL, oidc_subject = NULL WHERE name = ?", [name])
        store.audit("user.oidc_unbound", name, actor, con=con)
    return get_user(name)


def still_valid(who: Principal | None) -> bool:
    """Whether a principal that a page resolved earlier is still who that browser is: the local session and
    account unchanged, the company account unchanged, or (operator mode) still no account at all."""
    if not isinstance(who, Principal):
        return False
    if who.kind == "local":
        row = store.one("""SELECT u.* FROM sessions s JOIN users u ON u.name = s.user_name
                           WHERE s.token_hash = ? AND s.revoked_at IS NULL AND s.expires_at > ? AND NOT u.disabled""",
                        [who.session, store.now()]) if who.session else None
        return row is not None and _principal(_decode(dict(row)), who.session) == who
    if who.kind == "oidc":
        user = get_user(who.name)
        return bool(user) and user["kind"] == "oidc" and not user["disabled"] and _principal(user) == who
    if who.kind == "operator":
        return who.web and not any_account()
    return False


def role_at_least(principal: Principal, role: str) -> bool:
    return principal.kind != "demo" and RANK.get(principal.role, 0) >= RANK[role]


def describe(user: dict[str, Any]) -> str:
    scope = "every project" if user.get("projects") is None else ", ".join(user["projects"]) or "no project"
    state = "disabled" if user.get("disabled") else "active"
    return f"{user['name']:<28} {user['kind']:<6} {user['role']:<9} {state:<9} {scope}"
