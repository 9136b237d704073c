"""General Vietnamese kept: the shipped set, the general test split of a version, the check, its settings and its
hook in the gate. Results are stored through ``retention.ingest`` (the supervisor's own path) from example files
scored by ``core.evaluation.scoring``, so that these run in seconds; the retention job itself runs on the
pipeline's trained run (tests/test_pipeline.py)."""
import json
import math
import re
import unicodedata
from pathlib import Path

import pytest

from core import store
from core.access.principal import AccessDenied
from core.datasets import samples, versions
from core.evaluation import gate as release_gate, retention, scoring
from core.evaluation.inference import Decoding
from tests.conftest import OPERATOR, cli, person
from tests.test_evaluate import REFS, _run, store_evaluation

_job_ids = iter(range(10_000, 20_000))


def store_result(home: Path, run_id: str | None, target: str, set_name: str, predictions: list[str], nll: list[float],
                 *, refs=REFS, key: str | None = None, base_model="models/base/gemma-3-270m") -> None:
    """A retention job's result as the worker leaves it (its examples file and summary), ingested by the
    supervisor's code. ``nll``: each answer's mean NLL per token (10 tokens each)."""
    scores = scoring.score(refs[: len(predictions)], predictions)
    job_id = next(_job_ids)
    path = home / f"ret-{job_id}.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for i, (ref, pred, per, v) in enumerate(zip(refs, predictions, scores.per_example, nll)):
            fh.write(json.dumps({"idx": i, "instruction": f"Câu hỏi {i}", "input": "", "reference": ref,
                                 "prediction": pred, **per, "nll": v, "tokens": 10}, ensure_ascii=False) + "\n")
    ppl = math.exp(sum(nll) / len(nll))
    cfg = {"run_id": run_id, "base_model": base_model, "prompt_format": "chat", "owner": "lan", "project": "default",
           "decoding": Decoding(max_new_tokens=48).to_dict()}
    summary = {"target": target, "label": target, "set_name": set_name, "set_ref": "x", "set_key": key or set_name,
               "n": len(predictions), "bleu": scores.bleu, "rouge_l": scores.rouge_l, "perplexity": ppl,
               "answer_tokens": 10 * len(predictions), "examples": str(path)}
    with store.transaction() as con:
        retention.ingest(con, {"id": job_id, "config": cfg, "owner": "lan"}, {"results": [summary]})


def test_the_shipped_set_is_200_varied_pairs_none_of_them_in_the_bundled_general_data():
    rows = retention.shipped_rows()
    assert len(rows) >= 200
    keys = [(r["instruction"], r["input"]) for r in rows]
    assert len(set(keys)) == len(keys)
    assert len({r["output"] for r in rows}) == len(rows)
    raw = retention.shipped_path().read_text(encoding="utf-8")
    assert raw == unicodedata.normalize("NFC", raw)
    general = retention.shipped_path().parent.parent / "general_vi.jsonl"
    bundled = {(json.loads(line)["instruction"], json.loads(line)["input"]) for line in general.read_text().splitlines()}
    assert not set(keys) & bundled
    for r in rows:   # answers of one to four sentences, in Vietnamese (English only where asked for)
        sentences = [s for s in re.split(r"(?<=[.!?])\s+(?=[A-ZÀ-Ỹ\"“])", r["output"].strip()) if s]
        assert 1 <= len(sentences) <= 4, r
    readme = (retention.shipped_path().parent / "README.md").read_text(encoding="utf-8")
    assert "written for" in readme and "CC0-1.0" in readme


def test_the_general_test_split_of_a_version_leaves_out_what_its_mix_trained_on(home):
    demo = samples.import_samples(actor=OPERATOR)
    general_id, rows, dropped = retention.general_test_rows(demo)
    general = versions.get_version(general_id)
    assert general["name"] == "general-vi" and json.loads(demo["lineage"])["general"]["version"] == general_id
    test = versions.load_rows(general_id, "test")
    trained = {(r["instruction"], r["input"], r["output"]) for r in versions.load_rows(demo["id"], "train")}
    assert len(rows) + dropped == len(test) and rows
    assert not {(r["instruction"], r["input"], r["output"]) for r in rows} & trained
    sets = retention.sets_for(demo, Decoding(max_new_tokens=48), limit=5)
    assert [s["name"] for s in sets] == ["general-test", "shipped"] and [len(s["rows"]) for s in sets] == [
        min(5, len(rows)), 5]
    again = retention.sets_for(demo, Decoding(max_new_tokens=48), limit=5)
    other = retention.sets_for(demo, Decoding(max_new_tokens=64), limit=5)
    assert [s["key"] for s in sets] == [s["key"] for s in again] != [s["key"] for s in other]
    # a version that mixed in nothing is checked on the shipped set alone
    assert [s["name"] for s in retention.sets_for(general, Decoding())] == ["shipped"]


