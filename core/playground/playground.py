"""The playground, app side: models answer from inference workers, never inside the web process.

``ensure`` finds the running inference worker of a model (base model + adapter + prompt format) or
queues one (an ``inference`` job, run by ``core.playground.server``) and waits until it listens;
``ask`` sends it a question over loopback. The supervisor starts inference workers at once, counts
them on their slot (GPU memory), and evicts them when a training job needs the slot, or they end by
themselves after ``idle_s`` without a question. A model that cannot load ends its worker with the
error, which ``ensure`` raises as a ``PlaygroundError`` in one line.
"""
from __future__ import annotations

import collections
import json
import os
import secrets
import threading
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from core import base_models, models, paths, prompt_format, store
from core.access.principal import AccessDenied, Principal, require
from core.evaluation.inference import Decoding
from core.i18n import M
from core.jobs import queue, supervisor
from core.jobs.files import STATUS, TERMINAL, read_json
from core.playground.server import DEFAULT_IDLE_S

LOAD_TIMEOUT_S = 900.0


class PlaygroundError(RuntimeError):
    pass


class AskLimit(PlaygroundError):
    """A question refused by the limits below: its message (an ``M``) speaks of the question alone, so a demo
    link's client may read it."""


# ── what one asker may take of the models ────────────────────────────────────
# The chat's input, the side-by-side question and the system text are cut to these in the pages; here they
# are refused beyond them, whoever calls. The inference worker also cuts a conversation to the model's
# context (core.playground.server.fit). The rate is per principal: a team member, or a demo link (all of
# its visitors together), in this process (the web app serves every browser).

MAX_QUESTION_CHARS = 8000       # one question (a user turn, its input included): a saved conversation's turn's limit
MAX_SYSTEM_CHARS = 2000         # the system text
MAX_CONVERSATION_CHARS = 24000  # a conversation's turns together: the oldest go first beyond it
RATE_PER_MINUTE = 30            # questions a principal may ask in any 60 s (a saved conversation's replay: 20)
AT_ONCE = 3                     # answers a principal may have being generated at once (side by side is 2)
RATE_WINDOW_S = 60.0

_asked: dict[str, collections.deque] = {}
_answering: dict[str, int] = {}
_limits_lock = threading.Lock()


def check_prompt(messages: list[dict], system: str | None) -> list[dict]:
    """The conversation within the limits: PlaygroundError for a question or a system text that is too long;
    the oldest turns (a question and its answer) dropped while the whole is longer than
    ``MAX_CONVERSATION_CHARS``."""
    try:
        turns = prompt_format.check_messages(messages)
    except prompt_format.FormatError as exc:
        raise PlaygroundError(str(exc)) from None
    size = lambda t: len(t["content"]) + len(t.get("input") or "")  # noqa: E731
    last = size(turns[-1])
    if last > MAX_QUESTION_CHARS:
        raise AskLimit(M("the question is {n} characters long; at most {limit} are taken", n=last,
                         limit=MAX_QUESTION_CHARS))
    if system and len(system) > MAX_SYSTEM_CHARS:
        raise AskLimit(M("the system text is {n} characters long; at most {limit} are taken", n=len(system),
                         limit=MAX_SYSTEM_CHARS))
    while len(turns) > 1 and sum(size(t) for t in turns) > MAX_CONVERSATION_CHARS:
        turns = turns[2:]
    return turns


def _asker(actor: Principal) -> str:
    return f"{actor.kind}:{actor.name}"


