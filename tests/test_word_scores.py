"""Word-level BLEU and ROUGE-L, the second view beside the syllable scores (core.evaluation.words): pyvi's
segmentation of the pairs used below, the scores counted by hand on those words, migration 009 on a real
DuckDB file of an older studio, the columns a real ingest stores, the CLI's JSON, the report showing both,
and what happens where pyvi is not installed (the gate keeps syllables throughout)."""
import json
import math
import sys

import duckdb
import pytest

from core import paths, store
from core.evaluation import evaluations, report, scoring, words
from tests.conftest import cli
from tests.test_evaluate import store_evaluation

REFS = ["Anh/chị vui lòng cung cấp mã hợp đồng ạ.",
        "Thủ đô của Việt Nam là Hà Nội.",
        "Hợp đồng có hiệu lực kể từ ngày ký kết."]
PREDS = ["Xin vui lòng cung cấp mã hợp đồng của anh.",
         "Hà Nội là thủ đô của Việt Nam.",
         "Hợp đồng lao động có hiệu lực từ ngày ký."]

# pyvi 0.1.1's words (checked first, then written down): 7 / 7, 5 / 5, 7 / 7 words.
REF_WORDS = [["anh", "chị", "vui_lòng", "cung_cấp", "mã", "hợp_đồng", "ạ"],
             ["thủ_đô", "của", "việt_nam", "là", "hà_nội"],
             ["hợp_đồng", "có", "hiệu_lực", "kể", "từ", "ngày", "ký_kết"]]
PRED_WORDS = [["xin", "vui_lòng", "cung_cấp", "mã", "hợp_đồng", "của", "anh"],
              ["hà_nội", "là", "thủ_đô", "của", "việt_nam"],
              ["hợp_đồng", "lao_động", "có", "hiệu_lực", "từ", "ngày", "ký"]]

# Counted by hand on those words. Clipped n-gram matches / n-grams, n = 1..4:
#   0  5/7 (all but xin, của)   3/6 (vui_lòng cung_cấp, cung_cấp mã, mã hợp_đồng)   2/5   1/4 (vui_lòng … hợp_đồng)
#   1  5/5                      2/4 (thủ_đô của, của việt_nam)                       1/3   0/2
#   2  5/7 (all but lao_động, ký) 2/6 (có hiệu_lực, từ ngày)                          0/5   0/4
#   corpus 15/19 7/16 3/13 1/10; 19 words on both sides, so no brevity penalty
# LCS: 0 "vui_lòng cung_cấp mã hợp_đồng" 4 of 7 and 7 → 4/7; 1 "thủ_đô của việt_nam" 3 of 5 and 5 → 3/5;
#      2 "hợp_đồng có hiệu_lực từ ngày" 5 of 7 and 7 → 5/7.
WORD_BLEU = (15 / 19 * 7 / 16 * 3 / 13 * 1 / 10) ** 0.25                       # 0.2988
WORD_ROUGE_PER = [4 / 7, 3 / 5, 5 / 7]
WORD_ROUGE = sum(WORD_ROUGE_PER) / 3                                            # 0.6286
# per example, nltk's method1 (a zero count becomes 0.1), equal lengths so no brevity penalty
WORD_BLEU_PER = [(5 / 7 * 3 / 6 * 2 / 5 * 1 / 4) ** 0.25, (1 * 2 / 4 * 1 / 3 * 0.1 / 2) ** 0.25,
                 (5 / 7 * 2 / 6 * 0.1 / 5 * 0.1 / 4) ** 0.25]
# The same pair 1 on syllables: LCS "thủ đô của việt nam", 5 of 8 and 8 → 5/8, where words give 3/5.
SYLLABLE_ROUGE_1 = 5 / 8


@pytest.fixture(autouse=True)
def _needs_pyvi():
    if words.unavailable():
        pytest.fail(words.unavailable())   # it is in requirements.txt: the studio's .venv has it


def test_pyvi_joins_the_syllables_of_a_word_and_the_view_drops_case_and_punctuation():
    assert [words.segment(t) for t in REFS] == REF_WORDS
    assert [words.segment(t) for t in PREDS] == PRED_WORDS
    # the words' syllables are the scores' syllables, in order
    for text in REFS + PREDS:
        assert [s for w in words.segment(text) for s in w.split("_")] == scoring.tokenize(text)
    assert words.segment("") == [] and words.segment(None) == [] and words.segment(" ... ") == []
    assert words.segmenter() == "pyvi 0.1.1"


