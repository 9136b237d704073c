"""The review-sample gate: the guide's manual check of 10–15 % of the pairs before training.

For a dataset version, ``start`` draws a seeded random sample (default 10 %) of its rows (train and
test alike). Reviewers see each pair and approve, edit or reject it, with their name recorded. The
version is *reviewed* when every pair of the sample has a decision and the approval rate
((approved + edited) / decided) is at or above the threshold (default 90 %). Until then
``core.training.runs.submit_train`` refuses it, unless an override reason is given (audit log: who and why).

Edits and rejections never touch the reviewed version (versions are immutable). When the last pair
of a sample is decided and the sample has edits or rejections, a **child version** is written: the
parent's rows with the edited pairs replaced and the rejected pairs removed; its lineage names the
review. How the review carries to the child: the child differs from the parent only in pairs that
the reviewer has just looked at and fixed or removed; every other row is the parent's, which the
sample vouched for. So when the parent's review passed, the child is reviewed by inheritance (a
review row of kind ``inherited`` pointing at the parent's review); when it failed, the child is not
reviewed and needs a sample of its own. The parent keeps its own verdict.

The bundled sample data is written by the team itself: ``mark_bundled`` records it as reviewed by
construction (kind ``bundled``, reviewer "ViTune team (bundled samples)").
"""
from __future__ import annotations

import json
import math
import random
import time
import uuid
from typing import Any

from core import store
from core.access import projects
from core.access.principal import Principal, require
from core.datasets import versions
from core.datasets.rows import FIELDS, MAX_FIELD_CHARS, REQUIRED, DatasetError, clean_text
from core.i18n import M

DEFAULT_FRACTION = 0.10
MIN_FRACTION = 0.10
DEFAULT_THRESHOLD = 0.90
DEFAULT_SEED = 42
BUNDLED_REVIEWER = "ViTune team (bundled samples)"
DECISIONS = ("approved", "edited", "rejected")


class ReviewError(ValueError):
    """A review request that cannot be done, in one line."""


# ── reading ──────────────────────────────────────────────────────────────────

# The columns a listing of versions shows (not the lineage or the import report, which can be large).
SUMMARY_COLUMNS = ("id", "name", "parent_id", "content_hash", "source", "rows_total", "rows_train", "rows_test",
                   "path", "created_by", "created_at", "project")


def _status_sql(where: str, columns: tuple[str, ...] = ("id",), tail: str = "") -> str:
    """One query for the review status of every version that ``where`` picks (a condition on
    ``dataset_versions``): its latest review, that review's decision counts, the parent version of an
    inherited review, how many reviews it has had; with the version's ``columns`` beside them."""
    picked = ", ".join(f"v.{c}" for c in columns)
    return f"""
        WITH v AS (SELECT {', '.join(columns)} FROM dataset_versions WHERE {where}),
        drawn AS (SELECT r.*, count(*) OVER (PARTITION BY r.dataset_version_id) AS reviews FROM reviews r
                  WHERE r.dataset_version_id IN (SELECT id FROM v)
                  QUALIFY row_number() OVER (PARTITION BY r.dataset_version_id ORDER BY r.created_at DESC) = 1),
        counts AS (SELECT review_id, count(decision) AS done,
                          count(*) FILTER (WHERE decision = 'approved') AS approved,
                          count(*) FILTER (WHERE decision = 'edited') AS edited,
                          count(*) FILTER (WHERE decision = 'rejected') AS rejected
                   FROM review_items WHERE review_id IN (SELECT id FROM drawn) GROUP BY review_id)
        SELECT {picked}, d.id AS _review, d.kind AS _kind, d.threshold AS _threshold,
               d.sample_size AS _sample_size, d.child_version_id AS _child, d.inherited_from AS _inherited,
               d.created_by AS _by, d.reviews AS _reviews, p.dataset_version_id AS _parent_version,
               c.done AS _done, c.approved AS _approved, c.edited AS _edited, c.rejected AS _rejected
        FROM v LEFT JOIN drawn d ON d.dataset_version_id = v.id
        LEFT JOIN counts c ON c.review_id = d.id
        LEFT JOIN reviews p ON p.id = d.inherited_from
        {tail}"""