@contextmanager
def turn(actor: Principal) -> Iterator[None]:
    """One question of ``actor``'s, for as long as its answer is generated: PlaygroundError when the actor has
    asked ``RATE_PER_MINUTE`` questions in the last minute, or has ``AT_ONCE`` answers under way."""
    key, now = _asker(actor), time.monotonic()
    with _limits_lock:
        asked = _asked.setdefault(key, collections.deque())
        while asked and now - asked[0] > RATE_WINDOW_S:
            asked.popleft()
        if len(asked) >= RATE_PER_MINUTE:
            wait = RATE_WINDOW_S - (now - asked[0])
            raise AskLimit(M("too many questions: at most {n} a minute; ask again in {s} s", n=RATE_PER_MINUTE,
                             s=max(1, round(wait))))
        if _answering.get(key, 0) >= AT_ONCE:
            raise AskLimit(M("{n} answers are being generated for you already: wait for one to end, or stop it",
                             n=AT_ONCE))
        asked.append(now)
        _answering[key] = _answering.get(key, 0) + 1
    try:
        yield
    finally:
        with _limits_lock:
            _answering[key] -= 1


def _key(base_model: str, adapter_dir: str | None, fmt: str | None) -> str:
    return json.dumps([base_model, adapter_dir or None, fmt or None])


def servers(include_queued: bool = True, *, actor: Principal | None = None) -> list[dict]:
    """Inference workers that are running (or queued), with what their status says (port, memory, idle).
    (The workers are shared: one per model, whoever asked first.)"""
    states = ("queued", "running") if include_queued else ("running",)
    out = []
    for job in queue.list_jobs(200, "inference"):
        if job["state"] in states and (actor is None or actor.sees(job.get("project"))):
            job["server"] = (read_json(Path(job["job_dir"]) / STATUS) or {}).get("server") or {}
            out.append(job)
    return out


def _ready(job: dict) -> dict | None:
    status = read_json(Path(job["job_dir"]) / STATUS) or {}
    server = status.get("server") or {}
    return server if server.get("ready") and server.get("port") else None


def ensure(base_model: str, adapter_dir: str | None = None, fmt: str | None = None, *, actor: Principal,
           project: str | None = None, timeout: float = LOAD_TIMEOUT_S, idle_s: float | None = None,
           gguf: str | None = None, tokenizer_from: str | None = None) -> dict:
    """The ready inference worker of this model (started if there is none). Returns its job with
    ``server`` (port, memory). Asking a question is all a viewer or a demo link may do. With ``gguf``
    the worker serves that GGUF through llama.cpp (prompts rendered with ``tokenizer_from``'s tokenizer,
    the run's base model, or the GGUF's own chat template)."""
    require(actor, "playground.ask", project)
    try:
        if gguf:
            prompt_format.check_gguf(gguf)
            base_model = str(gguf)
        else:
            base_models.check(base_model)
    except ValueError as exc:
        raise PlaygroundError(str(exc)) from None
    key = json.dumps(["gguf", str(gguf), fmt or None, tokenizer_from]) if gguf else _key(base_model, adapter_dir, fmt)
    job = next((j for j in servers() if j["config"].get("key") == key), None)
    if job is None:
        idle = float(idle_s or os.environ.get("VITUNE_PLAYGROUND_IDLE_S")
                     or store.get_setting("playground_idle_s", DEFAULT_IDLE_S))
        payload = {"key": key, "base_model": base_model, "adapter_dir": adapter_dir, "prompt_format": fmt,
                   "token": secrets.token_urlsafe(24), "idle_s": idle}
        if gguf:
            payload.update(gguf=str(gguf), tokenizer_from=tokenizer_from)
        job_dir = paths.data_dir() / "inference" / f"inference-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
        job = queue.submit("inference", payload, job_dir, actor, project=project)
    return _serving(job, timeout)


CHECK_S = 2.0   # while a worker loads, how often its job's row is read (the background supervisor's pace)


