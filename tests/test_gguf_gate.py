"""The gate judges the shipped artifact (issue 28): an evaluation of an exported GGUF at its quantization (or of
the Ollama release) is its own row, tied to the file by its sha256; a release needs that evaluation to cover the
gate's share of the held-out split and pass, the merged model passing is not enough; each release keeps the
gate's record (named checks, their numbers, their reasons in English and Vietnamese), shown by the CLI, the
release list and the client's report in the reader's language.

The gate's logic runs on real DuckDB homes with evaluations stored through the supervisor's own ingest; the
batched llama.cpp generation runs for real on the default model's GGUF. The slow end-to-end (train, export,
evaluate the GGUFs, deploy through the CLI and the Deploy page) is in test_pipeline.py and test_browser.py."""
import html
import json
from pathlib import Path

import pytest

from core import i18n, store
from core.deploy import releases
from core.evaluation import evaluations, gate, report
from tests.conftest import OPERATOR, cli
from tests.test_evaluate import BASE_PREDS, REFS, _run, store_evaluation

SHA = "ab" * 32          # the GGUF a release would ship (its sha256)
OLDER = "cd" * 32        # an earlier export's GGUF


def store_gguf_evaluation(home: Path, evaluation_id: str, predictions: list[str], *, run_id: str, dataset: str,
                          quantization: str = "q4_k_m", sha256: str = SHA, target: str = "gguf") -> dict:
    """A GGUF's evaluation as the worker leaves it (predictions + result with its backend), ingested as the
    supervisor ingests it."""
    from core.evaluation import scoring

    th = gate.thresholds()
    scores = scoring.score(REFS[: len(predictions)], predictions, th)
    path = home / f"{evaluation_id}.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for i, (ref, pred, per) in enumerate(zip(REFS, predictions, scores.per_example)):
            fh.write(json.dumps({"idx": i, "instruction": f"Câu hỏi {i}", "input": "", "reference": ref,
                                 "prediction": pred, **per}, ensure_ascii=False) + "\n")
    cfg = {"evaluation_id": evaluation_id, "run_id": run_id, "base_model": "models/base/gemma-3-270m",
           "dataset_version_id": dataset, "split": "test", "decoding": {"max_new_tokens": 48, "temperature": 0.0,
                                                                       "top_p": 1.0, "top_k": 0, "batch_size": 0,
                                                                       "stop": []},
           "prompt_format": "chat", "limit": None, "owner": "lan", "project": "default", "target": target,
           "quantization": quantization, "export_job_id": 7, "gguf_path": f"/exports/{quantization}.gguf",
           "gguf_sha256": sha256, **({"ollama_model": "vi-cskh:v1"} if target == "ollama" else {})}
    backend = {"engine": "llama.cpp", "device": "CPU", "gpu_layers": 0, "layers": 18, "n_threads": 2,
               "n_parallel": 8, "tokens_per_s": 50.0,
               "fallback": "this llama.cpp was built without a GPU backend (CUDA)"}
    result = {**scores.summary(), "duration_s": 2.0, "generation_s": 1.5, "scoring_s": 0.01, "examples_per_s": 2.7,
              "prompt_format": "chat", "predictions": str(path), "backend": backend}
    with store.connect() as con:
        evaluations.ingest(con, {"id": None, "config": cfg, "owner": "lan"}, result)
    return evaluations.get_evaluation(evaluation_id)


def _check(rec: dict, name: str) -> dict:
    return next(c for c in rec["checks"] if c["name"] == name)


