"""The sign-in and sign-out routes the studio's web server adds beside Streamlit's (``st.App``).

A password never travels through Streamlit's websocket: ``GET /auth/signin`` serves a plain HTML
form, ``POST /auth/signin`` checks it (``core.access.accounts.sign_in``: lockout, audit) and sets the
session cookie — HttpOnly, SameSite=Lax, and Secure whenever the page came over HTTPS (the studio's
own certificate, or a reverse proxy that says so on loopback) — then sends the browser to the page
it came from. ``/auth/signout`` revokes the session and clears the cookie. The pages read the cookie
through ``st.context.cookies`` and ask ``accounts.from_session`` who it is.
"""
from __future__ import annotations

import html
import secrets
from urllib.parse import quote

from core.access import accounts
from core.access.principal import AccessDenied

COOKIE = "vitune_session"
CSRF_COOKIE = "vitune_csrf"


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
<label for="username">Account</label><input id="username" name="username" autocomplete="username" required autofocus>
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Sign in</button></form>{company}</body></html>"""


async def _signin_page(request, oidc: bool):
    from starlette.responses import HTMLResponse

    csrf = secrets.token_urlsafe(16)
    error = request.query_params.get("error")
    company = '<p>or <a id="company" href="/?signin=oidc">sign in with your company account</a></p>' if oidc else ""
    body = PAGE.format(csrf=csrf, next=html.escape(_safe_next(request.query_params.get("next"))),
                       error=f'<p class="err">{html.escape(error)}</p>' if error else "", company=company)
    response = HTMLResponse(body, headers={"Cache-Control": "no-store"})
    response.set_cookie(CSRF_COOKIE, csrf, httponly=True, samesite="strict", secure=_secure(request),
                        path="/auth")
    return response


async def signin(request):
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import RedirectResponse

    form = await request.form()
    target = _safe_next(form.get("next"))
    if not form.get("csrf") or form.get("csrf") != request.cookies.get(CSRF_COOKIE):
        return RedirectResponse(f"/auth/signin?error={quote('The form expired: sign in again.')}&next={quote(target)}",
                                status_code=303)
    source = request.client.host if request.client else None
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


# what the sign-in gate leaves alone: Streamlit's own endpoints and assets (which its frontend also probes
# under a page's path, e.g. /train/_stcore/health), the sign-in routes and the OIDC callback
_OPEN_PREFIXES = ("/auth/", "/oauth2callback")
_OPEN_SEGMENTS = ("_stcore", "static", "component", "media", "app")


def _needs_identity(path: str) -> bool:
    if path.startswith(_OPEN_PREFIXES) or any(part in _OPEN_SEGMENTS for part in path.split("/")):
        return False
    return "." not in path.rsplit("/", 1)[-1]  # a page address, not a file (favicon.png, manifest.json …)


class SignInGate:
    """ASGI middleware: once an account exists, a browser asking for a page without a valid session, a
    company (OIDC) sign-in or a demo link is sent to the sign-in form. The app checks again on every
    run (``pages.common.resolve``); this only spares a stranger even the app's shell."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "GET" or not _needs_identity(scope.get("path", "/")):
            return await self.app(scope, receive, send)
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
            Route("/auth/signout", signout, methods=["GET", "POST"])]