def _serving(job: dict, timeout: float) -> dict:
    """Wait until the job's worker listens. What is read every 0.2 s is the worker's status.json (a file: no
    query, no process); the job's row every ``CHECK_S``; the supervisor is ticked only to start the job while
    it is queued, and to settle it once its worker has ended (its status says so, or it is gone), never while
    the model loads: a wait costs the machine nothing (no nvidia-smi per tick), however long the load."""
    deadline = time.monotonic() + timeout
    status_path = Path(job["job_dir"]) / STATUS
    next_check = 0.0
    while True:
        status = read_json(status_path) or {}
        server = status.get("server") or {}
        ended = status.get("state") in TERMINAL
        if not ended and server.get("ready") and server.get("port"):
            job = queue.get_job(job["id"])
            if job["state"] == "running":
                return {**job, "server": server}
        now = time.monotonic()
        if ended or now >= next_check:
            job = queue.get_job(job["id"])
            if job["state"] == "queued" or (job["state"] == "running" and (
                    ended or (job.get("pid") and not supervisor.worker_alive(job)))):
                supervisor.tick()   # start it now (not at the next background tick), or settle it
                job = queue.get_job(job["id"])
            if job["state"] in TERMINAL:
                reason = job["error"] or (job.get("result") or {}).get("reason") or job["state"]
                raise PlaygroundError(f"the model could not be served (inference job {job['id']} {job['state']}): "
                                      f"{reason}".replace("\n", " "))
            next_check = now + CHECK_S
        if now > deadline:
            raise PlaygroundError(f"inference job {job['id']} did not start serving within {timeout:.0f} s")
        time.sleep(0.2)


def _open(job: dict, path: str, body: dict, timeout: float):
    """POST ``body`` to the job's inference worker on loopback (with its token); the open response, or
    PlaygroundError with what the worker said, or that it is not answering."""
    server = job.get("server") or _ready(job) or {}
    req = urllib.request.Request(f"http://127.0.0.1:{server.get('port')}{path}",
                                 data=json.dumps(body, ensure_ascii=False).encode("utf-8"), headers={
                                     "Content-Type": "application/json",
                                     "Authorization": f"Bearer {job['config']['token']}"})
    try:
        return urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", errors="replace")
        try:
            detail = json.loads(detail).get("error", detail)
        except ValueError:
            pass
        raise PlaygroundError(f"the inference worker (job {job['id']}) answered HTTP {exc.code}: {detail}") from None
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        raise PlaygroundError(f"the inference worker (job {job['id']}) is not answering: "
                              f"{getattr(exc, 'reason', exc)}") from None


def _post(job: dict, path: str, body: dict, timeout: float) -> dict:
    with _open(job, path, body, timeout) as resp:
        try:
            return json.loads(resp.read().decode("utf-8"))
        except (ConnectionError, TimeoutError) as exc:
            raise PlaygroundError(f"the inference worker (job {job['id']}) stopped answering: {exc}") from None


def ask(base_model: str, adapter_dir: str | None, fmt: str | None, question: str, context: str = "",
        system: str | None = None, decoding: Decoding | None = None, *, actor: Principal,
        project: str | None = None, timeout: float = 600.0) -> str:
    """One answer from the model's inference worker (started when needed). A base model or an adapter
    named by path: team members only (a demo link asks through ``ask_run``, for its own models)."""
    if actor.kind == "demo":
        raise AccessDenied("this demo link does not show that model")
    return _answer(base_model, adapter_dir, fmt, question, context, system, decoding, actor, project, timeout)


def _answer(base_model, adapter_dir, fmt, question, context, system, decoding, actor, project, timeout) -> str:
    decoding = (decoding or Decoding()).validate()
    check_prompt([{"role": "user", "content": question, "input": context}], system)
    body = {"question": question, "context": context, "system": system, "decoding": decoding.to_dict()}
    with turn(actor):
        job = ensure(base_model, adapter_dir, fmt, actor=actor, project=project)
        try:
            return _post(job, "/ask", body, timeout)["answer"]
        except PlaygroundError:
            if queue.get_job(job["id"])["state"] in TERMINAL:  # it went idle or was evicted meanwhile: once more
                job = ensure(base_model, adapter_dir, fmt, actor=actor, project=project)
                return _post(job, "/ask", body, timeout)["answer"]
            raise


def _open_stream(job: dict, body: dict, timeout: float):
    return _open(job, "/ask_stream", body, timeout)


