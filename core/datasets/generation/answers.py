"""The prompt that asks an LLM for pairs, and its answers: parsed, checked against the schema,
de-duplicated. Shared by the generation worker and the page that edits the prompt."""
from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from typing import Any

from core.datasets.generation.documents import GenerateError

FIELDS = ("instruction", "input", "output")
MAX_FIELD_CHARS = 32_000
DEFAULT_PROMPT = """Bạn là chuyên gia soạn dữ liệu huấn luyện tiếng Việt cho trợ lý AI của doanh nghiệp.
Đọc đoạn tài liệu dưới đây và tạo {n_pairs} cặp hỏi–đáp mà nhân viên hoặc khách hàng thực sự có thể hỏi.
Chỉ dùng thông tin có trong tài liệu; trả lời đầy đủ, chính xác, bằng tiếng Việt có dấu.

Trả về DUY NHẤT một mảng JSON, không kèm lời giải thích. Mỗi phần tử là một đối tượng có đúng ba khóa:
- "instruction": câu hỏi hoặc yêu cầu (không rỗng)
- "input": ngữ cảnh bổ sung (có thể là chuỗi rỗng "")
- "output": câu trả lời (không rỗng)

Tài liệu:
\"\"\"
{chunk}
\"\"\"
"""


# the JSON schema an answer must meet (also sent to llama.cpp as a grammar when structured output is on)
ANSWER_SCHEMA = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {k: {"type": "string"} for k in FIELDS},
        "required": list(FIELDS),
    },
    "minItems": 1,
}


class AnswerError(ValueError):
    """An LLM answer that holds no valid pair."""


MAX_TEMPLATE_BYTES = 256 * 1024


def read_template(path) -> str:
    """A prompt template file (UTF-8 text with {chunk}), checked; GenerateError naming the file otherwise."""
    from pathlib import Path

    path = Path(path)
    if path.is_dir():
        raise GenerateError(f"{path}: a folder, not a prompt template (a UTF-8 text file with {{chunk}})")
    try:
        size = path.stat().st_size
        if size > MAX_TEMPLATE_BYTES:
            raise GenerateError(f"{path}: {size:,} bytes is too large for a prompt template "
                                f"(limit {MAX_TEMPLATE_BYTES // 1024} KB)")
        data = path.read_bytes()
    except FileNotFoundError:
        raise GenerateError(f"{path}: no such file") from None
    except OSError as exc:
        raise GenerateError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise GenerateError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); save the prompt "
                            "template as UTF-8") from None
    try:
        return check_template(text)
    except GenerateError as exc:
        raise GenerateError(f"{path}: {exc}") from None


def check_template(template: str) -> str:
    if not template or not template.strip():
        raise GenerateError("the prompt template is empty")
    if "{chunk}" not in template:
        raise GenerateError("the prompt template must contain {chunk}, where each document chunk goes")
    return template


def render_prompt(template: str, chunk: str, n_pairs: int) -> str:
    # plain replacement, not str.format: a template may show JSON examples with braces
    return check_template(template).replace("{n_pairs}", str(n_pairs)).replace("{chunk}", chunk)
_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\n?(.*?)```", re.S)


def _load_json(text: str) -> Any:
    """The first JSON value in the text: whole, inside a ``` fence, or followed by trailing text."""
    text = text.strip()
    if not text:
        raise AnswerError("empty answer")
    candidates = [m.group(1).strip() for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    last = "no JSON array or object found"
    for cand in candidates:
        try:
            return json.loads(cand)
        except json.JSONDecodeError as exc:
            last = f"invalid JSON ({exc.msg} at char {exc.pos})"
        starts = [i for i in (cand.find("["), cand.find("{")) if i >= 0]
        if starts:
            start = min(starts)
            try:
                value, _ = decoder.raw_decode(cand, start)
                return value
            except json.JSONDecodeError as exc:
                last = f"invalid JSON ({exc.msg} at char {exc.pos})"
    raise AnswerError(last)


def parse_answer(text: str) -> tuple[list[dict], list[str]]:
    """Valid pairs in an answer, and the reasons its other items were dropped.

    Raises AnswerError when the answer holds no valid pair (malformed JSON, wrong shape, every item
    invalid)."""
    value = _load_json(text)
    if isinstance(value, dict):
        for key in ("pairs", "data", "items", "examples"):
            if isinstance(value.get(key), list):
                value = value[key]
                break
        else:
            value = [value]
    if not isinstance(value, list):
        raise AnswerError(f"expected a JSON array of objects, got {type(value).__name__}")
    if not value:
        raise AnswerError("the JSON array is empty")
    pairs, problems = [], []
    for number, item in enumerate(value, start=1):
        if not isinstance(item, dict):
            problems.append(f"item {number}: not an object")
            continue
        reason = None
        for name in FIELDS:
            if name not in item:
                reason = f"item {number}: missing field '{name}'"
            elif not isinstance(item[name], str):
                reason = f"item {number}: field '{name}' is not text ({type(item[name]).__name__})"
            elif len(item[name]) > MAX_FIELD_CHARS:
                reason = f"item {number}: field '{name}' is too long"
            if reason:
                break
        if reason is None:
            for name in ("instruction", "output"):
                if not item[name].strip():
                    reason = f"item {number}: field '{name}' is empty"
                    break
        if reason:
            problems.append(reason)
            continue
        pairs.append({k: unicodedata.normalize("NFC", item[k]).strip() for k in FIELDS})
    if not pairs:
        raise AnswerError("; ".join(problems[:5]))
    return pairs, problems


def pair_key(pair: dict) -> str:
    """Two pairs are duplicates when they match after NFC, case folding and whitespace collapsing."""
    parts = [" ".join(unicodedata.normalize("NFC", pair.get(k) or "").casefold().split()) for k in FIELDS]
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()


class Deduper:
    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.dropped = 0

    def add(self, pair: dict) -> bool:
        key = pair_key(pair)
        if key in self.seen:
            self.dropped += 1
            return False
        self.seen.add(key)
        return True


def dedup_pairs(pairs: list[dict]) -> tuple[list[dict], int]:
    d = Deduper()
    kept = [p for p in pairs if d.add(p)]
    return kept, d.dropped
