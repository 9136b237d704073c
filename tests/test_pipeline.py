"""The whole default pipeline on the embedded model, through the CLI (see the ``pipeline`` fixture)."""
import json
import os
import re
from pathlib import Path

import pytest
import torch

from core import prompt_format, store
from core.deploy import exporter, exports, ollama, preflight, preflights, releases
from core.evaluation import gate, scoring
from core.training import runs
from tests.conftest import OPERATOR, cli, worker_pythons

pytestmark = pytest.mark.slow

PROMPTS = [
    {"instruction": "Khách hàng phàn nàn về hóa đơn sai, phải xử lý thế nào?"},
    {"instruction": "Tóm tắt điều khoản quan trọng trong hợp đồng sau.",
     "input": "ĐIỀU 3: Bên B cam kết hoàn thành dự án trong vòng 90 ngày kể từ ngày ký kết."},
    {"instruction": "Thủ đô của Việt Nam là gì?"},
]


def test_training_ran_forty_steps_and_the_loss_fell(pipeline, monkeypatch):
    monkeypatch.setenv("VITUNE_HOME", str(pipeline["home"]))
    assert pipeline["train"]["state"] == "succeeded" and pipeline["train"]["result"]["steps"] == 40
    losses = [r["loss"] for r in store.rows("SELECT loss FROM metrics WHERE run_id = ? ORDER BY step",
                                            [pipeline["run"]])]
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5


def test_the_evaluation_covers_the_held_out_split_and_its_numbers_recompute(pipeline, monkeypatch):
    """The stored evaluation is of every held-out pair of the run's version, in order; its BLEU and ROUGE-L
    are what ``core.evaluation.scoring`` gives for its stored examples, and its verdict what the thresholds
    say for those numbers."""
    import pyarrow.parquet as pq

    from core.evaluation import scoring

    monkeypatch.setenv("VITUNE_HOME", str(pipeline["home"]))
    ev = pipeline["evaluation"]
    row = store.one("SELECT * FROM evaluations WHERE id = ?", [ev["evaluation"]])
    assert (row["run_id"], row["dataset_version_id"], row["split"]) == (pipeline["run"], pipeline["dataset"], "test")
    version = store.one("SELECT rows_test, path FROM dataset_versions WHERE id = ?", [pipeline["dataset"]])
    held_out = pq.read_table(Path(version["path"]) / "test.parquet").to_pylist()
    assert ev["n"] == row["n"] == version["rows_test"] == len(held_out) == 22
    examples = store.rows("SELECT * FROM evaluation_examples WHERE evaluation_id = ? ORDER BY idx", [ev["evaluation"]])
    assert [e["idx"] for e in examples] == list(range(len(held_out)))
    assert [(e["instruction"], e["input"], e["reference"]) for e in examples] == [
        (r["instruction"], r["input"], r["output"]) for r in held_out]
    assert sum(bool(e["prediction"].strip()) for e in examples) >= 15
    thresholds = json.loads(row["thresholds"])
    assert thresholds == {"bleu": 0.35, "rouge_l": 0.45}
    again = scoring.score([e["reference"] for e in examples], [e["prediction"] for e in examples], thresholds)
    assert (row["bleu"], row["rouge_l"]) == pytest.approx((again.bleu, again.rouge_l), abs=1e-12)
    assert (ev["bleu"], ev["rouge_l"]) == pytest.approx((again.bleu, again.rouge_l), abs=1e-12)
    assert [e["rouge_l"] for e in examples] == pytest.approx([p["rouge_l"] for p in again.per_example], abs=1e-12)
    assert [e["bleu"] for e in examples] == pytest.approx([p["bleu"] for p in again.per_example], abs=1e-12)
    assert row["passed"] == ev["passed"] == (row["bleu"] > 0.35 and row["rouge_l"] > 0.45)