def _pieces(resp, job: dict, info: dict | None) -> Iterator[str]:
    """The pieces of one streamed answer; closing the generator closes the connection, which stops the
    worker's generation at its next token (the playground's stop button)."""
    done = False
    try:
        for raw in resp:
            line = json.loads(raw.decode("utf-8"))
            if "piece" in line:
                yield line["piece"]
            elif "error" in line:
                raise PlaygroundError(f"the inference worker (job {job['id']}) failed midway: {line['error']}")
            elif line.get("done"):
                done = True
                if info is not None:
                    info.update({k: v for k, v in line.items() if k != "done"}, job=job["id"])
    except (OSError, ValueError) as exc:
        raise PlaygroundError(f"the inference worker (job {job['id']}) stopped answering: {exc}") from None
    finally:
        resp.close()
    if not done:
        raise PlaygroundError(f"the inference worker (job {job['id']}) ended the answer before it was done")


def _stream(base_model, adapter_dir, fmt, messages, system, decoding, actor, project, timeout, info,
            **where) -> Iterator[str]:
    decoding = (decoding or Decoding()).validate()
    body = {"messages": check_prompt(list(messages), system), "system": system, "decoding": decoding.to_dict()}
    with turn(actor):
        job = ensure(base_model, adapter_dir, fmt, actor=actor, project=project, **where)
        try:
            resp = _open_stream(job, body, timeout)
        except PlaygroundError:
            if queue.get_job(job["id"])["state"] not in TERMINAL:
                raise
            job = ensure(base_model, adapter_dir, fmt, actor=actor, project=project, **where)  # went idle: once more
            resp = _open_stream(job, body, timeout)
        yield from _pieces(resp, job, info)


def ask_stream(base_model: str, adapter_dir: str | None, fmt: str | None, messages: list[dict],
               system: str | None = None, decoding: Decoding | None = None, *, actor: Principal,
               project: str | None = None, timeout: float = 600.0, info: dict | None = None) -> Iterator[str]:
    """The model's answer to the last user turn of ``messages`` (earlier turns alternating user /
    assistant), piece by piece as the inference worker generates it; a generator (``st.write_stream``
    takes it). Access is checked at the call, before anything is generated; a model that cannot load
    raises ``PlaygroundError`` at the first ``next``. ``info`` gets the rendered prompt, token counts and
    the worker's timings once the answer is done."""
    if actor.kind == "demo":
        raise AccessDenied("this demo link does not show that model")
    require(actor, "playground.ask", project)
    return _stream(base_model, adapter_dir, fmt, messages, system, decoding, actor, project, timeout, info)


MODELS_SHOWN = 100


def models_for(actor: Principal, project: str | None = None, limit: int | None = MODELS_SHOWN) -> list[dict]:
    """The models the playground offers: a demo link's runs and releases, or the project's finished runs
    (the ``limit`` newest); each with its gate verdict and the scores it rests on (a few queries, whatever
    the number of runs)."""
    from core.deploy import releases
    from core.evaluation import gate
    from core.training import runs

    if actor.kind == "demo":
        wanted = list(actor.grant.get("runs", []))
        for release_id in actor.grant.get("releases", []):
            try:
                rel = releases.get_release(release_id, actor)
            except releases.DeployRefused:
                continue
            if rel["state"] == "deleted":   # a deleted release is no model to show a client
                continue
            if rel["run_id"] not in wanted:
                wanted.append(rel["run_id"])
        found = []
        for run_id in wanted:
            try:
                found.append(runs.get_run(run_id, actor))
            except runs.JobError:
                continue
    else:
        found = runs.list_runs(actor, project, state="succeeded", limit=limit)
    found = [r for r in found if r["state"] == "succeeded" and r["adapter_dir"]]
    verdicts = gate.verdicts(found)
    out = []
    for run in found:
        verdict = verdicts[run["id"]]
        e = verdict.get("evaluation") or {}
        out.append({"run_id": run["id"], "base_model": run["base_model"], "prompt_format": run["prompt_format"],
                    "project": run["project"], "releasable": verdict["releasable"], "reason": verdict["reason"],
                    "bleu": e.get("bleu"), "rouge_l": e.get("rouge_l"), "evaluation": e.get("id")})
    return out


