"""Evaluations on record: storage, leaderboard, comparison, drill-down diff, report and CSV export, gate.

Most tests store evaluations through ``evaluations.ingest`` (the supervisor's own path) from prediction
files scored by ``core.evaluation.scoring``, so that they run in seconds; the base-vs-tuned test at the end
generates for real with the default model."""
import csv
import io
import json
import math
import shutil
from pathlib import Path

import pytest

from core import store
from core.datasets import importer, samples
from core.evaluation import evaluations, gate as release_gate, report, scoring
from core.jobs import queue
from core.training import runs
from core.training.presets import preset
from core.access.principal import AccessDenied
from tests.conftest import OPERATOR, cli, person

REFS = ["Dạ, Sao Việt sẽ hoàn tiền trong 7 ngày làm việc.",
        "Bên B phải bàn giao mã nguồn trong vòng 30 ngày.",
        "Thủ đô của Việt Nam là Hà Nội.",
        "Anh/chị vui lòng cung cấp mã hợp đồng ạ."]
BASE_PREDS = ["Tôi không biết.", "Bên B bàn giao.", "Hà Nội.", "Xin chào."]
TUNED_PREDS = ["Dạ, Sao Việt sẽ hoàn tiền trong 7 ngày.", "Bên B phải bàn giao mã nguồn trong vòng 30 ngày.",
               "Thủ đô là Hà Nội.", "Xin chào anh."]

# The scores of these predictions, counted by hand on the syllables (lower case, punctuation dropped).
# References: 11, 11, 8 and 10 syllables (40).
# TUNED: 9, 11, 5 and 3 syllables (28). Clipped n-gram matches / n-grams, n = 1..4, per pair:
#   0 (a prefix of its reference)  9/9   8/8   7/7   6/6
#   1 (equal to it)               11/11 10/10  9/9   8/8
#   2 "thủ đô là hà nội"           5/5   3/4   1/3   0/2   (thủ đô, là hà, hà nội; là hà nội)
#   3 "xin chào anh"               1/3   0/2   0/1   0/0   (anh)
#   corpus                        26/28 21/24 17/20 14/16, brevity penalty exp(1 - 40/28)
# ROUGE-L (LCS F1): 0: LCS 9, P 1, R 9/11 → 0.9; 1: 1; 2: LCS 5, P 1, R 5/8 → 10/13; 3: LCS 1, P 1/3, R 1/10 → 2/13.
TUNED_BLEU = math.exp(1 - 40 / 28) * (26 / 28 * 21 / 24 * 17 / 20 * 14 / 16) ** 0.25   # 0.5744
TUNED_ROUGE_PER = [0.9, 1.0, 10 / 13, 2 / 13]
TUNED_ROUGE = sum(TUNED_ROUGE_PER) / 4                                                  # 0.7058
# BASE: no trigram matches anywhere ("bên b bàn giao": bên b, bàn giao; "hà nội": one bigram), so BLEU is 0;
# ROUGE-L 0, 8/15 (LCS 4 of 4 and 11), 2/5 (LCS 2 of 2 and 8), 0 → mean 7/30.
BASE_ROUGE = 7 / 30                                                                     # 0.2333


def store_evaluation(home: Path, evaluation_id: str, predictions: list[str], *, run_id=None, dataset="ds-x",
                     split="test", thresholds=None, refs=REFS, base_model="models/base/gemma-3-270m",
                     project="default") -> dict:
    """An evaluation as the worker leaves it (predictions.jsonl + result), ingested by the supervisor's code."""
    th = thresholds or release_gate.thresholds()
    scores = scoring.score(refs[: len(predictions)], predictions, th)
    path = home / f"{evaluation_id}.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for i, (ref, pred, per) in enumerate(zip(refs, predictions, scores.per_example)):
            fh.write(json.dumps({"idx": i, "instruction": f"Câu hỏi {i}", "input": "", "reference": ref,
                                 "prediction": pred, **per}, ensure_ascii=False) + "\n")
    cfg = {"evaluation_id": evaluation_id, "run_id": run_id, "base_model": base_model, "dataset_version_id": dataset,
           "split": split, "decoding": {"max_new_tokens": 64, "temperature": 0.0, "top_p": 1.0, "top_k": 0,
                                        "batch_size": 8, "stop": ["###"]},
           "prompt_format": "chat", "limit": None, "owner": "lan", "project": project}
    result = {**scores.summary(), "duration_s": 1.5, "generation_s": 1.0, "scoring_s": 0.01, "examples_per_s": 4.0,
              "prompt_format": "chat", "predictions": str(path)}
    with store.connect() as con:
        evaluations.ingest(con, {"id": None, "config": cfg, "owner": "lan"}, result)
    return evaluations.get_evaluation(evaluation_id)