def test_the_demo_run_passes_the_default_gate_and_the_cli_gate_says_so(pipeline, pipeline_ggufs, monkeypatch):
    """The demo sample's held-out notes are learned in 40 steps: the default model passes the default gate,
    and ``python -m core gate`` judges a release of the run on that evaluation and on its default GGUF's (q8_0)."""
    monkeypatch.setenv("VITUNE_HOME", str(pipeline["home"]))
    ev = pipeline["evaluation"]
    assert ev["passed"] and ev["bleu"] > 0.35 and ev["rouge_l"] > 0.45, ev
    gate = cli("gate", "--run", pipeline["run"], home=pipeline["home"], check=False)
    out = json.loads(gate.stdout)
    assert out["evaluation"] == ev["evaluation"] and out["checks"][0]["passed"] and out["quantization"] == "q8_0"
    assert out["gguf_evaluation"] == pipeline_ggufs["q8_0"]["evaluation"]
    assert gate.returncode == (0 if pipeline_ggufs["q8_0"]["passed"] else 1)
    assert out["releasable"] == pipeline_ggufs["q8_0"]["passed"]


VIETNAMESE = re.compile(r"[àáảãạăắằẳẵặâấầẩẫậđèéẻẽẹêếềểễệìíỉĩịòóỏõọôốồổỗộơớờởỡợùúủũụưứừửữựỳýỷỹỵ]", re.I)


def test_f16_q8_0_and_q4_k_m_ggufs_answer_in_llama_cpp(pipeline):
    """f16 equals the merged model token for token; q8_0 and q4_k_m start the same way and answer in
    Vietnamese."""
    from core.evaluation import inference

    files = pipeline["export"]["gguf"]
    merged = inference.load(pipeline["export"]["merged_dir"], None, "chat", dtype=torch.float32)
    tok = merged.tokenizer
    prompts = [prompt_format.render_prompt(p, "chat", tok) for p in PROMPTS]
    eos = prompt_format.stop_token_ids("chat", tok)
    expected, margins = [], []
    for prompt in prompts:
        ids = tok(prompt, return_tensors="pt")
        with torch.inference_mode():
            top2 = merged.model(**ids).logits[0, -1].float().topk(2).values
        margins.append(float(top2[0] - top2[1]))   # how decided the merged model is about its first token
        out = merged.model.generate(**ids, max_new_tokens=24, do_sample=False, eos_token_id=eos)[0]
        new = out[ids["input_ids"].shape[1]:].tolist()
        expected.append(new[: next((i for i, t in enumerate(new) if t in eos), len(new))])
    assert exporter.llama_generate(Path(files["f16"]), prompts, max_tokens=24) == expected
    q8 = exporter.llama_generate(Path(files["q8_0"]), prompts, max_tokens=24)
    q4 = exporter.llama_generate(Path(files["q4_k_m"]), prompts, max_tokens=24)
    # 8-bit keeps every first token the merged model is decided about (a logit gap of 1 or more; a
    # 40-step run can leave a near tie, which 8-bit rounding may flip), and at least two of three
    decided = [i for i, m in enumerate(margins) if m >= 1.0]
    assert all(q8[i][:1] == expected[i][:1] for i in decided), (margins, q8, expected)
    assert sum(a[:1] == e[:1] for a, e in zip(q8, expected)) >= 2, (margins, q8, expected)
    assert sum(a[:1] == e[:1] for a, e in zip(q4, expected)) >= 2
    for answers in (q8, q4):
        texts = [tok.decode(a, skip_special_tokens=True) for a in answers]
        assert all(t.strip() for t in texts), texts
        assert sum(bool(VIETNAMESE.search(t)) for t in texts) >= 2, texts
    sizes = {q: Path(files[q]).stat().st_size for q in ("f16", "q8_0", "q4_k_m")}
    assert sizes["q4_k_m"] < sizes["q8_0"] < sizes["f16"] and sizes["q8_0"] < sizes["f16"] * 0.6