def _status_of(row: dict) -> dict:
    """A status (see ``status``) from one row of ``_status_sql``."""
    version_id = row["id"]
    out: dict[str, Any] = {"dataset_version": version_id, "review": None, "kind": None, "sample_size": 0,
                           "done": 0, "approved": 0, "edited": 0, "rejected": 0, "approval_rate": None,
                           "threshold": DEFAULT_THRESHOLD, "complete": False, "reviewed": False,
                           "child_version": None, "inherited_from": None, "reviews": int(row["_reviews"] or 0),
                           "reason": ""}
    if row["_review"] is None:
        out["reason"] = M("no review sample has been drawn for {version}", version=version_id)
        return out
    review_id, size, threshold = row["_review"], row["_sample_size"], row["_threshold"]
    out.update(review=review_id, kind=row["_kind"], threshold=threshold, sample_size=size,
               child_version=row["_child"], inherited_from=row["_inherited"])
    if row["_kind"] == "bundled":
        out.update(complete=True, reviewed=True, reason=M("reviewed by construction ({by})", by=row["_by"]))
        return out
    if row["_kind"] == "inherited":
        out.update(complete=True, reviewed=True,
                   reason=M("reviewed: carried from review {review} of its parent {parent}",
                            review=row["_inherited"], parent=row["_parent_version"] or "?"))
        return out
    done, approved, edited = int(row["_done"] or 0), int(row["_approved"] or 0), int(row["_edited"] or 0)
    out.update(done=done, approved=approved, edited=edited, rejected=int(row["_rejected"] or 0))
    if done:
        out["approval_rate"] = (approved + edited) / done
    out["complete"] = done == size
    if not out["complete"]:
        out["reason"] = M("review {review} of {version} is not finished: {done}/{size} pairs decided",
                          review=review_id, version=version_id, done=done, size=size)
    elif out["approval_rate"] < threshold:
        out["reason"] = M("review {review} of {version} failed: approval rate {rate:.0%} is below the threshold "
                          "{threshold:.0%}", review=review_id, version=version_id, rate=out["approval_rate"],
                          threshold=threshold)
    else:
        out["reviewed"] = True
        out["reason"] = M("reviewed: {approved}/{done} pairs approved ({rate:.0%} ≥ {threshold:.0%})",
                          approved=approved + edited, done=done, rate=out["approval_rate"], threshold=threshold)
    return out


def reviews_of(version_id: str) -> list[dict]:
    return store.rows("SELECT * FROM reviews WHERE dataset_version_id = ? ORDER BY created_at DESC", [version_id])


def current(version_id: str) -> dict | None:
    """The version's latest review, or None."""
    return store.one("SELECT * FROM reviews WHERE dataset_version_id = ? ORDER BY created_at DESC LIMIT 1",
                     [version_id])


def items(review_id: str) -> list[dict]:
    got = store.rows("SELECT * FROM review_items WHERE review_id = ? ORDER BY idx", [review_id])
    for item in got:
        if isinstance(item.get("edited"), str):
            item["edited"] = json.loads(item["edited"])
    return got


def _counts(review_id: str) -> dict:
    got = store.one(
        """SELECT count(*) AS total,
                  count(decision) AS done,
                  count(*) FILTER (WHERE decision = 'approved') AS approved,
                  count(*) FILTER (WHERE decision = 'edited') AS edited,
                  count(*) FILTER (WHERE decision = 'rejected') AS rejected
           FROM review_items WHERE review_id = ?""", [review_id])
    return {k: int(v or 0) for k, v in got.items()}


def status(version_id: str) -> dict:
    """Where a version's review stands: counts, approval rate, and ``reviewed`` with a one-line reason
    (``reviews``: how many samples it has had). One query."""
    got = store.one(_status_sql("id = ?"), [version_id])
    if got is None:
        raise DatasetError(f"no dataset version '{version_id}'")
    return _status_of(got)