def test_a_release_needs_the_ggufs_own_evaluation_the_merged_model_passing_is_not_enough(home):
    run_id, version = _run(home)
    store_evaluation(home, "eval-merged", list(REFS), run_id=run_id, dataset=version)
    assert gate.verdict(run_id)["releasable"]   # the merged model (adapter on its HF base) passes

    # no evaluation of this GGUF: refused, saying how to evaluate it
    rec = gate.record(run_id, "q4_k_m", SHA)
    assert [c["name"] for c in rec["checks"]] == ["merged_model", "gguf"] and not rec["releasable"]
    assert _check(rec, "merged_model")["passed"] and _check(rec, "merged_model")["evaluation"] == "eval-merged"
    missing = _check(rec, "gguf")
    assert not missing["passed"] and missing["gates"] and missing["evaluation"] is None
    assert missing["reason"]["en"] == (f"the q4_k_m GGUF (sha256 {SHA[:12]}…) has no evaluation on the held-out "
                                       f"split: evaluate it (python -m core evaluate --run {run_id} --gguf q4_k_m)")
    # an evaluation of another file (an earlier export) is not one of this file
    store_gguf_evaluation(home, "eval-older-file", list(REFS), run_id=run_id, dataset=version, sha256=OLDER)
    assert _check(gate.record(run_id, "q4_k_m", SHA), "gguf")["evaluation"] is None
    # nor is the same file's evaluation at another quantization's name, nor a passing evaluation of one example
    store_gguf_evaluation(home, "eval-gguf-one", list(REFS)[:1], run_id=run_id, dataset=version)
    small = _check(gate.record(run_id, "q4_k_m", SHA), "gguf")
    assert not small["passed"] and small["evaluation"] == "eval-gguf-one"
    assert small["reason"]["en"].startswith(f"the q4_k_m GGUF's evaluation eval-gguf-one covers 1 of the {len(REFS)} "
                                            f"held-out pairs; the gate needs at least {len(REFS)}")
    # the GGUF fails where the merged model passes: refused, naming the GGUF's own scores
    store_gguf_evaluation(home, "eval-gguf-fail", BASE_PREDS, run_id=run_id, dataset=version)
    rec = gate.record(run_id, "q4_k_m", SHA)
    failed = _check(rec, "gguf")
    assert not rec["releasable"] and not failed["passed"] and failed["evaluation"] == "eval-gguf-fail"
    assert failed["reason"]["en"] == ("the q4_k_m GGUF's own evaluation eval-gguf-fail (n=4): BLEU 0.000, ROUGE-L "
                                      "0.233 is below the gate (BLEU > 0.35, ROUGE-L > 0.45); the merged model passing "
                                      "is not enough")
    assert failed["numbers"]["bleu"] == 0 and failed["numbers"]["rouge_l"] == pytest.approx(7 / 30)
    assert failed["numbers"]["sha256"] == SHA and failed["numbers"]["need"] == len(REFS)
    # in Vietnamese too (the record keeps both), the numbers the same
    assert failed["reason"]["vi"] != failed["reason"]["en"] and "0.233" in failed["reason"]["vi"]
    assert gate.failing(rec) == [failed["reason"]["en"]] and str(gate.failing_message(rec)) == failed["reason"]["en"]
    assert i18n.render(gate.failing_message(rec), lambda t: i18n.translate(t, "vi")) == failed["reason"]["vi"]
    # the merged model's verdict still rests on the merged model's evaluation, not on the GGUF's later ones
    assert gate.verdict(run_id)["evaluation"]["id"] == "eval-merged"
    # its own passing evaluation of the whole split: releasable; a later failing one outweighs it again
    store_gguf_evaluation(home, "eval-gguf-pass", list(REFS), run_id=run_id, dataset=version)
    rec = gate.record(run_id, "q4_k_m", SHA)
    assert rec["releasable"] and _check(rec, "gguf")["evaluation"] == "eval-gguf-pass"
    assert _check(rec, "gguf")["reason"]["en"].startswith("the q4_k_m GGUF's own evaluation eval-gguf-pass covers 4 "
                                                          "of 4 held-out pairs and passed: BLEU 1.000, ROUGE-L 1.000")
    assert not gate.record(run_id, "q8_0", SHA)["releasable"]   # q8_0 is another file, with no evaluation
    # the Ollama model made from the same file counts as the file's evaluation
    store_gguf_evaluation(home, "eval-ollama-fail", BASE_PREDS, run_id=run_id, dataset=version, target="ollama")
    rec = gate.record(run_id, "q4_k_m", SHA)
    assert not rec["releasable"] and _check(rec, "gguf")["artifact"] == f"{run_id} · ollama vi-cskh:v1"
    # a merged model that fails is refused whatever its GGUF does
    store_evaluation(home, "eval-merged-fail", BASE_PREDS, run_id=run_id, dataset=version)
    store_gguf_evaluation(home, "eval-gguf-pass-2", list(REFS), run_id=run_id, dataset=version)
    rec = gate.record(run_id, "q4_k_m", SHA)
    assert not rec["releasable"] and not _check(rec, "merged_model")["passed"] and _check(rec, "gguf")["passed"]