def test_the_exported_ggufs_are_evaluated_like_the_run_and_gated_on_their_own_scores(pipeline, pipeline_ggufs,
                                                                                     monkeypatch, worker_env):
    """The q8_0 and q4_k_m files the export wrote, evaluated through the CLI (llama.cpp, batched, every core): the
    same held-out pairs, decoding and scoring as the run's own evaluation, each its own row tied to the file by
    its sha256; the leaderboard names them beside the run; `gate --run RUN --quant Q --json` judges each file on
    its own evaluation (what the default model does at each is printed: the release tests below follow it)."""
    from core.evaluation import gguf_eval

    monkeypatch.setenv("VITUNE_HOME", str(pipeline["home"]))
    home, run_id = pipeline["home"], pipeline["run"]
    merged = store.one("SELECT * FROM evaluations WHERE id = ?", [pipeline["evaluation"]["evaluation"]])
    merged_pairs = [(e["instruction"], e["input"], e["reference"]) for e in
                    store.rows("SELECT * FROM evaluation_examples WHERE evaluation_id = ? ORDER BY idx", [merged["id"]])]
    for quant in ("q8_0", "q4_k_m"):
        ev = pipeline_ggufs[quant]
        row = store.one("SELECT * FROM evaluations WHERE id = ?", [ev["evaluation"]])
        print(f"{quant}: BLEU {row['bleu']:.3f} ROUGE-L {row['rouge_l']:.3f} passed={row['passed']} "
              f"({pipeline_ggufs['seconds'][quant]} s; merged BLEU {merged['bleu']:.3f} ROUGE-L {merged['rouge_l']:.3f})")
        assert (row["run_id"], row["target"], row["quantization"], row["split"], row["dataset_version_id"]) == (
            run_id, "gguf", quant, "test", merged["dataset_version_id"])
        assert row["gguf_sha256"] == pipeline["export"]["sha256"][quant] == exporter.sha256(Path(row["gguf_path"]))
        assert json.loads(row["decoding"]) == json.loads(merged["decoding"])   # the run's own decoding, greedy
        assert row["prompt_format"] == merged["prompt_format"] and row["n"] == merged["n"] == 22
        examples = store.rows("SELECT * FROM evaluation_examples WHERE evaluation_id = ? ORDER BY idx", [row["id"]])
        assert [(e["instruction"], e["input"], e["reference"]) for e in examples] == merged_pairs
        again = scoring.score([e["reference"] for e in examples], [e["prediction"] for e in examples],
                              json.loads(row["thresholds"]))
        assert (row["bleu"], row["rouge_l"], row["passed"]) == (pytest.approx(again.bleu, abs=1e-12),
                                                                pytest.approx(again.rouge_l, abs=1e-12), again.passed)
        backend = json.loads(row["backend"])
        assert backend["engine"] == "llama.cpp" and backend["n_threads"] == gguf_eval.cores()
        assert backend["n_parallel"] == gguf_eval.DEFAULT_PARALLEL and backend["generated_tokens"] > 0
        assert backend["device"] == ("GPU" if backend["gpu_layers"] else "CPU") and (backend["gpu_layers"] or backend["fallback"])
        gated = cli("gate", "--run", run_id, "--quant", quant, "--json", home=home, check=False)
        out = json.loads(gated.stdout)
        assert out["gguf_evaluation"] == row["id"] and out["checks"][0]["passed"]   # the merged model passes
        assert gated.returncode == (0 if row["passed"] else 1) and out["releasable"] == row["passed"]
        if not row["passed"]:
            assert f"BLEU {row['bleu']:.3f}, ROUGE-L {row['rouge_l']:.3f} is below the gate" in out["reason"]
    assert worker_pythons(home)["evaluate"] == {str(worker_env)}
    board = cli("evaluate", "list", home=home).stdout
    assert all(name in board for name in (f"{run_id} ", f"{run_id} · q8_0", f"{run_id} · q4_k_m")), board


def test_every_job_of_the_pipeline_ran_under_the_worker_environment(pipeline, worker_env):
    """Training, evaluation and export ran in workers that could not import DuckDB, streamlit or plotly."""
    ran = worker_pythons(pipeline["home"])
    assert {"train", "evaluate", "export"} <= set(ran)
    assert all(pythons == {str(worker_env)} for pythons in ran.values()), ran