def statuses(version_ids: list[str]) -> dict[str, dict]:
    """``status`` of many versions at once (one query), by version id; unknown ids are left out."""
    if not version_ids:
        return {}
    got = store.rows(_status_sql("id IN (SELECT unnest(?::VARCHAR[]))"), [list(dict.fromkeys(version_ids))])
    return {row["id"]: _status_of(row) for row in got}


def list_with_status(actor: Principal, project: str | None = None) -> list[dict]:
    """The versions of ``project`` (or of every project the actor sees), newest first, their summary
    columns (``SUMMARY_COLUMNS``) and each one's review ``status`` under "review_status": one query,
    whatever the number of versions."""
    cond, params = projects.where(actor, project)
    got = store.rows(_status_sql(cond, SUMMARY_COLUMNS, "ORDER BY v.created_at DESC"), params)
    out = []
    for row in got:
        out.append({**{c: row[c] for c in SUMMARY_COLUMNS}, "review_status": _status_of(row)})
    return out


def is_reviewed(version_id: str) -> bool:
    return status(version_id)["reviewed"]


def next_item(version_id: str) -> dict | None:
    """The first pair of the current sample that has no decision yet."""
    return store.one(
        """WITH latest AS (SELECT id, kind FROM reviews WHERE dataset_version_id = ? ORDER BY created_at DESC LIMIT 1)
           SELECT i.* FROM review_items i JOIN latest l ON l.id = i.review_id
           WHERE l.kind = 'sample' AND i.decision IS NULL ORDER BY i.idx LIMIT 1""", [version_id])


# ── drawing and deciding ─────────────────────────────────────────────────────


