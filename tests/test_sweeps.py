"""Sweeps (issue 25): a grid or list of training runs over one dataset version, each evaluated by itself
when its training is ingested, ranked by the gate's metrics; counted and estimated before they start,
cancelled as one, audited, in the project's access.

The default set runs on a real DuckDB home without training: a finished training job is written into its
folder the way a worker writes it and settled the way a supervisor tick settles it (as tests/conftest.py's
``grow_studio`` does). The slow test trains and evaluates the default model for real through the CLI."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core import store
from core.access.principal import AccessDenied
from core.datasets import importer
from core.jobs import queue, supervisor
from core.jobs.files import METRICS, STATUS, read_json, write_json_atomic
from core.training import sweeps
from tests.conftest import OPERATOR, REPO, approve_review, cli, person, tiny_pairs, write_jsonl


@pytest.fixture
def version(home):
    v, _ = importer.import_files([write_jsonl(home / "d.jsonl", tiny_pairs(60))], "tiny", actor=OPERATOR)
    assert approve_review(v["id"])["reviewed"]
    return v["id"]


def _spec(**extra) -> dict:
    return {"preset": "quick test (CPU, 20 steps)", "settings": {"max_steps": 2, "max_seq_length": 128},
            "grid": {"r": [4, 8, 16], "lr": [1e-4, 5e-4]}, **extra}


# ── the spec ─────────────────────────────────────────────────────────────────


def test_a_grid_expands_to_every_combination_and_a_list_crosses_it():
    runs = sweeps.expand(sweeps.normalize(_spec()))
    assert [r["params"] for r in runs] == [{"lora_r": r, "learning_rate": lr} for r in (4, 8, 16) for lr in (1e-4, 5e-4)]
    assert [(r["config"].lora_r, r["config"].learning_rate, r["config"].max_steps) for r in runs][:2] == [
        (4, 1e-4, 2), (4, 5e-4, 2)]
    assert all(r["config"].max_seq_length == 128 and r["config"].per_device_train_batch_size == 2 for r in runs)

    listed = sweeps.expand(sweeps.normalize({"runs": [{"alpha": 8}, {"alpha": 32, "batch": 4}],
                                             "grid": {"r": [8, 16]}}))
    assert [r["params"] for r in listed] == [{"lora_alpha": 8, "lora_r": 8}, {"lora_alpha": 8, "lora_r": 16},
                                             {"lora_alpha": 32, "per_device_train_batch_size": 4, "lora_r": 8},
                                             {"lora_alpha": 32, "per_device_train_batch_size": 4, "lora_r": 16}]
    by_preset = sweeps.expand(sweeps.normalize({"grid": {"preset": ["r=8 (fast)", "r=32 (quality)"],
                                                         "epochs": [1, 2]}}))
    assert [(r["config"].lora_r, r["config"].num_train_epochs) for r in by_preset] == [(8, 1.0), (8, 2.0), (32, 1.0),
                                                                                        (32, 2.0)]
    assert sweeps.describe(runs[1]["params"]) == "r=4, lr=0.0005"
    assert sweeps.parse_values("r", " 8, 16;32 ") == [8, 16, 32] and sweeps.parse_values("lr", "") == []


@pytest.mark.parametrize("text, says", [
    ("gird: {r: [8]}", "gird: not a sweep field (one of: name, dataset, preset, settings, grid, runs, evaluate)"),
    ("grid: {rank: [8, 16]}", "grid.rank: not a setting a sweep can vary"),
    ("grid: {}", "grid: the sweep has no runs"),
    ("preset: guide (r=16)", "grid: the sweep has no runs"),
    ("grid: {r: []}", "grid.r: an empty list of values"),
    ("grid: {r: [8, 0]}", "grid.r: 0 is out of range (1–256)"),
    ("grid: {lr: [2e-4, 5]}", "grid.lr: 5.0 is out of range (1e-07–0.1)"),
    ("grid: {r: [eight]}", "grid.r: 'eight' is not a whole number"),
    ("grid: {r: [8, 8]}", "grid.r: 8 is listed twice"),
    ("grid: {r: [8], lora_r: [16]}", "grid.lora_r: lora_r is given twice"),
    ("grid: {preset: [nope]}", "grid.preset: no preset 'nope'"),
    ("grid: {model: [/etc]}", "grid.model: /etc: not an allowed base model"),
    ("grid: {r: [8]}\nsettings: {lora_rank: 4}", "settings: unknown training setting(s): lora_rank"),
    ("grid: {r: [8]}\nsettings: {max_steps: 0}", "settings: max_steps must be positive"),
    ("grid: {r: [8]}\nevaluate: {limt: 4}", "evaluate.limt: not an evaluation setting"),
    ("grid: {r: [8]}\nevaluate: {limit: 0}", "evaluate.limit: 0 is out of range"),
    ("runs: [8, 16]", "runs[1]: a mapping of settings"),
    ("grid: {r: [1, 2, 3, 4, 5, 6, 7, 8, 9], lr: [1e-4, 2e-4, 3e-4, 4e-4, 5e-4, 6e-4, 7e-4, 8e-4]}",
     "grid: 72 runs is more than a sweep may queue (64)"),
    ("runs: [{r: 8}, {lora_r: 8}]", "run 2 (r=8) trains exactly as run 1"),
    ("grid: [r, 8]", "grid: a mapping of settings to lists of values"),
    ("grid: {r: [8}", "line 1, column 13: not valid YAML"),
    ("- 1\n- 2", "a sweep must be a mapping of fields"),
    ("", "empty; a sweep needs a grid or a list of runs"),
])
def test_a_bad_spec_is_one_line_naming_the_field(home, text, says):
    with pytest.raises(sweeps.SweepError) as refused:
        sweeps.expand(sweeps.load(text, "sweep.yaml"))
    assert str(refused.value).startswith("sweep.yaml: ") and says in str(refused.value), str(refused.value)


def test_the_cli_says_what_is_wrong_with_a_yaml_file_and_queues_nothing(home, version):
    bad = home / "sweep.yaml"
    bad.write_text(f"dataset: {version}\ngrid:\n  r: [8, 16]\n  lr: [2e-4, 9]\n", encoding="utf-8")
    proc = cli("sweep", "--file", str(bad), home=home, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"error: {bad}: grid.lr: 9.0 is out of range (1e-07–0.1)"
    proc = cli("sweep", "plan", "--dataset", version, "--grid", "r", home=home, check=False)
    assert proc.returncode == 1 and proc.stderr.strip() == "error: --grid 'r': write it as NAME=VALUE (e.g. --grid r=8,16,32)"
    proc = cli("sweep", "plan", "--grid", "r=8", home=home, check=False)
    assert proc.stderr.strip() == "error: dataset: a sweep needs a dataset version (see `python -m core dataset list`)"
    proc = cli("sweep", "show", "sweep-nope", home=home, check=False)
    assert proc.returncode == 1 and proc.stderr.strip() == "error: no sweep 'sweep-nope'"
    assert store.one("SELECT count(*) AS n FROM jobs")["n"] == 0
    # a good file, planned: the runs and their count, nothing queued
    good = home / "good.yaml"
    good.write_text(f"dataset: {version}\npreset: quick test (CPU, 20 steps)\ngrid: {{r: [8, 16], lr: [1e-4, 2e-4]}}\n",
                    encoding="utf-8")
    proc = cli("sweep", "plan", "--file", str(good), "--grid", "alpha=8,16", home=home)
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["1", "r=8,", "lr=0.0001,", "alpha=8"] and len(lines) == 9
    assert lines[-1].startswith("8 runs; no time estimate yet: no finished run (and evaluation) of gemma-3-270m")
    assert store.one("SELECT count(*) AS n FROM jobs")["n"] == 0


# ── what a worker would write, settled as a tick settles it ──────────────────


def _trained(job_id: int, seconds: float = 60.0, steps: int = 10, losses=None) -> None:
    job = queue.get_job(job_id)
    folder = Path(job["job_dir"])
    losses = losses or [2.0 / s for s in range(1, steps + 1)]
    (folder / METRICS).write_text("".join(json.dumps({"step": s, "loss": l, "learning_rate": 1e-4, "grad_norm": 1.0,
                                                      "tokens_per_s": 900.0}) + "\n"
                                          for s, l in enumerate(losses, start=1)), encoding="utf-8")
    write_json_atomic(folder / STATUS, {"state": "succeeded", "result": {
        "adapter_dir": str(folder / "adapter"), "train_runtime_s": seconds, "steps": steps,
        "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1}})
    assert supervisor._settle(queue.get_job(job_id), read_json(folder / STATUS))


def _evaluated(job_id: int, good: bool, duration_s: float = 30.0) -> None:
    from core.datasets import versions
    from core.evaluation import scoring

    job = queue.get_job(job_id)
    cfg = job["config"]
    pairs = versions.load_rows(cfg["dataset_version_id"], "test")[: cfg["limit"] or None]
    refs = [p["output"] for p in pairs]
    preds = refs if good else ["Dạ."] * len(refs)
    scores = scoring.score(refs, preds, cfg["thresholds"])
    out = Path(job["job_dir"]) / "predictions.jsonl"
    out.write_text("".join(json.dumps({"idx": i, "instruction": p["instruction"], "input": p["input"], "reference": r,
                                       "prediction": q, **per}, ensure_ascii=False) + "\n"
                           for i, (p, r, q, per) in enumerate(zip(pairs, refs, preds, scores.per_example))),
                   encoding="utf-8")
    write_json_atomic(Path(job["job_dir"]) / STATUS, {"state": "succeeded", "result": {
        **scores.summary(), "prompt_format": "chat", "predictions": str(out), "duration_s": duration_s}})
    assert supervisor._settle(queue.get_job(job_id), read_json(Path(job["job_dir"]) / STATUS))


def _eval_job(run_id: str) -> dict | None:
    return store.one("SELECT * FROM jobs WHERE kind = 'evaluate' AND run_id = ?", [run_id])


# ── the estimate ─────────────────────────────────────────────────────────────


def test_the_estimate_is_the_runs_at_this_boxs_measured_pace(home, version):
    spec = _spec(evaluate={"limit": 3})
    planned = sweeps.plan(spec, version, actor=OPERATOR)
    assert planned["estimate"]["hours"] is None and planned["estimate"]["runs"] == 6
    assert str(planned["estimate"]["message"]).startswith("6 runs; no time estimate yet")

    # one finished run of the model: 10 steps of 2 rows in 60 s (3 s a row), its evaluation 4 examples in 30 s
    one = sweeps.submit({"grid": {"r": [8]}, "preset": "quick test (CPU, 20 steps)", "evaluate": {"limit": 4}},
                        version, actor=OPERATOR)
    _trained(one["runs"][0]["job"], seconds=60.0, steps=10)
    _evaluated(_eval_job(one["runs"][0]["run"])["id"], good=True, duration_s=30.0)
    est = sweeps.plan(spec, version, actor=OPERATOR)["estimate"]
    held_out = store.one("SELECT rows_test FROM dataset_versions WHERE id = ?", [version])["rows_test"]
    n = store.one("SELECT n FROM evaluations")["n"]
    assert n == min(4, held_out)
    # each run: 2 steps × 2 rows × 3 s + min(3, held-out) examples at 30 s / n (no start-up measured: the jobs
    # were settled without a worker)
    each = 2 * 2 * 3.0 + min(3, held_out) * 30.0 / n
    assert [r["seconds"] for r in est["per_run"]] == [each] * 6
    assert est["hours"] == round(6 * each / 3600, 3) and est["slots"] == ["cpu"]
    assert str(est["message"]) == f"6 runs, about {6 * each / 3600:.2f} CPU-hours on this box (no GPU: one run at a time)"
    # by epochs: the trainer's own count of steps over the version's training rows
    rows = store.one("SELECT rows_train FROM dataset_versions WHERE id = ?", [version])["rows_train"]
    by_epochs = sweeps.plan({"grid": {"epochs": [1, 2]}, "preset": "quick test (CPU, 20 steps)",
                             "settings": {"max_steps": -1}}, version, actor=OPERATOR)["estimate"]
    assert [r["steps"] for r in by_epochs["per_run"]] == [-(-rows // 2), -(-rows // 2) * 2]


# ── a sweep from start to best ───────────────────────────────────────────────


def test_a_sweep_queues_ordinary_jobs_evaluates_each_run_ranks_them_and_audits(home, version):
    started = sweeps.submit(_spec(name="r and lr", evaluate={"limit": 4}), version, actor=person("an"))
    jobs = store.rows("SELECT * FROM jobs ORDER BY id")
    assert [j["kind"] for j in jobs] == ["train"] * 6 and {j["state"] for j in jobs} == {"queued"}
    assert {j["owner"] for j in jobs} == {"an"} and [j["id"] for j in jobs] == [r["job"] for r in started["runs"]]
    assert queue.get_job(jobs[0]["id"])["config"]["config"]["lora_r"] == 4
    listed = sweeps.list_sweeps(OPERATOR)
    assert [(s["id"], s["name"], s["state"], s["n_runs"]) for s in listed] == [(started["id"], "r and lr", "running", 6)]

    runs_ = [r["run"] for r in started["runs"]]
    # three runs finish training: each one's evaluation is queued in the same settle, as the sweep's owner
    for i, run_id in enumerate(runs_[:3]):
        _trained(started["runs"][i]["job"], losses=[3.0 - i * 0.5, 2.5 - i * 0.5])
        ev = _eval_job(run_id)
        assert ev and ev["state"] == "queued" and ev["owner"] == "an"
        cfg = queue.get_job(ev["id"])["config"]
        assert (cfg["split"], cfg["limit"], cfg["run_id"]) == ("test", 4, run_id)
        assert cfg["adapter_dir"].endswith("adapter") and cfg["decoding"]["max_new_tokens"] == 128
    _evaluated(_eval_job(runs_[0])["id"], good=False)
    _evaluated(_eval_job(runs_[1])["id"], good=True)
    v = sweeps.view(started["id"], person("an"))
    assert v["state"] == "running" and v["counts"] == {"runs": 6, "trained": 3, "evaluated": 2, "failed": 0}
    assert v["best"] == runs_[1]
    assert [(r["run_id"], r["rank"], r["best"]) for r in v["runs"][:3]] == [(runs_[1], 1, True), (runs_[0], 2, False),
                                                                           (runs_[2], None, False)]
    top = v["runs"][0]
    assert top["passed"] and top["bleu"] > 0.9 and top["label"] == "r=4, lr=0.0005" and top["n"] == 4
    assert "covers 4 of the" in str(top["reason"])   # the gate's own verdict: 4 pairs are not the whole split
    assert set(v["metrics"]["run_id"]) == set(runs_[:3]) and len(v["metrics"]) == 6

    # cancel: the queued trainings and the queued evaluation, and no evaluation is queued for it any more
    done = sweeps.cancel(started["id"], actor=person("binh"))
    assert sorted(done["cancelled"]) == sorted([r["job"] for r in started["runs"][3:]] + [_eval_job(runs_[2])["id"]])
    assert store.one("SELECT count(*) AS n FROM jobs WHERE state IN ('queued', 'running')")["n"] == 0
    v = sweeps.view(started["id"])
    assert v["state"] == "cancelled" and v["best"] == runs_[1]
    with store.transaction() as con:
        assert sweeps.after_ingest(con, queue.get_job(started["runs"][3]["job"]), {"adapter_dir": "x"}) is None
    with pytest.raises(queue.JobError, match="cancelled already"):
        sweeps.cancel(started["id"], actor=OPERATOR)

    audit = store.rows("SELECT actor, action, subject, detail FROM audit_log WHERE action LIKE 'sweep.%' ORDER BY ts")
    assert [(a["actor"], a["action"], a["subject"]) for a in audit] == [("an", "sweep.started", started["id"]),
                                                                       ("binh", "sweep.cancelled", started["id"])]
    detail = json.loads(audit[0]["detail"])
    assert detail["runs"] == 6 and detail["grid"] == {"lora_r": [4, 8, 16], "learning_rate": [1e-4, 5e-4]}
    assert detail["jobs"] == [r["job"] for r in started["runs"]]
    assert json.loads(audit[1]["detail"])["jobs"] == done["cancelled"]
    automatic = store.rows("SELECT actor FROM audit_log WHERE action = 'job.submitted' AND detail LIKE '%automatic%'")
    assert [a["actor"] for a in automatic] == ["an"] * 3
    assert store.one("SELECT count(*) AS n FROM audit_log WHERE action = 'job.cancelled'")["n"] == 4


def test_access_is_checked_in_core(home, version):
    from core.access import projects

    with pytest.raises(AccessDenied, match="may not train submit"):
        sweeps.submit(_spec(), version, actor=person("vy", "viewer"))
    with pytest.raises(AccessDenied, match="may not train submit"):
        sweeps.submit(_spec(), version, actor=person("rin", "reviewer"))
    assert store.one("SELECT count(*) AS n FROM jobs")["n"] == 0 and not sweeps.list_sweeps(OPERATOR)
    started = sweeps.submit(_spec(), version, actor=person("an"))
    # a viewer sees it and cannot cancel it; someone of another project does not see it at all
    assert sweeps.view(started["id"], person("vy", "viewer"))["counts"]["runs"] == 6
    with pytest.raises(AccessDenied, match="may not job cancel"):
        sweeps.cancel(started["id"], actor=person("vy", "viewer"))
    projects.add_project("khach-b", actor=OPERATOR)
    other = person("bao", "engineer", projects=["khach-b"])
    with pytest.raises(sweeps.SweepError, match="no sweep"):
        sweeps.view(started["id"], other)
    with pytest.raises(sweeps.SweepError, match="no sweep"):
        sweeps.cancel(started["id"], actor=other)
    with pytest.raises(ValueError, match="no dataset version"):
        sweeps.submit(_spec(), version, actor=other)
    assert sweeps.list_sweeps(other) == [] and len(sweeps.list_sweeps(person("an"))) == 1
    assert store.one("SELECT count(*) AS n FROM jobs WHERE state = 'queued'")["n"] == 6


def test_an_unreviewed_version_needs_an_override_reason(home):
    v, _ = importer.import_files([write_jsonl(home / "u.jsonl", tiny_pairs(12))], "unreviewed", actor=OPERATOR)
    with pytest.raises(queue.JobError, match="review"):
        sweeps.submit(_spec(), v["id"], actor=OPERATOR)
    assert store.one("SELECT count(*) AS n FROM jobs")["n"] == 0 and not sweeps.list_sweeps(OPERATOR)   # none, not some
    started = sweeps.submit(_spec(), v["id"], actor=OPERATOR, override_review="khách cần gấp")
    assert len(started["runs"]) == 6


# ── the Train page ───────────────────────────────────────────────────────────


def test_the_train_page_counts_queues_and_shows_a_sweep_ranked(home, version):
    from tests.test_pages import _clean, _run

    at = _run("train", person("an"))
    _clean(at)
    assert "No sweeps yet." in [c.value for c in at.caption]
    at.text_input(key="sweep-lora_r").set_value("4, 8, 16")
    at.text_input(key="sweep-learning_rate").set_value("1e-4, 5e-4")
    at.number_input(key="sweep-max-steps").set_value(2)
    next(b for b in at.button if b.label == "Count the runs and estimate the time").click().run()
    _clean(at)
    assert any(i.value.startswith("6 runs; no time estimate yet") for i in at.info)
    assert not sweeps.list_sweeps(OPERATOR)
    at.text_input(key="sweep-lora_r").set_value("4, 0")
    next(b for b in at.button if b.label == "Count the runs and estimate the time").click().run()
    assert [e.value for e in at.error] == ["grid.lora_r: 0 is out of range (1–256)"] and not at.exception
    at.text_area(key="sweep-yaml").set_value("grid: {r: [8]}\ngird: 1\n")
    next(b for b in at.button if b.label == "Count the runs and estimate the time").click().run()
    assert [e.value for e in at.error] == ["YAML: gird: not a sweep field (one of: name, dataset, preset, settings, "
                                           "grid, runs, evaluate)"] and not at.exception
    at.text_area(key="sweep-yaml").set_value("")
    at.text_input(key="sweep-lora_r").set_value("4, 8, 16")
    next(b for b in at.button if b.label == "Queue the sweep").click().run()
    _clean(at)
    [sweep] = sweeps.list_sweeps(OPERATOR)
    assert any(s.value.startswith(f"Queued sweep {sweep['id']}: 6 training jobs") for s in at.success)
    assert sweep["n_runs"] == 6 and sweep["created_by"] == "an"

    runs_ = [r["run_id"] for r in sweeps.view(sweep["id"])["runs"]]
    jobs = {r["run_id"]: r["job_id"] for r in sweeps.view(sweep["id"])["runs"]}
    for run_id in runs_[:2]:
        _trained(jobs[run_id])
    _evaluated(_eval_job(runs_[0])["id"], good=False)
    _evaluated(_eval_job(runs_[1])["id"], good=True)
    import streamlit

    streamlit.cache_data.clear()   # the page's views keep what they read for 2 s: these settles came from outside
    at = _run("train", person("vy", "viewer"))
    _clean(at)
    assert f"Sweep {sweep['id']}" in [s.value for s in at.subheader]
    table = at.table[-1].value
    assert list(table["run"][:2]) == [runs_[1], runs_[0]] and list(table["best"][:2]) == ["★", ""]
    assert list(table["gate"][:2]) == ["releasable", "not releasable"]   # the whole split, reviewed, passing
    assert any(s.value.startswith(f"Best run: {runs_[1]} (r=4, lr=0.0005)") for s in at.success)
    assert not any(b.label == "Cancel the sweep" for b in at.button)   # a viewer
    at = _run("train", person("an"))
    next(b for b in at.button if b.label == "Cancel the sweep").click().run()
    _clean(at)
    assert any(s.value.startswith(f"Sweep {sweep['id']} cancelled: 4 jobs stopped") for s in at.success)
    assert sweeps.view(sweep["id"])["state"] == "cancelled"


# ── for real: the default model, through the CLI ─────────────────────────────


@pytest.mark.slow   # six trainings and six evaluations of the default model: minutes
def test_a_3x2_sweep_of_the_default_model_runs_to_the_best_through_the_cli(home, version, default_model):
    proc = cli("sweep", "--dataset", version, "--preset", "quick test (CPU, 20 steps)", "--grid", "r=4,8,16",
               "--grid", "lr=1e-4,5e-4", "--max-steps", "2", "--set", "max_seq_length=128", "--eval-limit", "2",
               "--max-new-tokens", "4", "--name", "cli-3x2", "--json", home=home, timeout=3600)
    out = json.loads(proc.stdout)
    assert out["state"] == "finished" and out["counts"] == {"runs": 6, "trained": 6, "evaluated": 6, "failed": 0}
    assert [r["rank"] for r in out["runs"]] == [1, 2, 3, 4, 5, 6]
    assert [r["best"] for r in out["runs"]] == [True] + [False] * 5 and out["best"] == out["runs"][0]["run_id"]
    assert all(r["evaluation"] and r["n"] == 2 and r["train_state"] == r["eval_state"] == "succeeded"
               for r in out["runs"])
    keys = [(-r["rouge_l"], -r["bleu"]) for r in out["runs"] if not r["releasable"] and not r["passed"]]
    assert keys == sorted(keys)
    assert sorted((r["params"]["lora_r"], r["params"]["learning_rate"]) for r in out["runs"]) == [
        (4, 1e-4), (4, 5e-4), (8, 1e-4), (8, 5e-4), (16, 1e-4), (16, 5e-4)]
    assert "6 runs; no time estimate yet" in proc.stderr   # nothing of the model measured here before it
    assert out["estimated_hours"] is None and out["hours_used"] > 0   # the slot time its twelve jobs took
    shown = cli("sweep", "show", out["id"], home=home).stdout
    assert shown.splitlines()[1].startswith("★  1  " + out["best"]) and f"best: {out['best']}" in shown
    # now this box has measured the model: the next sweep's count comes with hours
    again = cli("sweep", "plan", "--dataset", version, "--preset", "quick test (CPU, 20 steps)", "--grid", "r=4,8",
                "--max-steps", "2", "--eval-limit", "2", home=home).stdout
    assert again.splitlines()[-1].startswith("2 runs, about ") and "CPU-hours on this box" in again


def test_a_finished_sweep_has_nothing_to_cancel(home, version):
    started = sweeps.submit({"grid": {"r": [8]}, "preset": "quick test (CPU, 20 steps)"}, version, actor=OPERATOR)
    _trained(started["runs"][0]["job"])
    _evaluated(_eval_job(started["runs"][0]["run"])["id"], good=True)
    v = sweeps.view(started["id"])
    assert v["state"] == "finished" and v["best"] == started["runs"][0]["run"] and v["runs"][0]["releasable"]
    with pytest.raises(queue.JobError, match="has finished, nothing to cancel"):
        sweeps.cancel(started["id"], actor=OPERATOR)
    assert sweeps.view(started["id"])["state"] == "finished"
    assert store.one("SELECT count(*) AS n FROM audit_log WHERE action = 'sweep.cancelled'")["n"] == 0


def test_the_sweep_view_costs_the_same_at_2_and_12_runs(home, version):
    """Six queries whatever the sweep's size (no query a run can creep in), and the Train page showing it a
    handful more than without it."""
    from tests.test_pages import _clean, _run

    def cost(fn) -> dict:
        before = store.counters()
        fn()
        got = store.counted_since(before)
        return {"connections": got["connections"], "queries": got["queries"]}

    made = {}
    for size, grid in (("small", {"r": [4, 8]}), ("large", {"r": [4, 8, 16, 32], "lr": [1e-4, 2e-4, 5e-4]})):
        started = sweeps.submit({"grid": grid, "preset": "quick test (CPU, 20 steps)", "name": size}, version,
                                actor=OPERATOR)
        for i, r in enumerate(started["runs"]):
            _trained(r["job"])
            _evaluated(_eval_job(r["run"])["id"], good=i % 2 == 0)
        made[size] = started["id"]
    small, large = (cost(lambda s=made[k]: sweeps.view(s, OPERATOR)) for k in ("small", "large"))
    # six reads of its own and the gate's retention check (one query for every passing run at once)
    assert small == large == {"connections": 7, "queries": 7}, (small, large)
    assert len(sweeps.view(made["large"])["runs"]) == 12
    page = cost(lambda: _clean(_run("train")))   # the newest sweep (12 runs) shown
    assert page["queries"] <= 12 + small["queries"] + 1, page


def test_the_sweep_view_reads_in_vietnamese(home, version, monkeypatch):
    from tests.test_pages import _clean, _run

    monkeypatch.delenv("VITUNE_LANGUAGE", raising=False)   # everyone's default: Vietnamese
    started = sweeps.submit({"grid": {"r": [4, 8]}, "preset": "quick test (CPU, 20 steps)", "name": "vi"}, version,
                            actor=OPERATOR)
    for i, r in enumerate(started["runs"]):
        _trained(r["job"])
        _evaluated(_eval_job(r["run"])["id"], good=i == 1)
    at = _run("train", person("an"))
    _clean(at)
    assert "Lượt quét vi" in [s.value for s in at.subheader] and "Quét siêu tham số" in [h.value for h in at.header]
    best = started["runs"][1]["run"]
    assert any(s.value.startswith(f"Lượt tốt nhất: {best} (r=8)") for s in at.success)
    caption = next(c.value for c in at.caption if c.value.startswith("quét xong: 2/2 lượt đã huấn luyện"))
    assert "Ước tính lúc bắt đầu: 2 lượt; chưa ước tính được thời gian" in caption
    assert list(at.table[-1].value["tốt nhất"]) == ["★", ""]
