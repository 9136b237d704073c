"""The sign-in and sign-out routes the studio's web server adds beside Streamlit's (``st.App``).

A password never travels through Streamlit's websocket: ``GET /auth/signin`` serves a plain HTML
form, ``POST /auth/signin`` checks it (``core.access.accounts.sign_in``: lockout, audit) and sets the
session cookie — HttpOnly, SameSite=Lax, and Secure whenever the page came over HTTPS (the studio's
own certificate, or a reverse proxy that says so on loopback) — then sends the browser to the page
it came from. ``/auth/signout`` revokes the session and clears the cookie. The pages read the cookie
through ``st.context.cookies`` and ask ``accounts.from_session`` who it is.

The middleware in front of every request (``Guard``):

- sends a browser without an identity that asks for a page to the sign-in form;
- marks the app's websocket handshake when it comes from the machine's operator (operator mode,
  ``core.access.binding``), and strips that mark from whatever a client sends;
- lets a file into a Streamlit session's upload store (``/_stcore/upload_file/SESSION/…``) only when the
  identity that session's page resolved (``remember_session``) may import or generate, and still is who
  it was: the app's shell alone (a ``?demo=`` with any token, the sign-in page) uploads nothing;
- caps every other request's body at ``MAX_BODY`` bytes (uploads: Streamlit's ``server.maxUploadSize``).

``/auth/export/TICKET`` serves the audit log's CSV, built when it is asked for, to the browser of the
signed-in admin whose page asked for the ticket (``export_ticket``), and to nobody else: not another
browser with the address, not the same one once signed out.
"""
from __future__ import annotations

import hashlib
import html
import re
import secrets
import threading
import time
from collections import OrderedDict
from typing import Mapping
from urllib.parse import parse_qs, quote

from core.access import accounts, binding
from core.access.principal import AccessDenied, Principal

COOKIE = "vitune_session"
CSRF_COOKIE = "vitune_csrf"
MAX_BODY = 64 * 1024              # any request body but an upload's
UPLOAD_ACTIONS = ("dataset.import", "dataset.generate")   # what a file_uploader on a page is for
EXPORT_TTL_S = 3600


def client_address(request) -> str | None:
    """Who is asking, for slowing a guesser down: the peer, or, when the peer is a reverse proxy on this
    machine (loopback), the address it says it forwards for (the last ``X-Forwarded-For`` entry, the one
    the proxy itself added)."""
    peer = request.client.host if request.client else None
    if peer and binding.is_loopback(peer):
        hops = [h.strip() for h in (request.headers.get("x-forwarded-for") or "").split(",") if h.strip()]
        if hops:
            return hops[-1][:64]
    return peer


def _secure(request) -> bool:
    if request.url.scheme == "https":
        return True
    # a reverse proxy in front of a loopback-bound studio terminates TLS and says so
    client = request.client.host if request.client else ""
    return client in ("127.0.0.1", "::1") and request.headers.get("x-forwarded-proto") == "https"


