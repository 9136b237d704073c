"""Word-level BLEU and ROUGE-L: a second view beside the studio's syllable scores. The gate keeps the
syllables (``core.evaluation.scoring``); nothing here is ever gated.

Vietnamese writes a word of several syllables with spaces between them ("hợp đồng", a contract); word
segmentation joins them ("hợp_đồng"). The segmenter is pyvi's ``ViTokenizer`` (a CRF whose model ships
inside pyvi's wheel: nothing is fetched at run time). It segments the NFC text as written, capitals
included (its model and its rules look at them: "Việt Nam" is one word, "việt nam" two); then each word
is lower-cased and loses its punctuation exactly as ``scoring.tokenize`` treats syllables, its
syllables joined by "_", and a word of punctuation alone is dropped. BLEU (corpus BLEU-4) and ROUGE-L
(mean LCS F1), and the per-example sentence BLEU, are then ``scoring``'s own, on these words.

App side only: the GPU worker environment has no pyvi, so the supervisor computes these when it ingests
an evaluation (``evaluations.ingest``), and ``evaluations.ensure_word_scores`` fills in those that have
none (older evaluations, a large one, or pyvi installed since). Without pyvi, ``unavailable()`` says
why, ``score`` returns None, ``view`` says so, and nothing fails.
"""
from __future__ import annotations

import importlib.util
import threading
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterable

from core.evaluation import scoring

SEGMENTER = "pyvi"
CAPTION = "word-level (pyvi segmentation): a second view; the gate uses syllables"
MISSING = ("word-level scores not available: the word segmenter (pyvi) is not installed "
           "(it is in requirements.txt); the gate uses syllables")
NOT_YET = ("word-level scores not computed yet (`python -m core evaluate show ID` computes them); "
           "the gate uses syllables")

_lock = threading.Lock()     # pyvi's one CRF tagger is shared: one segmentation at a time
_loaded: dict = {}           # "tokenize": pyvi's function, or "error": why it could not be loaded


class WordsUnavailable(RuntimeError):
    """The segmenter cannot be imported here."""


def unavailable() -> str | None:
    """Why there can be no word-level scores here, or None when pyvi is installed (found, not imported:
    importing it costs a second)."""
    if "error" in _loaded:
        return _loaded["error"]
    return None if importlib.util.find_spec(SEGMENTER) is not None else MISSING


def _tokenizer():
    if "tokenize" not in _loaded:
        if "error" in _loaded:
            raise WordsUnavailable(_loaded["error"])
        try:
            from pyvi import ViTokenizer
        except Exception as exc:  # not installed, or its model cannot be loaded (an incompatible pickle)
            if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] == SEGMENTER:
                _loaded["error"] = MISSING
            else:
                _loaded["error"] = (f"word-level scores not available: the word segmenter ({SEGMENTER}) cannot be "
                                    f"loaded ({type(exc).__name__}: {exc}); the gate uses syllables")
            raise WordsUnavailable(_loaded["error"]) from None
        _loaded["tokenize"] = ViTokenizer.tokenize
    return _loaded["tokenize"]


def segmenter() -> str:
    """The segmenter with its version, as stored beside the scores: ``pyvi 0.1.1``."""
    from importlib.metadata import version

    return f"{SEGMENTER} {version(SEGMENTER)}"


@lru_cache(maxsize=50_000)   # a held-out split's references come back with every evaluation of it
def _segment(text: str) -> tuple[str, ...]:
    tokenize = _tokenizer()
    with _lock:
        joined = tokenize(text)
    out = []
    for word in joined.split():
        syllables = scoring.tokenize(word.replace("_", " "))
        if syllables:
            out.append("_".join(syllables))
    return tuple(out)


def segment(text: str | None) -> list[str]:
    """The words of ``text``: "Anh/chị vui lòng cung cấp mã hợp đồng ạ." →
    ``["anh", "chị", "vui_lòng", "cung_cấp", "mã", "hợp_đồng", "ạ"]``. Raises ``WordsUnavailable``
    without pyvi."""
    text = unicodedata.normalize("NFC", text or "")
    return list(_segment(text)) if text.strip() else []


@dataclass
class WordScores:
    n: int
    bleu: float
    rouge_l: float
    segmenter: str
    per_example: list[dict] = field(default_factory=list)   # {"bleu", "rouge_l"} of each pair, on words


def score(references: Iterable[str], predictions: Iterable[str]) -> WordScores | None:
    """Corpus BLEU-4, mean ROUGE-L and per-example scores on words; None where pyvi is not here."""
    try:
        refs = [segment(r) for r in references]
        hyps = [segment(p) for p in predictions]
    except WordsUnavailable:
        return None
    got = scoring.score_tokens(refs, hyps)
    return WordScores(got.n, got.bleu, got.rouge_l, segmenter(), got.per_example)


def view(e: dict) -> str:
    """What the word view of an evaluation (a row of ``evaluations``) says: the caption when it has word
    scores, else why not."""
    if e.get("bleu_words") is not None:
        return CAPTION
    return unavailable() or NOT_YET
