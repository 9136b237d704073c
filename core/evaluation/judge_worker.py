"""The LLM judge's job, worker side: every item of ``items.jsonl`` (a question, its reference or none, an
answer) is put to the judge with the rubric (``core.evaluation.rubric``), and each verdict — a 1–5 score
with a one-line reason, or the one-line reason there is none — is appended to ``judgements.jsonl`` as it
comes, so that what was judged is kept whatever happens next. The supervisor stores the lines on every
tick (``core.evaluation.judge.ingest_progress``).

The judge is a configured OpenAI-compatible endpoint (its key reaches this worker alone, in its
environment), or the default model served by llama.cpp's OpenAI-compatible server that this worker
starts on loopback, as pair generation does. Limits: the job's items are already cut to the count the
evaluation may still have judged; the cost is checked before every request (what was spent, from the
usage the endpoint reports and its prices, plus an upper estimate of the next request, against what the
evaluation may still spend). A ``STOP`` file, an endpoint that refuses every request, or
``MAX_CONSECUTIVE_FAILURES`` failures in a row end the loop; the job keeps what it judged.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable

from core.datasets.generation.endpoint import Backend, BackendError, LocalServer, chat
from core.evaluation import rubric

ITEMS = "items.jsonl"
JUDGEMENTS = "judgements.jsonl"
STOP_FILE = "STOP"
SERVER_LOG = "llama-server.log"
MAX_CONSECUTIVE_FAILURES = 5
MAX_ANSWER_KEPT = 500       # characters of a judge's raw answer kept beside a verdict


class JudgeError(RuntimeError):
    """A judge job that cannot run at all, in one line."""


def estimate_tokens(text: str) -> int:
    """An upper estimate of the tokens of ``text`` (Vietnamese runs ~3 characters a token in Gemma's
    vocabulary; 2 leaves room): the cost limit is checked with it before a request is sent."""
    return len(text or "") // 2 + 8


def request_cost(backend: Backend, tokens_in: int, tokens_out: int) -> float:
    return (tokens_in * backend.price_in_per_mtok + tokens_out * backend.price_out_per_mtok) / 1e6


def estimate_item_cost(backend: Backend, item: dict) -> float:
    """The most one item should cost: its whole prompt, and an answer of ``max_tokens``."""
    text = rubric.prompt(item["question"], item.get("reference"), item["answer"])
    return request_cost(backend, estimate_tokens(text), backend.max_tokens)


def read_items(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def run(job: dict, job_dir: Path, status, log: Callable[[str], None]) -> dict:
    backend = Backend.from_dict(job["backend"])
    api_key = None
    if not job.get("local") and backend.api_key_env:
        api_key = os.environ.get(backend.api_key_env)
        if not api_key:
            raise JudgeError(os.environ.get(backend.api_key_env + "_ERROR") or
                             f"endpoint '{job.get('endpoint')}': no API key reached the worker")
    items = read_items(job_dir / ITEMS)
    log(f"judging {len(items)} answer(s) with {job.get('judge')} (rubric {job.get('rubric_version')})")
    server = None
    if job.get("local"):
        from core import models

        gguf = models.gguf_path(log)
        log(f"starting llama.cpp's server on loopback for {gguf.name}")
        server = LocalServer(gguf, log_path=job_dir / SERVER_LOG).__enter__()
        backend.base_url, backend.model = server.base_url, gguf.stem
        api_key = server.api_key   # the server's own key: no other local user may use it
    try:
        return _loop(job, job_dir, status, log, backend, api_key, items)
    finally:
        if server:
            server.stop()


def _loop(job, job_dir, status, log, backend, api_key, items) -> dict:
    budget = job.get("max_cost")           # what the evaluation may still spend; None: no limit
    stats = {"asked": 0, "scored": 0, "failed": 0, "total": len(items), "tokens_in": 0, "tokens_out": 0,
             "cost": 0.0, "usage_reported": False}
    stopped = None
    in_a_row = 0
    t0 = time.time()

    def report() -> None:
        elapsed = time.time() - t0
        status.update(progress={"done": stats["asked"], "total": len(items), "label": "answers",
                                "per_s": stats["asked"] / elapsed if elapsed > 0 else 0.0},
                      judge={**stats, "cost": round(stats["cost"], 6), "elapsed_s": round(elapsed, 1)})

    report()
    with (job_dir / JUDGEMENTS).open("a", encoding="utf-8") as out:
        for item in items:
            if (job_dir / STOP_FILE).exists():
                stopped = "stopped by the user"
                break
            if budget is not None and stats["cost"] + estimate_item_cost(backend, item) > budget + 1e-12:
                stopped = (f"the cost limit would be passed: {stats['cost']:.4f} spent of the {budget:.4f} this "
                           f"evaluation may still spend, and the next request may cost up to "
                           f"{estimate_item_cost(backend, item):.4f}")
                break
            msgs = rubric.messages(item["question"], item.get("reference"), item["answer"])
            line = {"kind": item["kind"], "ref": item["ref"], "part": item["part"], "score": None, "reason": None,
                    "error": None, "answer": None, "prompt_tokens": 0, "completion_tokens": 0, "cost": 0.0,
                    "at": time.time()}
            stats["asked"] += 1
            try:
                text, usage = chat(backend, msgs, api_key, schema=rubric.SCORE_SCHEMA)
            except BackendError as exc:
                line["error"] = f"the judge endpoint failed: {exc}"
                if exc.fatal:
                    stopped = str(exc)
            else:
                if usage["reported"]:
                    tokens_in, tokens_out = usage["prompt_tokens"], usage["completion_tokens"]
                else:   # an endpoint that reports no usage is charged by the estimate
                    tokens_in, tokens_out = estimate_tokens(msgs[0]["content"]), estimate_tokens(text)
                cost = request_cost(backend, tokens_in, tokens_out)
                stats["tokens_in"] += tokens_in
                stats["tokens_out"] += tokens_out
                stats["cost"] += cost
                stats["usage_reported"] = stats["usage_reported"] or usage["reported"]
                line.update(prompt_tokens=tokens_in, completion_tokens=tokens_out, cost=cost,
                            answer=text[:MAX_ANSWER_KEPT])
                try:
                    line["score"], line["reason"] = rubric.parse(text)
                except rubric.JudgeAnswerError as exc:
                    line["error"] = f"the judge's answer is not usable: {exc}"
            if line["error"]:
                stats["failed"] += 1
                in_a_row += 1
                log(f"{item['kind']} {item['ref']}#{item['part']}: {line['error']}")
            else:
                stats["scored"] += 1
                in_a_row = 0
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
            out.flush()
            report()
            if stopped:
                break
            if in_a_row >= MAX_CONSECUTIVE_FAILURES:
                stopped = f"{in_a_row} answers in a row could not be judged (the last: {line['error']})"
                break
    report()
    elapsed = time.time() - t0
    log(f"judge ended: {stats['scored']} scored, {stats['failed']} failed of {len(items)} in {elapsed:.1f} s, "
        f"cost {stats['cost']:.4f}" + (f" ({stopped})" if stopped else ""))
    if stats["scored"] == 0 and stats["asked"] and stopped and stopped != "stopped by the user":
        raise JudgeError(f"no answer was judged: {stopped}")
    return {**stats, "cost": round(stats["cost"], 6), "stopped": stopped, "elapsed_s": round(elapsed, 2),
            "model": backend.model, "judgements": str(job_dir / JUDGEMENTS)}
