"""The LLM judge's written rubric (Vietnamese) and the parsing of its answers. Shared by the judge's
worker (``core.evaluation.judge_worker``) and its app side (``core.evaluation.judge``): it imports nothing
of the studio.

The rubric asks for a 1–5 score against the reference answer — correct in meaning (a paraphrase is
correct, a fluent answer that reuses the reference's words but says something else is not), complete,
nothing invented, in Vietnamese — and a one-line reason, as one JSON object with the reason first (the
judge explains before it scores, as H2O LLM Studio's ``EXPLANATION:`` / ``SCORE:`` prompt does). A judge
served by llama.cpp gets the object's JSON schema as a grammar (``SCORE_SCHEMA``); any other judge may
answer in JSON, in a ``` fence, or as ``EXPLANATION: … SCORE: n`` lines: ``parse`` reads all of them and
says in one line why an answer holds no usable score.

A reviewed dataset pair has no reference apart from itself: ``messages(…, reference=None)`` asks the
same questions of the answer against the question alone (``RUBRIC_NO_REFERENCE``), which is how the
judge is checked against the reviewers' decisions.

The chat goes to an OpenAI-compatible ``/chat/completions``, whose server applies its model's chat
template: the judge's prompt is one user message and needs no prompt format of ours.
"""
from __future__ import annotations

import hashlib
import json
import re
import unicodedata

RUBRIC_VERSION = "vi-1"     # change it with the rubric's text: scores of two rubrics are never mixed
MAX_REASON_CHARS = 300
MAX_FIELD_CHARS = 6_000     # of a question, reference or answer in the prompt (longer ones are cut, and say so)

_CRITERIA = """Tiêu chí:
1. Đúng: nội dung khớp với {basis} về ý nghĩa. Diễn đạt khác nhưng cùng ý vẫn là đúng; dùng lại từ ngữ mà sai ý là sai.
2. Đủ: có đủ các ý chính {complete}.
3. Không bịa: không thêm thông tin, con số, điều khoản hay chính sách {invented}.
4. Tiếng Việt: trả lời bằng tiếng Việt có dấu, tự nhiên.

Thang điểm:
5 — đúng, đủ, không bịa, bằng tiếng Việt.
4 — đúng và không bịa, thiếu một chi tiết nhỏ hoặc diễn đạt chưa tự nhiên.
3 — đúng một phần: thiếu ý chính, hoặc sai một chi tiết nhỏ.
2 — phần lớn sai, có thông tin bịa đặt, hoặc không trả lời bằng tiếng Việt.
1 — sai hoàn toàn, lạc đề, hoặc không có câu trả lời.

Trả về DUY NHẤT một đối tượng JSON có hai khóa, theo thứ tự: "reason" là một câu ngắn bằng tiếng Việt nêu lý do \
cho điểm (viết lý do trước khi cho điểm), rồi "score" là điểm, một số nguyên từ 1 đến 5."""

RUBRIC = ("Bạn là giám khảo chấm câu trả lời của một trợ lý AI cho doanh nghiệp Việt Nam. So sánh CÂU TRẢ LỜI "
          "với ĐÁP ÁN THAM CHIẾU cho CÂU HỎI dưới đây và cho điểm từ 1 đến 5.\n\n"
          + _CRITERIA.format(basis="đáp án tham chiếu", complete="của đáp án tham chiếu",
                             invented="không có trong đáp án tham chiếu hoặc câu hỏi")
          + "\n\nCÂU HỎI:\n{question}\n\nĐÁP ÁN THAM CHIẾU:\n{reference}\n\nCÂU TRẢ LỜI CẦN CHẤM:\n{answer}\n")

RUBRIC_NO_REFERENCE = (
    "Bạn là giám khảo chấm câu trả lời của một trợ lý AI cho doanh nghiệp Việt Nam. Không có đáp án tham chiếu: "
    "chấm CÂU TRẢ LỜI cho CÂU HỎI dưới đây từ 1 đến 5 theo những gì câu hỏi cho biết.\n\n"
    + _CRITERIA.format(basis="điều câu hỏi hỏi và thông tin câu hỏi đưa ra", complete="mà câu hỏi cần",
                       invented="mà câu hỏi không cho biết và không thể suy ra")
    + "\n\nCÂU HỎI:\n{question}\n\nCÂU TRẢ LỜI CẦN CHẤM:\n{answer}\n")

# what llama.cpp turns into a grammar: the reason first (bounded), then a score that can only be 1–5
SCORE_SCHEMA = {
    "type": "object",
    "properties": {"reason": {"type": "string", "maxLength": 200},
                   "score": {"type": "integer", "enum": [1, 2, 3, 4, 5]}},
    "required": ["reason", "score"],
}


def sha256() -> str:
    """The rubric's fingerprint, kept with every judge run."""
    return hashlib.sha256((RUBRIC + "\x1f" + RUBRIC_NO_REFERENCE).encode("utf-8")).hexdigest()


