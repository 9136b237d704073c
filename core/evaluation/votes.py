"""Blind preference votes, app side: a reviewer sees two unlabelled answers to one prompt (in random
order) and picks one or a tie; ``record`` stores the vote, ``win_rates`` counts them per pair of models.

A model is named as the playground names its targets (``run:RUN``, ``run-base:RUN``, ``gguf:PATH``,
``base:PATH``, ``ollama:TAG``), so the Evaluate page can put a run's win rates beside its BLEU and
ROUGE-L. The win rate of a model in a pair is (wins + ties / 2) / votes.
"""
from __future__ import annotations

import random
import uuid

from core import store
from core.access import projects
from core.access.principal import Principal, require

CHOICES = ("a", "b", "tie")


class VoteError(ValueError):
    pass


def record(prompt: str, model_a: str, model_b: str, answer_a: str, answer_b: str, choice: str, *,
           actor: Principal, project: str | None = None, source: str | None = None) -> dict:
    """One vote: ``choice`` is ``a`` (model_a's answer was better), ``b`` or ``tie``. Reviewers and above."""
    project = project or "default"
    require(actor, "votes.record", project)
    if choice not in CHOICES:
        raise VoteError(f"a vote is one of {', '.join(CHOICES)}, not '{choice}'")
    if not (prompt or "").strip():
        raise VoteError("the prompt is empty")
    if not model_a or not model_b or model_a == model_b:
        raise VoteError("a vote compares two different models")
    vote = {"id": f"vote-{uuid.uuid4().hex[:12]}", "project": project, "prompt": prompt.strip(), "model_a": model_a,
            "model_b": model_b, "answer_a": answer_a or "", "answer_b": answer_b or "", "choice": choice,
            "voter": actor.name, "voter_role": actor.role, "source": source or "typed", "created_at": store.now()}
    with store.transaction() as con:
        con.execute(f"INSERT INTO votes ({', '.join(vote)}) VALUES ({', '.join('?' * len(vote))})", list(vote.values()))
        store.audit("vote.recorded", vote["id"], actor, project=project, con=con, model_a=model_a, model_b=model_b,
                    choice=choice)
    return vote


def list_votes(actor: Principal, project: str | None = None, limit: int = 200) -> list[dict]:
    cond, params = projects.where(actor, project)
    return store.rows(f"SELECT * FROM votes WHERE {cond} ORDER BY created_at DESC LIMIT ?", params + [int(limit)])


def win_rates(actor: Principal, project: str | None = None, model: str | None = None) -> list[dict]:
    """Per unordered pair of models (``model_1`` < ``model_2`` by name; with ``model``: the pairs it is in),
    the votes, each side's wins, the ties and ``win_rate_1`` / ``win_rate_2`` (ties count half). One query."""
    cond, params = projects.where(actor, project)
    if model:
        cond, params = cond + " AND (model_a = ? OR model_b = ?)", params + [model, model]
    got = store.rows(
        f"""
        SELECT least(model_a, model_b) AS model_1, greatest(model_a, model_b) AS model_2, count(*) AS votes,
               count(*) FILTER (WHERE choice <> 'tie' AND (choice = 'a') = (model_a < model_b)) AS wins_1,
               count(*) FILTER (WHERE choice <> 'tie' AND (choice = 'a') <> (model_a < model_b)) AS wins_2,
               count(*) FILTER (WHERE choice = 'tie') AS ties
        FROM votes WHERE {cond}
        GROUP BY 1, 2 ORDER BY votes DESC, model_1, model_2
        """, params)
    for r in got:
        r["win_rate_1"] = round((r["wins_1"] + r["ties"] / 2) / r["votes"], 4)
        r["win_rate_2"] = round((r["wins_2"] + r["ties"] / 2) / r["votes"], 4)
    return got


def shown_order(rng: random.Random | None = None) -> tuple[int, int]:
    """The order two answers are shown in: (0, 1) or (1, 0), at random."""
    return (0, 1) if (rng or random.SystemRandom()).random() < 0.5 else (1, 0)


def held_out_prompts(version_id: str, n: int = 10, seed: int | None = None, *, actor: Principal) -> list[dict]:
    """A vote set: ``n`` pairs drawn from a dataset version's held-out (test) split, each with its
    ``source`` (``held-out:VERSION#IDX``) and the prompt text (instruction and, when present, input)."""
    from core import prompt_format
    from core.datasets import versions

    version = versions.get_version(version_id, actor)
    require(actor, "read", version.get("project"))
    total = version["rows_test"]   # only the drawn rows are read (a version may hold millions)
    picked = sorted(random.Random(seed).sample(range(total), min(n, total)))
    rows = versions.take_rows(version_id, "test", picked)
    return [{"source": f"held-out:{version_id}#{i}", "prompt": prompt_format.user_message(r)}
            for i, r in zip(picked, rows)]
