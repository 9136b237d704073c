"""The review-sample gate: seeded samples, decisions with names, the approval rate, child versions
from edits, the Train refusal with a recorded override, and the bundled samples reviewed by construction."""
from __future__ import annotations

import json

import pytest

from core import store
from core.access.principal import AccessDenied
from core.datasets import importer, review, samples, versions
from core.jobs import queue
from core.training import presets, runs
from tests.conftest import OPERATOR, approve_review, cli, person, tiny_pairs, write_jsonl


def _version(home, n=40, name="cskh"):
    v, _ = importer.import_files([write_jsonl(home / f"{name}.jsonl", tiny_pairs(n))], name, actor=OPERATOR)
    return v["id"]


def _cfg():
    return presets.preset("quick test (CPU, 20 steps)")


def test_sample_is_seeded_and_sized_and_a_low_approval_rate_fails(home):
    vid, other = _version(home), _version(home, name="copy")
    s = review.start(vid, actor=person("an"))
    assert (s["sample_size"], s["done"], s["reviewed"], s["complete"]) == (4, 0, False, False)
    first = [(i["split"], i["row_index"]) for i in review.items(s["review"])]
    again = review.items(review.start(other, actor=OPERATOR)["review"])
    assert [(i["split"], i["row_index"]) for i in again] == first  # same rows, same seed
    assert review.start(vid, actor=OPERATOR)["review"] == s["review"]  # an open sample is returned, not redrawn
    with pytest.raises(queue.JobError, match=rf"dataset version {vid} has not passed its review sample "
                                            rf"\(review {s['review']} of {vid} is not finished: 0/4 pairs decided\)"):
        runs.submit_train(vid, _cfg(), actor=person("an"))
    for decision in ("approved", "approved", "rejected"):
        s = review.decide(vid, review.next_item(vid)["idx"], decision, actor=person("Chi", 'reviewer'))
    assert (s["done"], s["approval_rate"], s["complete"]) == (3, 2 / 3, False)
    s = review.decide(vid, review.next_item(vid)["idx"], "approved", actor=person("Chi", 'reviewer'))
    assert s["complete"] and not s["reviewed"] and s["approval_rate"] == 0.75
    assert s["reason"] == f"review {s['review']} of {vid} failed: approval rate 75% is below the threshold 90%"
    child = versions.get_version(s["child_version"])  # the rejected pair is dropped in a child version
    assert child["parent_id"] == vid and child["rows_total"] == 39
    assert not review.is_reviewed(child["id"])  # a failed review does not carry
    assert review.status(vid)["reviewed"] is False
    with pytest.raises(review.ReviewError, match="is complete; its decisions are final"):
        review.decide(vid, 1, "approved", actor=person("Chi", 'reviewer'))
    s = review.start(vid, seed=7, actor=OPERATOR)  # a failed review: draw a new sample
    assert s["done"] == 0 and s["review"] != child["id"]


def test_edits_make_a_child_version_that_carries_a_passed_review(home):
    vid = _version(home, n=20)
    s = review.start(vid, fraction=0.5, threshold=0.9, actor=person("an"))
    assert s["sample_size"] == 10
    items = review.items(s["review"])
    before = {sp: versions.load_rows(vid, sp) for sp in ("train", "test")}
    edit = items[0]
    review.decide(vid, edit["idx"], "edited", actor=person("Bình", 'reviewer'),
                  edited={"output": "Dạ,   Sao Việt hoàn tiền trong 5 ngày.  "})
    review.decide(vid, items[1]["idx"], "rejected", actor=person("Bình", 'reviewer'))
    for item in items[2:]:
        s = review.decide(vid, item["idx"], "approved", actor=person("Chi", 'reviewer'))
    assert (s["approved"], s["edited"], s["rejected"], s["approval_rate"], s["reviewed"]) == (8, 1, 1, 0.9, True)
    parent, child = versions.get_version(vid), versions.get_version(s["child_version"])
    assert {sp: versions.load_rows(vid, sp) for sp in ("train", "test")} == before  # the parent is immutable
    assert child["parent_id"] == vid and child["rows_total"] == 19 and child["source"] == "review"
    assert child["content_hash"] != parent["content_hash"] and child["name"] == parent["name"]
    lineage = json.loads(child["lineage"])
    assert lineage["review"] == s["review"] and lineage["review_passed"] is True
    assert lineage["edited"] == [{"split": edit["split"], "row": edit["row_index"], "idx": edit["idx"]}]
    assert len(lineage["removed"]) == 1
    edited_row = versions.load_rows(child["id"], edit["split"])[edit["row_index"]]
    assert edited_row["output"] == "Dạ, Sao Việt hoàn tiền trong 5 ngày."  # cleaned like an import
    cs = review.status(child["id"])
    assert cs["reviewed"] and cs["kind"] == "inherited" and cs["inherited_from"] == s["review"]
    assert cs["reason"] == f"reviewed: carried from review {s['review']} of its parent {vid}"
    reviewers = {i["reviewer"] for i in review.items(s["review"])}
    assert reviewers == {"Bình", "Chi"}
    job = runs.submit_train(child["id"], _cfg(), actor=person("an"))
    assert job["config"]["review"] == {"reviewed": True, "status": cs["reason"], "override": None}


