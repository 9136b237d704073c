"""The inference worker, worker side: one loaded model served on loopback for the playground.

An ``inference`` job is long-lived: ``run`` loads the base model (and the run's adapter), listens on
127.0.0.1 at a free port, writes the port to ``status.json`` and answers until it has been idle for
``idle_s`` seconds (then the job ends, ``reason: idle``) or the supervisor evicts it (a training job
needs the slot's memory). Every request must carry the job's token (``Authorization: Bearer …``),
which the supervisor hands the worker in its environment (job.json does not hold it).
The web process never loads a model: ``core.playground.playground`` (app side) starts these workers
through the job queue, so the scheduler knows where each model sits and how much memory it holds.

    POST /ask       {"question", "context", "system", "decoding"}  → {"answer", "seconds", "cut"}
    POST /generate  {"prompts": [rendered prompts], "decoding"}   → {"answers", "seconds"}
    POST /ask_stream {"messages": [{"role", "content"}…], "system", "decoding"}
                    → newline-delimited JSON: {"piece": text} as the answer grows, then one
                      {"done": true, "prompt", "prompt_tokens", "new_tokens", "pieces", "first_piece_s",
                      "first_piece_tokens", "seconds", "cut", "started_at", "ended_at"} (or {"error": …} when the generation fails midway). A client that
                      closes the connection stops the generation at the next token.
    GET  /health                                                   → {"ok": true, "model", "requests"}

A conversation is cut to the model's context before it is generated (``fit``: the oldest turns first), and
the answer to what room is left: no question holds a worker longer than its context allows.
"""
from __future__ import annotations

import hmac
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

from core import prompt_format
from core.evaluation import inference
from core.evaluation.inference import Decoding
from core.jobs import kinds

DEFAULT_IDLE_S = 600.0
MAX_BODY = 1 << 20
CONTEXT_CAP = 4096      # tokens of one request (prompt and answer) a worker reads at most, whatever the model's
                        # own context: llama.cpp's n_ctx here, and a bound on what one question costs the others
MIN_PROMPT_TOKENS = 64  # room the answer always leaves for the prompt


def context_tokens(loaded) -> int:
    """The context one request gets: llama.cpp's n_ctx, or the model's own (``max_position_embeddings``) up
    to ``CONTEXT_CAP``."""
    if loaded.backend == "llama.cpp":
        return int(loaded.model.n_ctx())
    own = getattr(getattr(loaded.model, "config", None), "max_position_embeddings", None) or CONTEXT_CAP
    return min(int(own), CONTEXT_CAP)


def count_tokens(loaded, prompt: str) -> int:
    if loaded.backend == "llama.cpp":
        return len(loaded.model.tokenize(prompt.encode("utf-8"), add_bos=True, special=True))
    return len(loaded.tokenizer(prompt, add_special_tokens=True)["input_ids"])


def fit(messages: list, system: str | None, fmt: str, tokenizer, count: Callable[[str], int], context: int,
        max_new_tokens: int) -> tuple[str, int, dict]:
    """The conversation rendered so that it and its answer fit the model's context: the oldest turns go first
    (a question with its answer), then the end of the last question's input, then of the question itself.
    Returns (prompt, the answer's token budget, what was cut). FormatError when even an empty question
    does not fit (a system text too long for the context)."""
    turns = prompt_format.check_messages(messages)
    answer = max(1, min(int(max_new_tokens), context // 2))
    budget = context - answer
    cut = {"turns_dropped": 0, "chars_cut": 0}

    def render(ts: list) -> str:
        return prompt_format.render_messages(ts, fmt, tokenizer, system=system)

    prompt = render(turns)
    n = count(prompt)
    while n > budget and len(turns) > 1:
        turns = turns[2:]
        cut["turns_dropped"] += 2
        prompt = render(turns)
        n = count(prompt)
    for field in ("input", "content"):
        if n <= budget:
            break
        last = dict(turns[-1])
        text = last.get(field) or ""
        lo, hi = 0, len(text)   # the longest beginning of the text that fits
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if count(render(turns[:-1] + [{**last, field: text[:mid]}])) <= budget:
                lo = mid
            else:
                hi = mid - 1
        turns = turns[:-1] + [{**last, field: text[:lo]}]
        cut["chars_cut"] += len(text) - lo
        prompt = render(turns)
        n = count(prompt)
    if n > budget:
        raise prompt_format.FormatError(f"the system text alone is more than this model's {context}-token context "
                                        f"leaves for a question ({budget} tokens); shorten it")
    return prompt, min(answer, context - n), cut


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
                        prompt, room, cut = self._fit([{"role": "user", "content": question,
                                                        "input": str(body.get("context") or "")}], body, decoding)
                        decoding.max_new_tokens = room
                        out = {"answer": inference.generate(state.loaded, [prompt], decoding)[0], "cut": cut}
                    elif self.path == "/generate":
                        prompts = body.get("prompts")
                        if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
                            return self._send(400, {"error": "prompts must be a list of texts"})
                        context = context_tokens(state.loaded)
                        if any(count_tokens(state.loaded, p) + decoding.max_new_tokens > context for p in prompts):
                            return self._send(400, {"error": f"a prompt and its answer are more than this model's "
                                                             f"{context}-token context"})
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

        def _fit(self, messages: list, body: dict, decoding: Decoding) -> tuple[str, int, dict]:
            loaded = state.loaded
            return fit(messages, body.get("system") or None, loaded.prompt_format, loaded.tokenizer,
                       lambda text: count_tokens(loaded, text), context_tokens(loaded), decoding.max_new_tokens)

        def _line(self, obj: dict) -> None:
            self.wfile.write(json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n")
            self.wfile.flush()

        def _stream(self, body: dict, decoding: Decoding) -> None:
            try:
                messages = body.get("messages")
                if not isinstance(messages, list):
                    raise prompt_format.FormatError("messages must be a list of turns")
                prompt, decoding.max_new_tokens, cut = self._fit(messages, body, decoding)   # cut to the context
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
                    self._line({"done": True, "prompt": prompt, **stats, "cut": cut, "ended_at": time.time()})
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
    token = os.environ.get(kinds.env_var("token"))   # from the supervisor, never from job.json
    if not token:
        raise RuntimeError("no token reached the inference worker: it serves nobody without one")
    state = _State(loaded, token)
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
