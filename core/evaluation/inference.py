"""Generation with a base model, optionally with a run's LoRA adapter: batched, greedy by default.

Used by the evaluation and preflight workers and by the playground's inference worker
(``core.playground.server``). Prompts come from ``core.prompt_format``.
Prompts are sorted by length and cut into batches, left-padded so that every row's last prompt
token sits at the same position and decoding proceeds with the KV cache for the whole batch;
answers come back in the prompts' order. On CUDA a batch of prompts goes through the static
engine (``core.evaluation.static_generation``: one prompt length, one batch size chosen from free
memory, a compiled decoding step); elsewhere each batch is a plain ``generate`` (``engine_for``).
A row stops at the format's end-of-turn token or at any of the decoding's stop strings (checked
during generation, then cut from the text).
On CUDA, ``load`` uses plain transformers; Unsloth's ``for_inference`` path is opt-in (``VITUNE_UNSLOTH=1``).
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, asdict, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

from core import prompt_format


@dataclass
class Decoding:
    max_new_tokens: int = 128
    temperature: float = 0.0          # 0: greedy
    top_p: float = 1.0
    top_k: int = 0
    batch_size: int = 0               # 0: the engine chooses (from free GPU memory on CUDA; 8 elsewhere)
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
        if not 0 <= int(self.batch_size) <= 1024:
            raise ValueError(f"batch_size must be between 1 and 1024 (or 0: chosen for you), not {self.batch_size}")
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


def _kwargs(decoding: Decoding, tok, eos_ids: list[int]) -> dict:
    """``model.generate``'s settings for a decoding (the same for a batch and for a stream)."""
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
    return kwargs


def load_gguf(gguf: str, prompt_format_name: str | None = None, tokenizer_from: str | None = None,
              n_ctx: int = 4096) -> Loaded:
    """A GGUF through llama.cpp (an exported run, the default model's own GGUF). Prompts are rendered by
    ``core.prompt_format`` with ``tokenizer_from``'s tokenizer (the run's base model: what training
    used) or, without it, the chat template the GGUF carries."""
    import os

    import llama_cpp

    from core.native import quiet_stderr

    prompt_format.check_gguf(gguf)
    fmt = prompt_format_name or prompt_format.DEFAULT_FORMAT
    if tokenizer_from:
        from core.models import load_tokenizer

        tok = load_tokenizer(tokenizer_from)
    elif fmt == "chat":
        tok = prompt_format.TemplateTokenizer.from_gguf(gguf)
    else:
        tok = None
    try:
        with quiet_stderr():
            llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=n_ctx, n_threads=max(1, min(4, os.cpu_count() or 1)),
                                  verbose=False, seed=0)
    except (ValueError, OSError, RuntimeError) as exc:
        raise prompt_format.FormatError(f"{gguf}: llama.cpp cannot load this GGUF ({type(exc).__name__}: {exc})") from None
    return Loaded(llm, tok, str(gguf), None, fmt, "llama.cpp")


ENGINES = ("auto", "static", "dynamic")


def engine_for(loaded: Loaded, requested: str | None = None, prompts: int = 2) -> str:
    """"static" (``core.evaluation.static_generation``: fixed shapes, a compiled decoding step) on CUDA
    for a batch of prompts (an evaluation, a preflight), "dynamic" (a plain ``generate`` per batch)
    elsewhere and for one prompt (a playground question: no compile to wait for); ``requested`` or
    ``VITUNE_GENERATION`` may name either. A GGUF and Unsloth's inference path take their own way."""
    import os

    choice = requested or os.environ.get("VITUNE_GENERATION", "auto") or "auto"
    if choice not in ENGINES:
        raise ValueError(f"generation engine '{choice}' is not one of: {', '.join(ENGINES)} (VITUNE_GENERATION)")
    if loaded.backend != "hf":
        return "dynamic"
    if choice == "auto":
        device = getattr(loaded.model, "device", None)
        return "static" if getattr(device, "type", "cpu") == "cuda" and prompts > 1 else "dynamic"
    return choice


