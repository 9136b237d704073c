"""The LLM judge, app side: a judge of meaning beside BLEU and ROUGE-L, checked against the team before it
may gate a release.

BLEU and ROUGE-L count shared syllables: a correct paraphrase scores low, a fluent wrong answer that
reuses the reference's words scores high. The judge reads each answer with a written Vietnamese rubric
(``core.evaluation.rubric``: correct against the reference, complete, nothing invented, in Vietnamese)
and gives it a 1–5 score and a one-line reason. It runs as a job (``judge_worker``): a configured
endpoint (Admin → Endpoints, its key server-side), or the default model served by llama.cpp's
OpenAI-compatible server on loopback.

What it judges, each kept in ``judgements`` (migration 011) under the judge and the rubric's version:

- an evaluation's examples (``submit_evaluation``): the question, the reference, the prediction;
- the blind preference votes drawn from a held-out split (``submit_votes``): both answers the voter saw,
  each against the held-out pair's reference — votes on typed prompts have no reference and are left out;
- the reviewed pairs of dataset versions (``submit_reviews``): each pair's answer against its question
  alone (the rubric without a reference), since the reviewer judged that very answer.

The votes and the reviews are how the judge is checked against the team (``agreement``): a vote is a
human preference between two answers the judge scored; a review decision (approved > edited >
rejected) is a human grade of an answer the judge scored. Below ``TOO_FEW`` pairs the agreement is
shown with the note that n is too small to say.

Limits per evaluation (``limits``, admins set the caps): how many of its examples may be judged and how
much the judge may spend on it in all, checked before a job is queued (an upper estimate of the cost
from the prompts and the endpoint's prices) and during it (the worker, from the usage the endpoint
reports). A verdict that failed (a timeout, garbage, a score out of range) is stored with its one-line
reason and never overwrites a stored score; a re-run asks only what has no score yet.

Whether the judge's mean gates a release is an admin's setting (``set_gate``, audited); enabling it for
a judge whose agreement with the team is too small to say, or too low, needs an override reason. The gate
(``core.evaluation.gate``) reads the setting; ``verdict_of`` is what the gate and a release record read.
"""
from __future__ import annotations

import json
import math
import time
import uuid
from pathlib import Path

from core import models, paths, prompt_format, store
from core.access import projects
from core.access.principal import DEFAULT_PROJECT, Principal, require
from core.datasets.generation import endpoints
from core.datasets.generation.documents import GenerateError
from core.datasets.generation.endpoint import Backend
from core.evaluation import gate, rubric
from core.evaluation.judge_worker import ITEMS, JUDGEMENTS, STOP_FILE, estimate_item_cost
from core.i18n import M
from core.jobs import queue
from core.jobs.files import STATUS, read_json

LIMITS = "judge_limits"
DEFAULT_LIMITS = {"max_items": 200, "max_cost": 1.0, "timeout_s": 300.0, "max_tokens": 256}
TOO_FEW = 20            # below this many pairs, an agreement is shown with "n too small to say"
MIN_AGREEMENT = 0.6     # the share of decisive votes the judge must agree with to gate without an override
KINDS = ("example", "vote", "review")
DECISION_RANK = {"rejected": 0, "edited": 1, "approved": 2}


class JudgeRefused(ValueError):
    """A judge request that cannot be done, in one line."""


# ── settings ─────────────────────────────────────────────────────────────────


def limits() -> dict:
    return {**DEFAULT_LIMITS, **(store.get_setting(LIMITS, {}) or {})}


