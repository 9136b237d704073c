"""The gate: the thresholds, and whether a run may be released.

A run is releasable when its **latest** evaluation on the held-out (test) split of the dataset version
it was trained on covers the whole split (a settable minimum share, 100 % by default) and passes the
thresholds (BLEU > 0.35, ROUGE-L > 0.45 by default), and the version has passed its review sample. A
later failing evaluation outweighs an earlier passing one; a passing evaluation of a few examples
proves nothing. Every evaluation keeps the thresholds it was gated with.

The thresholds are a studio setting that only admins change; below the floor (the guide's 0.35 and
0.45) they move only with an override reason, which the audit log keeps.

The LLM judge (``core.evaluation.judge``) is shown with every verdict (``verdict["judge"]``: its mean on
the evaluation the verdict rests on); it gates only when an admin has let it (``judge_gate()``: on, for
one judge and rubric, with a minimum mean and a minimum share of the evaluation it must have scored).
Then a run whose evaluation passes BLEU and ROUGE-L is still refused when that judge's mean is below the
minimum, or when that judge has not scored enough of it.

**The shipped artifact** (issue 28). ``verdict`` judges the run's adapter on its HF base model; a release ships a
GGUF at one quantization, and ``record`` judges that: the GGUF's own evaluation (``target`` gguf, or the Ollama
model made from the same file, matched by its sha256) must cover the gate's share of the held-out split and pass
the thresholds too. ``record`` returns the gate's record: a list of named checks, each ``{name, passed, gates,
evaluation, artifact, numbers, reason: {en, vi}}``, and ``releasable`` when every check that gates passed. Other
checks (quantization cost, retention, …) join by appending a function to ``EXTRA_CHECKS``: it gets the context
(run, quantization, sha256, verdict) and returns a check (``check(...)``) or None. Each release keeps its record.
"""
from __future__ import annotations

import json

from core import store
from core.access.principal import Principal, require
from core.datasets import review
from core.evaluation import retention, scoring
from core.evaluation.scoring import gate_reason
from core.i18n import M
from core.training import runs

FLOOR = dict(scoring.DEFAULT_THRESHOLDS)   # the guide's gate: lower only with an audited override
DEFAULT_MIN_SHARE = 1.0                    # the share of the held-out split an evaluation must cover
JUDGE_GATE = "judge_gate"                  # the setting: whether (and how) the LLM judge's mean gates
JUDGE_GATE_DEFAULT = {"enabled": False, "judge": None, "rubric_version": None, "min_mean": 3.5, "min_share": 0.8}


class GateError(ValueError):
    pass


def thresholds() -> dict:
    return store.get_setting("thresholds", dict(scoring.DEFAULT_THRESHOLDS))


def set_thresholds(bleu: float, rouge_l: float, *, actor: Principal, override_reason: str | None = None) -> dict:
    """Set the thresholds (admins). Below the floor only with ``override_reason``, audited as such."""
    require(actor, "gate.thresholds")
    for name, value in (("BLEU", bleu), ("ROUGE-L", rouge_l)):
        if not 0 <= value <= 1:
            raise GateError(f"the {name} threshold must be between 0 and 1")
    value = {"bleu": float(bleu), "rouge_l": float(rouge_l)}
    below = [f"{name} {value[key]} < {FLOOR[key]}" for key, name in (("bleu", "BLEU"), ("rouge_l", "ROUGE-L"))
             if value[key] < FLOOR[key]]
    reason = (override_reason or "").strip()
    if below and not reason:
        raise GateError(f"{' and '.join(below)} is below the gate's floor (BLEU {FLOOR['bleu']}, ROUGE-L "
                        f"{FLOOR['rouge_l']}): give an override reason to lower it (it is recorded)")
    if below:
        store.audit("gate.thresholds_below_floor", "thresholds", actor, reason=reason, new=value, floor=FLOOR)
    store.set_setting("thresholds", value, actor, **({"override_reason": reason} if below else {}))
    return value


def min_share() -> float:
    return float(store.get_setting("gate_min_share", DEFAULT_MIN_SHARE))