def _safe_next(target: str | None) -> str:
    """Only a path of this site (never another host) to go back to after signing in."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


PAGE = """<!doctype html><html lang="vi"><head><meta charset="utf-8"><title>ViTune Studio — Đăng nhập</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;max-width:24rem;margin:10vh auto;padding:0 1rem;color:#262730}}
label{{display:block;margin:.8rem 0 .2rem}}input{{width:100%;padding:.5rem;box-sizing:border-box}}
button{{margin-top:1rem;padding:.5rem 1rem}}.err{{color:#b00020}}</style></head><body>
<h1>ViTune Studio</h1><p>Sign in / Đăng nhập</p>{error}
<form method="post" action="/auth/signin">
<input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="next" value="{next}">
<label for="username">Account</label><input id="username" name="username" maxlength="{name_max}" autocomplete="username" required autofocus>
<label for="password">Password</label><input id="password" name="password" type="password" maxlength="{password_max}" autocomplete="current-password" required>
<button type="submit">Sign in</button></form>{company}</body></html>"""


async def _signin_page(request, oidc: bool):
    from starlette.responses import HTMLResponse

    csrf = secrets.token_urlsafe(16)
    error = request.query_params.get("error")
    company = '<p>or <a id="company" href="/?signin=oidc">sign in with your company account</a></p>' if oidc else ""
    body = PAGE.format(csrf=csrf, next=html.escape(_safe_next(request.query_params.get("next"))),
                       error=f'<p class="err">{html.escape(error[:300])}</p>' if error else "", company=company,
                       name_max=accounts.NAME_MAX, password_max=accounts.PASSWORD_MAX)
    response = HTMLResponse(body, headers={"Cache-Control": "no-store"})
    response.set_cookie(CSRF_COOKIE, csrf, httponly=True, samesite="strict", secure=_secure(request),
                        path="/auth")
    return response


async def signin(request):
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import RedirectResponse

    body = await request.body()   # at most MAX_BODY bytes: the middleware refused a longer one
    try:
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), max_num_fields=10).items()}
    except ValueError:            # more fields than the form has: not this form
        form = {}
    target = _safe_next(form.get("next"))
    if not form.get("csrf") or form.get("csrf") != request.cookies.get(CSRF_COOKIE):
        return RedirectResponse(f"/auth/signin?error={quote('The form expired: sign in again.')}&next={quote(target)}",
                                status_code=303)
    source = client_address(request)
    try:
        _, token = await run_in_threadpool(accounts.sign_in, str(form.get("username") or ""),
                                           str(form.get("password") or ""), source=source)
    except AccessDenied as exc:
        return RedirectResponse(f"/auth/signin?error={quote(str(exc))}&next={quote(target)}", status_code=303)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(COOKIE, token, max_age=accounts.SESSION_DAYS * 86400, httponly=True, samesite="lax",
                        secure=_secure(request), path="/")
    response.delete_cookie(CSRF_COOKIE, path="/auth")
    return response


async def signout(request):
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import RedirectResponse

    await run_in_threadpool(accounts.sign_out, request.cookies.get(COOKIE))
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


# ── who each Streamlit session is ───────────────────────────────────────────
# app.py tells this process, on every run, which identity it resolved for its session (None: nobody); the
# upload gate reads it. Bounded: the oldest sessions are forgotten first (their pages run again on use).

_sessions: OrderedDict[str, Principal | None] = OrderedDict()
_sessions_lock = threading.Lock()
SESSIONS_KEPT = 10_000


def remember_session(session_id: str, who: Principal | None) -> None:
    with _sessions_lock:
        _sessions[session_id] = who
        _sessions.move_to_end(session_id)
        while len(_sessions) > SESSIONS_KEPT:
            _sessions.popitem(last=False)


def session_principal(session_id: str) -> Principal | None:
    with _sessions_lock:
        return _sessions.get(session_id)


def may_upload(who: Principal | None) -> bool:
    """Whether a session's identity may put files into the studio's upload store, as it stands now."""
    return isinstance(who, Principal) and any(who.may(a) for a in UPLOAD_ACTIONS) and accounts.still_valid(who)


# ── exports ──────────────────────────────────────────────────────────────────

_tickets: dict[str, dict] = {}
_tickets_lock = threading.Lock()


def _identity_cookies(cookies: Mapping[str, str]) -> str:
    """A digest of the cookies that say who a browser is (the session's, st.login's)."""
    picked = sorted((k, v) for k, v in cookies.items() if k == COOKIE or k.startswith("_streamlit_user"))
    return hashlib.sha256(repr(picked).encode("utf-8")).hexdigest()


def export_ticket(who: Principal, cookies: Mapping[str, str], **filters) -> str:
    """A ticket for ``/auth/export/TICKET``: the audit log (``filters`` as ``core.access.audit.entries`` takes
    them), for this admin's browser (the identity cookies its page was opened with) alone."""
    from core.access.principal import require

    require(who, "users.manage")
    now = time.monotonic()
    with _tickets_lock:
        for key in [k for k, t in _tickets.items() if t["expires"] < now]:
            del _tickets[key]
        ticket = secrets.token_urlsafe(24)
        _tickets[ticket] = {"who": who, "cookies": _identity_cookies(cookies), "filters": filters,
                            "expires": now + EXPORT_TTL_S}
    return ticket


def ticket_valid(ticket: str | None) -> bool:
    with _tickets_lock:
        got = _tickets.get(ticket or "")
        return bool(got) and got["expires"] > time.monotonic()


async def export(request):
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import PlainTextResponse, Response

    from core.access import audit

    with _tickets_lock:
        got = _tickets.get(request.path_params["ticket"])
    refused = PlainTextResponse("This export is for the signed-in admin who asked for it: open the Admin page again.",
                                status_code=403, headers={"Cache-Control": "no-store"})
    if not got or got["expires"] < time.monotonic() or _identity_cookies(request.cookies) != got["cookies"]:
        return refused
    who = got["who"]
    if who.kind == "operator" and not binding.operator_peer(request.client, request.scope.get("server"),
                                                           dict(request.headers)):
        return refused

    def build() -> str | None:
        if not accounts.still_valid(who):
            return None
        return audit.as_csv(audit.entries(who, limit=audit.EXPORT_LIMIT, **got["filters"]))

    text = await run_in_threadpool(build)
    if text is None:
        return refused
    return Response(text.encode("utf-8"), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="audit-log.csv"', "Cache-Control": "no-store"})


# what the sign-in gate leaves alone: Streamlit's own endpoints and assets (which its frontend also probes
# under a page's path, e.g. /train/_stcore/health), the sign-in routes and the OIDC callback
_OPEN_PREFIXES = ("/auth/", "/oauth2callback")
_OPEN_SEGMENTS = ("_stcore", "static", "component", "media", "app")
_UPLOAD = re.compile(r"/_stcore/upload_file/([^/]+)/[^/]+$")


def _needs_identity(path: str) -> bool:
    if path.startswith(_OPEN_PREFIXES) or any(part in _OPEN_SEGMENTS for part in path.split("/")):
        return False
    return "." not in path.rsplit("/", 1)[-1]  # a page address, not a file (favicon.png, manifest.json …)


class _TooLarge(Exception):
    pass


class SignInGate:
    """ASGI middleware (see the module's docstring): the sign-in gate for pages, the operator's mark on the
    app's websocket, the upload gate and the cap on request bodies. The app checks the identity again on
    every run (``pages.common.resolve``); the page gate only spares a stranger even the app's shell."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import PlainTextResponse

        mark = binding.OPERATOR_HEADER.encode()
        headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != mark]
        if scope["type"] == "websocket":
            decoded = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in headers}
            stamp = binding.stamp()
            if stamp and await run_in_threadpool(binding.operator_peer, scope.get("client"), scope.get("server"),
                                                 decoded):
                headers.append((mark, stamp.encode()))
            return await self.app(dict(scope, headers=headers), receive, send)
        scope = dict(scope, headers=headers)
        method, path = scope.get("method"), scope.get("path", "/")
        upload = _UPLOAD.search(path)
        if upload and method in ("PUT", "DELETE"):
            if not await run_in_threadpool(may_upload, session_principal(upload.group(1))):
                return await PlainTextResponse("Uploads need a signed-in account that may import or generate.",
                                               status_code=403)(scope, receive, send)
            return await self.app(scope, receive, send)   # Streamlit caps its size (server.maxUploadSize)
        if method not in ("GET", "HEAD", "OPTIONS"):
            return await self._capped(scope, receive, send)
        if method != "GET" or not _needs_identity(path):
            return await self.app(scope, receive, send)
        return await self._page(scope, receive, send)

    async def _capped(self, scope, receive, send):
        from starlette.responses import PlainTextResponse

        too_large = PlainTextResponse("Request body too large.", status_code=413)
        length = dict(scope["headers"]).get(b"content-length")
        try:
            if length is not None and int(length) > MAX_BODY:
                return await too_large(scope, receive, send)
        except ValueError:
            return await PlainTextResponse("Invalid Content-Length.", status_code=400)(scope, receive, send)
        seen, started = 0, False

        async def capped_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > MAX_BODY:
                    raise _TooLarge
            return message

        async def watched_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, capped_receive, watched_send)
        except _TooLarge:
            if not started:
                await too_large(scope, receive, send)

    async def _page(self, scope, receive, send):
        from starlette.concurrency import run_in_threadpool
        from starlette.requests import Request
        from starlette.responses import RedirectResponse

        request = Request(scope)
        if "demo" in request.query_params or request.query_params.get("signin") == "oidc" or \
                any(name.startswith("_streamlit_user") for name in request.cookies):
            return await self.app(scope, receive, send)   # the app checks the link or the identity itself

        def allowed() -> bool:
            return not accounts.any_account() or accounts.from_session(request.cookies.get(COOKIE)) is not None

        if await run_in_threadpool(allowed):
            return await self.app(scope, receive, send)
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        response = RedirectResponse(f"/auth/signin?next={quote(target)}", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        await response(scope, receive, send)


def middleware() -> list:
    from starlette.middleware import Middleware

    return [Middleware(SignInGate)]


def routes(oidc: bool = False) -> list:
    """``oidc``: [auth] is configured, so the form also offers the company (st.login) sign-in."""
    from starlette.routing import Route

    async def signin_page(request):
        return await _signin_page(request, oidc)

    return [Route("/auth/signin", signin_page, methods=["GET"]),
            Route("/auth/signin", signin, methods=["POST"]),
            Route("/auth/signout", signout, methods=["GET", "POST"]),
            Route("/auth/export/{ticket}", export, methods=["GET"])]
