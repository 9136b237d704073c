"""Ollama Modelfiles whose TEMPLATE renders exactly the prompt format a run was trained with.

``build`` writes the studio's Modelfile. An edited one is read the way Ollama reads it (``parse``: every
directive, in any case, values bare, in double quotes or in triple double quotes over several lines; a later
FROM or TEMPLATE would win in Ollama, ADAPTER and MESSAGE would change the model) and ``finalize``
keeps only the edits the studio allows — SYSTEM and PARAMETER — and writes FROM and TEMPLATE itself,
so that what the preflight checks is what ``ollama create`` gets.
"""
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


COMMANDS = ("from", "license", "template", "system", "adapter", "draft", "renderer", "parser", "parameter",
            "message", "requires")
MESSAGE_ROLES = ("system", "user", "assistant")
# Ollama's runner options a Modelfile may set, with the type each takes
PARAMETER_TYPES: dict[str, type] = {
    "num_ctx": int, "num_predict": int, "num_keep": int, "num_batch": int, "num_gpu": int, "main_gpu": int,
    "num_thread": int, "repeat_last_n": int, "seed": int, "top_k": int,
    "temperature": float, "top_p": float, "min_p": float, "typical_p": float, "repeat_penalty": float,
    "presence_penalty": float, "frequency_penalty": float,
    "stop": str,
}


@dataclass
class Command:
    name: str   # from | template | system | parameter NAME (as "parameter") | message | adapter | …
    args: str
    line: int
    parameter: str | None = None   # PARAMETER's name
    role: str | None = None         # MESSAGE's role


def _unquote(text: str) -> tuple[str, bool]:
    """A value as Ollama takes it: triple- or single-double-quoted values unwrapped, a bare one as is; a quote
    that is still open is reported as not done (the parser then reads on to the next line)."""
    if text.startswith('"""'):
        return (text[3:-3], True) if len(text) >= 6 and text.endswith('"""') else ("", False)
    if text.startswith('"'):
        return (text[1:-1], True) if len(text) >= 2 and text.endswith('"') else ("", False)
    return text, True


def parse(text: str) -> list[Command]:
    """Every directive of a Modelfile, as Ollama's parser reads it (ModelfileError with the line otherwise).

    Directives are case-insensitive and may follow blank lines, spaces and ``#`` comments; a value runs
    to the end of its line unless it opens a quote, which runs (over lines) to its closing quote."""
    out: list[Command] = []
    i, n, line = 0, len(text.lstrip("\ufeff")), 1
    text = text.lstrip("\ufeff")

    def fail(message: str):
        raise ModelfileError(f"line {line}: {message}")

    while i < n:
        ch = text[i]
        if ch == "\n":
            line += 1
            i += 1
            continue
        if ch in " \t\r":
            i += 1
            continue
        if ch == "#":
            while i < n and text[i] != "\n":
                i += 1
            continue
        start_line = line
        j = i
        while j < n and text[j].isascii() and text[j].isalpha():
            j += 1
        word = text[i:j].lower()
        if j >= n or text[j] not in " \t" or word not in COMMANDS:
            fail(f"'{text[i:j + 1].strip() or text[i]}' is not a Modelfile directive (one of: "
                 f"{', '.join(c.upper() for c in COMMANDS)})")
        i = j
        while i < n and text[i] in " \t":
            i += 1
        parameter = role = None
        if word in ("parameter", "message"):
            j = i
            allowed = (lambda c: c.isascii() and (c.isalnum() or c == "_")) if word == "parameter" else \
                (lambda c: c.isascii() and c.isalpha())
            while j < n and allowed(text[j]):
                j += 1
            token = text[i:j]
            if not token or j >= n or text[j] not in " \t":
                fail(f"{word.upper()} needs a {'name' if word == 'parameter' else 'role'} and a value")
            if word == "message" and token not in MESSAGE_ROLES:
                fail(f"MESSAGE's role must be one of {', '.join(MESSAGE_ROLES)}, not '{token}'")
            parameter, role = (token, None) if word == "parameter" else (None, token)
            i = j
            while i < n and text[i] in " \t":
                i += 1
        # the value: to the end of the line, or over lines while a quote is open
        buf = []
        while True:
            if i >= n:
                value, done = _unquote("".join(buf).strip())
                if not done:
                    raise ModelfileError(f"line {start_line}: a quoted value is not closed before the end of "
                                         "the file")
                break
            ch = text[i]
            if ch == "\n":
                value, done = _unquote("".join(buf).strip())
                if done:
                    break
                line += 1
            buf.append(ch)
            i += 1
        out.append(Command(word, value, start_line, parameter, role))
    return out