def settings() -> dict:
    """The gate's settings in one read: ``{"thresholds": {...}, "min_share": float}``."""
    got = _settings()
    return {"thresholds": got["thresholds"], "min_share": got["min_share"]}


def _settings() -> dict:
    """``settings()`` and ``judge_gate()`` in one query (what a verdict reads)."""
    got = store.get_settings({"thresholds": dict(scoring.DEFAULT_THRESHOLDS), "gate_min_share": DEFAULT_MIN_SHARE,
                              JUDGE_GATE: {}, retention.SETTING: {}})
    return {"thresholds": got["thresholds"], "min_share": float(got["gate_min_share"]),
            "judge": {**JUDGE_GATE_DEFAULT, **(got[JUDGE_GATE] or {})},
            "retention": {**retention.DEFAULTS, **(got[retention.SETTING] or {})}}


def judge_gate() -> dict:
    """Whether the LLM judge's mean gates a release: ``enabled``, the ``judge`` and ``rubric_version`` whose
    scores count, ``min_mean`` (1–5) and ``min_share`` (of the evaluation's examples it must have scored).
    Admins change it (``core.evaluation.judge.set_gate``)."""
    return {**JUDGE_GATE_DEFAULT, **(store.get_setting(JUDGE_GATE, {}) or {})}


def judge_check(examples: int, n: int, mean: float | None, judge: str | None, rubric_version: str | None,
                cfg: dict) -> dict:
    """The judge's part of a verdict on an evaluation of ``examples`` examples, ``n`` of them scored by
    ``judge`` with mean ``mean``: ``gating`` (the setting is on), ``may_gate`` (it is on for this judge),
    ``passes`` (None when not judged), ``blocks`` (gating and not passing) and the one-line ``reason``."""
    gating = bool(cfg.get("enabled"))
    trusted = gating and judge == cfg.get("judge") and rubric_version == cfg.get("rubric_version")
    share = n / examples if examples else 0.0
    out = {"gating": gating, "may_gate": trusted, "judge": judge, "rubric_version": rubric_version, "n": n,
           "mean": mean, "share": share, "min_mean": cfg["min_mean"], "min_share": cfg["min_share"], "passes": None}
    if gating and not trusted:
        who = cfg.get("judge")
        out.update(passes=False, reason=M("the release gate counts the judge {judge} (rubric {rubric}), which has not "
                                          "judged this evaluation: judge it with that judge",
                                          judge=who, rubric=cfg.get("rubric_version")))
    elif not n:
        out["reason"] = M("not judged by an LLM judge")
    elif share < cfg["min_share"]:
        out.update(passes=False, reason=M("the judge {judge} scored {n} of {examples} examples ({share:.0%}); the gate "
                                          "needs at least {min_share:.0%}: judge the rest", judge=judge, n=n,
                                          examples=examples, share=share, min_share=cfg["min_share"]))
    else:
        passes = mean >= cfg["min_mean"]
        out.update(passes=passes, reason=M("the judge {judge}: mean {mean:.2f} over {n} examples ({verdict} the "
                                           "minimum {min_mean})", judge=judge, mean=mean, n=n,
                                           verdict=M("meets") if passes else M("below"), min_mean=cfg["min_mean"]))
    if not gating and n:
        out["reason"] = M("{reason}; shown, it does not gate (an admin can let it)", reason=out["reason"])
    out["blocks"] = gating and not out["passes"]
    return out


def set_min_share(share: float, *, actor: Principal) -> float:
    """The share of the held-out split a gating evaluation must cover (admins; 0.5 to 1)."""
    require(actor, "gate.thresholds")
    if not 0.5 <= share <= 1:
        raise GateError("the gate's minimum share of the held-out split must be between 0.5 and 1")
    store.set_setting("gate_min_share", float(share), actor)
    return float(share)


def _decode(e: dict) -> dict:
    for key in ("thresholds", "decoding"):
        if isinstance(e.get(key), str):
            e[key] = json.loads(e[key])
    return e


