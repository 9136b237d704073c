"""The LLM behind pair generation: any OpenAI-compatible ``/chat/completions`` endpoint, or
llama.cpp's server started on loopback for the local model. Worker side.

The API key is never written anywhere: it is passed in by the caller, and every error text is
scrubbed of it before it is raised."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core.datasets.generation.answers import ANSWER_SCHEMA
from core.secrets import scrub
from core.datasets.generation.documents import GenerateError

MAX_RESPONSE_BYTES = 8 * 2**20   # one chat completion; more is not an answer


class BackendError(RuntimeError):
    def __init__(self, message: str, fatal: bool = False, status: int | None = None):
        super().__init__(message)
        self.fatal = fatal    # the endpoint refuses every request (bad key, wrong URL or model): stop
        self.status = status


@dataclass
class Backend:
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = "gpt-4o-mini"
    api_key_env: str = "OPENAI_API_KEY"   # the NAME of an environment variable; the key itself is never stored
    temperature: float = 0.7
    max_tokens: int = 1024
    timeout_s: float = 300.0
    structured: bool = False              # send the answer's JSON schema (llama.cpp turns it into a grammar)
    price_in_per_mtok: float = 0.0        # cost of a million prompt tokens, for the cost estimate
    price_out_per_mtok: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> "Backend":
        data = dict(data or {})
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def check(self) -> "Backend":
        if not re.match(r"^https?://[^\s/]+", self.base_url or ""):
            raise GenerateError(f"the base URL '{self.base_url}' is not an http(s) address")
        if not (self.model or "").strip():
            raise GenerateError("name the model the endpoint should use")
        if self.api_key_env and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.api_key_env):
            raise GenerateError(f"'{self.api_key_env}' is not an environment variable name (give the NAME, not the key)")
        if self.max_tokens < 16:
            raise GenerateError("max_tokens must be at least 16")
        return self


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is answered as the error it is: following it would send the key to another address."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def chat(backend: Backend, messages: list[dict], api_key: str | None = None,
         schema: dict | None = None) -> tuple[str, dict]:
    """One chat completion: (answer text, usage). BackendError with a one-line, key-free reason.
    With ``structured`` on, the answer's JSON schema goes with it: ``schema``, else pair generation's."""
    body: dict[str, Any] = {
        "model": backend.model,
        "messages": messages,
        "temperature": backend.temperature,
        "max_tokens": backend.max_tokens,
    }
    if backend.structured:
        body["response_format"] = {"type": "json_object", "schema": schema or ANSWER_SCHEMA}
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    url = backend.base_url.rstrip("/") + "/chat/completions"
    req = urllib.request.Request(url, data=json.dumps(body, ensure_ascii=False).encode(), headers=headers)
    try:
        with _OPENER.open(req, timeout=backend.timeout_s) as resp:
            raw = resp.read(MAX_RESPONSE_BYTES + 1)
        if len(raw) > MAX_RESPONSE_BYTES:
            raise BackendError(f"{url} answered with more than {MAX_RESPONSE_BYTES // 2**20} MiB; refusing to read it")
        data = json.loads(raw.decode("utf-8"))
    except BackendError:
        raise
    except urllib.error.HTTPError as exc:
        if 300 <= exc.code < 400:
            raise BackendError(f"{url} answered HTTP {exc.code}, a redirect to {exc.headers.get('Location')}; "
                               "the key is not sent to another address: configure the endpoint's final URL",
                               fatal=True, status=exc.code) from None
        detail = exc.read(2000).decode("utf-8", errors="replace")[:300].replace("\n", " ")
        fatal = exc.code in (401, 403, 404)
        raise BackendError(scrub(f"{url} answered HTTP {exc.code}: {detail}", api_key), fatal=fatal,
                           status=exc.code) from None
    except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, (socket.timeout, TimeoutError)):
            raise BackendError(f"{url} did not answer within {backend.timeout_s:g} s (timed out)") from None
        raise BackendError(scrub(f"cannot reach {url}: {reason}", api_key)) from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BackendError(f"{url} did not answer with JSON") from None
    except Exception as exc:  # anything else (http.client refusing a header, …): its text may hold the key
        raise BackendError(scrub(f"the request to {url} failed: {type(exc).__name__}: {exc}", api_key),
                           fatal=True) from None
    try:
        text = data["choices"][0]["message"]["content"] or ""
    except (KeyError, IndexError, TypeError):
        raise BackendError(f"{url} answered without choices[0].message.content") from None
    usage = data.get("usage") or {}
    return text, {"prompt_tokens": int(usage.get("prompt_tokens") or 0),
                  "completion_tokens": int(usage.get("completion_tokens") or 0),
                  "reported": bool(usage)}


# ── the local model: llama.cpp's OpenAI-compatible server on loopback ───────


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalServer:
    """``python -m llama_cpp.server`` serving a GGUF on 127.0.0.1, for as long as the ``with`` lasts. It
    demands an API key (a fresh random one unless ``api_key`` is given; ``self.api_key``): any local user
    can reach a loopback port, and without one would have the job's model, and its time, for free."""

    def __init__(self, gguf: str | Path, *, n_ctx: int = 4096, n_threads: int | None = None,
                 chat_format: str = "gemma", log_path: Path | None = None, api_key: str | None = None,
                 ready_timeout: float = 180.0):
        self.gguf = Path(gguf)
        self.n_ctx = n_ctx
        self.n_threads = n_threads or max(1, os.cpu_count() or 1)
        self.chat_format = chat_format
        self.log_path = log_path
        self.api_key = api_key or os.urandom(24).hex()
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen | None = None
        self.base_url = ""

    def _log_tail(self) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        return " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-3:])

    def __enter__(self) -> "LocalServer":
        if not self.gguf.is_file():
            raise GenerateError(f"{self.gguf}: no such GGUF file")
        port = _free_port()
        env = dict(os.environ)
        env["API_KEY"] = self.api_key  # pydantic-settings reads it; it never appears on the command line
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.gguf), "--host", "127.0.0.1",
               "--port", str(port), "--n_ctx", str(self.n_ctx), "--n_threads", str(self.n_threads),
               "--chat_format", self.chat_format, "--verbose", "False"]
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env)
        finally:
            if self.log_path:
                out.close()
        self.base_url = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + self.ready_timeout
        headers = {"Authorization": f"Bearer {self.api_key}"}
        while True:
            if self.proc.poll() is not None:
                raise GenerateError(f"the llama.cpp server exited with code {self.proc.returncode}: {self._log_tail()}")
            try:
                with urllib.request.urlopen(urllib.request.Request(self.base_url + "/models", headers=headers),
                                            timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise GenerateError(f"the llama.cpp server did not start within {self.ready_timeout:.0f} s")
            time.sleep(0.3)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __exit__(self, *exc) -> None:
        self.stop()