def test_an_extra_check_joins_the_record_and_gates(home, monkeypatch):
    """The record is a list of named checks: quantization cost, retention and the like join it by appending a
    function to ``gate.EXTRA_CHECKS``; one that gates and fails refuses the release, one that does not only shows."""
    run_id, version = _run(home)
    store_evaluation(home, "eval-merged", list(REFS), run_id=run_id, dataset=version)
    store_gguf_evaluation(home, "eval-gguf", list(REFS), run_id=run_id, dataset=version)
    seen = []

    def kl(ctx):
        seen.append((ctx["run"]["id"], ctx["quantization"], ctx["sha256"]))
        return gate.check("quantization_cost", False, i18n.M("not judged"), gates=False, numbers={"kl": 0.2})

    monkeypatch.setattr(gate, "EXTRA_CHECKS", [kl])
    rec = gate.record(run_id, "q4_k_m", SHA)
    assert seen == [(run_id, "q4_k_m", SHA)] and rec["releasable"]
    assert _check(rec, "quantization_cost") == {"name": "quantization_cost", "passed": False, "gates": False,
                                                "evaluation": None, "artifact": None, "numbers": {"kl": 0.2},
                                                "reason": {"en": "not judged", "vi": i18n.translate("not judged", "vi")},
                                                "message": "not judged"}
    monkeypatch.setattr(gate, "EXTRA_CHECKS", [lambda ctx: gate.check("retention", False, i18n.M("not judged"))])
    assert not gate.record(run_id, "q4_k_m", SHA)["releasable"]


def test_each_release_keeps_the_gates_record_and_every_view_shows_it(home):
    run_id, version = _run(home)
    store_evaluation(home, "eval-merged", list(REFS), run_id=run_id, dataset=version)
    store_gguf_evaluation(home, "eval-gguf-fail", BASE_PREDS, run_id=run_id, dataset=version)
    rec = gate.record(run_id, "q4_k_m", SHA)
    rec["override"] = {"reason": "client demo only", "by": OPERATOR.name}
    prepared = {"run_id": run_id, "name": "vi-cskh:q4", "quantization": "q4_k_m", "gguf": "/exports/q4_k_m.gguf",
                "gguf_sha256": SHA, "verdict": gate.verdict(run_id), "gate_record": gate.stored(rec),
                "override_reason": "client demo only"}
    made = releases._record(prepared, "FROM /exports/q4_k_m.gguf\n", None, "ollama is not installed", OPERATOR)
    got = releases.get_release(made["id"])
    assert got["gate_record"]["checks"] == gate.stored(rec)["checks"] and "message" not in got["gate_record"]["checks"][0]
    assert got["gate_record"]["override"] == {"reason": "client demo only", "by": OPERATOR.name}
    # releases list: each check and its reason under the release; --json carries the record
    text = cli("releases", "list", home=home).stdout
    assert f"judged on: gguf [FAIL] {_check(rec, 'gguf')['reason']['en']}" in text
    assert "judged on: merged_model [PASS]" in text and f"override by {OPERATOR.name}: client demo only" in text
    listed = json.loads(cli("releases", "list", "--json", home=home).stdout)
    assert listed[0]["gate_record"]["checks"][1]["evaluation"] == "eval-gguf-fail"
    # the client's report of the GGUF's evaluation shows what the release was judged on, in the reader's language
    en = report.build("eval-gguf-fail", lang="en")
    assert '<html lang="en">' in en and f"The gate's record of release {made['id']} (q4_k_m)" in en
    text_of = lambda t: html.escape(t, quote=False)   # as a text node writes it
    assert text_of(_check(rec, "gguf")["reason"]["en"]) in en and "Released over the gate by" in en
    assert f"GGUF q4_k_m · sha256 {SHA[:16]}…" in en and "llama.cpp on CPU (0/18 layers offloaded" in en
    vi = report.build("eval-gguf-fail", lang="vi")
    assert '<html lang="vi">' in vi and text_of(_check(rec, "gguf")["reason"]["vi"]) in vi
    for english in ("<h1>Evaluation report</h1>", "<h2>Examples</h2>", "<th>Question</th>", "<th>Reference</th>",
                    "<th>Prediction</th>", "The gate's record", "Words that differ", "Released over the gate by",
                    "<th>Artifact</th>", "<th>Backend</th>", "<th>Decoding</th>"):
        assert english not in vi, english
    assert i18n.translate("Evaluation report", "vi") in vi
    # the CLI writes it in the language asked for (the operator's by default)
    out = home / "r.html"
    cli("evaluate", "report", "eval-gguf-fail", "--out", str(out), "--lang", "vi", home=home)
    assert '<html lang="vi">' in out.read_text(encoding="utf-8")
    # a GGUF's report compares it with its own run's merged model, what the quantization cost
    assert f"Compared with eval-merged · {run_id}" in en