def verdict(run_id: str, actor: Principal | None = None) -> dict:
    """Whether a run may be released. Returns ``releasable``, ``reason`` and the ``evaluation`` it rests
    on (with the thresholds that evaluation was gated with)."""
    run = runs.get_run(run_id, actor)
    return verdicts([run])[run_id]


def verdicts(of_runs: list[dict]) -> dict[str, dict]:
    """``verdict`` of many runs (dicts with ``id`` and ``dataset_version_id``), by run id, in two queries
    whatever their number: the one evaluation each verdict rests on (the latest held-out one that covers
    the split, else the latest held-out one, else any) picked in SQL, and the review status of their
    dataset versions."""
    if not of_runs:
        return {}
    ids = [r["id"] for r in of_runs]
    gs = _settings()
    share, judge_cfg = gs["min_share"], gs["judge"]
    picked = store.rows(
        """WITH r AS (SELECT runs.id, runs.dataset_version_id, coalesce(dv.rows_test, 0) AS held_out_rows,
                             greatest(1, ceil(coalesce(dv.rows_test, 0) * ?)) AS need
                      FROM runs LEFT JOIN dataset_versions dv ON dv.id = runs.dataset_version_id
                      WHERE runs.id IN (SELECT unnest(?::VARCHAR[]))),
           j AS (SELECT ref, judge, rubric_version, count(score) AS n, avg(score) AS mean FROM judgements
                 WHERE kind = 'example' AND score IS NOT NULL
                   AND ref IN (SELECT id FROM evaluations WHERE run_id IN (SELECT id FROM r))
                 GROUP BY ref, judge, rubric_version
                 QUALIFY row_number() OVER (PARTITION BY ref ORDER BY
                     coalesce(judge = ? AND rubric_version = ?, false) DESC, count(score) DESC, judge) = 1),
           ranked AS (
               SELECT e.*, r.held_out_rows AS _held_out_rows, r.need AS _need,
                      j.judge AS _judge, j.rubric_version AS _judge_rubric, coalesce(j.n, 0) AS _judge_n,
                      j.mean AS _judge_mean,
                      count(*) OVER (PARTITION BY e.run_id) AS _evaluations,
                      (e.split = 'test' AND e.dataset_version_id = r.dataset_version_id) AS _held_out,
                      (e.split = 'test' AND e.dataset_version_id = r.dataset_version_id AND e.n >= r.need) AS _covers,
                      row_number() OVER (PARTITION BY e.run_id ORDER BY
                          (e.split = 'test' AND e.dataset_version_id = r.dataset_version_id AND e.n >= r.need) DESC,
                          (e.split = 'test' AND e.dataset_version_id = r.dataset_version_id) DESC,
                          e.created_at DESC) AS _pick
               FROM evaluations e JOIN r ON e.run_id = r.id LEFT JOIN j ON j.ref = e.id
               WHERE coalesce(e.target, 'adapter') = 'adapter')
           SELECT * FROM ranked WHERE _pick = 1""",
        [share, ids, judge_cfg.get("judge"), judge_cfg.get("rubric_version")])
    best = {e["run_id"]: e for e in picked}
    passing = [r for r in of_runs if r["id"] in best and best[r["id"]]["_covers"] and best[r["id"]]["passed"]]
    reviews = review.statuses([r["dataset_version_id"] for r in passing])
    kept = retention.checks([r["id"] for r in passing], cfg=gs["retention"])   # general Vietnamese kept (one query)
    return {r["id"]: _with_retention(_verdict_of(r, best.get(r["id"]), reviews, share, judge_cfg), kept.get(r["id"]))
            for r in of_runs}


def _with_retention(verdict: dict, kept) -> dict:
    """The retention check's hook (``core.evaluation.retention.check``: name, passed, numbers, reason): shown
    with a verdict whose evaluation passed; a releasable verdict is refused where it failed (not measured
    counts as failed only when an admin made the check required)."""
    if kept is None:
        return verdict
    verdict["retention"] = kept
    if verdict["releasable"] and kept.passed is False:
        verdict.update(releasable=False, reason=M("{verdict}; but the check \"{check}\" fails: {why}",
                                                  verdict=verdict["reason"], check=kept.name, why=kept.reason))
    return verdict