def test_an_evaluation_is_stored_with_everything_a_client_asks_about(home):
    e = store_evaluation(home, "eval-tuned", TUNED_PREDS)
    assert e["decoding"]["stop"] == ["###"] and e["thresholds"] == {"bleu": 0.35, "rouge_l": 0.45}
    assert e["prompt_format"] == "chat" and e["examples_per_s"] == 4.0 and e["created_by"] == "lan"
    assert e["n"] == 4 and e["bleu"] == pytest.approx(TUNED_BLEU) and e["rouge_l"] == pytest.approx(TUNED_ROUGE)
    ex = evaluations.examples("eval-tuned")
    assert [x["prediction"] for x in ex] == TUNED_PREDS
    assert all(x["pair_key"] == evaluations.pair_key(x["instruction"], x["input"], x["reference"]) for x in ex)
    assert [x["rouge_l"] for x in ex] == pytest.approx(TUNED_ROUGE_PER)


@pytest.mark.parametrize("predictions, thresholds, passed, reason", [
    (TUNED_PREDS, None, True, "PASS: BLEU 0.5744 > 0.35, ROUGE-L 0.7058 > 0.45"),
    (BASE_PREDS, None, False, "FAIL: BLEU 0.0000 ≤ 0.35, ROUGE-L 0.2333 ≤ 0.45"),
    # one metric over its threshold is not enough: both must be
    (TUNED_PREDS, {"bleu": 0.5, "rouge_l": 0.8}, False, "FAIL: BLEU 0.5744 > 0.5, ROUGE-L 0.7058 ≤ 0.8"),
    (TUNED_PREDS, {"bleu": 0.6, "rouge_l": 0.7}, False, "FAIL: BLEU 0.5744 ≤ 0.6, ROUGE-L 0.7058 > 0.7"),
], ids=["pass", "fail", "bleu-only", "rouge-only"])
def test_the_stored_verdict_and_its_reason_follow_the_thresholds(home, predictions, thresholds, passed, reason):
    e = store_evaluation(home, "eval-x", predictions, thresholds=thresholds)
    assert e["passed"] is passed
    assert e["gate_reason"] == reason


def test_leaderboard_ranks_and_filters(home):
    store_evaluation(home, "eval-base", BASE_PREDS)
    store_evaluation(home, "eval-tuned", TUNED_PREDS, dataset="ds-x")
    store_evaluation(home, "eval-other", TUNED_PREDS[:2], dataset="ds-y", base_model="org/other-model")
    board = evaluations.leaderboard(OPERATOR)
    assert [e["rank"] for e in board] == [1, 2, 3]
    assert [e["id"] for e in board].index("eval-tuned") < [e["id"] for e in board].index("eval-base")
    assert {e["id"] for e in evaluations.leaderboard(OPERATOR, dataset_version_id="ds-x")} == {"eval-base", "eval-tuned"}
    assert [e["id"] for e in evaluations.leaderboard(OPERATOR, base_model="org/other-model")] == ["eval-other"]
    assert evaluations.leaderboard(OPERATOR, dataset_version_id="ds-x", split="train") == []


