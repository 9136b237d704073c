"""The inference worker, worker side: one loaded model served on loopback for the playground.

An ``inference`` job is long-lived: ``run`` loads the base model (and the run's adapter), listens on
127.0.0.1 at a free port, writes the port to ``status.json`` and answers until it has been idle for
``idle_s`` seconds (then the job ends, ``reason: idle``) or the supervisor evicts it (a training job
needs the slot's memory). Every request must carry the job's token (``Authorization: Bearer …``).
The web process never loads a model: ``core.playground.playground`` (app side) starts these workers
through the job queue, so the scheduler knows where each model sits and how much memory it holds.

    POST /ask       {"question", "context", "system", "decoding"}  → {"answer", "seconds", "new_tokens"}
    POST /generate  {"prompts": [rendered prompts], "decoding"}   → {"answers", "seconds"}
    POST /ask_stream {"messages": [{"role", "content"}…], "system", "decoding"}
                    → newline-delimited JSON: {"piece": text} as the answer grows, then one
                      {"done": true, "prompt", "prompt_tokens", "new_tokens", "pieces", "first_piece_s",
                      "first_piece_tokens", "seconds", "started_at", "ended_at"} (or {"error": …} when the generation fails midway). A client that
                      closes the connection stops the generation at the next token.
    GET  /health                                                   → {"ok": true, "model", "requests"}
"""
from __future__ import annotations

import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

from core import prompt_format
from core.evaluation import inference
from core.evaluation.inference import Decoding

DEFAULT_IDLE_S = 600.0
MAX_BODY = 1 << 20