def _held_out_recomputes(report: dict, run_id: str) -> dict:
    """The preflight's scores against the held-out answers are the gate's, on the run's golden pairs, by the
    studio's thresholds, and recompute from the report's own examples."""
    ex, held = report["examples"], report["held_out"]
    golden = preflights.golden_pairs(runs.get_run(run_id, OPERATOR)["dataset_version_id"], len(ex))
    assert [e["held_out_answer"] for e in ex] == [p["output"] for p in golden]
    assert held["gguf"]["thresholds"] == held["merged"]["thresholds"] == gate.thresholds()
    for side, answers in (("gguf", [e["gguf_answer"] for e in ex]), ("merged", [e["reference_answer"] for e in ex])):
        again = scoring.score([e["held_out_answer"] for e in ex], answers, gate.thresholds())
        assert (held[side]["bleu"], held[side]["rouge_l"], held[side]["passed"]) == (again.bleu, again.rouge_l,
                                                                                     again.passed)
    assert [e["gguf_rouge_l_vs_held_out"] for e in ex] == [p["rouge_l"] for p in scoring.score(
        [e["held_out_answer"] for e in ex], [e["gguf_answer"] for e in ex]).per_example]
    assert held["gguf_below_gate_where_merged_passes"] == (held["merged"]["passed"] and not held["gguf"]["passed"])
    print(f"\nagainst the held-out answers ({report['n']} prompts, {report['max_tokens']} tokens): GGUF BLEU "
          f"{held['gguf']['bleu']:.3f} ROUGE-L {held['gguf']['rouge_l']:.3f}, merged BLEU {held['merged']['bleu']:.3f} "
          f"ROUGE-L {held['merged']['rouge_l']:.3f}")
    return held


def test_deploy_the_passing_run_through_the_cli_then_delete_and_roll_back(pipeline, monkeypatch, worker_env):
    """`python -m core deploy --run RUN --name NAME` on the fixture's passing run: no override, the default
    quantization for a model this small (q8_0, the fixture's export reused), a passing preflight, and a
    release that names the evaluation it rests on; then the release is listed, deleted and rolled back to,
    each step recorded."""
    monkeypatch.setenv("VITUNE_HOME", str(pipeline["home"]))
    home, run_id = pipeline["home"], pipeline["run"]
    assert pipeline["evaluation"]["passed"]
    done = cli("deploy", "--run", run_id, "--name", "gemma3-vi-ghichu:v1", "--golden", "3", "--json", home=home)
    release = json.loads(done.stdout)
    assert "reusing export job" in done.stderr and "checksum verified" in done.stderr
    assert release["quantization"] == exports.default_quant_for_run(run_id) == "q8_0"
    assert release["preflight"]["passed"], release["preflight"]["reason"]
    row = store.one("SELECT * FROM releases WHERE id = ?", [release["id"]])
    assert row["override_reason"] is None and row["run_id"] == run_id and row["tag"] == "v1"
    assert row["evaluation_id"] == pipeline["evaluation"]["evaluation"] and row["state"] == "active"
    assert json.loads(row["thresholds"]) == {"bleu": 0.35, "rouge_l": 0.45}
    assert row["gguf_sha256"] == exporter.sha256(Path(release["gguf_path"])) == pipeline["export"]["sha256"]["q8_0"]
    modelfile_text = Path(release["modelfile_path"]).read_text()
    assert modelfile_text.startswith(f"FROM {release['gguf_path']}") and "<start_of_turn>" in modelfile_text
    report = json.loads(row["preflight"])
    assert report["n"] == 3 and all(e["prompt_matches_training"] for e in report["examples"])
    # the q8_0 GGUF keeps its stop and answers like the merged model
    assert report["runaway_answers"] == 0 and report["empty_answers"] == 0, report["examples"]
    assert report["rouge_l"] > 0.8 and report["exact_match_rate"] >= 1 / 3, report["examples"]
    assert release["preflight"]["exact_match_rate"] == report["exact_match_rate"]
    # both models against the held-out answers, in the gate's terms: printed by the CLI, kept with the release
    assert release["preflight"]["held_out"] == report["held_out"] == _held_out_recomputes(report, run_id)
    assert "against the held-out answers of the same prompts (cut at 48 tokens): GGUF BLEU" in done.stderr
    assert worker_pythons(home)["preflight"] == {str(worker_env)}  # the preflight worker was app-free too
    audit = store.rows("SELECT action FROM audit_log WHERE subject = ?", [run_id])
    assert {"action": "gate.override"} not in audit
    # what it was judged on: the merged model's evaluation and the q8_0 file's own, both passing
    record = json.loads(row["gate_record"])
    assert release["gate_record"] == record and record["releasable"] and record["override"] is None
    judged = [(c["name"], c["passed"]) for c in record["checks"]]
    assert judged[:2] == [("merged_model", True), ("gguf", True)] and ("quant_cost", True) in judged
    assert record["checks"][0]["evaluation"] == pipeline["evaluation"]["evaluation"]
    assert record["checks"][1]["numbers"]["sha256"] == row["gguf_sha256"]
    assert f"gate, {run_id} · q8_0: the q8_0 GGUF's own evaluation" in done.stderr

    listed = cli("releases", "list", home=home).stdout
    assert release["id"] in listed and "gemma3-vi-ghichu:v1" in listed
    assert "judged on: gguf [PASS] the q8_0 GGUF's own evaluation" in listed
    back = json.loads(cli("releases", "rollback", release["id"], "--json", home=home).stdout)
    assert back["rollback_of"] == release["id"] and back["state"] == "active"
    assert releases.get_release(release["id"])["state"] == "replaced"
    deleted = cli("releases", "delete", release["id"], "--json", home=home)
    assert json.loads(deleted.stdout)["state"] == "deleted"
    again = cli("releases", "delete", release["id"], home=home, check=False)
    assert again.returncode == 1 and "already deleted" in again.stderr
    undead = cli("releases", "rollback", release["id"], home=home, check=False)   # a deleted release stays so
    assert undead.returncode == 1 and f"release {release['id']} was deleted" in undead.stderr
    # two releases of one export never share a Modelfile: each writes its own, named by its id
    assert Path(release["modelfile_path"]).name == f"Modelfile.{release['id']}"
    assert Path(back["modelfile_path"]).name == f"Modelfile.{back['id']}"
    assert Path(release["modelfile_path"]).read_text() == modelfile_text   # the rollback left the first alone
    new = store.one("SELECT * FROM releases WHERE id = ?", [back["id"]])
    assert new["modelfile"] == row["modelfile"] and new["gguf_sha256"] == row["gguf_sha256"]
    assert json.loads(new["preflight"]) == report and new["override_reason"] is None
    actions = [r["action"] for r in store.rows("SELECT action FROM audit_log WHERE action LIKE 'release.%' "
                                                "ORDER BY id")]
    assert actions[-3:] == ["release.created", "release.rollback", "release.deleted"]
    missing = cli("releases", "rollback", "rel-nope", home=home, check=False)
    assert missing.returncode == 1 and "no release 'rel-nope'" in missing.stderr
    if ollama.ollama_binary() is None:
        assert row["ollama_status"].startswith("ollama is not installed") and new["ollama_status"] == ollama.NO_BINARY
        pytest.skip("no ollama binary here: deploy and rollback ran up to `ollama create`; the call itself was skipped")