def test_comparison_deltas_and_better_worse_examples(home):
    store_evaluation(home, "eval-base", BASE_PREDS)
    store_evaluation(home, "eval-tuned", TUNED_PREDS[:3])  # fewer examples: compared on the shared three
    c = evaluations.compare("eval-base", "eval-tuned")
    assert c["shared"]["n"] == 3
    assert c["a"]["bleu"] == 0.0 and c["a"]["rouge_l"] == pytest.approx(BASE_ROUGE)   # the whole of eval-base
    assert c["delta"]["rouge_l"] == pytest.approx(c["b"]["rouge_l"] - c["a"]["rouge_l"])
    on_shared = scoring.score(REFS[:3], TUNED_PREDS[:3])
    assert c["shared"]["b"]["rouge_l"] == pytest.approx(on_shared.rouge_l)
    assert c["shared"]["delta"]["bleu"] == pytest.approx(on_shared.bleu - scoring.score(REFS[:3], BASE_PREDS[:3]).bleu)
    assert c["counts"] == {"better": 3, "worse": 0, "same": 0}
    gains = [p["delta_rouge_l"] for p in c["better"]]
    assert gains == sorted(gains, reverse=True) and c["better"][0]["idx_b"] == 0  # the biggest gain first
    assert next(p for p in c["pairs"] if p["idx_b"] == 1)["rouge_l_b"] == 1.0
    back = evaluations.compare("eval-tuned", "eval-base")
    assert back["counts"]["worse"] == 3 and back["shared"]["delta"]["rouge_l"] == pytest.approx(
        -c["shared"]["delta"]["rouge_l"])
    with pytest.raises(ValueError, match="no evaluation 'eval-nope'"):
        evaluations.compare("eval-base", "eval-nope")


def test_word_diff_marks_the_differing_words_as_the_scores_see_them():
    d = evaluations.word_diff("Dạ, Sao Việt sẽ hoàn tiền trong 7 ngày.", "dạ sao việt sẽ HOÀN lại tiền trong 10 ngày")
    # case and punctuation do not count ("Dạ," is "dạ", "HOÀN" is "hoàn"); the inserted "lại" leaves the
    # reference's words around it one unchanged run; each side keeps its own spelling
    assert d["reference"] == [("Dạ, Sao Việt sẽ hoàn tiền trong", False), ("7", True), ("ngày.", False)]
    assert d["prediction"] == [("dạ sao việt sẽ HOÀN", False), ("lại", True), ("tiền trong", False), ("10", True),
                               ("ngày", False)]
    assert d["same_words"] == 8
    empty = evaluations.word_diff("Bên B", "")
    assert empty == {"reference": [("Bên B", True)], "prediction": [], "same_words": 0}


def test_examples_csv_round_trips_vietnamese(home):
    store_evaluation(home, "eval-tuned", TUNED_PREDS)
    text = evaluations.examples_csv("eval-tuned")
    assert text.startswith("\ufeff")
    rows = list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))))
    assert [r["prediction"] for r in rows] == TUNED_PREDS and rows[0]["reference"] == REFS[0]
    assert float(rows[1]["rouge_l"]) == 1.0


def test_report_is_self_contained_and_the_cli_writes_it(home):
    store_evaluation(home, "eval-base", BASE_PREDS)
    store_evaluation(home, "eval-tuned", TUNED_PREDS)
    page = report.build("eval-tuned", compare_with="eval-base")
    assert "<script src=" not in page and "<link " not in page  # nothing fetched from anywhere
    assert page.count('class="plotly-graph-div"') == 3  # gate bars, ROUGE-L histogram, base-vs-tuned scatter
    assert len(page) > 3_000_000  # plotly.js itself is inside
    assert 'Thủ đô <span class="vt-chg">của Việt Nam</span> là Hà Nội.' in page  # the drill-down diff
    assert "Compared with eval-base" in page
    out, csv_out = home / "r.html", home / "r.csv"
    proc = cli("evaluate", "report", "eval-tuned", "--out", str(out), "--csv", str(csv_out), home=home)
    assert out.read_text(encoding="utf-8").count('class="plotly-graph-div"') == 2  # no base evaluation of a run here
    assert csv_out.read_text(encoding="utf-8").lstrip("\ufeff").startswith("idx,instruction")
    bad = cli("evaluate", "report", "eval-nope", "--out", str(out), home=home, check=False)
    assert bad.returncode == 1 and bad.stderr.strip() == "error: no evaluation 'eval-nope'"