def _verdict_of(run: dict, e: dict | None, reviews: dict[str, dict], share: float, judge_cfg: dict) -> dict:
    """The verdict; with an evaluation, ``judge``: the LLM judge's part of it (``judge_check``)."""
    none = {"releasable": False, "evaluation": None, "thresholds": None}
    if e is None:
        return {**none, "reason": M("the run has no evaluation yet")}
    n_evals, held_out, covers = e.pop("_evaluations"), e.pop("_held_out"), e.pop("_covers")
    held_out_rows, need = int(e.pop("_held_out_rows")), int(e.pop("_need"))
    e.pop("_pick", None)
    judged = judge_check(e["n"], int(e.pop("_judge_n")), e.pop("_judge_mean"), e.pop("_judge"),
                         e.pop("_judge_rubric"), judge_cfg)
    e = _decode(e)
    none["judge"] = judged
    if not held_out:
        return {**none, "reason": M("the run has no evaluation on the held-out test split of its dataset version "
                                    "{version} ({n} on other splits or versions do not count)",
                                    version=run["dataset_version_id"], n=n_evals)}
    if not covers:
        return {**none, "evaluation": e,
                "reason": M("the latest held-out evaluation {evaluation} covers {n} of the {rows} held-out pairs; "
                            "the gate needs an evaluation of at least {need} ({share:.0%} of the split): evaluate "
                            "the whole split", evaluation=e["id"], n=e["n"], rows=held_out_rows, need=need,
                            share=share)}
    th = e["thresholds"]   # the latest that covers the split: a later failure outweighs an earlier pass
    if not e["passed"]:
        return {"releasable": False, "evaluation": e, "thresholds": th, "judge": judged,
                "reason": M("the latest held-out evaluation {evaluation} (n={n}): BLEU {bleu:.3f}, ROUGE-L "
                            "{rouge_l:.3f} is below the gate (BLEU > {bleu_min}, ROUGE-L > {rouge_l_min})",
                            evaluation=e["id"], n=e["n"], bleu=e["bleu"], rouge_l=e["rouge_l"], bleu_min=th["bleu"],
                            rouge_l_min=th["rouge_l"])}
    if judged["blocks"]:
        return {"releasable": False, "evaluation": e, "thresholds": th, "judge": judged,
                "reason": M("evaluation {evaluation} passed BLEU and ROUGE-L, but the LLM judge gates and refuses it: "
                            "{why}", evaluation=e["id"], why=judged["reason"])}
    reviewed = reviews.get(run["dataset_version_id"]) or {"reviewed": False, "reason": M("its version is gone")}
    if not reviewed["reviewed"]:
        return {"releasable": False, "evaluation": e, "thresholds": th, "judge": judged,
                "reason": M("evaluation {evaluation} passed the gate, but the run's dataset version is not reviewed "
                            "({why})", evaluation=e["id"], why=reviewed["reason"])}
    return {"releasable": True, "evaluation": e, "thresholds": th, "judge": judged,
            "reason": M("the latest held-out evaluation {evaluation} covers {n} of {rows} pairs of {version} and "
                        "passed the gate ({verdict})", evaluation=e["id"], n=e["n"], rows=held_out_rows,
                        version=e["dataset_version_id"],
                        verdict=e.get("gate_reason") or gate_reason(True, e["bleu"], e["rouge_l"], th))}


# ── the gate's record: what a release is judged on ───────────────────────────

RECORD_VERSION = 1
EXTRA_CHECKS: list = []   # callables (ctx: dict) -> dict | None: the checks other parts of the studio add


def _both(message) -> dict:
    """A reason in both languages of the studio (kept as text: a record must read the same later)."""
    from core import i18n

    return {lang: i18n.render(message, lambda t, lang=lang: i18n.translate(t, lang)) for lang in ("en", "vi")}