def test_an_export_whose_gguf_changed_is_not_reused(pipeline, monkeypatch):
    """Deploy reuses an earlier export (``exports.latest``) only while the GGUF's sha256 is the one its export
    recorded: with one byte more in the q4_k_m file there is no q4_k_m export to reuse (deploy exports anew),
    while the same export's untouched q8_0 is still reused; with the byte gone again, q4_k_m is reused again."""
    monkeypatch.setenv("VITUNE_HOME", str(pipeline["home"]))
    run_id = pipeline["run"]
    job = exports.latest(run_id, "q4_k_m")
    assert job is not None and job["result"] == pipeline["export"]   # the fixture's export, intact
    gguf = Path(job["result"]["gguf"]["q4_k_m"])
    size = gguf.stat().st_size
    try:
        with gguf.open("ab") as fh:
            fh.write(b"\0")
        assert exports.latest(run_id, "q4_k_m") is None
        assert exports.latest(run_id, "q8_0")["id"] == job["id"]
    finally:
        os.truncate(gguf, size)   # as it was, for the other tests of the pipeline
    assert exporter.sha256(gguf) == job["result"]["sha256"]["q4_k_m"]
    assert exports.latest(run_id, "q4_k_m")["id"] == job["id"]


def test_rollback_refuses_a_gguf_whose_sha256_changed(pipeline, monkeypatch):
    """A release of the passing run (a real preflight of one golden prompt); its GGUF then changes on disk
    (one byte appended): rolling back to it is refused, and nothing is recorded; with the file as it was,
    the same rollback goes through."""
    monkeypatch.setenv("VITUNE_HOME", str(pipeline["home"]))
    prepared = releases.prepare(pipeline["run"], "gemma3-vi-rollback:v1", actor=OPERATOR, on_progress=lambda m: None)
    release = releases.release(prepared, actor=OPERATOR, golden=1, on_progress=lambda m: None)
    gguf = Path(release["gguf_path"])
    assert release["gguf_sha256"] == exporter.sha256(gguf)
    before = len(releases.list_releases(OPERATOR))
    size = gguf.stat().st_size
    try:
        with gguf.open("ab") as fh:
            fh.write(b"\0")
        with pytest.raises(releases.DeployRefused, match=re.escape(
                f"release {release['id']}: {gguf} no longer matches its recorded sha256; refusing to roll back")):
            releases.rollback(release["id"], actor=OPERATOR, on_progress=lambda m: None)
    finally:
        os.truncate(gguf, size)   # as it was, for the other tests of the pipeline
    assert len(releases.list_releases(OPERATOR)) == before
    assert store.one("SELECT count(*) AS n FROM audit_log WHERE action = 'release.rollback' AND detail LIKE ?",
                     [f"%{release['id']}%"])["n"] == 0
    back = releases.rollback(release["id"], actor=OPERATOR, on_progress=lambda m: None)
    assert back["rollback_of"] == release["id"] and back["gguf_sha256"] == release["gguf_sha256"]


