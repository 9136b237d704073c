"""Pair generation, worker side (the guide's pipeline): documents → chunks → an LLM's
instruction/input/output pairs in Vietnamese → validated, de-duplicated → ``generated.jsonl``.

``run`` reads and chunks the documents, asks the endpoint (any OpenAI-compatible base URL, or
llama.cpp's server that it starts on loopback for the local model) for pairs, parses and validates
every answer, retries a malformed one a bounded number of times, drops duplicates and appends each
kept pair to ``generated.jsonl`` in the job folder as it comes. A ``STOP`` file in the folder ends
the loop after the current request; what was made is kept. ``core.datasets.generation.generations``
(app side) queues the job and lands the pairs as a dataset version.

The API key reaches the worker in its environment, for this job alone, and is never written anywhere.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable

from core import uploads
from core.datasets.generation.answers import AnswerError, Deduper, parse_answer, render_prompt
from core.datasets.generation.documents import MAX_CHUNKS_PER_JOB, GenerateError, chunk_text, read_document
from core.datasets.generation.endpoint import Backend, BackendError, LocalServer, chat

PAIRS_FILE = "generated.jsonl"
REJECTS_FILE = "rejects.jsonl"
PROMPT_FILE = "prompt.txt"
STOP_FILE = "STOP"
SERVER_LOG = "llama-server.log"


def _messages(prompt: str, previous: str | None, reason: str | None) -> list[dict]:
    msgs = [{"role": "user", "content": prompt}]
    if previous is not None:
        msgs += [{"role": "assistant", "content": previous[:2000]},
                 {"role": "user", "content": f"Câu trả lời trên không hợp lệ ({reason}). Hãy trả lại DUY NHẤT "
                                             "một mảng JSON, mỗi phần tử có ba khóa \"instruction\", \"input\", "
                                             "\"output\" (chuỗi; \"output\" không rỗng)."}]
    return msgs


def run(job: dict, job_dir: Path, status, log: Callable[[str], None]) -> dict:
    """In the worker: documents → chunks → answers → pairs appended to generated.jsonl."""
    backend = Backend.from_dict(job["backend"])
    api_key = None
    if not job.get("local") and backend.api_key_env:
        # the supervisor hands this worker its endpoint's key, and no other; or the reason it could not
        api_key = os.environ.get(backend.api_key_env)
        if not api_key:
            raise GenerateError(os.environ.get(backend.api_key_env + "_ERROR") or
                                f"endpoint '{job.get('endpoint')}': no API key reached the worker")
    template = Path(job["prompt_file"]).read_text(encoding="utf-8")
    chunks: list[tuple[str, int, str]] = []
    try:
        for doc in job["docs"]:
            pieces = chunk_text(read_document(doc), job["chunk_chars"], job["overlap"])
            chunks += [(Path(doc).name, i, c) for i, c in enumerate(pieces)]
    finally:  # documents uploaded through the page are not kept once read (their chunks are in the job)
        uploads.remove(job["docs"])
    total_chunks = len(chunks)
    limit = min(int(job.get("max_chunks") or MAX_CHUNKS_PER_JOB), MAX_CHUNKS_PER_JOB)
    if total_chunks > limit == MAX_CHUNKS_PER_JOB:
        log(f"{total_chunks} chunks are more than the {MAX_CHUNKS_PER_JOB} a job sends; the first "
            f"{MAX_CHUNKS_PER_JOB} are used (split the documents over several jobs for the rest)")
    chunks = chunks[:limit]
    log(f"{len(job['docs'])} document(s), {total_chunks} chunk(s); generating from {len(chunks)}")

    server = None
    if job.get("local"):
        from core import models

        gguf = models.gguf_path(log)
        log(f"starting llama.cpp's server on loopback for {gguf.name}")
        server = LocalServer(gguf, log_path=job_dir / SERVER_LOG).__enter__()
        backend.base_url, backend.model = server.base_url, gguf.stem
        api_key = server.api_key   # the server's own key: no other local user may use it
    try:
        return _loop(job, job_dir, status, log, backend, api_key, template, chunks, total_chunks)
    finally:
        if server:
            server.stop()


def _loop(job, job_dir, status, log, backend, api_key, template, chunks, total_chunks) -> dict:
    pairs_path, rejects_path = job_dir / PAIRS_FILE, job_dir / REJECTS_FILE
    dedup = Deduper()
    stats = {"chunks_done": 0, "chunks_total": len(chunks), "pairs": 0, "duplicates": 0, "malformed_answers": 0,
             "failed_chunks": 0, "retries": 0, "tokens_in": 0, "tokens_out": 0, "usage_reported": False,
             "requests": 0}
    stopped = None
    t0 = time.time()

    def report(**extra) -> None:
        elapsed = time.time() - t0
        done = stats["chunks_done"]
        cost = (stats["tokens_in"] * backend.price_in_per_mtok + stats["tokens_out"] * backend.price_out_per_mtok) / 1e6
        status.update(progress={"done": done, "total": len(chunks), "label": "chunks",
                                "per_s": done / elapsed if elapsed > 0 else 0.0},
                      generation={**stats, "elapsed_s": round(elapsed, 1), "cost": round(cost, 6),
                                  "eta_s": round(elapsed / done * (len(chunks) - done), 1) if done else None,
                                  **extra})

    report()
    with pairs_path.open("a", encoding="utf-8") as out, rejects_path.open("a", encoding="utf-8") as rej:
        for doc, index, chunk in chunks:
            if (job_dir / STOP_FILE).exists():
                stopped = "stopped by the user"
                break
            report(in_flight={"doc": doc, "chunk": index})
            prompt = render_prompt(template, chunk, job["n_pairs"])
            previous = reason = None
            got: list[dict] = []
            attempts = []
            for attempt in range(int(job["max_retries"]) + 1):
                if attempt:
                    stats["retries"] += 1
                    if (job_dir / STOP_FILE).exists():
                        break
                try:
                    text, usage = chat(backend, _messages(prompt, previous, reason), api_key)
                except BackendError as exc:
                    attempts.append({"attempt": attempt + 1, "reason": str(exc)})
                    if exc.fatal:
                        stopped = str(exc)
                        break
                    if exc.status == 400:  # this request is refused (e.g. too long); asking again won't help
                        break
                    time.sleep(min(2 ** attempt, 10))
                    continue
                stats["requests"] += 1
                stats["tokens_in"] += usage["prompt_tokens"]
                stats["tokens_out"] += usage["completion_tokens"]
                stats["usage_reported"] = stats["usage_reported"] or usage["reported"]
                try:
                    got, problems = parse_answer(text)
                    if problems:
                        log(f"{doc} chunk {index}: dropped {len(problems)} invalid item(s): {'; '.join(problems[:3])}")
                    break
                except AnswerError as exc:
                    stats["malformed_answers"] += 1
                    previous, reason = text, str(exc)
                    attempts.append({"attempt": attempt + 1, "reason": reason, "answer": text[:500]})
                    log(f"{doc} chunk {index}: malformed answer (attempt {attempt + 1}): {reason}")
            if not got:
                stats["failed_chunks"] += 1
                rej.write(json.dumps({"doc": doc, "chunk": index, "chunk_text": chunk[:300], "attempts": attempts},
                                     ensure_ascii=False) + "\n")
                rej.flush()
            for pair in got:
                if dedup.add(pair):
                    out.write(json.dumps({**pair, "doc": doc, "chunk": index}, ensure_ascii=False) + "\n")
                    stats["pairs"] += 1
                else:
                    stats["duplicates"] += 1
            out.flush()
            stats["chunks_done"] += 1
            log(f"{doc} chunk {index}: {len(got)} pair(s); {stats['pairs']} kept so far")
            report()
            if stopped:
                break
    report(stopped=stopped)
    elapsed = time.time() - t0
    log(f"generation ended: {stats['pairs']} pairs from {stats['chunks_done']} chunks in {elapsed:.1f} s"
        + (f" ({stopped})" if stopped else ""))
    if stats["pairs"] == 0 and stopped and stopped != "stopped by the user":
        raise GenerateError(f"no pair was made: {stopped}")
    cost = (stats["tokens_in"] * backend.price_in_per_mtok + stats["tokens_out"] * backend.price_out_per_mtok) / 1e6
    return {**stats, "stopped": stopped, "elapsed_s": round(elapsed, 2), "cost": round(cost, 6),
            "chunks_available": total_chunks, "model": backend.model,
            "pairs_file": str(pairs_path), "rejects_file": str(rejects_path)}