def generate(loaded: Loaded, prompts: Sequence[str], decoding: Decoding | None = None,
             on_progress: Callable[[int, int], None] | None = None, *,
             on_phase: Callable[[str], None] | None = None, engine: str | None = None,
             info: dict | None = None) -> list[str]:
    """Answers for ``prompts`` (already rendered), in the same order. ``decoding.batch_size`` 0 lets
    the engine choose it. ``info`` (a dict) gets the engine used and, for the static one, its plan."""
    import torch

    decoding = (decoding or Decoding()).validate()
    info = info if info is not None else {}
    if loaded.backend == "llama.cpp":   # one prompt at a time
        info["engine"] = "llama.cpp"
        answers = []
        for n, prompt in enumerate(prompts):
            answers.append("".join(stream(loaded, prompt, decoding)))
            if on_progress:
                on_progress(n + 1, len(prompts))
        return answers
    tok, model = loaded.tokenizer, loaded.model
    lengths = [len(ids) for ids in tok(list(prompts), add_special_tokens=True)["input_ids"]] if prompts else []
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])
    answers: list[str] = [""] * len(prompts)
    eos_ids = prompt_format.stop_token_ids(loaded.prompt_format, tok)
    kwargs = _kwargs(decoding, tok, eos_ids)
    done = 0

    info["new_ids"] = [[] for _ in prompts]   # each answer's generated ids, up to its end-of-turn token

    def settle(idx: list[int], new_ids: list[list[int]]) -> None:
        nonlocal done
        for row, i in enumerate(idx):
            ids = new_ids[row]
            end = next((k + 1 for k, t in enumerate(ids) if t in eos_ids), len(ids))
            info["new_ids"][i] = ids[:end]
            answers[i] = clean(tok, ids, loaded.prompt_format, eos_ids, decoding.stop)
        done += len(idx)
        if on_progress:
            on_progress(done, len(prompts))

    info["engine"] = engine_for(loaded, engine, len(prompts))
    if info["engine"] == "static" and prompts:
        from core.evaluation import static_generation

        dtype = next(model.parameters()).dtype
        info["plan"] = static_generation.plan(
            lengths, decoding.max_new_tokens, config=model.config, free_bytes=static_generation.free_gpu_bytes(model),
            requested_batch=int(decoding.batch_size), dtype_bytes=torch.finfo(dtype).bits // 8).to_dict()
        try:
            static_generation.run(model, tok, prompts, order, static_generation.Plan(**info["plan"]), kwargs,
                                  settle, on_phase)
            return answers
        except (RuntimeError, NotImplementedError, ValueError, TypeError) as exc:
            if done:   # it worked and then broke: that is no engine choice, but a failure
                raise
            info.update(engine="dynamic", fallback=f"{type(exc).__name__}: {str(exc)[:300]}")
            print(f"static-cache generation unavailable for this model ({info['fallback']}); "
                  "generating batch by batch without it", flush=True)
    size = int(decoding.batch_size) or 8
    info.setdefault("batch", size)
    if on_phase:
        on_phase("generating")
    for start in range(0, len(order), size):
        idx = order[start : start + size]
        batch = tok([prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=True)
        batch = {k: v.to(model.device) for k, v in batch.items()}
        with torch.inference_mode():
            out = model.generate(**batch, **kwargs)
        settle(idx, out[:, batch["input_ids"].shape[1]:].tolist())
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


def ask(loaded: Loaded, question: str, context: str = "", system: str | None = None,
        decoding: Decoding | None = None) -> str:
    prompt = prompt_format.render_prompt(
        {"instruction": question, "input": context}, loaded.prompt_format, loaded.tokenizer, system=system
    )
    return generate(loaded, [prompt], decoding)[0]


class StopFilter:
    """Pieces of a streamed answer, held back just enough that their concatenation is exactly the
    batch path's answer (``clean``): no leading or trailing white space, nothing from the first stop
    string on (a piece that may be the start of a stop string waits for the next one)."""

    def __init__(self, stops: Sequence[str]):
        self.stops = [s for s in stops if s]
        self.text = ""
        self.sent = 0
        self.stopped = False

    def feed(self, chunk: str) -> str:
        if self.stopped:
            return ""
        self.text += chunk
        cuts = [i for i in (self.text.find(s) for s in self.stops) if i >= 0]
        if cuts:
            self.stopped = True
            return self._emit(len(self.text[:min(cuts)].rstrip()))
        safe = len(self.text)
        for stop in self.stops:   # the longest tail that could grow into a stop string waits
            for k in range(min(len(stop) - 1, len(self.text)), 0, -1):
                if self.text.endswith(stop[:k]):
                    safe = min(safe, len(self.text) - k)
                    break
        return self._emit(len(self.text[:safe].rstrip()))

    def finish(self) -> str:
        return "" if self.stopped else self._emit(len(self.text.rstrip()))

    def _emit(self, end: int) -> str:
        if self.sent == 0:
            self.sent = len(self.text) - len(self.text.lstrip())
        piece = self.text[self.sent:end] if end > self.sent else ""
        self.sent = max(self.sent, end)
        return piece


def stream(loaded: Loaded, prompt: str, decoding: Decoding | None = None, cancel: threading.Event | None = None,
           stats: dict | None = None) -> Iterator[str]:
    """The answer to one rendered prompt, piece by piece as it is generated (transformers'
    ``TextIteratorStreamer``, ``generate`` in a thread). Setting ``cancel`` (or closing the generator)
    ends the generation at the next token. ``stats`` gets ``prompt_tokens``, ``new_tokens``, ``pieces``,
    ``first_piece_s`` / ``first_piece_tokens`` (when the first piece was handed out) and ``seconds``."""
    decoding = (decoding or Decoding()).validate()
    if loaded.backend == "llama.cpp":
        yield from _stream_llama(loaded, prompt, decoding, cancel or threading.Event(),
                                 stats if stats is not None else {})
        return
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

    tok, model = loaded.tokenizer, loaded.model
    cancel = cancel or threading.Event()
    stats = stats if stats is not None else {}
    t0 = time.perf_counter()
    batch = tok([prompt], return_tensors="pt", add_special_tokens=True)
    batch = {k: v.to(model.device) for k, v in batch.items()}
    prompt_len = batch["input_ids"].shape[1]
    stats.update(prompt_tokens=int(prompt_len), new_tokens=0, pieces=0)

    class _Cancel(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            stats["new_tokens"] = int(input_ids.shape[1] - prompt_len)
            return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device)

    eos_ids = prompt_format.stop_token_ids(loaded.prompt_format, tok)
    streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True, timeout=600)
    kwargs = _kwargs(decoding, tok, eos_ids)
    kwargs.update(streamer=streamer, stopping_criteria=StoppingCriteriaList([_Cancel()]))
    failed: list[BaseException] = []

    def run() -> None:
        try:
            with torch.inference_mode():
                model.generate(**batch, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread
            failed.append(exc)
            streamer.end()

    thread = threading.Thread(target=run, name="vitune-stream", daemon=True)
    thread.start()
    filt = StopFilter([*prompt_format.stop_strings(loaded.prompt_format), *decoding.stop])

    def out(piece: str):
        if piece:
            stats["pieces"] += 1
            if "first_piece_s" not in stats:   # when the first piece left: how long, and how far generation was
                stats.update(first_piece_s=round(time.perf_counter() - t0, 4), first_piece_tokens=stats["new_tokens"])
        return piece

    drained = False
    try:
        for chunk in streamer:
            piece = out(filt.feed(chunk))
            if piece:
                yield piece
            if filt.stopped:
                cancel.set()
                break
        else:
            drained = True
        if failed:
            raise failed[0]
        piece = out(filt.finish())
        if piece:
            yield piece
    finally:
        cancel.set()
        if not drained:  # let generate end (it stops at the next token) and empty the streamer
            for _ in streamer:
                pass
        thread.join()
        stats["seconds"] = round(time.perf_counter() - t0, 4)


def _stream_llama(loaded: Loaded, prompt: str, decoding: Decoding, cancel: threading.Event, stats: dict) -> Iterator[str]:
    """``stream`` for a GGUF: llama.cpp's own streaming completion (BOS added by llama.cpp, as by Ollama)."""
    llm = loaded.model
    t0 = time.perf_counter()
    stops = [*prompt_format.stop_strings(loaded.prompt_format, loaded.tokenizer), *decoding.stop]
    stats.update(prompt_tokens=len(llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)),
                 new_tokens=0, pieces=0)
    filt = StopFilter(stops)
    chunks = llm.create_completion(prompt, max_tokens=int(decoding.max_new_tokens), stream=True, stop=stops,
                                   temperature=float(decoding.temperature), top_p=float(decoding.top_p),
                                   top_k=int(decoding.top_k), seed=0)

    def out(piece: str) -> str:
        if piece:
            stats["pieces"] += 1
            if "first_piece_s" not in stats:
                stats.update(first_piece_s=round(time.perf_counter() - t0, 4), first_piece_tokens=stats["new_tokens"])
        return piece

    try:
        for chunk in chunks:
            if chunk["choices"][0].get("finish_reason") is None:   # llama.cpp's last chunk only says why it ended
                stats["new_tokens"] += 1
            piece = out(filt.feed(chunk["choices"][0]["text"]))
            if piece:
                yield piece
            if filt.stopped or cancel.is_set():
                break
        else:
            piece = out(filt.finish())
            if piece:
                yield piece
    finally:
        chunks.close()
        stats["seconds"] = round(time.perf_counter() - t0, 4)