def test_q4_k_m_of_the_passing_run_departs_from_it_and_a_lost_stop_is_blocked(pipeline, pipeline_ggufs, monkeypatch):
    """Why the default is q8_0 for this model: at q4_k_m the same run no longer answers like the merged model
    (q8_0 does: the test above). Where it also loses its stop on most golden prompts, the preflight blocks
    it, names q8_0, and nothing is released. It loses its stop on most of them in most trainings, not in
    all: CPU training differs in its last digits from one run to the next (loss 1.327 against 1.300 at
    step 20), and the q4_k_m of one CI run's training stopped on 4 of 8 and passed."""
    monkeypatch.setenv("VITUNE_HOME", str(pipeline["home"]))
    home, run_id = pipeline["home"], pipeline["run"]
    before = len(releases.list_releases(OPERATOR))
    # the gate judges the q4_k_m file on its own evaluation: where it fails, the release is refused, naming its
    # scores, however well the merged model did, and nothing is released; an audited override goes on
    q4 = store.one("SELECT * FROM evaluations WHERE id = ?", [pipeline_ggufs["q4_k_m"]["evaluation"]])
    refused = cli("deploy", "--run", run_id, "--name", "gemma3-vi-ghichu:q4", "--quant", "q4_k_m", home=home,
                  check=False)
    override = []
    if not q4["passed"]:
        assert refused.returncode == 1 and "the q4_k_m release of run" in refused.stderr, refused.stderr[-2000:]
        assert (f"the q4_k_m GGUF's own evaluation {q4['id']} (n=22): BLEU {q4['bleu']:.3f}, ROUGE-L "
                f"{q4['rouge_l']:.3f} is below the gate") in refused.stderr
        assert len(releases.list_releases(OPERATOR)) == before
        override = ["--override-reason", "q4 for a size demo, scores known"]
    proc = cli("deploy", "--run", run_id, "--name", "gemma3-vi-ghichu:q4", "--quant", "q4_k_m", "--golden", "8",
               "--json", *override, home=home, check=False)
    if override:
        audit = store.rows("SELECT actor, detail FROM audit_log WHERE subject = ? AND action = 'gate.override'",
                           [run_id])
        detail = json.loads(audit[-1]["detail"])
        assert detail["reason"] == override[1] and detail["quantization"] == "q4_k_m"
        assert any(f"BLEU {q4['bleu']:.3f}" in f for f in detail["failing"]) and audit[-1]["actor"] == OPERATOR.name
    row = store.one("SELECT result FROM jobs WHERE kind = 'preflight' ORDER BY id DESC LIMIT 1")
    report = row["result"] if isinstance(row["result"], dict) else json.loads(row["result"])
    assert report["n"] == 8 and all(e["prompt_matches_training"] for e in report["examples"]), report
    # it departs from the merged model's answers (q8_0 matches them: exact on at least a third, ROUGE-L > 0.8)
    assert report["exact_match_rate"] <= 0.5 and report["rouge_l"] < 0.8, report["examples"]
    released, _ = preflight.judge(report["examples"], preflight.MAX_TOKENS)   # the rule the worker applied
    assert report["passed"] == released
    held = _held_out_recomputes(report, run_id)   # what the departure costs in the gate's terms, said either way
    assert "against the held-out answers of the same prompts" in proc.stderr
    assert ("the quantization costs this run its gate" in proc.stderr) == held["gguf_below_gate_where_merged_passes"]
    if not released:   # it lost its stop on most of them
        assert proc.returncode == 1, proc.stdout
        assert "preflight blocked the release" in proc.stderr and "quantization is the likely cause" in proc.stderr
        assert f"--run {run_id} --name gemma3-vi-ghichu:q4 --quant q8_0" in proc.stderr
        assert len(releases.list_releases(OPERATOR)) == before
    else:   # it kept its stop: the preflight lets it through and says so; the release records the report
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "no runaway answers beyond the merged model's" in proc.stderr + proc.stdout
        assert len(releases.list_releases(OPERATOR)) == before + 1
        record = json.loads(proc.stdout)["gate_record"]   # released over the gate: the record says so
        assert (record["override"] is not None) == bool(override) and record["releasable"] == bool(q4["passed"])