def test_the_leaderboard_names_the_run_and_its_ggufs_side_by_side(home):
    run_id, version = _run(home)
    store_evaluation(home, "eval-merged", list(REFS), run_id=run_id, dataset=version)
    store_gguf_evaluation(home, "eval-q8", list(REFS)[:3] + ["Xin chào."], run_id=run_id, dataset=version,
                          quantization="q8_0", sha256=OLDER)
    store_gguf_evaluation(home, "eval-q4", BASE_PREDS, run_id=run_id, dataset=version)
    board = evaluations.leaderboard(OPERATOR, version)
    assert [(e["id"], e["artifact"]) for e in board] == [
        ("eval-merged", run_id), ("eval-q8", f"{run_id} · q8_0"), ("eval-q4", f"{run_id} · q4_k_m")]
    assert board[2]["target"] == "gguf" and board[2]["backend"]["device"] == "CPU"
    assert str(evaluations.backend_text(board[2])).startswith("llama.cpp on CPU (0/18 layers offloaded, 2 threads, "
                                                               "8 sequences in parallel, 50.0 tokens/s); fell back: ")
    text = cli("evaluate", "list", "--dataset", version, home=home).stdout
    assert f"{run_id} · q8_0" in text and f"{run_id} · q4_k_m" in text


def test_gate_cli_prints_the_record_and_an_artifact_that_cannot_be_evaluated_is_said_plainly(home):
    run_id, version = _run(home)
    store_evaluation(home, "eval-merged", list(REFS), run_id=run_id, dataset=version)
    proc = cli("gate", "--run", run_id, "--quant", "q4_k_m", "--json", home=home, check=False)
    out = json.loads(proc.stdout)
    assert proc.returncode == 1 and not out["releasable"] and out["quantization"] == "q4_k_m"
    assert out["evaluation"] == "eval-merged" and out["gguf_evaluation"] is None
    assert [c["name"] for c in out["checks"]] == ["merged_model", "gguf"] and out["checks"][0]["passed"]
    assert out["reason"] == out["checks"][1]["reason"]["en"] == (
        "the run has no intact q4_k_m export yet: export it, then evaluate the GGUF (deploy does both)")
    assert out["checks"][1]["reason"]["vi"] != out["reason"]
    # evaluating an artifact that is not there: a clear message, nothing queued
    before = len(store.rows("SELECT id FROM jobs"))
    bad = cli("evaluate", "--run", run_id, "--gguf", "q8_0", home=home, check=False)
    assert bad.returncode == 1 and bad.stderr.strip() == (
        f"error: run {run_id} has no intact q8_0 export to evaluate: export it first (python -m core export --run "
        f"{run_id} --quant q8_0)")
    bad = cli("evaluate", "--run", run_id, "--ollama", "vi-cskh:v1", home=home, check=False)
    assert bad.returncode == 1 and "has no release named vi-cskh:v1" in bad.stderr
    prepared = {"run_id": run_id, "name": "vi-cskh:v1", "quantization": "q4_k_m", "gguf": "/exports/q4_k_m.gguf",
                "gguf_sha256": SHA}
    releases._record(prepared, "FROM /exports/q4_k_m.gguf\n", None, "ollama is not installed", OPERATOR)
    bad = cli("evaluate", "--run", run_id, "--ollama", "vi-cskh:v1", home=home, check=False)
    assert bad.returncode == 1 and "cannot evaluate the Ollama model vi-cskh:v1: the Ollama server is not running at " \
                                   "http://127.0.0.1:11434" in bad.stderr
    both = cli("evaluate", "--run", run_id, "--gguf", "q8_0", "--ollama", "vi-cskh:v1", home=home, check=False)
    assert both.returncode == 1 and "not both at once" in both.stderr
    assert len(store.rows("SELECT id FROM jobs")) == before