def check(name: str, passed: bool | None, reason, *, gates: bool = True, evaluation: str | None = None,
          artifact: str | None = None, numbers: dict | None = None) -> dict:
    """One named check of the gate's record. ``passed`` None: not judged (a check that does not gate says why);
    ``gates``: whether failing it refuses the release; ``reason`` an ``M`` (kept in English and Vietnamese)."""
    return {"name": name, "passed": passed, "gates": bool(gates), "evaluation": evaluation, "artifact": artifact,
            "numbers": numbers or {}, "reason": _both(reason), "message": reason}


def stored(rec: dict) -> dict:
    """The record as a release keeps it (and JSON shows it): its reasons as text in both languages."""
    return {**rec, "checks": [{k: v for k, v in c.items() if k != "message"} for c in rec["checks"]]}


def _numbers(e: dict | None, rows: int | None = None, need: int | None = None) -> dict:
    if not e:
        return {"held_out_rows": rows, "need": need}
    th = e["thresholds"] if isinstance(e.get("thresholds"), dict) else json.loads(e.get("thresholds") or "{}")
    return {"bleu": e["bleu"], "rouge_l": e["rouge_l"], "n": e["n"], "held_out_rows": rows, "need": need,
            "thresholds": th}


def _merged_check(run: dict, v: dict) -> dict:
    e = v.get("evaluation")
    return check("merged_model", bool(v["releasable"]), v["reason"], evaluation=e["id"] if e else None,
                 artifact=run["id"], numbers=_numbers(e))