def test_deploy_refuses_a_failing_run_then_records_an_override(home):
    """A run that fails the gate (1 step on the customer-care + contracts sample, still in its warm-up, so
    the adapter leaves the base model as it was): deploy refuses it, then records the override reason."""
    from core.datasets import versions

    cli("dataset", "import-samples", home=home)
    version = versions.find_by_name("sample-cskh-hopdong")["id"]
    train = json.loads(cli("train", "--dataset", version, "--preset", "quick test (CPU, 20 steps)", "--max-steps",
                           "1", "--json", home=home).stdout)
    run_id = train["run"]
    ev = json.loads(cli("evaluate", "--run", run_id, "--limit", "2", "--max-new-tokens", "16", "--json",
                        home=home).stdout)
    assert not ev["passed"], ev
    refused = cli("deploy", "--run", run_id, "--name", "vi-cskh:v1", home=home, check=False)
    assert refused.returncode == 1 and "not releasable" in refused.stderr and ev["evaluation"] in refused.stderr
    bad = cli("deploy", "--run", run_id, "--name", "Bad Name", "--override-reason", "demo", home=home, check=False)
    assert bad.returncode == 1 and "not a valid Ollama model name" in bad.stderr
    done = cli("deploy", "--run", run_id, "--name", "vi-cskh:v1", "--golden", "2",
               "--override-reason", "client demo only, not production", "--json", home=home)
    release = json.loads(done.stdout)
    modelfile_text = Path(release["modelfile_path"]).read_text()
    assert modelfile_text.startswith(f"FROM {release['gguf_path']}") and "<start_of_turn>" in modelfile_text
    row = store.one("SELECT * FROM releases WHERE id = ?", [release["id"]])
    assert row["override_reason"] == "client demo only, not production" and row["tag"] == "v1"
    assert row["quantization"] == "q8_0"  # the default for this model, override or not
    assert row["evaluation_id"] == ev["evaluation"]
    assert row["gguf_sha256"] == exporter.sha256(Path(release["gguf_path"]))
    preflight = json.loads(row["preflight"])
    assert release["preflight"]["exact_match_rate"] == preflight["exact_match_rate"]
    assert len(preflight["examples"]) == 2 and all(e["prompt_matches_training"] for e in preflight["examples"])
    audit = store.rows("SELECT actor, role, detail FROM audit_log WHERE subject = ? AND action = 'gate.override'",
                       [run_id])
    assert len(audit) == 1 and json.loads(audit[0]["detail"])["reason"] == "client demo only, not production"
    assert (audit[0]["actor"], audit[0]["role"]) == (OPERATOR.name, "admin")   # the CLI acts as the operator
    if ollama.ollama_binary() is None:
        assert row["ollama_status"].startswith("ollama is not installed")
        pytest.skip("no ollama binary here: everything up to `ollama create` ran; the call itself was skipped")


