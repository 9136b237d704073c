"""The review-sample gate: the guide's manual check of 10–15 % of the pairs before training.

For a dataset version, ``start`` draws a seeded random sample (default 10 %) of its rows (train and
test alike). Reviewers see each pair and approve, edit or reject it, with their name recorded. The
version is *reviewed* when every pair of the sample has a decision and the approval rate
((approved + edited) / decided) is at or above the threshold (default 90 %). Until then
``jobs.submit_train`` refuses it, unless an override reason is given (audit log: who and why).

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
import uuid
from typing import Any

from core import datasets, store

DEFAULT_FRACTION = 0.10
MIN_FRACTION = 0.10
DEFAULT_THRESHOLD = 0.90
DEFAULT_SEED = 42
BUNDLED_REVIEWER = "ViTune team (bundled samples)"
DECISIONS = ("approved", "edited", "rejected")


class ReviewError(ValueError):
    """A review request that cannot be done, in one line."""


# ── reading ──────────────────────────────────────────────────────────────────


def reviews_of(version_id: str) -> list[dict]:
    return store.rows("SELECT * FROM reviews WHERE dataset_version_id = ? ORDER BY created_at DESC", [version_id])


def current(version_id: str) -> dict | None:
    """The version's latest review, or None."""
    got = reviews_of(version_id)
    return got[0] if got else None


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
    """Where a version's review stands: counts, approval rate, and ``reviewed`` with a one-line reason."""
    datasets.get_version(version_id)
    review = current(version_id)
    out: dict[str, Any] = {"dataset_version": version_id, "review": None, "kind": None, "sample_size": 0,
                           "done": 0, "approved": 0, "edited": 0, "rejected": 0, "approval_rate": None,
                           "threshold": DEFAULT_THRESHOLD, "complete": False, "reviewed": False,
                           "child_version": None, "inherited_from": None, "reason": ""}
    if review is None:
        out["reason"] = f"no review sample has been drawn for {version_id}"
        return out
    out.update(review=review["id"], kind=review["kind"], threshold=review["threshold"],
               sample_size=review["sample_size"], child_version=review["child_version_id"],
               inherited_from=review["inherited_from"])
    if review["kind"] == "bundled":
        out.update(complete=True, reviewed=True, reason=f"reviewed by construction ({review['created_by']})")
        return out
    if review["kind"] == "inherited":
        parent = store.one("SELECT * FROM reviews WHERE id = ?", [review["inherited_from"]])
        out.update(complete=True, reviewed=True,
                   reason=f"reviewed: carried from review {review['inherited_from']} of its parent "
                          f"{parent['dataset_version_id'] if parent else '?'}")
        return out
    counts = _counts(review["id"])
    out.update(done=counts["done"], approved=counts["approved"], edited=counts["edited"], rejected=counts["rejected"])
    if counts["done"]:
        out["approval_rate"] = (counts["approved"] + counts["edited"]) / counts["done"]
    out["complete"] = counts["done"] == review["sample_size"]
    if not out["complete"]:
        out["reason"] = (f"review {review['id']} of {version_id} is not finished: "
                         f"{counts['done']}/{review['sample_size']} pairs decided")
    elif out["approval_rate"] < review["threshold"]:
        out["reason"] = (f"review {review['id']} of {version_id} failed: approval rate "
                         f"{out['approval_rate']:.0%} is below the threshold {review['threshold']:.0%}")
    else:
        out["reviewed"] = True
        out["reason"] = (f"reviewed: {counts['approved'] + counts['edited']}/{counts['done']} pairs approved "
                         f"({out['approval_rate']:.0%} ≥ {review['threshold']:.0%})")
    return out


def is_reviewed(version_id: str) -> bool:
    return status(version_id)["reviewed"]


def next_item(version_id: str) -> dict | None:
    """The first pair of the current sample that has no decision yet."""
    review = current(version_id)
    if review is None or review["kind"] != "sample":
        return None
    got = store.one("SELECT * FROM review_items WHERE review_id = ? AND decision IS NULL ORDER BY idx LIMIT 1",
                    [review["id"]])
    return got


# ── drawing and deciding ─────────────────────────────────────────────────────