@pytest.mark.extended   # about a minute of llama.cpp on the shared 2-core machine
def test_batched_llama_cpp_decodes_like_one_at_a_time_and_keeps_each_answer_in_its_place(default_model, tokenizer):
    """One sequence at a time, the evaluation's llama.cpp generator gives the very tokens of llama-cpp-python's
    own greedy loop (the preflight's, the export smoke test's); with several sequences in parallel each answer
    comes back in its prompt's place (the base model repeats each question first), on every core."""
    from core import models, prompt_format
    from core.deploy import exporter
    from core.evaluation import gguf_eval
    from core.evaluation.inference import Decoding

    gguf = models.cached_gguf()
    questions = ["Thủ đô của Việt Nam là gì?", "Xin chào, bạn là ai?", "1 + 1 bằng mấy?"]
    prompts = [prompt_format.render_prompt({"instruction": q}, "chat", tokenizer) for q in questions]
    expected = [prompt_format.clean_answer(tokenizer.decode(ids, skip_special_tokens=True), "chat")
                for ids in exporter.llama_generate(gguf, prompts, max_tokens=16)]
    one = gguf_eval.LlamaBatchGenerator(str(gguf), n_parallel=1)
    try:
        answers, stats = one.generate(prompts, Decoding(max_new_tokens=16), "chat")
    finally:
        one.close()
    assert answers == expected
    assert stats["generated_tokens"] > 0 and stats["tokens_per_s"] > 0 and stats["n_parallel"] == 1
    many = gguf_eval.LlamaBatchGenerator(str(gguf), n_parallel=3)
    try:
        answers, stats = many.generate(prompts, Decoding(max_new_tokens=16), "chat")
    finally:
        many.close()
    assert stats["n_parallel"] == 3 and all(a.startswith(q) for a, q in zip(answers, questions)), answers
    b = many.backend
    assert b["engine"] == "llama.cpp" and b["n_threads"] == gguf_eval.cores() and b["layers"] > 0
    import llama_cpp

    if llama_cpp.llama_supports_gpu_offload():
        assert b["device"] == "GPU" and b["gpu_layers"] == b["layers"] and b["fallback"] is None
    else:
        assert b["device"] == "CPU" and b["gpu_layers"] == 0 and "built without a GPU backend" in b["fallback"]


def _settled(job: dict, result: dict) -> None:
    """A job left by its worker as succeeded with ``result``, settled by the supervisor's own code (as a tick
    does; conftest.grow_studio does the same)."""
    from core.jobs import supervisor
    from core.jobs.files import STATUS, read_json, write_json_atomic
    from core.jobs.queue import get_job

    write_json_atomic(Path(job["job_dir"]) / STATUS, {"state": "succeeded", "result": result})
    supervisor._settle(get_job(job["id"]), read_json(Path(job["job_dir"]) / STATUS))