def test_override_is_recorded_with_who_and_why(home):
    vid = _version(home, n=10)
    with pytest.raises(queue.JobError, match="no review sample has been drawn"):
        runs.submit_train(vid, _cfg(), actor=person("an"), override_review="   ")
    job = runs.submit_train(vid, _cfg(), actor=person("an"), override_review="khách cần gấp, đã xem tay 20 cặp")
    assert job["config"]["review"]["override"] == "khách cần gấp, đã xem tay 20 cặp"
    audit = store.rows("SELECT actor, subject, detail FROM audit_log WHERE action = 'review.override'")
    assert len(audit) == 1 and audit[0]["actor"] == "an" and audit[0]["subject"] == vid
    assert json.loads(audit[0]["detail"])["reason"] == "khách cần gấp, đã xem tay 20 cặp"


def test_bundled_samples_are_reviewed_by_construction(home):
    domain = samples.import_samples(actor=person("setup"))
    general = versions.find_by_name("general-vi")
    for vid in (domain["id"], general["id"]):
        s = review.status(vid)
        assert s["reviewed"] and s["kind"] == "bundled"
        assert s["reason"] == "reviewed by construction (ViTune team (bundled samples))"
    assert samples.import_samples(actor=OPERATOR)["id"] == domain["id"]  # idempotent: one bundled review each
    assert len(review.reviews_of(domain["id"])) == 1
    job = runs.submit_train(domain["id"], _cfg(), actor=person("an"))
    assert job["config"]["review"]["override"] is None


def test_an_engineers_own_data_named_like_a_sample_is_not_marked_reviewed(home):
    """import_samples marks only the versions it made itself (or made by an earlier call), never one that merely
    bears a sample's name."""
    mine = {}
    for name in ("general-vi", samples.DEMO_SAMPLE):
        mine[name], _ = importer.import_files([write_jsonl(home / f"{name}.jsonl", tiny_pairs(20))], name,
                                              actor=person("an"))
    domain = samples.import_samples(actor=person("setup"))
    for name, version in mine.items():
        assert not review.status(version["id"])["reviewed"], f"{name}: the engineer's own data became reviewed"
        assert review.reviews_of(version["id"]) == []
    assert domain["id"] != mine[samples.DEMO_SAMPLE]["id"] and review.status(domain["id"])["kind"] == "bundled"
    assert domain["rows_total"] > 20 and "customer" not in domain["name"]
    with pytest.raises(queue.JobError, match="has not passed its review sample"):
        runs.submit_train(mine[samples.DEMO_SAMPLE]["id"], _cfg(), actor=person("an"))
    assert samples.import_samples(actor=OPERATOR)["id"] == domain["id"]   # a second call: the same bundled versions


def test_refusals_are_clear(home):
    vid = _version(home, n=10)
    with pytest.raises(review.ReviewError, match="between 10% and 100 % of the pairs"):
        review.start(vid, fraction=0.05, actor=OPERATOR)
    with pytest.raises(review.ReviewError, match="no open review sample: start one first"):
        review.decide(vid, 1, "approved", actor=person("an", 'reviewer'))
    review.start(vid, fraction=0.15, actor=OPERATOR)
    assert review.status(vid)["sample_size"] == 2
    with pytest.raises(AccessDenied, match="review decide needs a signed-in user; nobody is signed in"):
        review.decide(vid, 1, "approved", actor=None)  # a decision is the signed-in reviewer's, never a typed name
    with pytest.raises(AccessDenied, match=r"lan \(viewer\) may not review decide: that needs reviewer"):
        review.decide(vid, 1, "approved", actor=person("lan", "viewer"))
    with pytest.raises(review.ReviewError, match="has no pair 9"):
        review.decide(vid, 9, "approved", actor=person("an", 'reviewer'))
    item = review.next_item(vid)
    with pytest.raises(review.ReviewError, match="the edit changes nothing"):
        review.decide(vid, item["idx"], "edited", actor=person("an", 'reviewer'), edited={"output": item["output"] + "  "})
    with pytest.raises(review.ReviewError, match="the edited pair's 'output' is empty"):
        review.decide(vid, item["idx"], "edited", actor=person("an", 'reviewer'), edited={"output": " "})
    review.decide(vid, item["idx"], "approved", actor=person("an", 'reviewer'))
    # a pair is decided once: a second decision (another reviewer's, or a change of mind) is refused, not overwritten
    with pytest.raises(review.ReviewError, match=rf"pair {item['idx']} of review rv-\w+ is already decided \(approved by an\)"):
        review.decide(vid, item["idx"], "rejected", actor=person("binh", 'reviewer'))
    assert review.status(vid)["approved"] == 1 and review.status(vid)["rejected"] == 0
    assert approve_review(vid)["reviewed"]
    with pytest.raises(review.ReviewError, match="is already reviewed"):
        review.start(vid, actor=OPERATOR)