def _field(text: str | None) -> str:
    text = unicodedata.normalize("NFC", text or "").strip()
    if len(text) > MAX_FIELD_CHARS:
        text = text[:MAX_FIELD_CHARS] + " […]"
    return text or "(trống)"


def prompt(question: str, reference: str | None, answer: str) -> str:
    """The judge's prompt for one answer (``reference`` None: the rubric without a reference).
    Plain replacement, not ``str.format``: the texts may hold braces."""
    template = RUBRIC if reference is not None else RUBRIC_NO_REFERENCE
    out = template.replace("{question}", "\x00q").replace("{reference}", "\x00r").replace("{answer}", "\x00a")
    return (out.replace("\x00q", _field(question)).replace("\x00r", _field(reference))
            .replace("\x00a", _field(answer)))


def messages(question: str, reference: str | None, answer: str) -> list[dict]:
    return [{"role": "user", "content": prompt(question, reference, answer)}]


# ── parsing an answer ────────────────────────────────────────────────────────


class JudgeAnswerError(ValueError):
    """A judge's answer that holds no usable 1–5 score, in one line."""


_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\n?(.*?)```", re.S)
_SCORE_KEYS = ("score", "diem", "điểm", "rating", "grade")
_REASON_KEYS = ("reason", "ly_do", "lý_do", "lý do", "ly do", "explanation", "giai_thich", "giải thích", "giải_thích")
_SCORE_LINE = re.compile(r"(?:score|điểm|diem|rating)\s*\**\s*[:：=]\s*\**\s*(-?\d+(?:[.,]\d+)?)", re.I)
_REASON_LINE = re.compile(r"(?:explanation|reason|lý do|ly do|giải thích|giai thich)\s*\**\s*[:：]\s*\**\s*(.+?)\s*"
                          r"(?=\**\s*(?:score|điểm|diem|rating)\s*\**\s*[:：=]|$)", re.I | re.M)


def _snippet(text: str, n: int = 80) -> str:
    one = " ".join(text.split())
    return one if len(one) <= n else one[: n - 1] + "…"


def one_line(text: str | None) -> str:
    """A reason as one line of at most ``MAX_REASON_CHARS`` characters."""
    one = " ".join(unicodedata.normalize("NFC", str(text or "")).split())
    return one if len(one) <= MAX_REASON_CHARS else one[: MAX_REASON_CHARS - 1] + "…"


def _score_of(value) -> int:
    """A score as the whole number 1–5 it must be; JudgeAnswerError naming what it was otherwise."""
    if isinstance(value, bool) or value is None:
        raise JudgeAnswerError(f"the score is {json.dumps(value)}, not a number from 1 to 5")
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(-?\d+(?:[.,]\d+)?)\s*(?:/\s*\d+|(?:out of|trên)\s*\d+)?\s*\.?\s*", value, re.I)
        if not m:
            raise JudgeAnswerError(f"the score '{_snippet(value, 40)}' is not a number from 1 to 5")
        value = float(m.group(1).replace(",", "."))
    if not isinstance(value, (int, float)) or value != value:
        raise JudgeAnswerError(f"the score {value!r} is not a number from 1 to 5")
    if float(value) != int(value):
        raise JudgeAnswerError(f"the score {value:g} is not a whole number from 1 to 5")
    value = int(value)
    if not 1 <= value <= 5:
        raise JudgeAnswerError(f"the score {value} is out of range (the rubric's scores are 1 to 5)")
    return value


def _json_object(text: str) -> dict | None:
    decoder = json.JSONDecoder()
    for cand in [m.group(1).strip() for m in _FENCE.finditer(text)] + [text]:
        try:
            value = json.loads(cand)
        except json.JSONDecodeError:
            start = cand.find("{")
            if start < 0:
                continue
            try:
                value, _ = decoder.raw_decode(cand, start)
            except json.JSONDecodeError:
                continue
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        if isinstance(value, dict):
            return {str(k).strip().lower(): v for k, v in value.items()}
    return None


def parse(text: str | None) -> tuple[int, str]:
    """(score 1–5, one-line reason) from a judge's answer; JudgeAnswerError with a one-line reason otherwise."""
    text = unicodedata.normalize("NFC", text or "").strip()
    if not text:
        raise JudgeAnswerError("the judge's answer is empty")
    obj = _json_object(text)
    if obj is not None:
        key = next((k for k in _SCORE_KEYS if k in obj), None)
        if key is not None:
            reason = next((obj[k] for k in _REASON_KEYS if k in obj and obj[k] not in (None, "")), "")
            return _score_of(obj[key]), one_line(reason if isinstance(reason, str) else json.dumps(reason))
    found = _SCORE_LINE.findall(text)
    if found:
        reason = _REASON_LINE.search(text)
        return _score_of(found[-1]), one_line(reason.group(1) if reason else "")
    if obj is not None:
        raise JudgeAnswerError(f"the judge's JSON has no score (keys: {', '.join(list(obj)[:6]) or 'none'})")
    raise JudgeAnswerError(f"no score in the judge's answer: '{_snippet(text)}'")
