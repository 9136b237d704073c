import json
import random
import subprocess
import sys
import time

import pytest
import sacrebleu
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

from core.evaluation import scoring
from tests.conftest import REPO, write_jsonl

VOCAB = "tôi bạn hợp đồng bên thanh toán trong vòng ngày kể từ ký kết phạt vi phạm hoàn tiền khách hàng".split()


def _corpus(seed: int, n: int = 300):
    rnd = random.Random(seed)
    refs, hyps = [], []
    for _ in range(n):
        ref = [rnd.choice(VOCAB) for _ in range(rnd.randint(1, 25))]
        hyp = [w if rnd.random() < 0.8 else rnd.choice(VOCAB) for w in ref][: rnd.randint(0, len(ref) + 3)]
        refs.append(" ".join(ref))
        hyps.append(" ".join(hyp))
    return refs, hyps


def _lcs(a, b):
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def test_tokens_keep_vietnamese_diacritics_and_drop_punctuation():
    nfd = "Hợp đồng, ĐIỀU 3!".encode().decode()
    import unicodedata

    assert scoring.tokenize(unicodedata.normalize("NFD", nfd)) == ["hợp", "đồng", "điều", "3"]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_corpus_bleu_equals_sacrebleu(seed):
    refs, hyps = _corpus(seed)
    ours = scoring.score(refs, hyps).bleu
    theirs = sacrebleu.corpus_bleu(hyps, [refs], tokenize="none", smooth_method="none", force=True).score / 100
    assert ours == pytest.approx(theirs, abs=1e-12)
    assert 0 < ours < 1


def test_rouge_l_is_mean_lcs_f1_and_sentence_bleu_matches_nltk():
    refs, hyps = _corpus(7, 120)
    result = scoring.score(refs, hyps)
    expected = []
    for ref, hyp, per in zip(refs, hyps, result.per_example):
        r, h = ref.split(), hyp.split()
        lcs = _lcs(h, r)
        expected.append(0.0 if not h or lcs == 0 else 2 * lcs / (len(h) + len(r)))
        if h:
            nltk_value = sentence_bleu([r], h, smoothing_function=SmoothingFunction().method1)
            assert per["bleu"] == pytest.approx(nltk_value, abs=1e-12)
    assert result.rouge_l == pytest.approx(sum(expected) / len(expected), abs=1e-12)


def test_empty_prediction_scores_zero_and_gate_is_strict():
    result = scoring.score(["Dạ, Sao Việt xin chào"], [""])
    assert result.rouge_l == 0 and result.bleu == 0 and not result.passed
    assert not scoring.gate(0.35, 0.9)  # strictly greater than the threshold
    assert scoring.gate(0.3501, 0.4501)


@pytest.mark.parametrize("seed", [11, 12])
def test_vectorised_match_counts_equal_the_per_pair_counter_definition(seed):
    rnd = random.Random(seed)
    hyps, refs = [[], ["một"], [], ["a", "b"]], [[], [], ["một"], ["a", "b", "a", "b", "a"]]  # empty and short
    for _ in range(2000):
        ref = [rnd.choice(VOCAB[:6]) for _ in range(rnd.randint(0, 30))]  # few words: many repeated n-grams
        hyps.append([w if rnd.random() < 0.7 else rnd.choice(VOCAB[:6]) for w in ref][: rnd.randint(0, len(ref) + 3)])
        refs.append(ref)
    assert scoring.match_counts(hyps, refs) == [scoring._clipped_counts(h, r)[0] for h, r in zip(hyps, refs)]
    assert scoring.match_counts([], []) == []


def test_all_empty_corpus_scores_zero():
    result = scoring.score(["", "..."], ["", ""])
    assert result.bleu == 0 and result.rouge_l == 0 and [p["bleu"] for p in result.per_example] == [0, 0]


def test_score_speed_10k_pairs():
    sys.path.insert(0, str(REPO / "bench"))
    from score import make_pairs  # bench/score.py: 10,000 pairs of ~200 syllables of sample-data Vietnamese

    refs, hyps = make_pairs(10_000, 200)
    t0 = time.process_time()
    result = scoring.score(refs, hyps)
    # CPU seconds of this (single-threaded) work, so that other jobs sharing the 2 cores do not count:
    # bench/score.py measures ~5 s wall on the idle machine; the target is 10 s.
    assert time.process_time() - t0 < 10
    assert len(result.per_example) == 10_000 and 0.3 < result.rouge_l < 1


def test_score_cli(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [{"reference": "Dạ, hoàn tiền trong 7 ngày làm việc.",
                                               "prediction": "Dạ, hoàn tiền trong 7 ngày làm việc."},
                                              {"reference": "Bên B chịu phạt 8%.", "prediction": "Không rõ."}])
    proc = subprocess.run([sys.executable, "-m", "core", "score", "--input", str(path), "--json"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["n"] == 2 and set(out) >= {"n", "bleu", "rouge_l", "passed", "thresholds"}
    assert out["thresholds"] == {"bleu": 0.35, "rouge_l": 0.45}
    assert out["rouge_l"] == pytest.approx(0.5)


def test_score_cli_bad_file_names_the_line(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"reference": "a", "prediction": "a"}, "{not json", ])
    proc = subprocess.run([sys.executable, "-m", "core", "score", "--input", str(path), "--json"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "bad.jsonl:2: invalid JSON" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