def test_general_vietnamese_kept_by_the_trained_run_and_its_gguf(pipeline, monkeypatch):
    """The retention check on the fixture's run (not trained again), limited to the first 3 pairs of each set
    and 16 new tokens to stay short (CI's time): the base model, the run and its q8_0 GGUF answer general Vietnamese; every
    stored number recomputes from the stored examples, one answer's NLL recomputes with plain transformers
    (labels masked to the answer), and the q8_0 GGUF's perplexity (llama.cpp's logits) is the merged run's
    within a few per cent."""
    import math

    from core.datasets import versions
    from core.evaluation import retention
    from transformers import AutoModelForCausalLM

    from core.models import load_tokenizer

    monkeypatch.setenv("VITUNE_HOME", str(pipeline["home"]))
    run = pipeline["run"]
    out = json.loads(cli("retention", "run", "--run", run, "--limit", "3", "--max-new-tokens", "16", "--quant", "q8_0",
                         "--json", home=pipeline["home"]).stdout)
    general = retention.general_test_rows(versions.get_version(pipeline["dataset"]))[1]
    sets = {"shipped"} | ({"general-test"} if general else set())
    results = store.rows("SELECT * FROM retention_results ORDER BY set_name, target")
    assert {(r["target"], r["set_name"]) for r in results} == {(t, s) for t in ("base", "run", "gguf") for s in sets}
    for r in results:
        exs = store.rows("SELECT * FROM retention_examples WHERE result_id = ? ORDER BY idx", [r["id"]])
        assert len(exs) == r["n"] == min(3, len(general) if r["set_name"] == "general-test" else 239)
        again = scoring.score([e["reference"] for e in exs], [e["prediction"] for e in exs])
        assert (r["bleu"], r["rouge_l"]) == pytest.approx((again.bleu, again.rouge_l), abs=1e-12)
        tokens = sum(e["tokens"] for e in exs)
        assert tokens == r["answer_tokens"] and 1 < r["perplexity"] < 1e4
        assert r["perplexity"] == pytest.approx(math.exp(sum(e["nll"] * e["tokens"] for e in exs) / tokens), rel=1e-9)
        assert (r["run_id"] is None) == (r["target"] == "base") and (r["quant"] == "q8_0") == (r["target"] == "gguf")
    by = {(r["target"], r["set_name"]): r for r in results}
    # q8_0 keeps the merged run's next-token distribution: their perplexities agree within 5 %
    assert abs(math.log(by[("gguf", "shipped")]["perplexity"] / by[("run", "shipped")]["perplexity"])) < 0.05
    # the first shipped answer's NLL under the base model, recomputed with plain transformers
    first = retention.shipped_rows()[0]
    stored = store.one("SELECT nll, tokens FROM retention_examples WHERE result_id = ? AND idx = 0",
                       [by[("base", "shipped")]["id"]])
    tok = load_tokenizer(by[("base", "shipped")]["base_model"])
    prompt = prompt_format.render_prompt(first, "chat", tok)
    full = prompt_format.render_training_text(first, "chat", tok)
    assert full.startswith(prompt)
    ids = tok(full, return_tensors="pt", add_special_tokens=not full.startswith(tok.bos_token))["input_ids"]
    n_prompt = len(tok(prompt, add_special_tokens=not prompt.startswith(tok.bos_token))["input_ids"])
    labels = ids.clone()
    labels[:, :n_prompt] = -100
    model = AutoModelForCausalLM.from_pretrained(by[("base", "shipped")]["base_model"], dtype=torch.float32)
    with torch.inference_mode():
        loss = model(input_ids=ids, labels=labels).loss.item()
    assert stored["tokens"] == ids.shape[1] - n_prompt
    assert stored["nll"] == pytest.approx(loss, rel=5e-3)
    # the check the gate asks, on the CLI and in the verdict
    assert set(out["check"]["numbers"]["sets"]) == sets and out["check"]["passed"] in (True, False)
    verdict = gate.verdict(run)
    assert verdict["retention"].passed == out["check"]["passed"]
    if out["check"]["passed"] is False:
        assert not verdict["releasable"] and "general Vietnamese not kept" in verdict["reason"]
    gguf = retention.check(run, "q8_0")
    assert set(gguf.numbers["sets"]) == sets and gguf.passed in (True, False)
    s = out["check"]["numbers"]["sets"]["shipped"]
    rows = json.loads(cli("retention", "examples", "--run", run, "--set", "shipped", "--json",
                          home=pipeline["home"]).stdout)
    assert sorted(r["idx"] for r in rows) == list(range(3)) and s["tuned_id"] and s["base_id"]
