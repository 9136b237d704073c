"""A Streamlit client without a browser, speaking the app's own protocol over its websocket: what anyone
who can reach the server can do by hand (open a session, read what the app sends, upload a file into the
session), for the access tests that play an attacker. Chromium does the same for the tests that play a
person (tests/test_access_browser.py).

    with StClient("http://127.0.0.1:8501", query="demo=anything") as app:
        app.session_id, app.texts(), app.upload(b"...")
"""
from __future__ import annotations

import http.cookiejar
import time
import urllib.request
import uuid
from urllib.parse import urlsplit


class StClient:
    def __init__(self, base: str, *, query: str = "", cookies: dict[str, str] | None = None,
                 headers: dict[str, str] | None = None, timeout: float = 60, connect_to: tuple[str, int] | None = None):
        """``connect_to``: the (host, port) to open instead of ``base``'s, which the requests still name (as a
        browser does whose DNS answered that address for the name)."""
        self.base, self.query, self.timeout, self.connect_to = base.rstrip("/"), query, timeout, connect_to
        self.cookies = dict(cookies or {})
        self.headers = dict(headers or {})
        self.messages: list = []
        self.session_id: str | None = None
        self.ws = None

    # ── HTTP ────────────────────────────────────────────────────────────────
    def _url(self, path: str) -> str:
        if self.connect_to is None:
            return self.base + path
        return f"{urlsplit(self.base).scheme}://{self.connect_to[0]}:{self.connect_to[1]}{path}"

    def _host(self) -> dict[str, str]:
        return {"Host": urlsplit(self.base).netloc} if self.connect_to else {}

    def _cookie_header(self) -> str:
        return "; ".join(f"{k}={v}" for k, v in self.cookies.items())

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        """(status, headers, body) of one HTTP request with this client's cookies; never raises on a 4xx/5xx, nor
        when the server answers before it has read a body it refuses (a 413 for an oversized one)."""
        import http.client

        host, port = self.connect_to or (urlsplit(self.base).hostname, urlsplit(self.base).port or 80)
        conn = http.client.HTTPConnection(host, port, timeout=self.timeout)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            sent = {"Host": urlsplit(self.base).netloc, **self.headers, **(headers or {}),
                    "Cookie": self._cookie_header(), "Content-Length": str(len(body or b""))}
            for name, value in sent.items():
                conn.putheader(name, value)
            conn.endheaders()
            try:
                if body:
                    conn.send(body)
            except (BrokenPipeError, ConnectionResetError):
                pass   # the server answered without reading it all: its answer is below
            resp = conn.getresponse()
            return resp.status, resp.headers, resp.read()
        finally:
            conn.close()

    def _xsrf(self) -> str:
        if "_streamlit_xsrf" not in self.cookies:
            jar = http.cookiejar.CookieJar()
            opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
            opener.open(urllib.request.Request(self._url("/_stcore/health"), headers={**self._host(), **self.headers}),
                        timeout=self.timeout).read()
            for c in jar:
                if c.name == "_streamlit_xsrf":
                    self.cookies["_streamlit_xsrf"] = c.value
        return self.cookies["_streamlit_xsrf"]

    # ── the app's websocket ─────────────────────────────────────────────────
    def __enter__(self) -> "StClient":
        from websockets.sync.client import connect

        xsrf = self._xsrf()
        url = self.base.replace("http", "ws", 1) + "/_stcore/stream"
        sock = None
        if self.connect_to is not None:
            import socket

            sock = socket.create_connection(self.connect_to, timeout=self.timeout)
        self.ws = connect(url, sock=sock, subprotocols=["streamlit", xsrf],
                          additional_headers={**self.headers, "Origin": self.base, "Cookie": self._cookie_header()},
                          open_timeout=self.timeout, max_size=None)
        self.rerun()
        return self

    def __exit__(self, *exc) -> None:
        if self.ws is not None:
            self.ws.close()

    def rerun(self) -> None:
        """Run the app's script (as a browser does when it opens the page) and read until the run ends."""
        from streamlit.proto.BackMsg_pb2 import BackMsg

        msg = BackMsg()
        msg.rerun_script.query_string = self.query
        msg.rerun_script.page_script_hash = ""
        self.ws.send(msg.SerializeToString())
        self._read_until_finished()

    def _read_until_finished(self) -> None:
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            raw = self.ws.recv(timeout=max(0.1, deadline - time.monotonic()))
            msg = ForwardMsg()
            msg.ParseFromString(raw)
            self.messages.append(msg)
            kind = msg.WhichOneof("type")
            if kind == "new_session":
                self.session_id = msg.new_session.initialize.session_id
            if kind == "script_finished":
                return
        raise TimeoutError("the app's script run did not finish")

    def texts(self) -> str:
        """Every piece of text the app has sent this client (markdown, alerts, titles), one per line."""
        out = []
        for msg in self.messages:
            if msg.WhichOneof("type") != "delta" or not msg.delta.HasField("new_element"):
                continue
            el = msg.delta.new_element
            kind = el.WhichOneof("type")
            body = getattr(el, kind, None)
            for field in ("body", "label"):
                if body is not None and hasattr(body, field) and getattr(body, field):
                    out.append(getattr(body, field))
        return "\n".join(out)

    def upload(self, data: bytes, name: str = "x.jsonl", file_id: str | None = None):
        """PUT a file into this session's upload store, as st.file_uploader's widget does: (status, body)."""
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
                f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
        status, _, text = self.request(
            "PUT", f"/_stcore/upload_file/{self.session_id}/{file_id or uuid.uuid4().hex}", body,
            {"Content-Type": f"multipart/form-data; boundary={boundary}", "X-Xsrftoken": self.cookies["_streamlit_xsrf"],
             "Origin": self.base})
        return status, text