def _insert_review(version_id: str, kind: str, *, fraction: float, seed: int, threshold: float, sample_size: int,
                   created_by: str | None, inherited_from: str | None = None, note: str | None = None,
                   completed: bool = False, con=None) -> str:
    review_id = "rv-" + uuid.uuid4().hex[:10]
    now = store.now()
    sql = """INSERT INTO reviews (id, dataset_version_id, kind, fraction, seed, threshold, sample_size,
                                  inherited_from, note, created_by, created_at, completed_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""
    params = [review_id, version_id, kind, fraction, seed, threshold, sample_size, inherited_from, note, created_by,
              now, now if completed else None]
    if con is not None:
        con.execute(sql, params)
    else:
        store.execute(sql, params)
    return review_id


def start(version_id: str, *, fraction: float = DEFAULT_FRACTION, seed: int = DEFAULT_SEED,
          threshold: float = DEFAULT_THRESHOLD, actor: Principal) -> dict:
    """Draw the review sample of a version (or return the sample already open). Returns ``status``.
    The review and its pairs are written in one transaction: a crash leaves no half-drawn sample."""
    version = versions.get_version(version_id, actor)
    require(actor, "review.start", version["project"])
    if not MIN_FRACTION <= fraction <= 1:
        raise ReviewError(f"the review sample must be between {MIN_FRACTION:.0%} and 100 % of the pairs "
                          f"(the guide: 10–15 %), not {fraction:.0%}")
    if not 0 < threshold <= 1:
        raise ReviewError(f"the approval threshold must be between 0 and 100 %, not {threshold:.0%}")
    now = status(version_id)
    if now["review"] and now["kind"] == "sample" and not now["complete"]:
        return now  # the open sample: finish it first
    if now["reviewed"]:
        raise ReviewError(f"{version_id} is already reviewed ({now['reason']})")
    n_train, total = version["rows_train"], version["rows_total"]
    if not total:
        raise ReviewError(f"{version_id} has no rows to review")
    size = min(total, max(1, math.ceil(total * fraction)))
    picked = sorted(random.Random(seed).sample(range(total), size))
    # read only the sampled rows (a version may hold millions): position p is train row p, or test row p - n_train
    train_idx = [p for p in picked if p < n_train]
    test_idx = [p - n_train for p in picked if p >= n_train]
    rows = [("train", i, r) for i, r in zip(train_idx, versions.take_rows(version_id, "train", train_idx))]
    rows += [("test", i, r) for i, r in zip(test_idx, versions.take_rows(version_id, "test", test_idx))]
    picked = list(range(len(rows)))
    with store.transaction() as con:
        review_id = _insert_review(version_id, "sample", fraction=fraction, seed=seed, threshold=threshold,
                                   sample_size=size, created_by=actor.name, con=con)
        store.insert_rows(con, "review_items", ("review_id", "idx", "split", "row_index", "instruction", "input",
                                                "output"),
                          [[review_id, n, rows[i][0], rows[i][1], rows[i][2]["instruction"], rows[i][2]["input"],
                            rows[i][2]["output"]] for n, i in enumerate(picked, start=1)])
        store.audit("review.started", version_id, actor, con=con, project=version["project"], review=review_id,
                    sample_size=size, fraction=fraction, seed=seed, threshold=threshold, rows=version["rows_total"])
    return status(version_id)


def decide(version_id: str, idx: int, decision: str, *, actor: Principal, edited: dict | None = None) -> dict:
    """Record the acting reviewer's decision on pair ``idx`` of the version's open sample. Returns
    ``status``; deciding the last pair completes the review (and writes the child version when there are
    edits or rejections). A pair is decided once: a second decision, by anyone, is refused."""
    version = versions.get_version(version_id, actor)
    require(actor, "review.decide", version["project"])
    if decision not in DECISIONS:
        raise ReviewError(f"unknown decision '{decision}' (approved, edited or rejected)")
    review = current(version_id)
    if review is None or review["kind"] != "sample":
        raise ReviewError(f"{version_id} has no open review sample: start one first")
    if review["completed_at"] is not None:
        raise ReviewError(f"review {review['id']} of {version_id} is complete; its decisions are final")
    item = store.one("SELECT * FROM review_items WHERE review_id = ? AND idx = ?", [review["id"], idx])
    if item is None:
        raise ReviewError(f"review {review['id']} has no pair {idx} (1–{review['sample_size']})")
    new = None
    if decision == "edited":
        new = {k: clean_text(str((edited or {}).get(k, item[k]) or "")) for k in FIELDS}
        for k in REQUIRED:
            if not new[k]:
                raise ReviewError(f"the edited pair's '{k}' is empty")
        for k in FIELDS:   # what an import would refuse, an edit does not bring in
            if len(new[k]) > MAX_FIELD_CHARS:
                raise ReviewError(f"the edited pair's '{k}' is too long ({len(new[k])} characters, "
                                  f"limit {MAX_FIELD_CHARS})")
            if "\x00" in new[k]:
                raise ReviewError(f"the edited pair's '{k}' contains NUL characters")
        if all(new[k] == item[k] for k in FIELDS):
            raise ReviewError("the edit changes nothing: approve the pair instead")
    for attempt in range(DECIDE_ATTEMPTS):
        try:
            with store.transaction() as con:
                _record_decision(con, version, review, idx, decision, new, actor)
            break
        except store.Conflict:   # another session of this process decided a pair of this review meanwhile
            if attempt == DECIDE_ATTEMPTS - 1:
                raise ReviewError(f"review {review['id']} is being decided by someone else at this moment; "
                                  "try again") from None
            time.sleep(0.05 * (attempt + 1))
    return status(version_id)


DECIDE_ATTEMPTS = 5


def _record_decision(con, version: dict, review: dict, idx: int, decision: str, new: dict | None,
                     actor: Principal) -> None:
    """One decision, in one transaction with the review's completion when it is the last one: the decision,
    the review marked complete, its child version and the child's inherited review commit together, or none
    does (a process killed in between leaves the pair undecided; deciding it again completes the review).
    The review's row is updated first, so two decisions of one review never commit side by side unseen by
    each other (the second gets ``store.Conflict`` and is tried again): whoever decides the last pair sees
    every other decision and completes the review, once."""
    version_id = version["id"]
    still_open = con.execute("UPDATE reviews SET completed_at = completed_at WHERE id = ? AND completed_at IS NULL "
                             "RETURNING id", [review["id"]]).fetchall()
    if not still_open:
        raise ReviewError(f"review {review['id']} of {version_id} is complete; its decisions are final")
    won = con.execute(
        """UPDATE review_items SET decision = ?, edited = ?, reviewer = ?, decided_at = ?
           WHERE review_id = ? AND idx = ? AND decision IS NULL RETURNING idx""",
        [decision, json.dumps(new, ensure_ascii=False) if new else None, actor.name, store.now(), review["id"],
         idx]).fetchall()
    if not won:
        other = con.execute("SELECT decision, reviewer FROM review_items WHERE review_id = ? AND idx = ?",
                            [review["id"], idx]).fetchone()
        raise ReviewError(f"pair {idx} of review {review['id']} is already decided ({other[0]} by {other[1]})")
    store.audit("review.decided", version_id, actor, con=con, project=version["project"], review=review["id"],
                idx=idx, decision=decision)
    if _counts(review["id"])["done"] == review["sample_size"]:
        _complete(con, version, review, actor)


def _complete(con, version: dict, review: dict, actor: Principal) -> None:
    """The review's completion, inside the transaction of its last decision (``_record_decision``): marked
    complete, and, when it has edits or rejections, its child version written (read and written a batch at
    a time) with an inherited review when the sample passed."""
    version_id = version["id"]
    con.execute("UPDATE reviews SET completed_at = ? WHERE id = ?", [store.now(), review["id"]])
    store.crash_point("review.completing")
    verdict = status(version_id)
    store.audit("review.completed", version_id, actor, con=con, project=version["project"], review=review["id"],
                reviewed=verdict["reviewed"], approval_rate=verdict["approval_rate"])
    changed = [i for i in items(review["id"]) if i["decision"] in ("edited", "rejected")]
    if not changed:
        return
    edited, removed, changes = [], [], {}
    for item in changed:
        key = {"split": item["split"], "row": item["row_index"], "idx": item["idx"]}
        if item["decision"] == "edited":
            changes[(item["split"], item["row_index"])] = {k: item["edited"][k] for k in FIELDS}
            edited.append(key)
        else:
            changes[(item["split"], item["row_index"])] = None
            removed.append(key)
    lineage = {"parent": version_id, "review": review["id"], "edited": edited, "removed": removed,
               "review_passed": verdict["reviewed"]}
    child = versions.derive_changed(version, changes, source="review", lineage=lineage, actor=actor)
    con.execute("UPDATE reviews SET child_version_id = ? WHERE id = ?", [child["id"], review["id"]])
    if verdict["reviewed"]:
        _insert_review(child["id"], "inherited", fraction=review["fraction"], seed=review["seed"],
                       threshold=review["threshold"], sample_size=0, created_by=actor.name, inherited_from=review["id"],
                       note="the parent's sample passed; the child only fixes or drops pairs of that sample",
                       completed=True, con=con)


def mark_bundled(version_id: str, *, actor: Principal) -> dict:
    """Record a version of the team's own bundled samples as reviewed by construction (idempotent); the
    review's reviewer is the ViTune team, the audit row names who imported the samples."""
    version = versions.get_version(version_id, actor)
    require(actor, "dataset.import", version["project"])
    if not is_reviewed(version_id):
        _insert_review(version_id, "bundled", fraction=0.0, seed=0, threshold=DEFAULT_THRESHOLD, sample_size=0,
                       created_by=BUNDLED_REVIEWER, note="bundled sample data written by the ViTune team",
                       completed=True)
        store.audit("review.bundled", version_id, actor, project=version["project"])
    return status(version_id)


# ── the gate ─────────────────────────────────────────────────────────────────


def require_reviewed(version_id: str, override_reason: str | None = None, *, actor: Principal) -> dict:
    """Raise ReviewError unless the version is reviewed or the actor, who may override, gives a reason
    (recorded with the actor's identity)."""
    verdict = status(version_id)
    if verdict["reviewed"]:
        return verdict
    reason = (override_reason or "").strip()
    if not reason:
        raise ReviewError(
            f"dataset version {version_id} has not passed its review sample ({verdict['reason']}); review it "
            f"(Datasets page, or `python -m core review start {version_id}`) or give an override reason")
    project = versions.get_version(version_id, actor)["project"]
    require(actor, "review.override", project)
    store.audit("review.override", version_id, actor, project=project, reason=reason, status=verdict["reason"])
    return verdict
