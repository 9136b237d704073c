"""Every state-changing action writes one audit row, under the identity and role of whoever did it (never a
typed name): a walk through all of them on one studio home, with real jobs where the action is a job."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from core import store
from core.access import accounts, demo_links
from core.datasets import importer, review
from core.datasets.generation import generations
from core.deploy import exports, releases
from core.evaluation import evaluations, gate
from core.jobs import supervisor
from core.training import presets, runs
from tests.conftest import REPO, person, tiny_pairs, write_jsonl

pytestmark = [pytest.mark.slow, pytest.mark.extended]


def test_every_action_writes_one_audit_row_with_the_signed_in_identity(home):
    nam, chi, boss = person("nam", "engineer"), person("chi", "reviewer"), person("boss", "admin")
    expected: list[tuple[str, str, str]] = []   # (action, subject, actor) in the order they happen

    def mark(action: str, subject, actor) -> None:
        expected.append((action, str(subject), actor.name))

    version, _ = importer.import_files([write_jsonl(home / "p.jsonl", tiny_pairs(16))], "p", actor=nam)
    mark("dataset.created", version["id"], nam)
    gen = generations.submit([REPO / "data" / "samples" / "raw" / "quy_trinh_cskh.md"], "g", local=True, max_chunks=1,
                             actor=nam)
    mark("job.submitted", gen["id"], nam)
    supervisor.cancel(gen["id"], actor=nam)
    mark("job.cancelled", gen["id"], nam)
    sample = review.start(version["id"], actor=chi)
    mark("review.started", version["id"], chi)
    review.decide(version["id"], review.next_item(version["id"])["idx"], "approved", actor=chi)
    mark("review.decided", version["id"], chi)

    cfg = presets.preset("quick test (CPU, 20 steps)", max_steps=3, save_steps=1)
    train = runs.submit_train(version["id"], cfg, actor=nam, override_review="khách cần gấp")
    mark("review.override", version["id"], nam)
    mark("job.submitted", train["id"], nam)
    run_dir = Path(runs.get_run(train["run_id"])["run_dir"])
    deadline = time.monotonic() + 600
    while not runs.checkpoints(run_dir):   # a cancel after the first checkpoint, so that it resumes
        assert time.monotonic() < deadline
        supervisor.tick()
        time.sleep(0.5)
    supervisor.cancel(train["id"], actor=nam)
    mark("job.cancelled", train["id"], nam)
    resumed = runs.resume(train["id"], actor=nam)
    mark("job.resumed", resumed["id"], nam)
    done = supervisor.wait(resumed["id"], timeout=900)
    assert done["state"] == "succeeded", done["error"]
    run_id = train["run_id"]

    ev = evaluations.submit(run_id, limit=2, actor=nam)
    mark("job.submitted", ev["id"], nam)
    supervisor.cancel(ev["id"], actor=nam)
    mark("job.cancelled", ev["id"], nam)
    gate.set_thresholds(0.35, 0.45, actor=boss)
    mark("setting.changed", "thresholds", boss)
    ex = exports.submit(run_id, ["q8_0"], actor=nam)
    mark("job.submitted", ex["id"], nam)
    assert supervisor.wait(ex["id"], timeout=900)["state"] == "succeeded"
    # the run has no evaluation: deploying it is a gate override, recorded with the engineer's identity
    rel = releases.deploy(run_id, "walk:v1", quantization="q8_0", override_reason="thử nghiệm nội bộ", golden=2,
                          actor=nam, on_progress=lambda m: None)
    mark("gate.override", run_id, nam)
    preflight_job = store.one("SELECT id FROM jobs WHERE kind = 'preflight'")["id"]
    mark("job.submitted", preflight_job, nam)
    mark("release.created", rel["id"], nam)
    back = releases.rollback(rel["id"], actor=nam, on_progress=lambda m: None)
    mark("release.rollback", back["id"], nam)
    releases.delete_release(rel["id"], actor=boss)
    mark("release.deleted", rel["id"], boss)

    accounts.add_user("lan", "viewer", actor=boss, password="mat-khau-du-dai")
    mark("user.added", "lan", boss)
    accounts.set_role("lan", "reviewer", actor=boss)
    mark("user.role_changed", "lan", boss)
    accounts.set_projects("lan", ["default"], actor=boss)
    mark("user.projects_changed", "lan", boss)
    accounts.reset_password("lan", "mat-khau-moi-dai", actor=boss)
    mark("user.password_reset", "lan", boss)
    accounts.disable("lan", actor=boss)
    mark("user.disabled", "lan", boss)
    link, _ = demo_links.create(actor=nam, runs=[run_id])
    mark("demo.created", link["id"], nam)
    demo_links.revoke(link["id"], actor=nam)
    mark("demo.revoked", link["id"], nam)

    rows = store.rows("SELECT action, subject, actor, role FROM audit_log ORDER BY id")
    ours = [(r["action"], r["subject"], r["actor"]) for r in rows if (r["action"], r["subject"], r["actor"]) in
            set(expected)]
    assert ours == expected   # each action once, in order, under its doer
    roles = {r["actor"]: r["role"] for r in rows if r["actor"] in ("nam", "chi", "boss")}
    assert roles == {"nam": "engineer", "chi": "reviewer", "boss": "admin"}
    kinds = {json.loads(r["detail"]).get("kind") for r in store.rows(
        "SELECT detail FROM audit_log WHERE action = 'job.submitted'")}
    assert {"generate", "train", "evaluate", "export", "preflight"} <= kinds
    assert sample["sample_size"] >= 1