def test_word_scores_equal_the_hand_counted_values():
    got = words.score(REFS, PREDS)
    assert got.n == 3 and got.segmenter == "pyvi 0.1.1"
    assert got.bleu == pytest.approx(WORD_BLEU, abs=1e-12)
    assert got.rouge_l == pytest.approx(WORD_ROUGE, abs=1e-12)
    assert [p["rouge_l"] for p in got.per_example] == pytest.approx(WORD_ROUGE_PER, abs=1e-12)
    assert [p["bleu"] for p in got.per_example] == pytest.approx(WORD_BLEU_PER, abs=1e-12)
    # a second view, not the same numbers: the syllables of pair 1 share a longer subsequence
    assert scoring.score(REFS, PREDS).per_example[1]["rouge_l"] == pytest.approx(SYLLABLE_ROUGE_1, abs=1e-12)
    assert words.score([], []).bleu == 0.0


def test_the_worker_side_never_imports_the_segmenter():
    from core.jobs import kinds
    from tests.test_worker_boundary import _closure

    reached, packages = _closure(kinds.KINDS["evaluate"].worker)
    assert "core.evaluation.words" not in reached and "pyvi" not in packages


def _old_studio_file() -> None:
    """A studio database as migration 008 left it, with one evaluation and its examples."""
    con = duckdb.connect(str(paths.db_path()))
    con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR, applied_at TIMESTAMPTZ)")
    for fn in store.MIGRATIONS:
        number = store._migration_number(fn)
        if number <= 8:
            fn(con)
            con.execute("INSERT INTO schema_migrations VALUES (?, ?, now())", [number, fn.__name__])
    syl = scoring.score(REFS, PREDS)
    con.execute("""INSERT INTO evaluations (id, base_model, dataset_version_id, split, n, bleu, rouge_l, passed,
                       thresholds, decoding, created_at) VALUES ('eval-old', 'models/base/x', 'ds-x', 'test', 3, ?, ?,
                       false, '{"bleu": 0.35, "rouge_l": 0.45}', '{}', now())""", [syl.bleu, syl.rouge_l])
    for i, (r, p, per) in enumerate(zip(REFS, PREDS, syl.per_example)):
        con.execute("INSERT INTO evaluation_examples (evaluation_id, idx, instruction, input, reference, prediction, "
                    "bleu, rouge_l, pair_key) VALUES ('eval-old', ?, 'Hỏi', '', ?, ?, ?, ?, 'k')",
                    [i, r, p, per["bleu"], per["rouge_l"]])
    con.close()


