"""Saved conversations, app side: a playground conversation kept as a client's demo script.

A conversation that went well in a meeting is saved with its title, the model it was had with, the
system prompt and every turn. Saved, it is two things: **demo prompts** — its questions, which a demo
link offers the client as buttons (``python -m core demo create --conversation CONV``) — and a
**replay** — its questions asked again, in order, of any model the playground offers, each answer
streamed and carried into the next turn's history (``replay``; the Playground page and ``python -m
core conversations replay``).
"""
from __future__ import annotations

import json
import uuid
from typing import Iterator

from core import store
from core.access import projects
from core.access.principal import Principal, require

MAX_TURNS = 40          # turns a saved conversation may have (user and assistant together)
MAX_CHARS = 8000        # characters a turn may have
MAX_TITLE = 200


class ConversationError(ValueError):
    pass


def _check_turns(turns) -> list[dict]:
    if not isinstance(turns, list) or not turns:
        raise ConversationError("a conversation needs at least one turn")
    if len(turns) > MAX_TURNS:
        raise ConversationError(f"a saved conversation has at most {MAX_TURNS} turns, not {len(turns)}")
    out = []
    for n, turn in enumerate(turns, 1):
        if not isinstance(turn, dict) or set(turn) - {"role", "content"} or "role" not in turn or "content" not in turn:
            raise ConversationError(f"turn {n}: a turn is {{\"role\": \"user\"|\"assistant\", \"content\": text}}")
        role, content = turn["role"], turn["content"]
        if role not in ("user", "assistant"):
            raise ConversationError(f"turn {n}: the role is user or assistant, not {role!r}")
        if not isinstance(content, str) or not content.strip():
            raise ConversationError(f"turn {n}: the {role}'s text is empty")
        if len(content) > MAX_CHARS:
            raise ConversationError(f"turn {n}: {len(content):,} characters, more than {MAX_CHARS:,}")
        if out and out[-1]["role"] == role:
            raise ConversationError(f"turn {n}: two {role} turns in a row (turns alternate user / assistant)")
        if not out and role != "user":
            raise ConversationError("turn 1: a conversation starts with the user's question")
        out.append({"role": role, "content": content.strip()})
    return out


def save(title: str, turns: list[dict], *, model: str | None = None, system: str | None = None,
         actor: Principal, project: str | None = None) -> dict:
    """Keep a conversation (engineers and above: it becomes what clients are shown)."""
    project = project or "default"
    require(actor, "demo.create", project)
    title = (title or "").strip()
    if not title:
        raise ConversationError("a saved conversation needs a title")
    if len(title) > MAX_TITLE:
        raise ConversationError(f"the title has {len(title)} characters, more than {MAX_TITLE}")
    turns = _check_turns(turns)
    rec = {"id": f"conv-{uuid.uuid4().hex[:10]}", "project": project, "title": title, "model": model or None,
           "system": (system or "").strip() or None, "turns": json.dumps(turns, ensure_ascii=False),
           "created_by": actor.name, "created_at": store.now()}
    with store.transaction() as con:
        con.execute(f"INSERT INTO conversations ({', '.join(rec)}) VALUES ({', '.join('?' * len(rec))})",
                    list(rec.values()))
        store.audit("conversation.saved", rec["id"], actor, project=project, con=con, title=title,
                    turns=len(turns), model=model)
    return _decode(dict(rec))


def _decode(rec: dict | None) -> dict | None:
    if rec is not None and isinstance(rec.get("turns"), str):
        rec["turns"] = json.loads(rec["turns"])
    return rec


def list_saved(actor: Principal, project: str | None = None, limit: int = 200) -> list[dict]:
    cond, params = projects.where(actor, project)
    return [_decode(r) for r in store.rows(
        f"SELECT * FROM conversations WHERE {cond} ORDER BY created_at DESC LIMIT ?", params + [int(limit)])]


def get(conversation_id: str, actor: Principal) -> dict:
    got = _decode(store.one("SELECT * FROM conversations WHERE id = ?", [conversation_id]))
    if got is None or not actor.sees(got["project"]) or actor.kind == "demo":
        raise ConversationError(f"no saved conversation '{conversation_id}'")
    return got


def delete(conversation_id: str, *, actor: Principal) -> dict:
    conv = get(conversation_id, actor)
    require(actor, "demo.create", conv["project"])
    with store.transaction() as con:
        con.execute("DELETE FROM conversations WHERE id = ?", [conversation_id])
        store.audit("conversation.deleted", conversation_id, actor, project=conv["project"], con=con,
                    title=conv["title"])
    return conv


def questions(conv: dict) -> list[str]:
    """The user's turns: what a demo link offers as prompts, and what a replay asks."""
    return [t["content"] for t in conv["turns"] if t["role"] == "user"]


def target(model_id: str, *, actor: Principal, project: str | None = None) -> dict:
    """The playground target named ``model_id`` (``run:RUN``, ``gguf:PATH``…), if the playground offers it
    to ``actor``: a typed name is looked up among what is offered, never used as a path."""
    from core.playground import playground

    for t in playground.targets_for(actor, project):
        if t["id"] == model_id:
            return t
    raise ConversationError(f"the playground offers no model '{model_id}' here (see the Playground page's list)")


def replay(conv: dict, target: dict, *, actor: Principal, project: str | None = None, decoding=None,
           system: str | None = None, infos: list | None = None) -> Iterator[tuple[int, str, Iterator[str]]]:
    """Ask ``conv``'s questions again of ``target`` (a playground target), in order: yields
    ``(turn number, question, the answer's pieces)`` for each; the answer (once its pieces are consumed)
    becomes the next turn's history, so turn 2 sees what the model answered to turn 1 this time.
    ``infos`` (a list) gets each turn's ``info`` (the rendered prompt, token counts, timings)."""
    from core.playground import playground

    history: list[dict] = []
    for n, question in enumerate(questions(conv), 1):
        history.append({"role": "user", "content": question})
        info: dict = {}
        if infos is not None:
            infos.append(info)
        pieces = playground.stream_target(target, list(history), system if system is not None else conv["system"],
                                          decoding, actor=actor, project=project or conv["project"], info=info)
        answer: list[str] = []

        def collect(pieces=pieces, answer=answer):
            for piece in pieces:
                answer.append(piece)
                yield piece

        yield n, question, collect()
        history.append({"role": "assistant", "content": "".join(answer) or "…"})