def _one(commands: list[Command], name: str) -> Command | None:
    found = [c for c in commands if c.name == name]
    if len(found) > 1:
        raise ModelfileError(f"line {found[1].line}: a second {name.upper()} (Ollama would keep only the last); "
                             "keep one")
    return found[0] if found else None


def finalize(edited: str, built: str) -> str:
    """The Modelfile to check and release, from an edited text: its SYSTEM and PARAMETER lines, and the
    studio's own FROM and TEMPLATE (from ``built``, the Modelfile ``build`` wrote). Anything else — a
    changed FROM or TEMPLATE, ADAPTER, MESSAGE, LICENSE and the rest — is refused with its line."""
    ours = parse(built)
    base, template = _one(ours, "from"), _one(ours, "template")
    commands = parse(edited)
    for c in commands:
        if c.name == "from" and c.args.strip() != base.args.strip():
            raise ModelfileError(f"line {c.line}: FROM must stay {base.args} (the GGUF that was exported and checked)")
        if c.name == "template" and c.args != template.args:
            raise ModelfileError(f"line {c.line}: TEMPLATE is the training prompt format and is written by the "
                                 "studio; edit SYSTEM or PARAMETER lines only")
        if c.name not in ("from", "template", "system", "parameter"):
            raise ModelfileError(f"line {c.line}: {c.name.upper()} is not allowed in a release: the studio releases "
                                 "exactly the GGUF and template it checked (edit SYSTEM or PARAMETER lines only)")
        if c.name == "parameter":
            kind = PARAMETER_TYPES.get(c.parameter)
            if kind is None:
                raise ModelfileError(f"line {c.line}: unknown PARAMETER '{c.parameter}' (one of: "
                                     f"{', '.join(sorted(PARAMETER_TYPES))})")
            if kind is not str:
                try:
                    kind(c.args)
                except ValueError:
                    raise ModelfileError(f"line {c.line}: PARAMETER {c.parameter} takes {'an integer' if kind is int else 'a number'}, "
                                         f"not '{c.args}'") from None
            if not c.args.strip() or "\n" in c.args or '"' in c.args and kind is str:
                raise ModelfileError(f"line {c.line}: PARAMETER {c.parameter} needs a one-line value without quotes "
                                     "inside it")
    _one(commands, "from"), _one(commands, "template")
    system = _one(commands, "system")
    lines = [f"FROM {base.args}", "", f'TEMPLATE """{template.args}"""']
    if system and system.args.strip():
        lines.append(f'SYSTEM """{check_system(system.args)}"""')
    lines.append("")
    for c in commands:
        if c.name == "parameter":
            value = f'"{c.args.strip()}"' if PARAMETER_TYPES[c.parameter] is str else c.args.strip()
            lines.append(f"PARAMETER {c.parameter} {value}")
    return "\n".join(lines) + "\n"


def template_of(text: str) -> str:
    found = _one(parse(text), "template")
    if found is None:
        raise ModelfileError("the Modelfile has no TEMPLATE")
    return found.args


def system_of(text: str) -> str | None:
    found = _one(parse(text), "system")
    return found.args if found else None


def stops_of(text: str) -> list[str]:
    return [c.args for c in parse(text) if c.name == "parameter" and c.parameter == "stop"]


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