def test_migration_009_on_an_older_database_file_and_the_scores_filled_in_later(home):
    _old_studio_file()
    versions = [r["version"] for r in store.rows("SELECT version FROM schema_migrations ORDER BY version")]
    assert 9 in versions and versions == sorted(store._migration_number(fn) for fn in store.MIGRATIONS)
    cols = {r["column_name"]: r["data_type"] for r in store.rows(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'evaluations'")}
    assert (cols["bleu_words"], cols["rouge_l_words"], cols["word_segmenter"]) == ("DOUBLE", "DOUBLE", "VARCHAR")
    ex_cols = {r["column_name"]: r["data_type"] for r in store.rows(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'evaluation_examples'")}
    assert (ex_cols["bleu_words"], ex_cols["rouge_l_words"]) == ("DOUBLE", "DOUBLE")
    old = evaluations.get_evaluation("eval-old")   # kept as it was, the word columns empty
    assert old["bleu_words"] is None and old["rouge_l_words"] is None and old["word_segmenter"] is None
    assert words.view(old) == words.NOT_YET
    assert all(x["bleu_words"] is None for x in evaluations.examples("eval-old"))
    e = evaluations.ensure_word_scores("eval-old")   # what `evaluate show` and the report do
    assert e["bleu_words"] == pytest.approx(WORD_BLEU, abs=1e-12) and e["word_segmenter"] == "pyvi 0.1.1"
    assert [x["rouge_l_words"] for x in evaluations.examples("eval-old")] == pytest.approx(WORD_ROUGE_PER, abs=1e-12)
    assert e["bleu"] == pytest.approx(scoring.score(REFS, PREDS).bleu)   # the syllable scores untouched


def test_a_real_ingest_stores_both_and_the_gate_keeps_syllables(home):
    e = store_evaluation(home, "eval-w", PREDS, refs=REFS)
    syl = scoring.score(REFS, PREDS)
    assert e["bleu"] == pytest.approx(syl.bleu) and e["rouge_l"] == pytest.approx(syl.rouge_l)
    assert e["bleu_words"] == pytest.approx(WORD_BLEU, abs=1e-12)
    assert e["rouge_l_words"] == pytest.approx(WORD_ROUGE, abs=1e-12)
    assert e["word_segmenter"] == "pyvi 0.1.1" and words.view(e) == words.CAPTION
    assert e["gate_reason"] == scoring.gate_reason(syl.passed, syl.bleu, syl.rouge_l, e["thresholds"])
    ex = evaluations.examples("eval-w")
    assert [x["rouge_l_words"] for x in ex] == pytest.approx(WORD_ROUGE_PER, abs=1e-12)
    assert [x["bleu_words"] for x in ex] == pytest.approx(WORD_BLEU_PER, abs=1e-12)
    assert [x["rouge_l"] for x in ex] == pytest.approx([p["rouge_l"] for p in syl.per_example])

    listed = json.loads(cli("evaluate", "list", "--json", home=home).stdout)
    assert listed[0]["bleu_words"] == pytest.approx(WORD_BLEU) and listed[0]["word_view"] == words.CAPTION
    shown = json.loads(cli("evaluate", "show", "eval-w", "--json", home=home).stdout)
    assert shown["rouge_l_words"] == pytest.approx(WORD_ROUGE) and shown["verdict"] == ("PASS" if syl.passed else "FAIL")


def test_an_evaluation_too_large_for_the_tick_gets_them_when_first_shown(home, monkeypatch):
    monkeypatch.setattr(evaluations, "INGEST_WORD_CHARS", 100)   # these 3 pairs have 222 characters
    e = store_evaluation(home, "eval-big", PREDS, refs=REFS)
    assert e["bleu_words"] is None and words.view(e) == words.NOT_YET
    shown = json.loads(cli("evaluate", "show", "eval-big", "--json", home=home).stdout)   # computes and stores them
    assert shown["bleu_words"] == pytest.approx(WORD_BLEU) and shown["word_view"] == words.CAPTION
    assert evaluations.get_evaluation("eval-big")["rouge_l_words"] == pytest.approx(WORD_ROUGE, abs=1e-12)
    assert [x["bleu_words"] for x in evaluations.examples("eval-big")] == pytest.approx(WORD_BLEU_PER, abs=1e-12)


def test_the_report_shows_both_with_the_explanation(home):
    store_evaluation(home, "eval-w", PREDS, refs=REFS)
    page = report.build("eval-w")
    e = evaluations.get_evaluation("eval-w")
    assert f"BLEU <b>{e['bleu']:.4f}</b> · ROUGE-L <b>{e['rouge_l']:.4f}</b>" in page
    assert f"Word-level: BLEU <b>{WORD_BLEU:.4f}</b> · ROUGE-L <b>{WORD_ROUGE:.4f}</b>" in page
    assert words.CAPTION in page and "<th>ROUGE-L (words)</th>" in page
    syl = scoring.score(REFS, PREDS).per_example[1]   # pair 1's row: syllable scores, then word scores
    assert (f"<td class='num'>{syl['bleu']:.3f}</td><td class='num'>{syl['rouge_l']:.3f}</td>"
            f"<td class='num'>{WORD_BLEU_PER[1]:.3f}</td><td class='num'>{3 / 5:.3f}</td></tr>") in page


def test_without_pyvi_the_word_view_says_so_and_nothing_fails(home, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyvi", None)    # `import pyvi` fails, as where it is not installed
    monkeypatch.setattr(words, "_loaded", {})
    words._segment.cache_clear()
    assert words.unavailable() == words.MISSING and words.score(REFS, PREDS) is None
    e = store_evaluation(home, "eval-n", PREDS, refs=REFS)   # the ingest stores the syllable scores alone
    assert e["bleu_words"] is None and e["rouge_l_words"] is None and e["bleu"] == pytest.approx(
        scoring.score(REFS, PREDS).bleu)
    assert evaluations.ensure_word_scores("eval-n")["bleu_words"] is None
    assert words.view(e) == words.MISSING
    page = report.build("eval-n")
    assert words.MISSING in page and "(words)</th>" not in page
    words._segment.cache_clear()