def test_the_check_passes_and_fails_both_ways_and_the_gate_follows_it(home):
    run_id, version = _run(home)
    store_evaluation(home, "eval-pass", list(REFS), run_id=run_id, dataset=version)
    v = release_gate.verdict(run_id)
    # not measured: shown, not gating
    assert v["releasable"] and v["retention"].passed is None and "not measured" in v["retention"].reason
    base = ["Thủ đô của Việt Nam là Hà Nội.", "Bên B bàn giao mã nguồn.", "Hà Nội.", "Xin chào."]
    store_result(home, None, "base", "shipped", base, [2.0, 2.0, 2.0, 2.0])
    store_result(home, run_id, "run", "shipped", base[:3] + ["Xin chào anh."], [2.1, 2.1, 2.1, 2.1])
    c = retention.check(run_id)
    s = c.numbers["sets"]["shipped"]
    assert c.passed is True and s["passed"] and s["ratio"] == pytest.approx(math.exp(0.1))
    assert s["delta_rouge_l"] > -0.05 and "general Vietnamese kept" in c.reason
    v = release_gate.verdict(run_id)
    assert v["releasable"] and v["retention"].passed is True
    # ROUGE-L lost beyond 0.05: refused, naming the numbers
    store_result(home, run_id, "run", "shipped", ["Tôi không biết."] * 4, [2.0, 2.0, 2.0, 2.0])
    c = retention.check(run_id)
    assert c.passed is False and not c.numbers["sets"]["shipped"]["rouge_l_ok"]
    assert c.numbers["sets"]["shipped"]["perplexity_ok"]
    v = release_gate.verdict(run_id)
    assert not v["releasable"] and "general Vietnamese not kept" in v["reason"] and "ROUGE-L 0.000" in v["reason"]
    gate = cli("gate", "--run", run_id, home=home, check=False)
    out = json.loads(gate.stdout)
    assert gate.returncode == 1 and out["retention"]["passed"] is False
    assert "tiếng Việt" in out["retention"]["reason"]["vi"] and "general Vietnamese" in out["retention"]["reason"]["en"]
    # the same answers, but perplexity beyond base × 1.25: refused
    store_result(home, run_id, "run", "shipped", base, [2.3, 2.3, 2.3, 2.3])
    c = retention.check(run_id)
    assert c.passed is False and c.numbers["sets"]["shipped"]["rouge_l_ok"]
    assert c.numbers["sets"]["shipped"]["ratio"] == pytest.approx(math.exp(0.3))
    assert not release_gate.verdict(run_id)["releasable"]
    # a second set: every set must keep it
    store_result(home, run_id, "run", "shipped", base, [2.0, 2.0, 2.0, 2.0])
    assert retention.check(run_id).passed is True
    store_result(home, None, "base", "general-test", base, [1.0] * 4)
    store_result(home, run_id, "run", "general-test", base, [1.5] * 4)
    c = retention.check(run_id)
    assert c.passed is False and c.numbers["sets"]["shipped"]["passed"] and not c.numbers["sets"]["general-test"]["passed"]
    # the drill-down: the tuned answers beside the base's on the same pairs
    s = c.numbers["sets"]["general-test"]
    rows = retention.drilldown(s["tuned_id"], s["base_id"])
    assert [r["idx"] for r in rows] == [0, 1, 2, 3] and all(r["tuned"] == r["base"] for r in rows)
    assert rows[0]["tuned_nll"] == 1.5 and rows[0]["base_nll"] == 1.0


def test_a_required_check_refuses_a_run_that_was_not_measured(home):
    run_id, version = _run(home)
    store_evaluation(home, "eval-pass", list(REFS), run_id=run_id, dataset=version)
    assert release_gate.verdict(run_id)["releasable"]
    retention.set_settings(actor=OPERATOR, required=True)
    v = release_gate.verdict(run_id)
    assert not v["releasable"] and v["retention"].passed is False and "required" in v["reason"]