def _insert_review(version_id: str, kind: str, *, fraction: float, seed: int, threshold: float, sample_size: int,
                   created_by: str | None, inherited_from: str | None = None, note: str | None = None,
                   completed: bool = False) -> str:
    review_id = "rv-" + uuid.uuid4().hex[:10]
    now = store.now()
    store.execute(
        """INSERT INTO reviews (id, dataset_version_id, kind, fraction, seed, threshold, sample_size,
                                inherited_from, note, created_by, created_at, completed_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        [review_id, version_id, kind, fraction, seed, threshold, sample_size, inherited_from, note, created_by,
         now, now if completed else None])
    return review_id


def start(version_id: str, *, fraction: float = DEFAULT_FRACTION, seed: int = DEFAULT_SEED,
          threshold: float = DEFAULT_THRESHOLD, created_by: str | None = None) -> dict:
    """Draw the review sample of a version (or return the sample already open). Returns ``status``."""
    version = datasets.get_version(version_id)
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
    rows = [("train", i, r) for i, r in zip(train_idx, datasets.take_rows(version_id, "train", train_idx))]
    rows += [("test", i, r) for i, r in zip(test_idx, datasets.take_rows(version_id, "test", test_idx))]
    picked = list(range(len(rows)))
    review_id = _insert_review(version_id, "sample", fraction=fraction, seed=seed, threshold=threshold,
                               sample_size=size, created_by=created_by)
    with store.connect() as con:
        con.executemany(
            """INSERT INTO review_items (review_id, idx, split, row_index, instruction, input, output)
               VALUES (?, ?, ?, ?, ?, ?, ?)""",
            [[review_id, n, rows[i][0], rows[i][1], rows[i][2]["instruction"], rows[i][2]["input"],
              rows[i][2]["output"]] for n, i in enumerate(picked, start=1)])
    store.audit("review.started", version_id, created_by, review=review_id, sample_size=size, fraction=fraction,
                seed=seed, threshold=threshold, rows=version["rows_total"])
    return status(version_id)


def decide(version_id: str, idx: int, decision: str, reviewer: str, edited: dict | None = None) -> dict:
    """Record one reviewer's decision on pair ``idx`` of the version's open sample. Returns ``status``;
    deciding the last pair completes the review (and writes the child version when there are edits or
    rejections)."""
    reviewer = (reviewer or "").strip()
    if not reviewer:
        raise ReviewError("a decision needs the reviewer's name")
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
        new = {k: datasets.clean_text(str((edited or {}).get(k, item[k]) or "")) for k in datasets.FIELDS}
        for k in datasets.REQUIRED:
            if not new[k]:
                raise ReviewError(f"the edited pair's '{k}' is empty")
        if all(new[k] == item[k] for k in datasets.FIELDS):
            raise ReviewError("the edit changes nothing: approve the pair instead")
    store.execute(
        "UPDATE review_items SET decision = ?, edited = ?, reviewer = ?, decided_at = ? WHERE review_id = ? AND idx = ?",
        [decision, json.dumps(new, ensure_ascii=False) if new else None, reviewer, store.now(), review["id"], idx])
    store.audit("review.decided", version_id, reviewer, review=review["id"], idx=idx, decision=decision)
    if _counts(review["id"])["done"] == review["sample_size"]:
        _complete(version_id, review, reviewer)
    return status(version_id)


def _complete(version_id: str, review: dict, actor: str) -> None:
    store.execute("UPDATE reviews SET completed_at = ? WHERE id = ?", [store.now(), review["id"]])
    verdict = status(version_id)
    store.audit("review.completed", version_id, actor, review=review["id"], reviewed=verdict["reviewed"],
                approval_rate=verdict["approval_rate"])
    changed = [i for i in items(review["id"]) if i["decision"] in ("edited", "rejected")]
    if not changed:
        return
    parent = datasets.get_version(version_id)
    splits = {s: datasets.load_rows(version_id, s) for s in ("train", "test")}
    edited, removed = [], []
    for item in changed:
        key = {"split": item["split"], "row": item["row_index"], "idx": item["idx"]}
        if item["decision"] == "edited":
            row = splits[item["split"]][item["row_index"]]
            row.update(item["edited"])
            edited.append(key)
        else:
            splits[item["split"]][item["row_index"]] = None
            removed.append(key)
    train = [r for r in splits["train"] if r is not None]
    test = [r for r in splits["test"] if r is not None]
    lineage = {"parent": version_id, "review": review["id"], "edited": edited, "removed": removed,
               "review_passed": verdict["reviewed"]}
    child = datasets.derive_version(parent, train, test, source="review", lineage=lineage, created_by=actor)
    store.execute("UPDATE reviews SET child_version_id = ? WHERE id = ?", [child["id"], review["id"]])
    if verdict["reviewed"]:
        _insert_review(child["id"], "inherited", fraction=review["fraction"], seed=review["seed"],
                       threshold=review["threshold"], sample_size=0, created_by=actor, inherited_from=review["id"],
                       note="the parent's sample passed; the child only fixes or drops pairs of that sample",
                       completed=True)


def mark_bundled(version_id: str, reviewer: str = BUNDLED_REVIEWER) -> dict:
    """Record a version of the team's own bundled samples as reviewed by construction (idempotent)."""
    if not is_reviewed(version_id):
        _insert_review(version_id, "bundled", fraction=0.0, seed=0, threshold=DEFAULT_THRESHOLD, sample_size=0,
                       created_by=reviewer, note="bundled sample data written by the ViTune team", completed=True)
        store.audit("review.bundled", version_id, reviewer)
    return status(version_id)


# ── the gate ─────────────────────────────────────────────────────────────────


def require_reviewed(version_id: str, override_reason: str | None = None, actor: str | None = None) -> dict:
    """Raise ReviewError unless the version is reviewed or an override reason is given (recorded)."""
    verdict = status(version_id)
    if verdict["reviewed"]:
        return verdict
    reason = (override_reason or "").strip()
    if not reason:
        raise ReviewError(
            f"dataset version {version_id} has not passed its review sample ({verdict['reason']}); review it "
            f"(Datasets page, or `python -m core review start {version_id}`) or give an override reason")
    store.audit("review.override", version_id, actor, reason=reason, status=verdict["reason"])
    return verdict