def _trained_and_exported(home: Path, default_model: Path) -> tuple[str, str, Path, str]:
    """A run whose training and q4_k_m export jobs the supervisor's code settled as succeeded (the export's file a
    real GGUF: the default model's), with a passing evaluation of its merged model."""
    from core import models
    from core.deploy import exporter, exports
    from core.training import runs

    run_id, version = _run(home)
    train = store.one("SELECT * FROM jobs WHERE run_id = ? AND kind = 'train'", [run_id])
    (Path(train["job_dir"]) / "adapter").mkdir()
    _settled(train, {"adapter_dir": str(Path(train["job_dir"]) / "adapter")})
    assert runs.get_run(run_id)["state"] == "succeeded"
    store_evaluation(home, "eval-merged", list(REFS), run_id=run_id, dataset=version)
    gguf = models.cached_gguf()
    sha = exporter.sha256(gguf)
    export = exports.submit(run_id, ["q4_k_m"], actor=OPERATOR)
    _settled(export, {"merged_dir": str(default_model), "gguf": {"q4_k_m": str(gguf)}, "sha256": {"q4_k_m": sha},
                      "primary": "q4_k_m", "prompt_format": "chat"})
    return run_id, version, gguf, sha


def test_deploy_refuses_the_q4_k_m_release_whose_own_evaluation_fails_and_records_the_override(home, default_model):
    """``releases.prepare`` on a trained run (its training and export jobs settled by the supervisor's code, the
    export's file a real GGUF, the default model's) whose merged model passes: refused while the GGUF has no
    evaluation, refused naming the GGUF's scores when it fails, released over the gate with an override (audited,
    kept in the record), and releasable once the file's own evaluation passes."""
    run_id, version, gguf, sha = _trained_and_exported(home, default_model)
    said = []

    def prepare(**kw):
        return releases.prepare(run_id, "vi-cskh:q4", quantization="q4_k_m", actor=OPERATOR, on_progress=said.append,
                                evaluate_gguf=False, **kw)

    with pytest.raises(releases.DeployRefused) as refused:
        prepare()
    assert str(refused.value) == (f"the q4_k_m release of run {run_id} is refused: the q4_k_m GGUF (sha256 {sha[:12]}…) "
                                  f"has no evaluation on the held-out split: evaluate it (python -m core evaluate --run "
                                  f"{run_id} --gguf q4_k_m). Give an override reason to deploy anyway (it is recorded).")
    store_gguf_evaluation(home, "eval-q4", BASE_PREDS, run_id=run_id, dataset=version, sha256=sha)
    with pytest.raises(releases.DeployRefused) as refused:
        prepare()
    assert ("the q4_k_m GGUF's own evaluation eval-q4 (n=4): BLEU 0.000, ROUGE-L 0.233 is below the gate (BLEU > 0.35, "
            "ROUGE-L > 0.45); the merged model passing is not enough") in str(refused.value)
    # the page shows the same refusal in its reader's language
    vi = i18n.render(refused.value.args[0], lambda t: i18n.translate(t, "vi"))
    assert "0.233" in vi and vi != str(refused.value) and "the merged model passing" not in vi
    assert store.rows("SELECT * FROM audit_log WHERE action = 'gate.override'") == []
    prepared = prepare(override_reason="q4 for a size demo, scores known")
    rec = prepared["gate_record"]
    assert not rec["releasable"] and rec["override"] == {"reason": "q4 for a size demo, scores known",
                                                         "by": OPERATOR.name}
    assert _check(rec, "gguf")["evaluation"] == "eval-q4" and "message" not in _check(rec, "gguf")
    assert prepared["override_reason"] == "q4 for a size demo, scores known" and prepared["gguf_sha256"] == sha
    assert prepared["modelfile"].startswith(f"FROM {gguf}")
    [audit] = store.rows("SELECT actor, detail FROM audit_log WHERE action = 'gate.override'")
    detail = json.loads(audit["detail"])
    assert audit["actor"] == OPERATOR.name and detail["quantization"] == "q4_k_m"
    assert detail["failing"] == [_check(rec, "gguf")["reason"]["en"]]
    assert any(str(m).startswith(f"gate, {run_id} · q4_k_m: the q4_k_m GGUF's own evaluation eval-q4") for m in said)
    # the file's own passing evaluation of the whole split: released without an override
    store_gguf_evaluation(home, "eval-q4-again", list(REFS), run_id=run_id, dataset=version, sha256=sha)
    prepared = prepare()
    assert prepared["gate_record"]["releasable"] and prepared["override_reason"] is None
    assert prepared["gate_record"]["override"] is None
    assert len(store.rows("SELECT * FROM audit_log WHERE action = 'gate.override'")) == 1