def test_the_checks_bounds_are_admin_settings_and_their_changes_are_audited(home):
    assert retention.settings() == {"rouge_l_drop": 0.05, "perplexity_ratio": 1.25, "required": False}
    with pytest.raises(AccessDenied):
        retention.set_settings(actor=person("nam", "engineer"), rouge_l_drop=0.01)
    # stricter: no reason needed; audited
    assert retention.set_settings(actor=OPERATOR, rouge_l_drop=0.02)["rouge_l_drop"] == 0.02
    changed = store.rows("SELECT actor, role, detail FROM audit_log WHERE action = 'setting.changed' AND subject = ?",
                         [retention.SETTING])
    assert len(changed) == 1 and changed[0]["role"] == "admin"
    assert json.loads(changed[0]["detail"])["new"]["rouge_l_drop"] == 0.02
    # looser than the defaults only with a reason, which the audit log keeps
    bad = cli("retention", "settings", "--perplexity-ratio", "2", home=home, check=False)
    assert bad.returncode == 1 and "perplexity_ratio 2.0 > 1.25 is looser than the default check" in bad.stderr
    assert retention.settings()["perplexity_ratio"] == 1.25
    bad = cli("retention", "settings", "--perplexity-ratio", "0.5", home=home, check=False)
    assert bad.returncode == 1 and "between 1 and 100" in bad.stderr
    ok = cli("retention", "settings", "--perplexity-ratio", "2", "--override-reason", "a client's style, agreed",
             home=home)
    assert json.loads(ok.stdout) == {"rouge_l_drop": 0.02, "perplexity_ratio": 2.0, "required": False}
    loosened = store.one("SELECT role, detail FROM audit_log WHERE action = 'gate.retention_loosened'")
    assert loosened["role"] == "admin" and json.loads(loosened["detail"])["reason"] == "a client's style, agreed"
    # the check reads the settings: a ratio of 1.5 now passes
    run_id, _ = _run(home)
    store_result(home, None, "base", "shipped", list(REFS), [1.0] * 4)
    store_result(home, run_id, "run", "shipped", list(REFS), [1.4] * 4)
    assert retention.check(run_id).passed is True


def test_the_cli_shows_the_check_and_the_examples(home):
    run_id, _ = _run(home)
    out = json.loads(cli("retention", "show", "--run", run_id, "--json", home=home).stdout)
    assert out["check"]["passed"] is None and out["results"] == []
    store_result(home, None, "base", "shipped", list(REFS), [1.0] * 4)
    store_result(home, run_id, "run", "shipped", ["Tôi không biết."] + list(REFS[1:]), [1.1] * 4)
    shown = cli("retention", "show", "--run", run_id, home=home)
    assert "NOT KEPT" in shown.stdout and "shipped" in shown.stdout
    out = json.loads(cli("retention", "show", "--run", run_id, "--json", home=home).stdout)
    assert out["check"]["passed"] is False and {r["target"] for r in out["results"]} == {"base", "run"}
    ex = json.loads(cli("retention", "examples", "--run", run_id, "--json", home=home).stdout)
    assert ex[0]["idx"] == 0 and ex[0]["tuned"] == "Tôi không biết." and ex[0]["delta_rouge_l"] < 0
    bad = cli("retention", "show", home=home, check=False)
    assert bad.returncode == 2 and "needs --run RUN" in bad.stderr
    bad = cli("retention", "run", "--run", "run-nope", home=home, check=False)
    assert bad.returncode == 1 and "no run 'run-nope'" in bad.stderr


@pytest.mark.parametrize("lang", ["en", "vi"])
def test_the_evaluate_pages_retention_panel_shows_base_against_tuned_and_the_examples(home, monkeypatch, lang):
    from streamlit.testing.v1 import AppTest

    from core import i18n
    from tests.conftest import REPO, open_tab

    if lang == "vi":
        monkeypatch.delenv("VITUNE_LANGUAGE", raising=False)   # the server's default: Vietnamese
    run_id, _ = _run(home)
    runs_done = store.one("SELECT job_id FROM runs WHERE id = ?", [run_id])
    store.execute("UPDATE jobs SET state = 'succeeded' WHERE id = ?", [runs_done["job_id"]])
    store_result(home, None, "base", "shipped", list(REFS), [1.0] * 4)
    store_result(home, run_id, "run", "shipped", ["Tôi không biết."] + list(REFS[1:]), [1.1] * 4)
    at = AppTest.from_file(str(REPO / "pages" / "evaluate.py"), default_timeout=120)
    # in Vietnamese as a viewer: AppTest formats the Evaluate form's selectboxes outside the script's run, where the
    # page's translator has no session (the form shows to engineers and above only)
    at.session_state["principal"] = person("thu", "admin") if lang == "en" else person("vy", "viewer")
    at = open_tab(at.run(), "evaluate-tab", "General Vietnamese kept")
    assert not at.exception, [e.value for e in at.exception]
    T = lambda s: i18n.translate(s, lang)
    assert [e.value for e in at.error] == [T("General Vietnamese: {verdict}.").format(verdict=T("not kept")) + " "
                                           + i18n.render(retention.check(run_id).reason, T)]
    table = at.dataframe[0].value
    assert list(table[T("model")]) == [T("base"), T("tuned")] and list(table["n"]) == [4, 4]
    assert len(at.get("plotly_chart")) == 1
    texts = [t.value for t in at.text]
    assert "Câu hỏi 0" in texts and "Tôi không biết." in texts and REFS[0] in texts   # the largest loss first
    labels = {n.label for n in at.number_input} | {b.label for b in at.button}
    forms = {T("ROUGE-L the tuned run may lose"), T("Save the check's bounds"), T("Queue the retention check")}
    assert forms <= labels if lang == "en" else not forms & labels   # an admin's forms; a viewer sees none
