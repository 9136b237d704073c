"""The one prompt format shared by training, evaluation, the playground and the Modelfile.

Two formats:
- ``chat`` (default): the model's own chat template (Gemma 3: ``<start_of_turn>user … <end_of_turn>``;
  Gemma 4: ``<|turn>user … <turn|>``; roles user and model either way).
- ``alpaca-vi``: the guide's Vietnamese Alpaca format (``### Hướng dẫn:`` / ``### Đầu vào:`` /
  ``### Phản hồi:``).

Texts are rendered without the BOS token: the tokenizer adds it (``add_special_tokens=True``), and
so do llama.cpp and Ollama, so a rendered prompt never carries two.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

FORMATS = ("chat", "alpaca-vi")
DEFAULT_FORMAT = "chat"

# Gemma's chat template, attached to the embedded base model's tokenizer (the base GGUF has none).
# Roles user / assistant (rendered "model"); a system message is folded into the first user turn.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}{%- set role = 'model' -%}"
    "{%- else -%}{%- set role = message['role'] -%}{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)

ALPACA_INSTRUCTION = "### Hướng dẫn:\n"
ALPACA_INPUT = "### Đầu vào:\n"
ALPACA_RESPONSE = "### Phản hồi:\n"


class FormatError(ValueError):
    pass


GGUF_MAGIC = b"GGUF"
GGUF_HEADER_BYTES = 24   # magic, version, tensor count, metadata count (GGUF v2 and v3)


def check_gguf(path) -> None:
    """A file that can be a GGUF: it exists, is a file, and starts with the GGUF magic and a version
    (what llama.cpp checks first); FormatError with the file and what to do otherwise."""
    from pathlib import Path

    path = Path(path)
    if not path.exists():
        raise FormatError(f"{path}: no such file")
    if not path.is_file():
        raise FormatError(f"{path}: a folder, not a GGUF file")
    import struct

    with path.open("rb") as fh:
        head = fh.read(GGUF_HEADER_BYTES + 1)
    if len(head) < 8:
        raise FormatError(f"{path}: {'empty' if not head else 'too short to be a GGUF'} ({len(head)} bytes); "
                          "export the run again (`python -m core export --run RUN`)")
    if head[:4] != GGUF_MAGIC:
        raise FormatError(f"{path}: not a GGUF file (it starts with {head[:4]!r}, not b'GGUF'); give the .gguf "
                          "that `python -m core export` wrote")
    version = struct.unpack("<I", head[4:8])[0]
    if not 1 <= version <= 3:
        raise FormatError(f"{path}: GGUF version {version}, which llama.cpp does not read (1 to 3); export the "
                          "run again")
    if len(head) <= GGUF_HEADER_BYTES:   # the header and nothing after it: no metadata, no tensors
        tensors, entries = (struct.unpack("<QQ", head[8:24]) if len(head) == GGUF_HEADER_BYTES else ("?", "?"))
        raise FormatError(f"{path}: truncated: the file ends after its {len(head)}-byte header (which announces "
                          f"{tensors} tensors and {entries} metadata entries); export the run again "
                          "(`python -m core export --run RUN`)")


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise FormatError(f"unknown prompt format '{fmt}' (choose one of: {', '.join(FORMATS)})")
    return fmt


def user_message(pair: Mapping[str, Any]) -> str:
    """The instruction and, when present, its input, as one user turn."""
    instruction = (pair.get("instruction") or "").strip()
    extra = (pair.get("input") or "").strip()
    return f"{instruction}\n\n{extra}" if extra else instruction


def _strip_bos(text: str, tokenizer) -> str:
    bos = getattr(tokenizer, "bos_token", None)
    if bos and text.startswith(bos):
        return text[len(bos):]
    return text


def _chat(tokenizer, messages: list[dict], add_generation_prompt: bool) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise FormatError("this tokenizer has no chat template; use the alpaca-vi format")
    # enable_thinking: Gemma 4's template opens a thinking channel unless told not to; others ignore it
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt, enable_thinking=False
    )
    return _strip_bos(text, tokenizer)


def _alpaca_prompt(pair: Mapping[str, Any], system: str | None = None) -> str:
    return render_messages([{"role": "user", "content": pair.get("instruction") or "", "input": pair.get("input")}],
                           "alpaca-vi", None, system=system)


ROLES = ("user", "assistant")


def check_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict]:
    """A conversation as the renderer takes it: turns alternating user / assistant, starting with the
    user (a system text travels apart, as ``system``); each ``content`` a text (a user turn may carry
    an ``input``, the pair's context). FormatError otherwise."""
    out = []
    for n, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise FormatError(f"turn {n + 1} is not a message ({{'role', 'content'}})")
        role, content = m.get("role"), m.get("content")
        want = ROLES[n % 2]
        if role != want:
            raise FormatError(f"turn {n + 1} is '{role}', expected '{want}' (turns alternate user / assistant, "
                              "starting with the user; the system text goes apart)")
        if not isinstance(content, str):
            raise FormatError(f"turn {n + 1}: content must be a text")
        turn = {"role": role, "content": content}
        if role == "user" and m.get("input"):
            turn["input"] = str(m["input"])
        out.append(turn)
    if not out:
        raise FormatError("the conversation is empty")
    return out


def render_messages(messages: Sequence[Mapping[str, Any]], fmt: str, tokenizer, system: str | None = None,
                    add_generation_prompt: bool = True) -> str:
    """A whole conversation as the model sees it: every earlier turn, then (with
    ``add_generation_prompt``) the opening of the model's answer to the last user turn. Training
    renders its pairs with this too (one user turn, one assistant turn, no generation prompt), so a
    chat in the playground is the format the model was tuned on."""
    check_format(fmt)
    turns = check_messages(messages)
    if add_generation_prompt and turns[-1]["role"] != "user":
        raise FormatError("the conversation must end with a user turn for the model to answer")
    if fmt == "alpaca-vi":
        text = f"{system.strip()}\n\n" if system else ""
        for n, turn in enumerate(turns):
            content = turn["content"].strip()
            if turn["role"] == "user":
                text += f"{ALPACA_INSTRUCTION}{content}\n\n"
                extra = (turn.get("input") or "").strip()
                if extra:
                    text += f"{ALPACA_INPUT}{extra}\n\n"
                if n + 1 < len(turns) or add_generation_prompt:
                    text += ALPACA_RESPONSE
            else:
                text += content + ("\n\n" if n + 1 < len(turns) else "")
        return text
    chat = [{"role": "system", "content": system}] if system else []
    chat += [{"role": t["role"], "content": user_message({"instruction": t["content"], "input": t.get("input")})
              if t["role"] == "user" else t["content"].strip()} for t in turns]
    return _chat(tokenizer, chat, add_generation_prompt=add_generation_prompt)


def render_prompt(pair: Mapping[str, Any], fmt: str, tokenizer, system: str | None = None) -> str:
    """What the model sees before it answers."""
    return render_messages([{"role": "user", "content": pair.get("instruction") or "", "input": pair.get("input")}],
                           fmt, tokenizer, system=system)


def render_training_text(pair: Mapping[str, Any], fmt: str, tokenizer) -> str:
    """Prompt and answer as one training text. The trainer appends the EOS token."""
    return render_messages(
        [{"role": "user", "content": pair.get("instruction") or "", "input": pair.get("input")},
         {"role": "assistant", "content": (pair.get("output") or "").strip()}],
        fmt, tokenizer, add_generation_prompt=False,
    )


# The marker that closes a turn: Gemma 2/3 write <end_of_turn>, Gemma 4 writes <turn|>.
TURN_ENDS = ("<end_of_turn>", "<turn|>")


def turn_end(tokenizer) -> str | None:
    """The text the tokenizer's chat template writes right after an answer (its end-of-turn marker)."""
    marker = "\x03ANSWER\x03"
    try:
        text = _chat(tokenizer, [{"role": "user", "content": "?"}, {"role": "assistant", "content": marker}],
                     add_generation_prompt=False)
    except Exception:
        return None
    after = text.partition(marker)[2].strip()
    return after.split()[0] if after else None


def stop_strings(fmt: str, tokenizer=None) -> list[str]:
    """Strings that end an answer, beyond the EOS token."""
    check_format(fmt)
    if fmt == "alpaca-vi":
        return ["### Hướng dẫn:", "<eos>"]
    end = turn_end(tokenizer) if tokenizer is not None else None
    return [end, "<eos>"] if end else [*TURN_ENDS, "<eos>"]


def stop_token_ids(fmt: str, tokenizer) -> list[int]:
    ids = {tokenizer.eos_token_id}
    if fmt == "chat":
        for marker in TURN_ENDS:
            end = tokenizer.convert_tokens_to_ids(marker)
            if isinstance(end, int) and end != tokenizer.unk_token_id:
                ids.add(end)
    return sorted(i for i in ids if i is not None)


def clean_answer(text: str, fmt: str) -> str:
    """Cut generated text at the first stop string and trim it."""
    for stop in stop_strings(fmt):
        cut = text.find(stop)
        if cut >= 0:
            text = text[:cut]
    return text.strip()


_SYS = "\x01SYSTEM\x01"
_PROMPT = "\x02PROMPT\x02"


def ollama_template(fmt: str, tokenizer) -> str:
    """An Ollama TEMPLATE (Go template) that renders exactly ``render_prompt``'s text.

    For the chat format it is derived from the tokenizer's own chat template by rendering it with
    placeholder texts, so it cannot drift from what training used.
    """
    check_format(fmt)
    if fmt == "alpaca-vi":
        return (
            "{{ if .System }}{{ .System }}\n\n{{ end }}"
            f"{ALPACA_INSTRUCTION}{{{{ .Prompt }}}}\n\n{ALPACA_RESPONSE}"
        )
    with_system = render_prompt({"instruction": _PROMPT}, fmt, tokenizer, system=_SYS)
    without = render_prompt({"instruction": _PROMPT}, fmt, tokenizer)
    before_sys, _, rest = with_system.partition(_SYS)
    separator, _, after_prompt = rest.partition(_PROMPT)
    if _SYS not in with_system or _PROMPT not in rest or _PROMPT not in without:
        raise FormatError("the chat template drops the system text or the prompt; the Modelfile cannot express it")
    if before_sys + _PROMPT + after_prompt == without:  # Gemma 3: the system text opens the first user turn
        return (
            f"{before_sys}{{{{ if .System }}}}{{{{ .System }}}}{separator}{{{{ end }}}}"
            f"{{{{ .Prompt }}}}{after_prompt}"
        )
    # a system turn of its own (Gemma 4): one whole branch with it, one without
    go = lambda text: text.replace(_SYS, "{{ .System }}").replace(_PROMPT, "{{ .Prompt }}")  # noqa: E731
    return f"{{{{ if .System }}}}{go(with_system)}{{{{ else }}}}{go(without)}{{{{ end }}}}"


def ollama_prompt(pair: Mapping[str, Any], fmt: str) -> str:
    """The text a client sends to Ollama as the prompt, so that the Modelfile's TEMPLATE renders
    exactly ``render_prompt(pair, fmt, …)``. For ``chat`` it is the user turn; for ``alpaca-vi`` an
    input, when present, travels with its own ``### Đầu vào:`` heading."""
    check_format(fmt)
    if fmt == "alpaca-vi":
        instruction = (pair.get("instruction") or "").strip()
        extra = (pair.get("input") or "").strip()
        return f"{instruction}\n\n{ALPACA_INPUT}{extra}" if extra else instruction
    return user_message(pair)


def render_ollama_template(template: str, prompt: str, system: str | None = None) -> str:
    """Render the subset of Go template syntax that ``ollama_template`` emits (for tests and preflight)."""
    if template.startswith("{{ if .System }}") and "{{ else }}" in template and template.endswith("{{ end }}"):
        with_system, _, without = template[len("{{ if .System }}"):-len("{{ end }}")].partition("{{ else }}")
        chosen = with_system.replace("{{ .System }}", system) if system else without
        return chosen.replace("{{ .Prompt }}", prompt)
    if system:
        text = template.replace("{{ if .System }}", "").replace("{{ end }}", "", 1)
        text = text.replace("{{ .System }}", system)
    else:
        start = template.find("{{ if .System }}")
        end = template.find("{{ end }}")
        text = template[:start] + template[end + len("{{ end }}"):] if start >= 0 else template
    return text.replace("{{ .Prompt }}", prompt)


class TemplateTokenizer:
    """Just enough of a tokenizer to render a chat template: for the Modelfile, read from a GGUF,
    without loading transformers."""

    def __init__(self, chat_template: str, bos_token: str = "<bos>"):
        self.chat_template = chat_template
        self.bos_token = bos_token
        self._compiled = None

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False, **variables):
        if self._compiled is None:  # compiled once per tokenizer
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            def raise_exception(message):
                raise FormatError(message)

            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
            env.globals["raise_exception"] = raise_exception
            self._compiled = env.from_string(self.chat_template)
        return self._compiled.render(
            messages=messages, bos_token=self.bos_token, add_generation_prompt=add_generation_prompt, **variables
        )

    @classmethod
    def from_gguf(cls, path) -> "TemplateTokenizer":
        """Read the chat template and BOS text from a GGUF's metadata (llama.cpp, vocabulary only)."""
        check_gguf(path)
        import llama_cpp

        from core.native import quiet_stderr

        try:
            with quiet_stderr():
                llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
        except (ValueError, OSError, RuntimeError) as exc:
            raise FormatError(f"{path}: llama.cpp cannot read this GGUF (it is truncated or damaged: "
                              f"{type(exc).__name__}); export the run again") from None
        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise FormatError(f"{path}: the GGUF carries no chat template; use the alpaca-vi format")
        bos = llm.detokenize([llm.token_bos()], special=True).decode("utf-8") or "<bos>"
        return cls(template, bos)