def artifact_evaluation(run: dict, quantization: str, sha256: str | None) -> tuple[dict | None, int, int]:
    """The evaluation of the run's GGUF at ``quantization`` (this very file: its sha256) that a release rests on
    — the latest on the held-out split that covers the gate's share, else the latest held-out one — and the
    held-out rows and the examples the gate needs."""
    share = min_share()
    got = store.one(
        """WITH r AS (SELECT coalesce(rows_test, 0) AS held_out_rows, greatest(1, ceil(coalesce(rows_test, 0) * ?)) AS need
                      FROM dataset_versions WHERE id = ?)
           SELECT e.*, r.held_out_rows AS _rows, r.need AS _need, (e.n >= r.need) AS _covers
           FROM evaluations e, r
           WHERE e.run_id = ? AND e.target IN ('gguf', 'ollama') AND e.quantization = ? AND e.gguf_sha256 = ?
             AND e.split = 'test' AND e.dataset_version_id = ?
           ORDER BY (e.n >= r.need) DESC, e.created_at DESC LIMIT 1""",
        [share, run["dataset_version_id"], run["id"], quantization, sha256 or "", run["dataset_version_id"]])
    if got is None:
        need = store.one("SELECT coalesce(rows_test, 0) AS rows FROM dataset_versions WHERE id = ?",
                         [run["dataset_version_id"]])
        rows = int(need["rows"]) if need else 0
        return None, rows, max(1, int(-(-rows * share // 1)))
    rows, need = int(got.pop("_rows")), int(got.pop("_need"))
    got.pop("_covers", None)
    return _decode(got), rows, need


def _artifact_check(run: dict, quantization: str, sha256: str | None) -> dict:
    name = f"{run['id']} · {quantization}"
    if not sha256:
        return check("gguf", False, M("the run has no intact {quantization} export yet: export it, then evaluate the "
                                      "GGUF (deploy does both)", quantization=quantization), artifact=name)
    e, rows, need = artifact_evaluation(run, quantization, sha256)
    nums = _numbers(e, rows, need)
    nums["sha256"] = sha256
    if e is None:
        return check("gguf", False, M("the {quantization} GGUF (sha256 {sha}…) has no evaluation on the held-out split: "
                                      "evaluate it (python -m core evaluate --run {run} --gguf {quantization})",
                                      quantization=quantization, sha=sha256[:12], run=run["id"]),
                     artifact=name, numbers=nums)
    if e.get("target") == "ollama":
        name = f"{run['id']} · ollama {e.get('ollama_model')}"
    th = e["thresholds"]
    if e["n"] < need:
        return check("gguf", False, M("the {quantization} GGUF's evaluation {evaluation} covers {n} of the {rows} "
                                      "held-out pairs; the gate needs at least {need}: evaluate the whole split",
                                      quantization=quantization, evaluation=e["id"], n=e["n"], rows=rows, need=need),
                     evaluation=e["id"], artifact=name, numbers=nums)
    if not e["passed"]:
        return check("gguf", False, M("the {quantization} GGUF's own evaluation {evaluation} (n={n}): BLEU {bleu:.3f}, "
                                      "ROUGE-L {rouge_l:.3f} is below the gate (BLEU > {bleu_min}, ROUGE-L > "
                                      "{rouge_l_min}); the merged model passing is not enough",
                                      quantization=quantization, evaluation=e["id"], n=e["n"], bleu=e["bleu"],
                                      rouge_l=e["rouge_l"], bleu_min=th["bleu"], rouge_l_min=th["rouge_l"]),
                     evaluation=e["id"], artifact=name, numbers=nums)
    return check("gguf", True, M("the {quantization} GGUF's own evaluation {evaluation} covers {n} of {rows} held-out "
                                 "pairs and passed: BLEU {bleu:.3f}, ROUGE-L {rouge_l:.3f} (BLEU > {bleu_min}, "
                                 "ROUGE-L > {rouge_l_min})", quantization=quantization, evaluation=e["id"], n=e["n"],
                                 rows=rows, bleu=e["bleu"], rouge_l=e["rouge_l"], bleu_min=th["bleu"],
                                 rouge_l_min=th["rouge_l"]),
                 evaluation=e["id"], artifact=name, numbers=nums)


def record(run_id: str, quantization: str | None = None, sha256: str | None = None, *,
           actor: Principal | None = None, verdict_of_run: dict | None = None) -> dict:
    """The gate's record for releasing ``run_id`` at ``quantization`` (default: the run's default) from the GGUF
    whose sha256 is ``sha256`` (default: as the run's latest export at that quantization recorded it): every check,
    and ``releasable`` when every check that gates passed."""
    from core.deploy import exports

    run = runs.get_run(run_id, actor)
    quantization = quantization or exports.default_quant(run["base_model"])
    if sha256 is None:
        job = exports.latest_recorded(run_id, quantization)
        sha256 = job["result"]["sha256"][quantization] if job else None
    v = verdict_of_run or verdicts([run])[run_id]
    checks = [_merged_check(run, v), _artifact_check(run, quantization, sha256)]
    judged = v.get("judge")
    if judged and (judged.get("gating") or judged.get("n")):
        checks.append(check("judge", judged.get("passes"), judged.get("reason") or "", gates=bool(judged.get("gating")),
                            evaluation=(v.get("evaluation") or {}).get("id"), artifact=run_id,
                            numbers={k: judged.get(k) for k in ("judge", "rubric_version", "n", "mean", "share",
                                                               "min_mean", "min_share")}))
    kept = v.get("retention")   # general Vietnamese kept (core.evaluation.retention), where measured or required
    if kept is not None and kept.passed is not None:
        checks.append(check("retention", kept.passed, kept.reason, artifact=run_id,
                            numbers=kept.numbers))
    ctx = {"run": run, "quantization": quantization, "sha256": sha256, "verdict": v}
    for extra in EXTRA_CHECKS:
        got = extra(ctx)
        if got:
            checks.append(got)
    releasable = all(c["passed"] for c in checks if c["gates"])
    return {"version": RECORD_VERSION, "run_id": run_id, "quantization": quantization, "gguf_sha256": sha256,
            "releasable": releasable, "checks": checks, "judged_at": store.now().isoformat()}


def failing(rec: dict, lang: str = "en") -> list[str]:
    """The reasons of the record's failing checks that gate, in ``lang``."""
    return [c["reason"].get(lang) or c["reason"]["en"] for c in rec["checks"] if c["gates"] and not c["passed"]]


def failing_message(rec: dict):
    """The reasons of the record's failing checks that gate, as one message (a page shows it in its reader's
    language; its text is the English)."""
    out = None
    for c in reversed([c for c in rec["checks"] if c["gates"] and not c["passed"]]):
        msg = c.get("message") or c["reason"]["en"]
        out = msg if out is None else M("{first}; {rest}", first=msg, rest=out)
    return out or ""
