import json
import random
import subprocess
import sys
import time

import pytest
import sacrebleu
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

from core import scoring
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


def test_score_speed_10k_pairs():
    rnd = random.Random(0)
    refs = [" ".join(rnd.choice(VOCAB) for _ in range(200)) for _ in range(10_000)]
    hyps = [" ".join(rnd.choice(VOCAB) for _ in range(200)) for _ in range(10_000)]
    t0 = time.perf_counter()
    scoring.score(refs, hyps)
    assert time.perf_counter() - t0 < 20  # the target is 10 s on 2 cores; leave room for a busy CI


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
