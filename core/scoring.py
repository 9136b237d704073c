"""BLEU and ROUGE-L, scored the Vietnamese-correct way. This definition is the studio's contract.

Tokens are Vietnamese syllables with their diacritics, lower-cased, punctuation dropped:
``re.findall(r"\\w+", NFC(text).lower())``. (rouge-score's default tokenizer deletes every
non-ASCII letter and must never be used on Vietnamese.)

- BLEU: corpus BLEU-4 over those tokens, uniform weights, no smoothing, standard brevity penalty,
  0–1 scale; equal to sacrebleu's ``corpus_bleu(..., tokenize="none", smooth_method="none",
  force=True).score / 100`` on the space-joined tokens.
- ROUGE-L: mean over examples of the LCS F1 (β = 1) on the same tokens; 0 for an empty prediction.
- Per example also: sentence BLEU with nltk's smoothing method1 (shown, never gated).
- Gate: BLEU > 0.35 and ROUGE-L > 0.45 by default; thresholds travel with every result.
"""
from __future__ import annotations

import json
import math
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from rapidfuzz.distance import LCSseq

DEFAULT_THRESHOLDS = {"bleu": 0.35, "rouge_l": 0.45}
MAX_N = 4
_WORD = re.compile(r"\w+")


def tokenize(text: str) -> list[str]:
    return _WORD.findall(unicodedata.normalize("NFC", text or "").lower())


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _clipped_counts(hyp: Sequence[str], ref: Sequence[str]) -> tuple[list[int], list[int]]:
    matches, totals = [0] * MAX_N, [0] * MAX_N
    for n in range(1, MAX_N + 1):
        h, r = _ngrams(hyp, n), _ngrams(ref, n)
        matches[n - 1] = sum(min(c, r[g]) for g, c in h.items())
        totals[n - 1] = max(len(hyp) - n + 1, 0)
    return matches, totals


def corpus_bleu(hyps: Sequence[Sequence[str]], refs: Sequence[Sequence[str]]) -> float:
    matches, totals = [0] * MAX_N, [0] * MAX_N
    hyp_len = ref_len = 0
    for hyp, ref in zip(hyps, refs):
        m, t = _clipped_counts(hyp, ref)
        for i in range(MAX_N):
            matches[i] += m[i]
            totals[i] += t[i]
        hyp_len += len(hyp)
        ref_len += len(ref)
    if hyp_len == 0 or any(m == 0 for m in matches):
        return 0.0
    log_precision = sum(math.log(m / t) for m, t in zip(matches, totals)) / MAX_N
    brevity = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return brevity * math.exp(log_precision)


def sentence_bleu_method1(hyp: Sequence[str], ref: Sequence[str], epsilon: float = 0.1) -> float:
    """nltk's sentence_bleu with SmoothingFunction().method1 (epsilon added to zero counts)."""
    if not hyp:
        return 0.0
    matches, totals = _clipped_counts(hyp, ref)
    if matches[0] == 0:
        return 0.0  # nltk returns 0 when there is no unigram match
    logs = []
    for m, t in zip(matches, totals):
        if t == 0:
            # nltk: a hypothesis shorter than n has no n-grams; method1 gives eps / 0 → treated as eps/1
            logs.append(math.log(epsilon / 1))
        else:
            logs.append(math.log((m if m else epsilon) / t))
    brevity = 1.0 if len(hyp) > len(ref) else math.exp(1 - len(ref) / len(hyp))
    return brevity * math.exp(sum(logs) / MAX_N)


def rouge_l(hyp: Sequence[str], ref: Sequence[str]) -> float:
    if not hyp or not ref:
        return 0.0
    lcs = LCSseq.similarity(hyp, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(hyp), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


@dataclass
class Scores:
    n: int
    bleu: float
    rouge_l: float
    passed: bool
    thresholds: dict
    per_example: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "n": self.n,
            "bleu": self.bleu,
            "rouge_l": self.rouge_l,
            "passed": self.passed,
            "thresholds": self.thresholds,
        }


def gate(bleu: float, rouge: float, thresholds: dict | None = None) -> bool:
    t = thresholds or DEFAULT_THRESHOLDS
    return bleu > t["bleu"] and rouge > t["rouge_l"]


def score(references: Iterable[str], predictions: Iterable[str], thresholds: dict | None = None) -> Scores:
    thresholds = dict(thresholds or DEFAULT_THRESHOLDS)
    refs = [tokenize(r) for r in references]
    hyps = [tokenize(p) for p in predictions]
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} predictions")
    per = []
    rouge_sum = 0.0
    for h, r in zip(hyps, refs):
        rl = rouge_l(h, r)
        rouge_sum += rl
        per.append({"rouge_l": rl, "bleu": sentence_bleu_method1(h, r)})
    n = len(refs)
    bleu = corpus_bleu(hyps, refs) if n else 0.0
    rouge = rouge_sum / n if n else 0.0
    return Scores(n, bleu, rouge, gate(bleu, rouge, thresholds), thresholds, per)


class ScoreFileError(ValueError):
    pass


def read_pairs(path: Path) -> tuple[list[str], list[str]]:
    """Read a JSONL file of {reference, prediction}; a bad line is an error naming its number."""
    refs, preds = [], []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScoreFileError(f"{path}: no such file")
    except UnicodeDecodeError as exc:
        raise ScoreFileError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})")
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ScoreFileError(f"{path}:{number}: invalid JSON ({exc.msg})")
        if not isinstance(obj, dict):
            raise ScoreFileError(f"{path}:{number}: expected an object with reference and prediction")
        for key in ("reference", "prediction"):
            if not isinstance(obj.get(key), str):
                raise ScoreFileError(f"{path}:{number}: field '{key}' is missing or not text")
        refs.append(obj["reference"])
        preds.append(obj["prediction"])
    if not refs:
        raise ScoreFileError(f"{path}: no lines to score")
    return refs, preds