# ── a demo link's page: the client's view ────────────────────────────────────


def _client_verdict(model: dict) -> M:
    """The gate's verdict as a client reads it: nothing of the studio's ids, versions or thresholds' names."""
    if model["releasable"]:
        return M("Passed the studio's quality check on questions it was not trained on (BLEU {bleu:.2f}, "
                 "ROUGE-L {rouge_l:.2f}).", bleu=model["bleu"] or 0.0, rouge_l=model["rouge_l"] or 0.0)
    if model["evaluation"]:
        return M("Still being improved: it has not passed the studio's quality check yet.")
    return M("Not measured by the studio's quality check yet.")


def demo_view(actor: Principal) -> dict:
    """What a demo link's page shows its client: the link's title and demo prompts, and its models, each named
    by the link (its title, numbered when there are several) with a verdict written for a client and its
    scores. No run id, base model, dataset version, job id or file path; a deleted release's model is not
    there. Each model's ``id`` (``model-1``, …) is what ``demo_stream`` takes."""
    if actor.kind != "demo":
        raise AccessDenied("the client's view is a demo link's")
    title = actor.grant.get("title") or None
    found = models_for(actor)
    out = []
    for n, m in enumerate(found, 1):
        if title:
            label = M("{title} — model {n}", title=title, n=n) if len(found) > 1 else title
        else:
            label = M("Model {n}", n=n)
        out.append({"id": f"model-{n}", "label": label, "verdict": _client_verdict(m), "releasable": m["releasable"],
                    "bleu": m["bleu"], "rouge_l": m["rouge_l"]})
    return {"title": title, "prompts": list(actor.grant.get("prompts") or []), "models": out}


def _demo_run(actor: Principal, model: str) -> str:
    found = models_for(actor)
    try:
        n = int(str(model).removeprefix("model-"))
        if not 1 <= n <= len(found):
            raise ValueError
    except ValueError:
        raise AccessDenied("this demo link does not show that model") from None
    return found[n - 1]["run_id"]


def demo_stream(actor: Principal, model: str, messages: list[dict], system: str | None = None,
                decoding: Decoding | None = None) -> Iterator[str]:
    """A demo link's model (``demo_view``'s ``id``) answers, streamed."""
    if actor.kind != "demo":
        raise AccessDenied("the client's view is a demo link's")
    return ask_run_stream(_demo_run(actor, model), messages, system, decoding, actor=actor)


def client_message(exc: Exception) -> M:
    """What a demo link's client reads of a failed answer: a limit of the question as it is, anything else in
    words of the client's (the studio's message names jobs and files; the team reads it in the worker log)."""
    if isinstance(exc, AskLimit) and isinstance(exc.args[0], M):
        return exc.args[0]
    if isinstance(exc, PermissionError):
        return M("This demo link does not show that model.")
    return M("The model could not answer just now; please try again in a moment.")


def _run_for(run_id: str, actor: Principal, base: bool) -> dict:
    """The run, when this actor may ask it (or, with ``base``, its base model)."""
    from core.training import runs

    try:
        run = runs.get_run(run_id, actor)
    except runs.JobError:
        raise AccessDenied(f"no run '{run_id}'") from None
    if actor.kind == "demo":
        shown = {m["run_id"] for m in models_for(actor)}
        if run_id not in shown or base:
            raise AccessDenied("this demo link does not show that model")
    require(actor, "playground.ask", run["project"])
    return run


def ask_run(run_id: str, question: str, context: str = "", system: str | None = None,
            decoding: Decoding | None = None, *, actor: Principal, base: bool = False) -> str:
    """A question to a run (its base model with the adapter, or with ``base`` the base model alone)."""
    run = _run_for(run_id, actor, base)
    return _answer(run["base_model"], None if base else run["adapter_dir"], run["prompt_format"], question, context,
                   system, decoding, actor, run["project"], 600.0)