def memory_gib(model) -> dict:
    """What the loaded model holds: its parameters' bytes, and on CUDA the allocator's peak."""
    if not hasattr(model, "parameters"):   # a GGUF in llama.cpp: its file
        return {"weights_gib": round(Path(model.model_path).stat().st_size / 2**30, 3)}
    import torch

    out = {"weights_gib": round(sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30, 3)}
    if torch.cuda.is_available():
        out["gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    return out


class _State:
    def __init__(self, loaded, token: str):
        self.loaded = loaded
        self.token = token
        self.lock = threading.Lock()      # one generation at a time: the model is not re-entrant
        self.last = time.monotonic()
        self.requests = 0


def _handler(state: _State):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):  # the worker log gets one line per request instead
            pass

        def _send(self, code: int, body: dict) -> None:
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
            self.send_response(code)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorised(self) -> bool:
            got = self.headers.get("Authorization", "")
            return hmac.compare_digest(got.encode(), f"Bearer {state.token}".encode())

        def do_GET(self):
            if not self._authorised():
                return self._send(401, {"error": "missing or wrong token"})
            if self.path != "/health":
                return self._send(404, {"error": f"no {self.path}"})
            self._send(200, {"ok": True, "model": state.loaded.base_model, "adapter": state.loaded.adapter_dir,
                             "requests": state.requests})

        def do_POST(self):
            if not self._authorised():
                return self._send(401, {"error": "missing or wrong token"})
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                return self._send(413, {"error": f"request over {MAX_BODY} bytes"})
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
                decoding = Decoding.from_dict(body.get("decoding")).validate()
            except (ValueError, TypeError) as exc:
                return self._send(400, {"error": str(exc)})
            if self.path == "/ask_stream":
                return self._stream(body, decoding)
            t0 = time.perf_counter()
            try:
                with state.lock:
                    state.last = time.monotonic()
                    if self.path == "/ask":
                        question = str(body.get("question") or "").strip()
                        if not question:
                            return self._send(400, {"error": "the question is empty"})
                        answer = inference.ask(state.loaded, question, str(body.get("context") or ""),
                                               body.get("system") or None, decoding)
                        out = {"answer": answer}
                    elif self.path == "/generate":
                        prompts = body.get("prompts")
                        if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
                            return self._send(400, {"error": "prompts must be a list of texts"})
                        out = {"answers": inference.generate(state.loaded, prompts, decoding)}
                    else:
                        return self._send(404, {"error": f"no {self.path}"})
                    state.requests += 1
                    state.last = time.monotonic()
            except Exception as exc:  # a failed generation is an answer, not a dead worker
                return self._send(500, {"error": f"{type(exc).__name__}: {exc}"})
            out["seconds"] = round(time.perf_counter() - t0, 3)
            print(f"[{time.strftime('%H:%M:%S')}] {self.path} answered in {out['seconds']:.2f} s", flush=True)
            self._send(200, out)

        def _line(self, obj: dict) -> None:
            self.wfile.write(json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n")
            self.wfile.flush()

        def _stream(self, body: dict, decoding: Decoding) -> None:
            try:
                messages = body.get("messages")
                if not isinstance(messages, list):
                    raise prompt_format.FormatError("messages must be a list of turns")
                prompt = prompt_format.render_messages(messages, state.loaded.prompt_format, state.loaded.tokenizer,
                                                       system=body.get("system") or None)
            except prompt_format.FormatError as exc:
                return self._send(400, {"error": str(exc)})
            cancel = threading.Event()
            stats: dict = {"started_at": time.time()}   # epoch seconds: when two answers ran at once
            with state.lock:
                state.last = time.monotonic()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson; charset=utf-8")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                pieces = inference.stream(state.loaded, prompt, decoding, cancel=cancel, stats=stats)
                try:
                    for piece in pieces:
                        self._line({"piece": piece})
                        state.last = time.monotonic()
                    self._line({"done": True, "prompt": prompt, **stats, "ended_at": time.time()})
                except (BrokenPipeError, ConnectionResetError):   # the client stopped listening: stop
                    cancel.set()
                    pieces.close()
                    print(f"[{time.strftime('%H:%M:%S')}] /ask_stream stopped by the client after "
                          f"{stats.get('new_tokens')} token(s)", flush=True)
                    return
                except Exception as exc:  # a failed generation is a line, not a dead worker
                    try:
                        self._line({"error": f"{type(exc).__name__}: {exc}"})
                    except OSError:
                        pass
                    return
                finally:
                    state.requests += 1
                    state.last = time.monotonic()
            print(f"[{time.strftime('%H:%M:%S')}] /ask_stream {stats.get('pieces')} piece(s), first after "
                  f"{stats.get('first_piece_s')} s, done in {stats.get('seconds')} s", flush=True)

    return Handler


def run(job: dict, job_dir: Path, status, log: Callable[[str], None]) -> dict:
    """In the worker: load, serve on loopback, end when idle."""
    t0 = time.time()
    status.update(progress={"done": 0, "total": 1, "label": "loading the model"})
    if job.get("gguf"):   # an exported GGUF (or the default model's) through llama.cpp
        loaded = inference.load_gguf(job["gguf"], job.get("prompt_format"), job.get("tokenizer_from"))
    else:
        loaded = inference.load(job["base_model"], job.get("adapter_dir"), job.get("prompt_format"))
    prompt_format.check_format(loaded.prompt_format)
    state = _State(loaded, job["token"])
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    port = server.server_address[1]
    idle_s = float(job.get("idle_s") or DEFAULT_IDLE_S)
    mem = memory_gib(loaded.model)
    log(f"serving {job.get('gguf') or job['base_model']}{' + ' + job['adapter_dir'] if job.get('adapter_dir') else ''} on "
        f"127.0.0.1:{port} ({loaded.backend}, {mem}); ends after {idle_s:.0f} s idle")
    status.update(server={"port": port, "ready": True, "load_s": round(time.time() - t0, 1), "idle_s": idle_s,
                          **mem}, progress={"done": 1, "total": 1, "label": "serving"})

    def watchdog() -> None:
        while True:
            time.sleep(min(1.0, idle_s / 4))
            if time.monotonic() - state.last > idle_s and not state.lock.locked():
                server.shutdown()
                return
            status.update(server={**status.data.get("server", {}), "requests": state.requests,
                                  "idle_for_s": round(time.monotonic() - state.last, 1)})

    threading.Thread(target=watchdog, daemon=True).start()
    server.serve_forever(poll_interval=0.2)
    server.server_close()
    log(f"idle for {idle_s:.0f} s after {state.requests} request(s): stopping")
    return {"reason": "idle", "requests": state.requests, "served_s": round(time.time() - t0, 1)}