def test_the_whole_review_headless_through_the_cli(home):
    path = write_jsonl(home / "p.jsonl", tiny_pairs(20))
    vid = json.loads(cli("dataset", "import", str(path), "--name", "p", "--json", home=home).stdout)["dataset_version"]
    assert cli("dataset", "list", home=home).stdout.rstrip().endswith("not reviewed")
    proc = cli("train", "--dataset", vid, "--no-wait", home=home, check=False)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"error: dataset version {vid} has not passed its review sample")
    proc = cli("review", "status", vid, home=home, check=False)
    assert proc.returncode == 1 and "no review sample has been drawn" in proc.stdout
    started = json.loads(cli("review", "start", vid, "--fraction", "0.15", "--json", home=home).stdout)
    assert started["sample_size"] == 3
    first = json.loads(cli("review", "show", vid, "--json", home=home).stdout)
    assert first["idx"] == 1 and first["decision"] is None
    cli("review", "decide", vid, "--item", "1", "--edit", "--output", "Dạ, đã sửa.", home=home)
    cli("review", "decide", vid, "--item", "2", "--approve", home=home)
    proc = cli("review", "decide", vid, "--item", "3", "--approve", home=home)
    assert f"{vid}: 3/3 decided, approval 100%, threshold 90% — reviewed: 3/3 pairs approved (100% ≥ 90%)" in proc.stdout
    status = json.loads(cli("review", "status", vid, "--json", home=home).stdout)
    assert status["reviewed"] and status["child_version"]
    listed = json.loads(cli("review", "show", vid, "--all", "--json", home=home).stdout)
    me = OPERATOR.name   # the CLI decides as the machine's operator, its OS user name recorded
    assert [(i["decision"], i["reviewer"]) for i in listed] == [("edited", me), ("approved", me), ("approved", me)]
    assert listed[0]["edited"]["output"] == "Dạ, đã sửa."
    proc = cli("review", "status", status["child_version"], home=home)
    assert "carried from review" in proc.stdout
    proc = cli("train", "--dataset", vid, "--no-wait", "--json", home=home)
    assert json.loads(proc.stdout)["state"] == "queued"
    other = json.loads(cli("dataset", "import", str(path), "--name", "q", "--json", home=home).stdout)["dataset_version"]
    proc = cli("train", "--dataset", other, "--no-wait", "--override-review", "demo hôm nay", home=home)
    assert f"review gate overridden for {other}: demo hôm nay (recorded in the audit log)" in proc.stderr
    proc = cli("review", "decide", vid, "--item", "1", home=home, check=False)
    assert proc.returncode == 2 and "needs --item N and one of --approve, --edit, --reject" in proc.stderr


def test_two_sessions_of_one_process_deciding_the_last_pairs_at_once_complete_the_review_once(home):
    """The web app's sessions are threads of one process: each decision and the completion are one transaction,
    and two of them at once never both miss the other (the review's row is written first: one is tried again)."""
    import threading

    v, _ = importer.import_files([write_jsonl(home / "d.jsonl", tiny_pairs(30))], "cskh", actor=OPERATOR)
    assert review.start(v["id"], actor=OPERATOR)["sample_size"] == 3
    review.decide(v["id"], 1, "approved", actor=OPERATOR)
    barrier, errors = threading.Barrier(2), []

    def decide(idx: int) -> None:
        barrier.wait()
        try:
            review.decide(v["id"], idx, "rejected", actor=person(f"r{idx}", "reviewer"))
        except Exception as exc:   # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=decide, args=(i,)) for i in (2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    st = review.status(v["id"])
    assert st["complete"] and st["done"] == 3 and st["child_version"]
    assert len([x for x in versions.list_versions(OPERATOR) if x["parent_id"] == v["id"]]) == 1
    assert review.current(v["id"])["completed_at"] is not None