def ask_run_stream(run_id: str, messages: list[dict], system: str | None = None, decoding: Decoding | None = None,
                   *, actor: Principal, base: bool = False, info: dict | None = None) -> Iterator[str]:
    """``ask_stream`` for a run (with ``base``: its base model alone); a demo link, for its own runs only."""
    run = _run_for(run_id, actor, base)
    return _stream(run["base_model"], None if base else run["adapter_dir"], run["prompt_format"], messages, system,
                   decoding, actor, run["project"], 600.0, info)


def targets_for(actor: Principal, project: str | None = None, offered: list[dict] | None = None,
                ollama_tags: list[tuple[str, str]] | None = None) -> list[dict]:
    """What the playground can chat with, each ``{"id", "kind", "label", …}``: the runs it offers (base
    model + adapter) and, for team members, each run's base model alone, each run's exported GGUFs
    (llama.cpp), the embedded default model (transformers, and its own GGUF through llama.cpp) and the
    released Ollama tags where an Ollama server answers. ``offered``: ``models_for``'s list when the page
    has it already; ``ollama_tags``: ``[(tag, prompt format)]`` to skip asking the Ollama server."""
    if actor.kind == "demo":   # the link's models as its client sees them (demo_view)
        return [{"id": m["id"], "kind": "demo", "model": m["id"], "label": m["label"], "verdict": m["verdict"],
                 "releasable": m["releasable"], "bleu": m["bleu"], "rouge_l": m["rouge_l"]}
                for m in demo_view(actor)["models"]]
    offered = models_for(actor, project) if offered is None else offered
    out = [{"id": f"run:{m['run_id']}", "kind": "run", "run_id": m["run_id"], "prompt_format": m["prompt_format"],
            "label": f"{m['run_id']} · {models.display_name(m['base_model'])} · {m['prompt_format']}"}
           for m in offered]
    out += [{"id": f"run-base:{m['run_id']}", "kind": "run-base", "run_id": m["run_id"],
             "prompt_format": m["prompt_format"],
             "label": M("{run} base model alone · {model} · {format}", run=m["run_id"],
                       model=models.display_name(m["base_model"]), format=m["prompt_format"])}
            for m in offered]
    exported = exported_ggufs([m["run_id"] for m in offered]) if offered else {}
    for m in offered:   # each run's exported GGUFs, through llama.cpp
        for quant, path in exported.get(m["run_id"], {}).items():
            out.append({"id": f"gguf:{path}", "kind": "gguf", "gguf": path, "tokenizer_from": m["base_model"],
                        "prompt_format": m["prompt_format"], "run_id": m["run_id"],
                        "label": M("{run} export {quant} (GGUF, llama.cpp) · {format}", run=m["run_id"], quant=quant,
                                  format=m["prompt_format"])})
    default = str(paths.default_base_model_dir())
    if models.default_ready():
        out.append({"id": f"base:{default}", "kind": "base", "base_model": default,
                    "prompt_format": prompt_format.DEFAULT_FORMAT,
                    "label": M("base model {model} · {format}", model=models.display_name(default),
                              format=prompt_format.DEFAULT_FORMAT)})
        gguf = models.cached_gguf()
        if gguf:
            out.append({"id": f"gguf:{gguf}", "kind": "gguf", "gguf": str(gguf), "tokenizer_from": default,
                        "prompt_format": prompt_format.DEFAULT_FORMAT,
                        "label": M("base model {model} (GGUF, llama.cpp) · {format}", model=gguf.name,
                                  format=prompt_format.DEFAULT_FORMAT)})
    if ollama_tags is None:
        ollama_tags = _ollama_tags(actor, project, {m["run_id"]: m["prompt_format"] for m in offered})
    for tag, fmt in ollama_tags:
        out.append({"id": f"ollama:{tag}", "kind": "ollama", "tag": tag, "prompt_format": fmt,
                    "label": M("Ollama {tag} (release) · {format}", tag=tag, format=fmt)})
    return out