def test_cli_list_show_and_compare(home):
    store_evaluation(home, "eval-base", BASE_PREDS)
    store_evaluation(home, "eval-tuned", TUNED_PREDS)
    board = json.loads(cli("evaluate", "list", "--dataset", "ds-x", "--json", home=home).stdout)
    assert [e["id"] for e in board] == ["eval-tuned", "eval-base"]
    shown = json.loads(cli("evaluate", "show", "eval-tuned", "--json", home=home).stdout)
    assert shown["decoding"]["stop"] == ["###"] and shown["verdict"] == "PASS"   # BLEU 0.5744, ROUGE-L 0.7058
    assert json.loads(cli("evaluate", "show", "eval-base", "--json", home=home).stdout)["verdict"] == "FAIL"
    c = json.loads(cli("evaluate", "compare", "eval-base", "eval-tuned", "--json", home=home).stdout)
    assert c["counts"]["better"] == 4 and c["shared"]["n"] == 4
    text = cli("evaluate", "compare", "eval-base", "eval-tuned", home=home).stdout
    assert "better 4, worse 0, same 0" in text
    wrong = cli("evaluate", "compare", "eval-base", home=home, check=False)
    assert wrong.returncode == 2 and "needs 2 evaluation id(s)" in wrong.stderr


def _run(home: Path, test_rows: int = len(REFS)) -> tuple[str, str]:
    """A queued run on a reviewed version whose held-out split has ``test_rows`` pairs (the gate's verdict
    needs no trained adapter: evaluations are stored as the supervisor stores them)."""
    from tests.conftest import approve_review, tiny_pairs, write_jsonl

    pairs = tiny_pairs(10 * test_rows)
    version, _ = importer.import_files([write_jsonl(home / "d.jsonl", pairs)], "gate", actor=OPERATOR,
                                       test_fraction=0.1)
    assert version["rows_test"] == test_rows
    approve_review(version["id"])
    job = runs.submit_train(version["id"], preset("quick test (CPU, 20 steps)"), actor=person("t"))
    return job["run_id"], version["id"]


def test_gate_rests_on_the_latest_evaluation_of_the_whole_held_out_split(home):
    run_id, version = _run(home)
    assert release_gate.verdict(run_id) == {"releasable": False, "evaluation": None, "thresholds": None,
                                            "reason": "the run has no evaluation yet"}
    perfect = [r for r in REFS]
    store_evaluation(home, "eval-train", perfect, run_id=run_id, dataset=version, split="train")
    store_evaluation(home, "eval-elsewhere", perfect, run_id=run_id, dataset="ds-other")
    v = release_gate.verdict(run_id)
    assert not v["releasable"] and "no evaluation on the held-out test split" in v["reason"]
    assert cli("gate", "--run", run_id, home=home, check=False).returncode == 1
    # a passing evaluation of one example proves nothing: it does not cover the split
    store_evaluation(home, "eval-one", perfect[:1], run_id=run_id, dataset=version)
    v = release_gate.verdict(run_id)
    assert not v["releasable"] and v["reason"] == (
        f"the latest held-out evaluation eval-one covers 1 of the {len(REFS)} held-out pairs; the gate needs an "
        f"evaluation of at least {len(REFS)} (100% of the split): evaluate the whole split")
    store_evaluation(home, "eval-fail", BASE_PREDS, run_id=run_id, dataset=version)
    v = release_gate.verdict(run_id)
    assert not v["releasable"] and v["evaluation"]["id"] == "eval-fail" and v["reason"] == (
        "the latest held-out evaluation eval-fail (n=4): BLEU 0.000, ROUGE-L 0.233 is below the gate "
        "(BLEU > 0.35, ROUGE-L > 0.45)")
    store_evaluation(home, "eval-pass", perfect, run_id=run_id, dataset=version, thresholds={"bleu": 0.5, "rouge_l": 0.6})
    assert release_gate.verdict(run_id)["releasable"]
    gate = cli("gate", "--run", run_id, home=home, check=False)
    out = json.loads(gate.stdout)
    assert out["evaluation"] == "eval-pass" and out["checks"][0]["passed"]   # the merged model passes
    assert out["thresholds"] == {"bleu": 0.5, "rouge_l": 0.6}  # the verdict carries the thresholds it used
    # but a release ships a GGUF, which the gate judges too (test_gguf_gate.py): none exported here
    assert gate.returncode == 1 and not out["releasable"] and out["checks"][1]["name"] == "gguf"
    store_evaluation(home, "eval-one-more", perfect[:1], run_id=run_id, dataset=version)   # partial: not counted
    assert release_gate.verdict(run_id)["evaluation"]["id"] == "eval-pass"
    # a later failing evaluation of the whole split outweighs the earlier pass
    store_evaluation(home, "eval-fail-later", BASE_PREDS, run_id=run_id, dataset=version)
    v = release_gate.verdict(run_id)
    assert not v["releasable"] and v["evaluation"]["id"] == "eval-fail-later"
    assert cli("gate", "--run", "run-nope", home=home, check=False).returncode == 2