def set_limits(*, max_items: int | None = None, max_cost: float | None = None, timeout_s: float | None = None,
               max_tokens: int | None = None, actor: Principal) -> dict:
    """The caps on what one evaluation's judging may take (admins; audited)."""
    require(actor, "judge.gate")
    new = limits()
    for name, value, low, high in (("max_items", max_items, 1, 100_000), ("max_cost", max_cost, 0, 10_000),
                                   ("timeout_s", timeout_s, 1, 3600), ("max_tokens", max_tokens, 32, 4096)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not low <= value <= high:
            raise JudgeRefused(f"the judge's {name} must be between {low} and {high}, not {value}")
        new[name] = int(value) if name in ("max_items", "max_tokens") else float(value)
    store.set_setting(LIMITS, new, actor)
    return new


def set_gate(enabled: bool, *, judge: str | None = None, rubric_version: str | None = None,
             min_mean: float | None = None, min_share: float | None = None, actor: Principal,
             override_reason: str | None = None) -> dict:
    """Let the judge's mean gate a release, or not (admins; audited with the agreement it was enabled on).

    Enabling names the judge (``local:MODEL`` or ``endpoint:NAME:MODEL``; the current rubric unless
    given): only its scores count. A judge whose agreement with the team's votes is too small to say
    (fewer than ``TOO_FEW`` votes it scored both answers of) or below ``MIN_AGREEMENT`` gates only with an
    override reason, which the audit log keeps."""
    require(actor, "judge.gate")
    cfg = gate.judge_gate()
    if min_mean is not None:
        if not 1 <= min_mean <= 5:
            raise JudgeRefused(f"the judge's minimum mean must be between 1 and 5, not {min_mean}")
        cfg["min_mean"] = float(min_mean)
    if min_share is not None:
        if not 0.1 <= min_share <= 1:
            raise JudgeRefused(f"the share of an evaluation the judge must have scored must be between 0.1 and 1, "
                               f"not {min_share}")
        cfg["min_share"] = float(min_share)
    detail: dict = {}
    if enabled:
        judge = (judge or cfg.get("judge") or "").strip()
        if not judge:
            raise JudgeRefused("name the judge whose mean gates (local:MODEL or endpoint:NAME:MODEL; "
                               "`python -m core judge agreement` lists the judges)")
        rubric_version = rubric_version or rubric.RUBRIC_VERSION
        ag = agreement(judge, rubric_version, actor=actor)
        votes = ag["votes"]
        weak = None
        if votes["too_small"]:
            weak = (f"its agreement with the team's blind votes is too small to say (n={votes['n']}, fewer than "
                    f"{TOO_FEW})")
        elif (votes["agreement_decisive"] or 0) < MIN_AGREEMENT:
            weak = (f"it agrees with {votes['agreement_decisive'] or 0:.0%} of the team's decisive votes "
                    f"(n={votes['n_decisive']}), below {MIN_AGREEMENT:.0%}")
        reason = (override_reason or "").strip()
        if weak and not reason:
            raise JudgeRefused(f"judge {judge} (rubric {rubric_version}) may not gate yet: {weak}; judge more votes, "
                               "or give an override reason (it is recorded)")
        cfg.update(enabled=True, judge=judge, rubric_version=rubric_version)
        detail = {"agreement": {"votes": _brief(votes), "reviews": _brief(ag["reviews"])}}
        if weak:
            detail["override_reason"] = reason
            store.audit("judge.gate_override", judge, actor, reason=reason, why=weak, agreement=detail["agreement"])
    else:
        cfg["enabled"] = False
    store.set_setting(gate.JUDGE_GATE, cfg, actor, **detail)
    return cfg


def _brief(a: dict) -> dict:
    return {k: a.get(k) for k in ("n", "agreement", "agreement_decisive", "n_decisive", "concordance",
                                  "kendall_tau", "too_small")}


# ── the judge: the local model or a configured endpoint ──────────────────────


def local_judge() -> str:
    return f"local:{paths.default_base_model_dir().name}"


def judge_options() -> list[str]:
    """What may judge: the default model (local) and every configured endpoint (``endpoint:NAME``)."""
    try:
        names = [e.name for e in endpoints.configured()]
    except GenerateError:
        names = []
    return ["local"] + [f"endpoint:{n}" for n in names]


def _backend(endpoint: str | None, local: bool) -> tuple[str, Backend]:
    """(the judge's name, what its worker is told). Greedy: the same answer gets the same score."""
    lim = limits()
    if local:
        return local_judge(), Backend(base_url="http://127.0.0.1/v1", model="local", api_key_env="", temperature=0.0,
                                      max_tokens=int(lim["max_tokens"]), timeout_s=float(lim["timeout_s"]),
                                      structured=True)
    if not endpoint:
        raise JudgeRefused("choose the judge: the default model (local) or a configured endpoint by name")
    try:
        e = endpoints.get(endpoint)
        backend = endpoints.backend_of(e, max_tokens=int(lim["max_tokens"]), temperature=0.0)
    except GenerateError as exc:
        raise JudgeRefused(str(exc)) from None
    backend.timeout_s = float(lim["timeout_s"])
    return f"endpoint:{e.name}:{e.model}", backend


def worker_env(job: dict, env: dict[str, str]) -> dict[str, str]:
    """The judge endpoint's key, for this worker alone (as pair generation's)."""
    from core.datasets.generation import generations

    return generations.worker_env(job, env)


# ── what to judge ────────────────────────────────────────────────────────────


def _missing(kind: str, ref_parts: list[tuple[str, int]], judge: str, version: str) -> set[tuple[str, int]]:
    """Of (ref, part) keys, those without a score from this judge and rubric."""
    if not ref_parts:
        return set()
    got = store.rows(
        """SELECT ref, part FROM judgements WHERE kind = ? AND judge = ? AND rubric_version = ? AND score IS NOT NULL
           AND ref IN (SELECT unnest(?::VARCHAR[]))""", [kind, judge, version, sorted({r for r, _ in ref_parts})])
    done = {(r["ref"], r["part"]) for r in got}
    return {k for k in ref_parts if k not in done}


def _busy(kind: str, ref: str | None, judge: str, project: str) -> None:
    got = store.one(
        """SELECT j.id FROM jobs j JOIN judge_runs r ON r.job_id = j.id
           WHERE j.kind = 'judge' AND j.state IN ('queued', 'running') AND r.kind = ? AND r.judge = ?
           AND coalesce(r.ref, '') = coalesce(?, '') AND r.project = ?""", [kind, judge, ref, project])
    if got:
        raise JudgeRefused(f"judge job {got['id']} is already judging these with {judge}; wait for it or stop it")


def submit_evaluation(evaluation_id: str, *, endpoint: str | None = None, local: bool = False,
                      max_items: int | None = None, max_cost: float | None = None, actor: Principal) -> dict:
    """Queue a judge over an evaluation's examples that have no score from this judge yet, within the
    evaluation's limits (what earlier judge runs on it took counts). Returns the job."""
    from core.evaluation import evaluations

    e = evaluations.get_evaluation(evaluation_id, actor)
    exs = evaluations.examples(evaluation_id)
    items = [{"kind": "example", "ref": evaluation_id, "part": x["idx"],
              "question": prompt_format.user_message(x), "reference": x["reference"] or "",
              "answer": x["prediction"] or ""} for x in exs]
    return _submit("example", evaluation_id, items, e["project"], endpoint=endpoint, local=local,
                   max_items=max_items, max_cost=max_cost, actor=actor)


def submit_votes(*, endpoint: str | None = None, local: bool = False, max_items: int | None = None,
                 max_cost: float | None = None, actor: Principal, project: str | None = None) -> dict:
    """Queue a judge over both answers of every blind vote drawn from a held-out split (against that pair's
    reference) that this judge has not scored yet: how its agreement with the voters is measured."""
    from core.datasets import versions

    project = projects.check(actor, project)
    rows = store.rows("SELECT * FROM votes WHERE project = ? AND source LIKE 'held-out:%' ORDER BY created_at",
                      [project])
    splits: dict[str, list | None] = {}
    items = []
    for v in rows:
        version, _, idx = v["source"][len("held-out:"):].rpartition("#")
        if version not in splits:
            try:
                splits[version] = versions.load_rows(version, "test")
            except Exception:   # a version gone from disk: its votes cannot be tied to a reference
                splits[version] = None
        held = splits[version]
        if held is None or not idx.isdigit() or int(idx) >= len(held):
            continue
        reference = held[int(idx)]["output"]
        for part, answer in ((0, v["answer_a"]), (1, v["answer_b"])):
            items.append({"kind": "vote", "ref": v["id"], "part": part, "question": v["prompt"],
                          "reference": reference, "answer": answer})
    if not items:
        raise JudgeRefused(f"project {project} has no blind vote on a held-out prompt to judge (votes on typed "
                           "prompts have no reference)")
    return _submit("vote", None, items, project, endpoint=endpoint, local=local, max_items=max_items,
                   max_cost=max_cost, actor=actor)


def submit_reviews(*, endpoint: str | None = None, local: bool = False, max_items: int | None = None,
                   max_cost: float | None = None, actor: Principal, project: str | None = None) -> dict:
    """Queue a judge over every decided pair of the review samples of the project's dataset versions (each
    pair's answer against its question: the rubric without a reference), to measure the judge against the
    reviewers' decisions."""
    project = projects.check(actor, project)
    rows = store.rows(
        """SELECT i.* FROM review_items i JOIN reviews r ON r.id = i.review_id
           JOIN dataset_versions v ON v.id = r.dataset_version_id
           WHERE v.project = ? AND i.decision IS NOT NULL ORDER BY i.decided_at, i.review_id, i.idx""", [project])
    items = [{"kind": "review", "ref": r["review_id"], "part": r["idx"], "question": prompt_format.user_message(r),
              "reference": None, "answer": r["output"]} for r in rows]
    if not items:
        raise JudgeRefused(f"project {project} has no decided review pair to judge")
    return _submit("review", None, items, project, endpoint=endpoint, local=local, max_items=max_items,
                   max_cost=max_cost, actor=actor)


def spent(kind: str, ref: str | None) -> dict:
    """What judging ``ref`` (an evaluation) has taken so far, over every judge run: cost and scores."""
    got = store.one("""SELECT coalesce(sum(cost), 0) AS cost FROM judge_runs WHERE kind = ? AND ref = ?""", [kind, ref])
    scored = store.one("SELECT count(*) AS n FROM judgements WHERE kind = ? AND ref = ? AND score IS NOT NULL",
                       [kind, ref])
    return {"cost": float(got["cost"]), "scored": int(scored["n"])}


def _submit(kind: str, ref: str | None, items: list[dict], project: str, *, endpoint: str | None, local: bool,
            max_items: int | None, max_cost: float | None, actor: Principal) -> dict:
    require(actor, "judge.run", project)
    lim = limits()
    if max_items is not None and not 1 <= max_items <= lim["max_items"]:
        raise JudgeRefused(f"at most {lim['max_items']} answers may be judged per evaluation (the judge's limit; "
                           f"admins set it), not {max_items}")
    if max_cost is not None and not 0 <= max_cost <= lim["max_cost"]:
        raise JudgeRefused(f"the judge may spend at most {lim['max_cost']:g} per evaluation (the judge's limit; "
                           f"admins set it), not {max_cost:g}")
    count = int(max_items if max_items is not None else lim["max_items"])
    budget = float(max_cost if max_cost is not None else lim["max_cost"])
    judge, backend = _backend(endpoint, local)
    _busy(kind, ref, judge, project)
    if kind == "example":   # the limits are the evaluation's: what earlier runs took counts
        before = spent(kind, ref)
        count -= before["scored"]
        budget -= before["cost"]
        if count <= 0:
            raise JudgeRefused(f"evaluation {ref} has {before['scored']} judged answers (every judge's), the "
                               f"{count + before['scored']} it may have: raise the limit to judge more")
        if budget <= 0 and (backend.price_in_per_mtok or backend.price_out_per_mtok):
            raise JudgeRefused(f"judging evaluation {ref} has cost {before['cost']:.4f} of the {budget + before['cost']:g} "
                               "it may: raise the limit to judge more")
    missing = _missing(kind, [(it["ref"], it["part"]) for it in items], judge, rubric.RUBRIC_VERSION)
    todo = [it for it in items if (it["ref"], it["part"]) in missing]
    if not todo:
        raise JudgeRefused(f"nothing to judge: every one of the {len(items)} answers has a score from {judge} "
                           f"(rubric {rubric.RUBRIC_VERSION})")
    todo = todo[:count]
    priced = bool(backend.price_in_per_mtok or backend.price_out_per_mtok)
    estimate = sum(estimate_item_cost(backend, it) for it in todo) if priced else 0.0
    if priced and estimate > budget:
        fits, total = 0, 0.0
        for it in todo:
            total += estimate_item_cost(backend, it)
            if total > budget:
                break
            fits += 1
        raise JudgeRefused(f"judging {len(todo)} answers could cost up to {estimate:.4f} (an upper estimate from the "
                           f"prompts and {endpoint}'s prices), over the {budget:.4f} left to spend"
                           + (f" on evaluation {ref}" if ref else "")
                           + (f": judge at most {fits} (max items) or raise the cost limit" if fits else
                              ": not one answer fits; raise the cost limit"))
    job_dir = paths.data_dir() / "judge" / f"judge-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    job_dir.mkdir(parents=True)
    with (job_dir / ITEMS).open("w", encoding="utf-8") as fh:
        for it in todo:
            fh.write(json.dumps(it, ensure_ascii=False) + "\n")
    payload = {"what": kind, "ref": ref, "judge": judge, "rubric_version": rubric.RUBRIC_VERSION,
               "rubric_sha256": rubric.sha256(), "local": bool(local), "endpoint": None if local else endpoint,
               "backend": backend.to_dict(), "items": len(todo), "max_items": count,
               "max_cost": budget if priced else None, "estimate": round(estimate, 6), "owner": actor.name,
               "project": project}
    with store.transaction() as con:
        job = queue.submit("judge", payload, job_dir, actor, project=project)
        con.execute(
            """INSERT INTO judge_runs (job_id, kind, ref, project, judge, endpoint, model, base_url, rubric_version,
                   rubric_sha256, max_items, max_cost, items, created_by, created_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            [job["id"], kind, ref, project, judge, None if local else endpoint, None if local else backend.model,
             None if local else backend.base_url, rubric.RUBRIC_VERSION, rubric.sha256(), count,
             budget if priced else None, len(todo), actor.name, store.now()])
    return job


def request_stop(job: dict, *, actor: Principal) -> None:
    """Ask a running judge to stop after its current answer; what it judged is kept."""
    require(actor, "judge.run", job.get("project"))
    Path(job["job_dir"], STOP_FILE).write_text(time.strftime("%Y-%m-%dT%H:%M:%S"), encoding="utf-8")


# ── the supervisor side: verdicts are stored as they come ───────────────────

_ingested: dict[tuple[str, int], int] = {}   # (home, job) → the size of judgements.jsonl already stored


def _lines(job: dict) -> list[dict]:
    path = Path(job["job_dir"]) / JUDGEMENTS
    out = []
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return out
    for line in text.splitlines():
        try:
            got = json.loads(line)
        except json.JSONDecodeError:
            continue   # a line still being written
        if isinstance(got, dict) and got.get("kind") in KINDS:
            out.append(got)
    return out


def ingest_progress(con, job: dict) -> None:
    """Store every verdict the worker has written so far: a score where this judge has none stored yet (a
    stored score is never overwritten, by a score or by an error), else the reason there is none; and the
    run's counts and cost."""
    path = Path(job["job_dir"]) / JUDGEMENTS
    key = (str(paths.home()), int(job["id"]))
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    if _ingested.get(key) == size:
        return
    cfg = job["config"] if isinstance(job["config"], dict) else json.loads(job["config"])
    lines = _lines(job)
    latest: dict[tuple, dict] = {}
    for ln in lines:   # one row per answer: a score wins over an error
        k = (ln["kind"], str(ln["ref"]), int(ln["part"]))
        if k not in latest or ln.get("score") is not None:
            latest[k] = ln
    now = store.now()
    rows = [[k[0], k[1], k[2], ln.get("score"), ln.get("reason"), ln.get("error"), ln.get("answer"), cfg["judge"],
             cfg["rubric_version"], int(job["id"]), int(ln.get("prompt_tokens") or 0),
             int(ln.get("completion_tokens") or 0), float(ln.get("cost") or 0.0), now] for k, ln in latest.items()]
    if rows:
        con.execute(
            """INSERT INTO judgements (kind, ref, part, score, reason, error, answer, judge, rubric_version, judge_run,
                   prompt_tokens, completion_tokens, cost, judged_at)
               SELECT unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), unnest(?::INTEGER[]),
                   unnest(?::INTEGER[]), unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), unnest(?::VARCHAR[]),
                   unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), unnest(?::INTEGER[]), unnest(?::INTEGER[]),
                   unnest(?::INTEGER[]), unnest(?::DOUBLE[]), unnest(?::TIMESTAMPTZ[])
               ON CONFLICT (kind, ref, part, judge, rubric_version) DO UPDATE SET
                   score = excluded.score, reason = excluded.reason, error = excluded.error, answer = excluded.answer,
                   judge_run = excluded.judge_run, prompt_tokens = excluded.prompt_tokens,
                   completion_tokens = excluded.completion_tokens, cost = excluded.cost, judged_at = excluded.judged_at
               WHERE judgements.score IS NULL""",
            [list(c) for c in zip(*rows)])
    con.execute(
        """UPDATE judge_runs SET asked = ?, scored = ?, failed = ?, tokens_in = ?, tokens_out = ?, cost = ?
           WHERE job_id = ?""",
        [len(lines), sum(ln.get("score") is not None for ln in lines), sum(ln.get("score") is None for ln in lines),
         sum(int(ln.get("prompt_tokens") or 0) for ln in lines), sum(int(ln.get("completion_tokens") or 0) for ln in lines),
         round(sum(float(ln.get("cost") or 0.0) for ln in lines), 6), int(job["id"])])
    _ingested[key] = size


def ingest(con, job: dict, result: dict) -> None:
    _ingested.pop((str(paths.home()), int(job["id"])), None)
    ingest_progress(con, job)
    con.execute("UPDATE judge_runs SET stopped = ? WHERE job_id = ?", [result.get("stopped"), int(job["id"])])


def live(job: dict) -> dict:
    """The running numbers the worker reports: asked, scored, failed, tokens, cost."""
    return (read_json(Path(job["job_dir"]) / STATUS) or {}).get("judge") or {}


# ── reading: an evaluation's verdicts, the judges ───────────────────────────


def runs_of(kind: str | None = None, ref: str | None = None, *, actor: Principal, limit: int = 50) -> list[dict]:
    """Judge runs (newest first) with their job's state: of ``kind`` (and ``ref``), in the projects the actor sees."""
    cond, params = projects.where(actor, None, column="r.project")
    where = [cond]
    if kind:
        where.append("r.kind = ?")
        params = params + [kind]
    if ref:
        where.append("r.ref = ?")
        params = params + [ref]
    return store.rows(f"""SELECT r.*, j.state, j.error FROM judge_runs r JOIN jobs j ON j.id = r.job_id
                          WHERE {' AND '.join(where)} ORDER BY r.job_id DESC LIMIT ?""", params + [int(limit)])


def run_of(job_id: int) -> dict | None:
    """A judge run's meta (with its job's state), by its job."""
    return store.one("""SELECT r.*, j.state, j.error FROM judge_runs r JOIN jobs j ON j.id = r.job_id
                        WHERE r.job_id = ?""", [int(job_id)])


def failures(job_id: int) -> list[dict]:
    """The answers a judge run could not score (and that have no score from that judge): each with its reason."""
    return store.rows("""SELECT kind, ref, part, error FROM judgements WHERE judge_run = ? AND score IS NULL
                         ORDER BY kind, ref, part""", [int(job_id)])


def verdicts(evaluation_id: str, judge: str | None = None, rubric_version: str | None = None) -> dict[int, dict]:
    """Per example idx, the judge's verdict on it: ``score``, ``reason``, ``error`` (of ``judge``, else of the
    evaluation's main judge: see ``summary``)."""
    if judge is None:
        main = _main_judge(evaluation_id)
        if main is None:
            return {}
        judge, rubric_version = main
    got = store.rows("""SELECT part AS idx, score, reason, error, judge, rubric_version, judged_at FROM judgements
                        WHERE kind = 'example' AND ref = ? AND judge = ? AND rubric_version = ? ORDER BY part""",
                     [evaluation_id, judge, rubric_version or rubric.RUBRIC_VERSION])
    return {r["idx"]: r for r in got}


def _main_judge(evaluation_id: str) -> tuple[str, str] | None:
    """The evaluation's judge to show: the one that gates when it has scored it, else the one with most scores."""
    cfg = gate.judge_gate()
    got = store.one(
        """SELECT judge, rubric_version FROM judgements WHERE kind = 'example' AND ref = ?
           GROUP BY judge, rubric_version
           ORDER BY coalesce(judge = ? AND rubric_version = ?, false) DESC, count(score) DESC, judge LIMIT 1""",
        [evaluation_id, cfg.get("judge"), cfg.get("rubric_version")])
    return (got["judge"], got["rubric_version"]) if got else None


def summary(evaluation_id: str, actor: Principal | None = None, judge: str | None = None,
            rubric_version: str | None = None) -> dict:
    """The judge's numbers on an evaluation: ``mean`` over the ``n`` scored examples, the ``share`` of the
    evaluation that is, ``failed`` (examples with a failed verdict and no score), the ``distribution`` of
    scores 1–5, what judging it ``cost`` in all, and ``judges``: every judge that scored it."""
    from core.evaluation import evaluations

    e = evaluations.get_evaluation(evaluation_id, actor)
    judges = store.rows(
        """SELECT judge, rubric_version, count(score) AS n, avg(score) AS mean,
                  count(*) FILTER (WHERE score IS NULL) AS failed FROM judgements
           WHERE kind = 'example' AND ref = ? GROUP BY judge, rubric_version ORDER BY n DESC, judge""", [evaluation_id])
    if judge is None:
        main = _main_judge(evaluation_id)
        judge, rubric_version = main if main else (None, None)
    out = {"evaluation": evaluation_id, "examples": e["n"], "judge": judge, "rubric_version": rubric_version,
           "n": 0, "mean": None, "share": 0.0, "failed": 0, "distribution": {s: 0 for s in range(1, 6)},
           "cost": spent("example", evaluation_id)["cost"], "judges": judges}
    if judge is None:
        return out
    rows = store.rows("""SELECT score, count(*) AS k FROM judgements WHERE kind = 'example' AND ref = ? AND judge = ?
                         AND rubric_version = ? GROUP BY score""", [evaluation_id, judge, rubric_version])
    for r in rows:
        if r["score"] is None:
            out["failed"] = int(r["k"])
        else:
            out["distribution"][int(r["score"])] = int(r["k"])
    n = sum(out["distribution"].values())
    out["n"] = n
    out["mean"] = round(sum(s * k for s, k in out["distribution"].items()) / n, 4) if n else None
    out["share"] = n / e["n"] if e["n"] else 0.0
    return out


def judges(actor: Principal) -> list[dict]:
    """Every judge that has scored anything the actor sees, with how many answers of each kind."""
    got = store.rows(
        """SELECT judge, rubric_version, kind, count(score) AS n FROM judgements WHERE score IS NOT NULL
           GROUP BY judge, rubric_version, kind ORDER BY judge, rubric_version, kind""")
    out: dict[tuple, dict] = {}
    for r in got:
        d = out.setdefault((r["judge"], r["rubric_version"]), {"judge": r["judge"], "rubric_version": r["rubric_version"],
                                                               "example": 0, "vote": 0, "review": 0})
        d[r["kind"]] = int(r["n"])
    return list(out.values())


# ── agreement with the team ──────────────────────────────────────────────────


def _kendall(x: list[float], y: list[float]) -> tuple[float | None, float | None]:
    """Kendall's tau-b and its p-value (scipy); None where either side does not vary."""
    if len(x) < 2 or len(set(x)) < 2 or len(set(y)) < 2:
        return None, None
    from scipy.stats import kendalltau

    got = kendalltau(x, y)
    tau, p = float(got.statistic), float(got.pvalue)
    return (round(tau, 4) if math.isfinite(tau) else None), (round(p, 4) if math.isfinite(p) else None)


def _note(n: int) -> M | None:
    return M("n too small to say (n={n}, fewer than {few})", n=n, few=TOO_FEW) if n < TOO_FEW else None


def vote_agreement_of(pairs: list[tuple[str, int, int]]) -> dict:
    """How a judge's scores of two answers agree with the voters' picks. ``pairs``: (the vote: ``a``, ``b`` or
    ``tie``; the judge's score of answer a; of answer b). The judge prefers the answer it scored higher (a tie
    when equal). ``agreement``: the share of votes where the judge's preference is the voter's, ties
    included; ``agreement_decisive``: the same over the ``n_decisive`` votes where neither is a tie; and
    Kendall's tau-b between the vote (+1 a, 0 tie, −1 b) and the judge's score difference (a − b)."""
    n = len(pairs)
    picks = [("a" if sa > sb else "b" if sb > sa else "tie") for _, sa, sb in pairs]
    agree = sum(p == c for p, (c, _, _) in zip(picks, pairs))
    decisive = [(p, c) for p, (c, _, _) in zip(picks, pairs) if p != "tie" and c != "tie"]
    tau, p_value = _kendall([{"a": 1, "tie": 0, "b": -1}[c] for c, _, _ in pairs], [sa - sb for _, sa, sb in pairs])
    return {"n": n, "agree": agree, "agreement": round(agree / n, 4) if n else None,
            "n_decisive": len(decisive),
            "agreement_decisive": round(sum(p == c for p, c in decisive) / len(decisive), 4) if decisive else None,
            "judge_ties": picks.count("tie"), "voter_ties": sum(c == "tie" for c, _, _ in pairs),
            "kendall_tau": tau, "p_value": p_value, "too_small": n < TOO_FEW, "note": _note(n)}


def review_agreement_of(items: list[tuple[str, int]]) -> dict:
    """How a judge's scores of reviewed answers agree with the reviewers' decisions. ``items``: (decision:
    ``approved``, ``edited`` or ``rejected``; the judge's score). ``concordance``: over every two answers the
    reviewers ranked differently (approved > edited > rejected), the share the judge ranks the same way (a
    tie in its scores counts half; ``pairs`` of them); Kendall's tau-b between rank and score; the judge's
    mean per decision."""
    n = len(items)
    ranked = [(DECISION_RANK[d], s) for d, s in items if d in DECISION_RANK]
    pairs = same = 0.0
    for i in range(len(ranked)):
        for j in range(i + 1, len(ranked)):
            (ri, si), (rj, sj) = ranked[i], ranked[j]
            if ri == rj:
                continue
            pairs += 1
            if si == sj:
                same += 0.5
            elif (si > sj) == (ri > rj):
                same += 1
    tau, p_value = _kendall([r for r, _ in ranked], [s for _, s in ranked])
    by: dict[str, list[int]] = {}
    for d, s in items:
        by.setdefault(d, []).append(s)
    return {"n": n, "pairs": int(pairs), "concordance": round(same / pairs, 4) if pairs else None,
            "kendall_tau": tau, "p_value": p_value,
            "mean_by_decision": {d: round(sum(v) / len(v), 3) for d, v in sorted(by.items())},
            "count_by_decision": {d: len(v) for d, v in sorted(by.items())},
            "too_small": n < TOO_FEW, "note": _note(n)}


def agreement(judge: str, rubric_version: str | None = None, *, actor: Principal, project: str | None = None) -> dict:
    """A judge's agreement with the team, over the projects the actor sees (or ``project``): with the blind
    votes whose two answers it scored, and with the reviewers' decisions on the pairs it scored."""
    require(actor, "read")
    rubric_version = rubric_version or rubric.RUBRIC_VERSION
    cond, params = projects.where(actor, project)
    votes = store.rows(
        f"""SELECT v.choice, a.score AS sa, b.score AS sb FROM (SELECT * FROM votes WHERE {cond}) v
            JOIN judgements a ON a.kind = 'vote' AND a.ref = v.id AND a.part = 0 AND a.judge = ? AND a.rubric_version = ?
            JOIN judgements b ON b.kind = 'vote' AND b.ref = v.id AND b.part = 1 AND b.judge = ? AND b.rubric_version = ?
            WHERE a.score IS NOT NULL AND b.score IS NOT NULL""",
        params + [judge, rubric_version, judge, rubric_version])
    reviews = store.rows(
        f"""SELECT i.decision, j.score FROM review_items i JOIN reviews r ON r.id = i.review_id
            JOIN (SELECT id FROM dataset_versions WHERE {cond}) v ON v.id = r.dataset_version_id
            JOIN judgements j ON j.kind = 'review' AND j.ref = i.review_id AND j.part = i.idx AND j.judge = ?
                 AND j.rubric_version = ?
            WHERE i.decision IS NOT NULL AND j.score IS NOT NULL""", params + [judge, rubric_version])
    return {"judge": judge, "rubric_version": rubric_version, "too_few": TOO_FEW,
            "votes": vote_agreement_of([(r["choice"], int(r["sa"]), int(r["sb"])) for r in votes]),
            "reviews": review_agreement_of([(r["decision"], int(r["score"])) for r in reviews])}


# ── what the gate and a release record read ─────────────────────────────────


def verdict_of(evaluation_id: str, actor: Principal | None = None) -> dict:
    """The judge on an evaluation, for the gate and the release record: the judge's ``mean`` (of ``n``
    examples, ``share`` of the evaluation), its ``agreement`` with the team, whether it ``may_gate`` (the
    admin's setting names this judge and is on), whether its mean ``passes`` the setting's minimum, and
    the one-line ``reason``."""
    from core.evaluation import evaluations

    cfg = gate.judge_gate()
    e = evaluations.get_evaluation(evaluation_id, actor)
    s = summary(evaluation_id, actor, *((cfg["judge"], cfg["rubric_version"]) if cfg.get("enabled") else (None, None)))
    check = gate.judge_check(e["n"], s["n"], s["mean"], s["judge"], s["rubric_version"], cfg)
    ag = agreement(s["judge"], s["rubric_version"], actor=actor or _reader()) if s["judge"] else None
    return {"evaluation": evaluation_id, "judge": s["judge"], "rubric_version": s["rubric_version"], "mean": s["mean"],
            "n": s["n"], "share": s["share"], "failed": s["failed"], "cost": s["cost"],
            "agreement": {"votes": _brief(ag["votes"]), "reviews": _brief(ag["reviews"])} if ag else None,
            "may_gate": check["may_gate"], "gating": check["gating"], "passes": check["passes"],
            "blocks": check["blocks"], "min_mean": cfg["min_mean"], "reason": check["reason"]}


def _reader() -> Principal:
    from core.access.principal import system

    return system("judge", role="viewer")