def exported_ggufs(run_ids: list[str]) -> dict[str, dict[str, str]]:
    """For each run, the GGUFs its succeeded exports wrote that are still there (the newest export's
    file per quantization), from one listing of the export jobs."""
    wanted, found = set(run_ids), {}
    for job in queue.list_jobs(200, "export"):   # newest first
        if job.get("run_id") not in wanted or job["state"] != "succeeded" or not job.get("result"):
            continue
        mine = found.setdefault(job["run_id"], {})
        for quant, path in (job["result"].get("gguf") or {}).items():
            if quant not in mine and path and Path(path).is_file():
                mine[quant] = path
    return found


def _ollama_tags(actor: Principal, project: str | None, formats: dict[str, str]) -> list[tuple[str, str]]:
    """The active releases' Ollama tags, where an Ollama server answers (none otherwise), each with its
    run's prompt format (``formats``: run → format, the runs the page offers)."""
    from core.deploy import ollama, releases

    rels = [r for r in releases.list_releases(actor, project, include_deleted=False) if r.get("state") == "active"]
    if not rels or ollama.server_problem():
        return []
    out = []
    for r in rels:
        fmt = formats.get(r["run_id"])
        if fmt is None:   # a run older than the page's list: asked once
            from core.training import runs

            try:
                fmt = runs.get_run(r["run_id"], actor)["prompt_format"]
            except runs.JobError:
                continue
        out.append((f"{r['name']}:{r['tag']}", fmt))
    return out


def ollama_stream(tag: str, messages: list[dict], system: str | None = None, decoding: Decoding | None = None, *,
                  actor: Principal, project: str | None = None, info: dict | None = None) -> Iterator[str]:
    """A released Ollama tag's answer, streamed from the Ollama server (``/api/chat``: the Modelfile's
    TEMPLATE renders the turns there). PlaygroundError at the first piece when no server answers."""
    if actor.kind == "demo":
        raise AccessDenied("this demo link does not show that model")
    require(actor, "playground.ask", project)
    turns = check_prompt(list(messages), system)
    decoding = (decoding or Decoding()).validate()
    return _ollama_pieces(tag, turns, system, decoding, info, actor)


def _ollama_pieces(tag, turns, system, decoding, info, actor) -> Iterator[str]:
    with turn(actor):
        yield from _ollama_turn(tag, turns, system, decoding, info)


def _ollama_turn(tag, turns, system, decoding, info) -> Iterator[str]:
    from core.deploy import ollama

    problem = ollama.server_problem()
    if problem:
        raise PlaygroundError(f"Ollama tag {tag}: {problem}")
    chat = ([{"role": "system", "content": system}] if system else []) + [
        {"role": t["role"], "content": prompt_format.user_message({"instruction": t["content"], "input": t.get("input")})
         if t["role"] == "user" else t["content"]} for t in turns]
    options = {"num_predict": decoding.max_new_tokens, "temperature": decoding.temperature, "top_p": decoding.top_p,
               "seed": 0, **({"top_k": decoding.top_k} if decoding.top_k else {}),
               **({"stop": decoding.stop} if decoding.stop else {})}
    t0, first, pieces = time.perf_counter(), None, 0
    import ollama as ollama_client

    try:
        for part in ollama._client().chat(model=tag, messages=chat, stream=True, options=options):
            text = (part.get("message") or {}).get("content") or ""
            if text:
                pieces += 1
                first = first if first is not None else round(time.perf_counter() - t0, 4)
                yield text
            if part.get("done") and info is not None:
                info.update(new_tokens=part.get("eval_count"), prompt_tokens=part.get("prompt_eval_count"),
                            pieces=pieces, first_piece_s=first, seconds=round(time.perf_counter() - t0, 4))
    except (ollama_client.ResponseError, ConnectionError, OSError) as exc:
        raise PlaygroundError(f"Ollama tag {tag}: {exc}") from None


