"""Generation with a base model, optionally with a run's LoRA adapter: batched, greedy by default.

Used by the evaluation worker and by the playground. Prompts come from ``core.prompt_format``.
Prompts are sorted by length and cut into batches, left-padded so that every row's last prompt
token sits at the same position and decoding proceeds with the KV cache for the whole batch;
answers come back in the prompts' order. A row stops at the format's end-of-turn token or at any
of the decoding's stop strings (checked during generation, then cut from the text).
On CUDA, ``load`` uses plain transformers; Unsloth's ``for_inference`` path is opt-in (``VITUNE_UNSLOTH=1``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, asdict, field
from pathlib import Path
from typing import Callable, Sequence

from core import prompt_format


@dataclass
class Decoding:
    max_new_tokens: int = 128
    temperature: float = 0.0          # 0: greedy
    top_p: float = 1.0
    top_k: int = 0
    batch_size: int = 8
    stop: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> "Decoding":
        data = dict(data or {})
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown decoding setting(s): {', '.join(sorted(unknown))}")
        return cls(**data)

    def validate(self) -> "Decoding":
        if not 1 <= int(self.max_new_tokens) <= 8192:
            raise ValueError(f"max_new_tokens must be between 1 and 8192, not {self.max_new_tokens}")
        if not 0 <= float(self.temperature) <= 5:
            raise ValueError(f"temperature must be between 0 (greedy) and 5, not {self.temperature}")
        if not 0 < float(self.top_p) <= 1:
            raise ValueError(f"top_p must be in (0, 1], not {self.top_p}")
        if int(self.top_k) < 0:
            raise ValueError(f"top_k must be 0 (off) or more, not {self.top_k}")
        if not 1 <= int(self.batch_size) <= 1024:
            raise ValueError(f"batch_size must be between 1 and 1024, not {self.batch_size}")
        if not isinstance(self.stop, list) or not all(isinstance(x, str) and x for x in self.stop):
            raise ValueError("stop strings must be a list of non-empty texts")
        return self

    @property
    def greedy(self) -> bool:
        return float(self.temperature) <= 0


def parse_stop(text: str | None) -> list[str]:
    """Stop strings typed one per line (``\\n`` spells a newline)."""
    return [line.replace("\\n", "\n") for line in (text or "").splitlines() if line.strip()]


@dataclass
class Loaded:
    model: object
    tokenizer: object
    base_model: str
    adapter_dir: str | None
    prompt_format: str
    backend: str = "hf"


def _unsloth_inference(base_model: str, adapter_dir: str | None, tokenizer):
    """Unsloth's fast inference (CUDA only): the base model, the run's adapter on top, ``for_inference``.
    Opt-in (``VITUNE_UNSLOTH=1``): on the H200 (2026-11-29, Unsloth 2026.10.9, a 1.7B Gemma 3) its first
    4-token warm-up generation had not returned after 200 s, while plain transformers batched 64
    prompts 27× faster than the one-at-a-time loop. Returns None where it is off or not installed."""
    import os

    if os.environ.get("VITUNE_UNSLOTH", "0") != "1":
        return None
    try:
        from unsloth import FastLanguageModel
    except Exception:
        return None
    # a pre-quantised 4-bit base (as trained with QLoRA) stays 4-bit; others load in bf16/fp16
    model, _ = FastLanguageModel.from_pretrained(model_name=base_model, max_seq_length=8192, dtype=None,
                                                 load_in_4bit="4bit" in base_model.lower())
    if adapter_dir:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir)
    FastLanguageModel.for_inference(model)
    return model


def load(base_model: str, adapter_dir: str | None = None, prompt_format_name: str | None = None,
         merge: bool = True, dtype=None, device: str | None = None) -> Loaded:
    """``device``: "cuda" or "cpu"; by default CUDA where there is one (Unsloth's fast inference only
    when ``VITUNE_UNSLOTH=1``)."""
    import torch
    from transformers import AutoModelForCausalLM

    from core.models import compute_dtype, load_tokenizer

    fmt = prompt_format_name or prompt_format.DEFAULT_FORMAT
    if adapter_dir:
        meta_path = Path(adapter_dir) / "vitune_run.json"
        if meta_path.exists():
            meta = json.loads(meta_path.read_text())
            base_model = base_model or meta["base_model"]
            fmt = prompt_format_name or meta["prompt_format"]
    tokenizer = load_tokenizer(base_model)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    cuda = torch.cuda.is_available() if device is None else device == "cuda"
    if cuda and dtype is None:
        try:
            model = _unsloth_inference(base_model, adapter_dir, tokenizer)
        except Exception as exc:  # an Unsloth that cannot load this model: plain transformers does
            print(f"Unsloth inference unavailable for {base_model} ({type(exc).__name__}: {exc}); using transformers",
                  flush=True)
            model = None
        if model is not None:
            return Loaded(model, tokenizer, base_model, adapter_dir, fmt, "unsloth")
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=dtype or compute_dtype(cuda))
    if adapter_dir:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir)
        if merge:
            model = model.merge_and_unload()
    if cuda:
        model = model.to("cuda")
    model.eval()
    return Loaded(model, tokenizer, base_model, adapter_dir, fmt, "hf")


def generate(loaded: Loaded, prompts: Sequence[str], decoding: Decoding | None = None,
             on_progress: Callable[[int, int], None] | None = None) -> list[str]:
    """Answers for ``prompts`` (already rendered), in the same order."""
    import torch

    decoding = (decoding or Decoding()).validate()
    tok, model = loaded.tokenizer, loaded.model
    lengths = [len(ids) for ids in tok(list(prompts), add_special_tokens=True)["input_ids"]] if prompts else []
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])
    answers: list[str] = [""] * len(prompts)
    eos_ids = prompt_format.stop_token_ids(loaded.prompt_format, tok)
    done = 0
    for start in range(0, len(order), max(1, decoding.batch_size)):
        idx = order[start : start + decoding.batch_size]
        batch = tok([prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=True)
        batch = {k: v.to(model.device) for k, v in batch.items()}
        kwargs = dict(
            max_new_tokens=decoding.max_new_tokens,
            eos_token_id=eos_ids,
            pad_token_id=tok.pad_token_id,
            use_cache=True,
        )
        if decoding.stop:
            kwargs.update(stop_strings=list(decoding.stop), tokenizer=tok)
        if decoding.temperature > 0:
            kwargs.update(do_sample=True, temperature=decoding.temperature, top_p=decoding.top_p)
            if decoding.top_k:
                kwargs["top_k"] = decoding.top_k
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with torch.inference_mode():
            out = model.generate(**batch, **kwargs)
        new = out[:, batch["input_ids"].shape[1]:]
        for row, i in enumerate(idx):
            answers[i] = clean(tok, new[row].tolist(), loaded.prompt_format, eos_ids, decoding.stop)
        done += len(idx)
        if on_progress:
            on_progress(done, len(prompts))
    return answers


def clean(tok, ids: list[int], fmt: str, eos_ids: list[int], extra_stops: Sequence[str] = ()) -> str:
    for k, t in enumerate(ids):
        if t in eos_ids:
            ids = ids[:k]
            break
    text = tok.decode(ids, skip_special_tokens=True)
    text = prompt_format.clean_answer(text, fmt)
    for stop in extra_stops:
        if stop and stop in text:
            text = text[: text.find(stop)].strip()
    return text


_CACHE: dict[tuple, Loaded] = {}


def cached(base_model: str, adapter_dir: str | None, fmt: str | None) -> Loaded:
    """One loaded model per (base, adapter, format) in this process: the playground's cache."""
    key = (base_model, adapter_dir, fmt)
    if key not in _CACHE:
        if len(_CACHE) >= 4:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = load(base_model, adapter_dir, fmt)
    return _CACHE[key]


def ask(loaded: Loaded, question: str, context: str = "", system: str | None = None,
        decoding: Decoding | None = None) -> str:
    prompt = prompt_format.render_prompt(
        {"instruction": question, "input": context}, loaded.prompt_format, loaded.tokenizer, system=system
    )
    return generate(loaded, [prompt], decoding)[0]
