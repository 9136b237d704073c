"""Ollama Modelfiles whose TEMPLATE renders exactly the prompt format a run was trained with."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from core import prompt_format

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,79}(:[a-z0-9][a-z0-9._-]{0,79})?$")
DEFAULT_SYSTEM = "Bạn là trợ lý AI chuyên về nghiệp vụ của khách hàng. Luôn trả lời bằng tiếng Việt, chính xác và súc tích."


class ModelfileError(ValueError):
    pass


@dataclass
class Parameters:
    temperature: float = 0.7
    top_k: int = 50
    top_p: float = 0.9
    num_ctx: int = 2048
    stop: list[str] = field(default_factory=list)


def check_name(name: str) -> str:
    if not name or not NAME_RE.match(name):
        raise ModelfileError(
            f"'{name}' is not a valid Ollama model name: use lower-case letters, digits, '.', '_' and '-', "
            "optionally followed by ':tag'"
        )
    return name


def check_system(text: str) -> str:
    """Ollama's Modelfile has no escaping: three double quotes inside SYSTEM end the block, and a text ending
    with ``"`` runs into the closing quotes. Both are refused rather than silently altered."""
    if '"""' in text:
        raise ModelfileError('the system text contains """, which would end the Modelfile block early; remove it')
    text = text.strip()
    if text.endswith('"'):
        raise ModelfileError('the system text ends with a double quote ("), which would run into the Modelfile\'s '
                             'closing """; end it with another character')
    return text


def check_text(text: str, gguf: str | Path) -> str:
    """An edited Modelfile: it must still start FROM the exported GGUF and carry a TEMPLATE."""
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not lines or not lines[0].startswith("FROM "):
        raise ModelfileError("the Modelfile must start with FROM and the exported GGUF")
    if lines[0][5:].strip() != str(Path(gguf).resolve()):
        raise ModelfileError(f"line 1: FROM must stay {Path(gguf).resolve()} (the GGUF that was exported and checked)")
    if text.count('TEMPLATE """') != 1:
        raise ModelfileError('the Modelfile needs exactly one TEMPLATE """…""" block')
    if text.count('"""') % 2:
        raise ModelfileError('the Modelfile has an unclosed """ block')
    return text


def build(gguf: str | Path, fmt: str, tokenizer=None, system: str | None = None,
          params: Parameters | None = None) -> str:
    prompt_format.check_format(fmt)
    if system:
        system = check_system(system)
    params = params or Parameters()
    if tokenizer is None and fmt == "chat":
        tokenizer = prompt_format.TemplateTokenizer.from_gguf(gguf)
    template = prompt_format.ollama_template(fmt, tokenizer)
    if '"""' in template:
        raise ModelfileError('the prompt template contains """ and cannot be written into a Modelfile')
    lines = [f"FROM {Path(gguf).resolve()}", "", f'TEMPLATE """{template}"""']
    if system:
        lines.append(f'SYSTEM """{check_system(system)}"""')
    lines += [
        "",
        f"PARAMETER temperature {params.temperature}",
        f"PARAMETER top_k {params.top_k}",
        f"PARAMETER top_p {params.top_p}",
        f"PARAMETER num_ctx {params.num_ctx}",
    ]
    for stop in params.stop or prompt_format.stop_strings(fmt, tokenizer):
        lines.append(f'PARAMETER stop "{stop}"')
    return "\n".join(lines) + "\n"
