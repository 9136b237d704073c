"""A small but real OpenID Connect provider on loopback, for testing ``st.login`` end to end.

Authorization-code flow with discovery, a sign-in form, RS256 ID tokens signed with joserfc (Authlib's own JOSE library)
and a JWKS endpoint, so that Streamlit's Authlib client checks the signature, issuer, audience, expiry
and nonce as it would against Google or Microsoft. Accounts are given to the constructor: a login email, a
name and a password, and optionally claims that replace the ID token's own (``{"email_verified": False}``,
another ``email`` or ``sub``), as a provider does for an address it never verified or an identity it
reissued. ``speak_as`` makes it another issuer for a while (its discovery document and its tokens both
say so, as a multi-tenant endpoint's tokens name each sign-in's own tenant).

    provider = Provider({"chi@saoviet.vn": ("Chi Nguyen", "mật-khẩu-đủ-dài")}, client_id="vitune", client_secret="…")
    provider.start(); … provider.issuer … provider.stop()
"""
from __future__ import annotations

import base64
import html
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlparse


class Provider:
    def __init__(self, accounts: dict[str, tuple], client_id: str, client_secret: str):
        from joserfc.jwk import RSAKey

        self.accounts = accounts
        self.client_id, self.client_secret = client_id, client_secret
        self.key = RSAKey.generate_key(2048, private=True)
        self.kid = secrets.token_hex(4)
        self.codes: dict[str, dict] = {}
        self.sign_ins: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.speaking_as: str | None = None   # another issuer, while set

    @property
    def current_issuer(self) -> str:
        return self.speaking_as or self.issuer

    def speak_as(self, issuer: str | None) -> None:
        self.speaking_as = issuer

    @property
    def metadata_url(self) -> str:
        return self.issuer + "/.well-known/openid-configuration"

    def start(self) -> "Provider":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _id_token(self, email: str, nonce: str | None) -> str:
        from joserfc import jwt

        now = int(time.time())
        claims = {"iss": self.current_issuer, "sub": "sub-" + email, "aud": self.client_id, "iat": now,
                  "exp": now + 600, "email": email, "email_verified": True, "name": self.accounts[email][0]}
        claims.update(self.accounts[email][2] if len(self.accounts[email]) > 2 else {})
        if nonce:
            claims["nonce"] = nonce
        return jwt.encode({"alg": "RS256", "kid": self.kid}, claims, self.key)

    def _handler(self):
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _json(self, body: dict, code: int = 200) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _html(self, text: str, code: int = 200) -> None:
                data = text.encode("utf-8")
                self.send_response(code)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path == "/.well-known/openid-configuration":
                    return self._json({
                        "issuer": provider.current_issuer, "authorization_endpoint": provider.issuer + "/authorize",
                        "token_endpoint": provider.issuer + "/token", "jwks_uri": provider.issuer + "/jwks",
                        "userinfo_endpoint": provider.issuer + "/userinfo", "response_types_supported": ["code"],
                        "subject_types_supported": ["public"], "id_token_signing_alg_values_supported": ["RS256"],
                        "scopes_supported": ["openid", "email", "profile"],
                        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                        "code_challenge_methods_supported": ["S256", "plain"],
                        "claims_supported": ["sub", "email", "name", "nonce"]})
                if url.path == "/jwks":
                    key = provider.key.as_dict(private=False)
                    return self._json({"keys": [{**key, "kid": provider.kid, "use": "sig", "alg": "RS256"}]})
                if url.path == "/authorize":
                    if query.get("client_id") != provider.client_id or query.get("response_type") != "code":
                        return self._html("<p>unknown client or response type</p>", 400)
                    hidden = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                                     for k, v in query.items())
                    return self._html(f"""<!doctype html><title>Company sign-in</title><h1>Company sign-in</h1>
                        <form method="post" action="/authorize">{hidden}
                        <label>Email <input name="login_email" id="login_email"></label>
                        <label>Password <input type="password" name="login_password" id="login_password"></label>
                        <button type="submit" id="login_submit">Continue</button></form>""")
                return self._html("<p>not found</p>", 404)

            def do_POST(self):
                url = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                if url.path == "/authorize":
                    email = form.get("login_email", "").strip().lower()
                    if email not in provider.accounts or provider.accounts[email][1] != form.get("login_password"):
                        return self._html("<p id='login_error'>wrong email or password</p>", 401)
                    code = secrets.token_urlsafe(16)
                    provider.codes[code] = {"email": email, "nonce": form.get("nonce"),
                                            "redirect_uri": form.get("redirect_uri"),
                                            "challenge": form.get("code_challenge")}
                    provider.sign_ins.append(email)
                    target = form["redirect_uri"] + "?" + urlencode({"code": code, "state": form.get("state", "")})
                    self.send_response(302)
                    self.send_header("Location", target)
                    self.end_headers()
                    return
                if url.path == "/token":
                    client_id, client_secret = form.get("client_id"), form.get("client_secret")
                    auth = self.headers.get("Authorization", "")
                    if auth.startswith("Basic "):
                        from urllib.parse import unquote

                        client_id, _, client_secret = base64.b64decode(auth[6:]).decode().partition(":")
                        client_id, client_secret = unquote(client_id), unquote(client_secret)
                    if (client_id, client_secret) != (provider.client_id, provider.client_secret):
                        return self._json({"error": "invalid_client"}, 401)
                    grant = provider.codes.pop(form.get("code", ""), None)
                    if grant is None or grant["redirect_uri"] != form.get("redirect_uri"):
                        return self._json({"error": "invalid_grant"}, 400)
                    if grant["challenge"]:   # PKCE (S256): the verifier must hash to the challenge
                        import hashlib

                        digest = hashlib.sha256((form.get("code_verifier") or "").encode()).digest()
                        if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != grant["challenge"]:
                            return self._json({"error": "invalid_grant", "error_description": "PKCE"}, 400)
                    return self._json({"access_token": secrets.token_urlsafe(16), "token_type": "Bearer",
                                       "expires_in": 600, "id_token": provider._id_token(grant["email"], grant["nonce"])})
                return self._json({"error": "not found"}, 404)

        return Handler