def test_the_deploy_page_shows_the_record_and_the_refusal_in_vietnamese(home, default_model):
    """The Deploy page (AppTest, a reader in Vietnamese) on that run at q4_k_m: the gate's record, the warning
    that names the GGUF's scores, the override field for the GGUF, and step 1 refused in Vietnamese."""
    from streamlit.testing.v1 import AppTest

    from tests.conftest import REPO

    run_id, version, gguf, sha = _trained_and_exported(home, default_model)
    store_gguf_evaluation(home, "eval-q4", BASE_PREDS, run_id=run_id, dataset=version, sha256=sha)
    at = AppTest.from_file(str(REPO / "pages" / "deploy.py"), default_timeout=120)
    at.session_state["principal"] = OPERATOR
    at.session_state["lang"], at.session_state["lang_for"] = "vi", (OPERATOR.kind, OPERATOR.name)
    at.run()
    quant = next(b for b in at.selectbox if b.key == "deploy_quant")
    quant.set_value("q4_k_m").run()
    assert not at.exception, [e.value for e in at.exception]
    reason_vi = _check(gate.record(run_id, "q4_k_m", sha), "gguf")["reason"]["vi"]
    assert any(reason_vi in w.value for w in at.warning), [w.value for w in at.warning]
    assert i18n.translate("Override reason (only if the gate refuses the GGUF; recorded)", "vi") in \
        [t.label for t in at.text_input]
    next(b for b in at.button if b.label.startswith("1 ·")).click().run()
    errors = [e.value for e in at.error]
    assert any(reason_vi in e and "0.233" in e for e in errors), errors
    assert not any("the merged model passing" in e for e in errors)   # no English left in the refusal


@pytest.mark.extended   # a real worker running llama.cpp over the 4 held-out pairs
def test_a_gguf_evaluation_job_runs_in_a_worker_and_is_stored_tied_to_the_file(home, default_model, worker_env):
    """`evaluations.submit(run, gguf=Q)` queues a real job: a worker (without DuckDB) renders the held-out pairs
    in the run's format, decodes them with llama.cpp, scores them; the supervisor stores the row with the export,
    the file's sha256 and the backend it ran on, and the gate reads it as this file's evaluation."""
    from core.evaluation.inference import Decoding
    from core.jobs import supervisor
    from tests.conftest import worker_pythons

    run_id, version, gguf, sha = _trained_and_exported(home, default_model)
    job = evaluations.submit(run_id, gguf="q4_k_m", decoding=Decoding(max_new_tokens=8), n_parallel=2,
                             actor=OPERATOR)
    done = supervisor.wait(job["id"], timeout=900)
    assert done["state"] == "succeeded", done["error"]
    e = evaluations.get_evaluation(job["config"]["evaluation_id"])
    assert (e["target"], e["quantization"], e["gguf_sha256"], e["gguf_path"]) == ("gguf", "q4_k_m", sha, str(gguf))
    assert e["export_job_id"] == job["config"]["export_job_id"] and e["n"] == len(REFS)
    assert e["artifact"] == f"{run_id} · q4_k_m" and e["decoding"]["max_new_tokens"] == 8
    assert e["backend"]["engine"] == "llama.cpp" and e["backend"]["n_parallel"] == 2
    assert e["backend"]["generated_tokens"] > 0
    assert worker_pythons(home)["evaluate"] == {str(worker_env)}
    assert _check(gate.record(run_id, "q4_k_m", sha), "gguf")["evaluation"] == e["id"]