def stream_target(target: dict, messages: list[dict], system: str | None = None, decoding: Decoding | None = None,
                  *, actor: Principal, project: str | None = None, info: dict | None = None) -> Iterator[str]:
    """``ask_stream`` for one of ``targets_for``'s entries."""
    kind = target["kind"]
    if kind == "demo":
        return demo_stream(actor, target["model"], messages, system, decoding)
    if kind in ("run", "run-base"):
        return ask_run_stream(target["run_id"], messages, system, decoding, actor=actor, base=kind == "run-base",
                              info=info)
    if kind == "base":
        return ask_stream(target["base_model"], None, target.get("prompt_format"), messages, system, decoding,
                          actor=actor, project=project, info=info)
    if kind == "gguf":
        if actor.kind == "demo":
            raise AccessDenied("this demo link does not show that model")
        require(actor, "playground.ask", project)
        return _stream("", None, target.get("prompt_format"), messages, system, decoding, actor, project, 600.0, info,
                       gguf=target["gguf"], tokenizer_from=target.get("tokenizer_from"))
    if kind == "ollama":
        return ollama_stream(target["tag"], messages, system, decoding, actor=actor, project=project, info=info)
    raise PlaygroundError(f"unknown kind of model '{kind}'")


def prepare(target: dict, *, actor: Principal, project: str | None = None) -> dict | None:
    """Start (or find) the inference worker a target answers from, before streaming from several at once
    (the workers are started one after the other, in the caller's thread). None for an Ollama tag."""
    kind = target["kind"]
    if kind == "ollama":
        return None
    if kind == "demo":
        run = _run_for(_demo_run(actor, target["model"]), actor, False)
        return ensure(run["base_model"], run["adapter_dir"], run["prompt_format"], actor=actor, project=run["project"])
    if kind in ("run", "run-base"):
        run = _run_for(target["run_id"], actor, kind == "run-base")
        return ensure(run["base_model"], None if kind == "run-base" else run["adapter_dir"], run["prompt_format"],
                      actor=actor, project=run["project"])
    if actor.kind == "demo":
        raise AccessDenied("this demo link does not show that model")
    if kind == "gguf":
        return ensure("", None, target.get("prompt_format"), actor=actor, project=project, gguf=target["gguf"],
                      tokenizer_from=target.get("tokenizer_from"))
    return ensure(target["base_model"], None, target.get("prompt_format"), actor=actor, project=project)


def side_by_side(streams: dict[str, Iterator[str]]) -> Iterator[tuple[str, str | None, Exception | None]]:
    """Several answers at once: each generator consumed in its own thread, its pieces put on one queue;
    yields ``(name, piece, None)`` as pieces come, ``(name, None, None)`` when a side is done and
    ``(name, None, error)`` when it failed (the other side goes on). Closing this generator stops
    every side (each stream is closed, which stops its worker's generation)."""
    import queue as queue_mod
    import threading

    events: queue_mod.Queue = queue_mod.Queue()
    stop_all = threading.Event()

    def consume(name: str, stream: Iterator[str]) -> None:
        try:
            for piece in stream:
                if stop_all.is_set():
                    break
                events.put((name, piece, None))
            events.put((name, None, None))
        except Exception as exc:  # noqa: BLE001 - handed to the caller's thread
            events.put((name, None, exc))
        finally:
            close = getattr(stream, "close", None)
            if close:
                close()

    threads = [threading.Thread(target=consume, args=(name, s), name=f"vitune-side-{name}", daemon=True)
               for name, s in streams.items()]
    for t in threads:
        t.start()
    open_sides = len(threads)
    try:
        while open_sides:
            name, piece, error = events.get()
            if piece is None:
                open_sides -= 1
            yield name, piece, error
    finally:
        stop_all.set()


def stop(job_id: int, *, actor: Principal) -> dict:
    return supervisor.cancel(job_id, actor=actor)