def test_the_gates_minimum_share_of_the_split_is_a_setting(home):
    run_id, version = _run(home)
    store_evaluation(home, "eval-half", list(REFS)[: len(REFS) // 2], run_id=run_id, dataset=version)
    assert not release_gate.verdict(run_id)["releasable"]
    with pytest.raises(AccessDenied):
        release_gate.set_min_share(0.5, actor=person("nam", "engineer"))
    assert release_gate.settings() == {"thresholds": release_gate.FLOOR, "min_share": 1.0}   # the defaults
    assert release_gate.set_min_share(0.5, actor=OPERATOR) == 0.5
    assert release_gate.verdict(run_id)["releasable"]
    release_gate.set_thresholds(0.4, 0.5, actor=OPERATOR)
    assert release_gate.settings() == {"thresholds": {"bleu": 0.4, "rouge_l": 0.5}, "min_share": 0.5}
    bad = cli("gate", "--set-min-share", "0.1", home=home, check=False)
    assert bad.returncode == 2 and "between 0.5 and 1" in bad.stderr


def test_a_passing_run_on_an_unreviewed_version_is_not_releasable(home):
    from tests.conftest import approve_review, tiny_pairs, write_jsonl

    version, _ = importer.import_files([write_jsonl(home / "d.jsonl", tiny_pairs(40))], "tiny", actor=OPERATOR)
    assert version["rows_test"] == len(REFS)
    job = runs.submit_train(version["id"], preset("quick test (CPU, 20 steps)"), actor=person("t"),
                            override_review="a demo tomorrow")
    store_evaluation(home, "eval-pass", list(REFS), run_id=job["run_id"], dataset=version["id"])
    v = release_gate.verdict(job["run_id"])
    assert not v["releasable"] and "not reviewed" in v["reason"] and v["evaluation"]["id"] == "eval-pass"
    assert cli("gate", "--run", job["run_id"], home=home, check=False).returncode == 1
    assert approve_review(version["id"])["reviewed"]
    assert release_gate.verdict(job["run_id"])["releasable"]


def test_thresholds_are_settings_and_changes_are_audited(home):
    assert json.loads(cli("gate", home=home).stdout) == {"thresholds": {"bleu": 0.35, "rouge_l": 0.45},
                                                         "min_share": 1.0, "floor": {"bleu": 0.35, "rouge_l": 0.45}}
    cli("gate", "--set-thresholds", "0.4", "0.5", home=home)
    assert release_gate.thresholds() == {"bleu": 0.4, "rouge_l": 0.5}
    bad = cli("gate", "--set-thresholds", "1.4", "0.5", home=home, check=False)
    assert bad.returncode == 2 and "BLEU threshold must be between 0 and 1" in bad.stderr
    audit = store.rows("SELECT action, subject, detail FROM audit_log WHERE action = 'setting.changed'")
    assert len(audit) == 1 and json.loads(audit[0]["detail"]) == {
        "old": None, "new": {"bleu": 0.4, "rouge_l": 0.5}}
    e = store_evaluation(home, "eval-after", TUNED_PREDS)
    assert e["thresholds"] == {"bleu": 0.4, "rouge_l": 0.5}
    # below the guide's floor only with a reason, which the audit log keeps
    low = cli("gate", "--set-thresholds", "0.1", "0.45", home=home, check=False)
    assert low.returncode == 2 and "BLEU 0.1 < 0.35 is below the gate's floor" in low.stderr
    assert release_gate.thresholds() == {"bleu": 0.4, "rouge_l": 0.5}
    cli("gate", "--set-thresholds", "0.1", "0.45", "--override-reason", "a client's own metric, agreed", home=home)
    below = store.one("SELECT actor, role, detail FROM audit_log WHERE action = 'gate.thresholds_below_floor'")
    assert below["role"] == "admin" and json.loads(below["detail"])["reason"] == "a client's own metric, agreed"


@pytest.mark.parametrize("flags, message", [
    (["--top-p", "0"], "error: top_p must be in (0, 1], not 0.0"),
    (["--temperature", "-1"], "error: temperature must be between 0 (greedy) and 5, not -1.0"),
    (["--max-new-tokens", "0"], "error: max_new_tokens must be between 1 and 8192, not 0"),
    (["--limit", "0"], "error: the example limit must be at least 1 (leave it out for the whole split)"),
])
def test_bad_decoding_settings_are_refused_in_one_line(home, flags, message):
    proc = cli("evaluate", "--base-model", "models/base/gemma-3-270m", "--dataset", "ds-x", *flags, home=home,
               check=False)
    assert proc.returncode == 1 and proc.stderr.strip() == message
    assert queue.list_jobs() == []


def test_decoding_round_trips_and_stop_strings_parse():
    from core.evaluation.inference import Decoding, parse_stop

    d = Decoding(max_new_tokens=64, temperature=0.7, top_p=0.9, stop=parse_stop("###\n\\n\\nKhách hàng:"))
    assert d.stop == ["###", "\n\nKhách hàng:"]
    assert Decoding.from_dict(json.loads(json.dumps(d.to_dict()))) == d and not d.greedy
    with pytest.raises(ValueError, match="unknown decoding setting"):
        Decoding.from_dict({"temp": 1})


CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.mark.slow
def test_base_model_vs_tuned_run_on_the_same_examples_and_the_report_in_chromium(pipeline, monkeypatch, tmp_path):
    """The default model without adapter against the pipeline's tuned run, through the CLI; the report
    of the tuned run then carries the comparison, and Debian's Chromium renders its plots offline."""
    home = pipeline["home"]
    monkeypatch.setenv("VITUNE_HOME", str(home))
    run = runs.get_run(pipeline["run"])
    proc = cli("evaluate", "--base-model", run["base_model"], "--dataset", run["dataset_version_id"], "--limit", "6",
               "--max-new-tokens", "32", "--batch-size", "6", "--stop", "<end_of_turn>", "--json", home=home)
    base = json.loads(proc.stdout)
    assert base["n"] == 6 and base["examples_per_s"] > 0 and base["decoding"]["stop"] == ["<end_of_turn>"]
    assert "examples/s" in proc.stderr or "/s)" in proc.stderr  # progress with the rate
    stored = evaluations.get_evaluation(base["evaluation"])
    assert stored["run_id"] is None and stored["adapter_dir"] is None and stored["sample_limit"] == 6
    assert stored["prompt_format"] == run["prompt_format"] and stored["generation_s"] > 0
    tuned = pipeline["evaluation"]["evaluation"]
    c = json.loads(cli("evaluate", "compare", base["evaluation"], tuned, "--json", home=home).stdout)
    assert c["shared"]["n"] == 6 and c["a"]["run_id"] is None and c["b"]["run_id"] == pipeline["run"]
    assert sum(c["counts"].values()) == 6
    for p in c["pairs"]:
        assert p["idx_a"] == p["idx_b"]  # the first six held-out pairs of the same version, in the same order
        assert p["delta_rouge_l"] == pytest.approx(p["rouge_l_b"] - p["rouge_l_a"])
    assert c["shared"]["a"]["rouge_l"] == pytest.approx(sum(p["rouge_l_a"] for p in c["pairs"]) / 6)
    assert evaluations.base_counterpart(tuned)["id"] == base["evaluation"]

    out = tmp_path / "report.html"
    cli("evaluate", "report", tuned, "--out", str(out), home=home)
    page = out.read_text(encoding="utf-8")
    assert page.count('class="plotly-graph-div"') == 4  # gate, ROUGE-L histogram, loss curve, base-vs-tuned scatter
    assert "<script src=" not in page

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.fail("Debian's chromium is missing: scripts/test.sh installs it (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(offline=True)  # the client may read it with no network at all
        tab = context.new_page()
        errors = []
        tab.on("pageerror", lambda exc: errors.append(str(exc)))
        tab.goto(out.as_uri())
        tab.wait_for_function("document.querySelectorAll('.plotly-graph-div .main-svg').length >= 4", timeout=30_000)
        rendered = tab.evaluate("""() => [...document.querySelectorAll('.plotly-graph-div')].map(d =>
            [d.querySelectorAll('svg.main-svg').length, d.querySelectorAll('.point, .bars path, .scatterlayer path').length])""")
        title = tab.title()
        browser.close()
    assert errors == []
    assert len(rendered) == 4 and all(svgs >= 1 and marks >= 1 for svgs, marks in rendered), rendered
    assert title == f"Evaluation report {tuned}"
