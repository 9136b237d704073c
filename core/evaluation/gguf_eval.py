"""Generation for an evaluation of the shipped artifact, worker side: an exported GGUF through llama.cpp, or a
release served by Ollama (issue 28: the gate judges the model that ships).

**llama.cpp** (``LlamaBatchGenerator``): several sequences decoded together in one context (``n_seq_max``
parallel sequences, continuous batching: a finished sequence's slot takes the next prompt at once), greedy by
default through llama.cpp's own sampler, ``n_threads`` = every core of the machine. Where llama.cpp was built
with a GPU backend (``llama_supports_gpu_offload``: CUDA where setup found the toolkit) every layer is offloaded
and the backend says so; elsewhere it says what it fell back to. Prompts are the run's own
(``core.prompt_format`` with the run's base tokenizer, BOS added by llama.cpp as by Ollama); an answer stops at
llama.cpp's end-of-generation tokens or the format's end-of-turn marker, and is cleaned as the HF path cleans
it (``prompt_format.clean_answer``, then the decoding's stop strings).

**Ollama** (``ollama_answers``): the release's tag through the ``ollama`` Python client's ``generate`` with the
user message alone (the Modelfile's TEMPLATE renders it there, exactly as for the client), greedy options, a
few requests in flight (Ollama's ``OLLAMA_NUM_PARALLEL`` serves them together).

Nothing here imports the app side.
"""
from __future__ import annotations

import ctypes
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

from core import prompt_format

DEFAULT_PARALLEL = 8   # sequences decoded together (a slot each)
UBATCH = 512


def cores() -> int:
    """Every core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class LlamaBatchGenerator:
    """A GGUF loaded once for a batch of prompts: ``generate(prompts, decoding)`` → answers, and ``backend``
    (what it ran on: device, layers offloaded, threads, parallel sequences, and a fallback note)."""

    def __init__(self, gguf: str, *, n_parallel: int = DEFAULT_PARALLEL, n_ctx_per_seq: int = 2048,
                 n_threads: int | None = None, gpu: bool | None = None, kv_unified: bool = False):
        import llama_cpp

        from core.native import quiet_stderr

        from llama_cpp import _logger

        _logger.set_verbose(False)   # llama.cpp's errors only, not its every load and graph line
        self.lc = llama_cpp
        self.gguf = str(gguf)
        self.n_parallel = max(1, int(n_parallel))
        self.n_threads = int(n_threads or cores())
        offload = llama_cpp.llama_supports_gpu_offload() if gpu is None else bool(gpu)
        mp = llama_cpp.llama_model_default_params()
        mp.n_gpu_layers = 0x7FFFFFFF if offload else 0
        with quiet_stderr():
            self.model = llama_cpp.llama_model_load_from_file(self.gguf.encode("utf-8"), mp)
        if not self.model:
            raise ValueError(f"{gguf}: llama.cpp cannot load this GGUF")
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_layers = int(llama_cpp.llama_model_n_layer(self.model))
        self.n_ctx_per_seq = int(n_ctx_per_seq)
        self.kv_unified = kv_unified
        self.ctx = None
        system = llama_cpp.llama_print_system_info().decode("utf-8", "replace")
        if offload:
            device = "GPU"
            note = None
        elif gpu is False:
            device, note = "CPU", "GPU offload turned off for this evaluation"
        else:
            device, note = "CPU", ("this llama.cpp was built without a GPU backend (CUDA): it ran on the CPU with "
                                   "every core; setup builds it with CUDA where it finds the toolkit")
        self.backend = {"engine": "llama.cpp", "device": device, "gpu_layers": self.n_layers if offload else 0,
                        "layers": self.n_layers, "n_threads": self.n_threads, "n_parallel": self.n_parallel,
                        "llama_cpp": getattr(llama_cpp, "__version__", "?"), "fallback": note,
                        "system_info": system[:300]}
        self.stop_ids = self._stop_ids()

    def _stop_ids(self) -> set[int]:
        lc = self.lc
        out = {int(lc.llama_vocab_eos(self.vocab))}
        eot = int(lc.llama_vocab_eot(self.vocab))
        if eot >= 0:
            out.add(eot)
        for marker in (*prompt_format.TURN_ENDS, "<eos>"):
            ids = self.tokenize(marker, add_bos=False)
            if len(ids) == 1:
                out.add(ids[0])
        return out

    def tokenize(self, text: str, add_bos: bool = True) -> list[int]:
        lc = self.lc
        raw = text.encode("utf-8")
        size = len(raw) + 16
        buf = (lc.llama_token * size)()
        n = lc.llama_tokenize(self.vocab, raw, len(raw), buf, size, add_bos, True)
        if n < 0:
            size = -n
            buf = (lc.llama_token * size)()
            n = lc.llama_tokenize(self.vocab, raw, len(raw), buf, size, add_bos, True)
        return list(buf[:n])

    def detokenize(self, ids: Sequence[int]) -> str:
        lc = self.lc
        out = bytearray()
        buf = ctypes.create_string_buffer(256)
        for t in ids:
            n = lc.llama_token_to_piece(self.vocab, int(t), buf, len(buf), 0, False)
            out += buf.raw[:max(n, 0)]
        return out.decode("utf-8", errors="replace")

    def _context(self, n_seq: int):
        lc = self.lc
        cp = lc.llama_context_default_params()
        cp.n_ctx = n_seq * self.n_ctx_per_seq
        cp.n_batch = cp.n_ctx       # one decode call takes every new prompt and every slot's next token
        cp.n_ubatch = min(UBATCH, cp.n_ctx)
        cp.n_seq_max = n_seq
        cp.n_threads = self.n_threads
        cp.n_threads_batch = self.n_threads
        # as llama-cpp-python's Llama (the preflight's, the playground's): no flash attention, whose sums in another
        # order move a greedy answer of a small model at its first near tie
        cp.flash_attn_type = lc.LLAMA_FLASH_ATTN_TYPE_DISABLED
        cp.kv_unified = self.kv_unified   # False: each slot its own n_ctx_per_seq cells (no shared prefix to share)
        if self.ctx is not None:
            lc.llama_free(self.ctx)
        from core.native import quiet_stderr

        with quiet_stderr():   # its notes on the cache it sets up
            self.ctx = lc.llama_init_from_model(self.model, cp)
        if not self.ctx:
            raise RuntimeError("llama.cpp could not create a context for the evaluation")
        return self.ctx

    def _sampler(self, decoding):
        lc = self.lc
        if decoding.greedy:
            return lc.llama_sampler_init_greedy()
        chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        if int(decoding.top_k):
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_k(int(decoding.top_k)))
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_p(float(decoding.top_p), 1))
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_temp(float(decoding.temperature)))
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_dist(0))
        return chain

    def generate(self, prompts: Sequence[str], decoding, fmt: str,
                 on_progress: Callable[[int, int], None] | None = None) -> tuple[list[str], dict]:
        """Answers in ``prompts``' order, and the run's numbers (tokens, seconds, tokens/s)."""
        lc = self.lc
        n = len(prompts)
        tokens = [self.tokenize(p) for p in prompts]
        longest = max((len(t) for t in tokens), default=1)
        max_new = int(decoding.max_new_tokens)
        if longest + max_new > self.n_ctx_per_seq:
            self.n_ctx_per_seq = longest + max_new + 8
        n_seq = max(1, min(self.n_parallel, n))
        ctx = self._context(n_seq)
        mem = lc.llama_get_memory(ctx)
        samplers = [self._sampler(decoding) for _ in range(n_seq)]
        batch = lc.llama_batch_init(n_seq * self.n_ctx_per_seq, 0, 1)
        order = sorted(range(n), key=lambda i: -len(tokens[i]))   # the longest first: the tail is short ones
        pending = list(order)
        slots: list[dict | None] = [None] * n_seq
        answers: list[str] = [""] * n
        done = generated = prompt_tokens = 0
        t0 = time.perf_counter()
        try:
            while pending or any(slots):
                batch.n_tokens = 0

                def add(token: int, pos: int, seq: int, logits: bool) -> int:
                    k = batch.n_tokens
                    batch.token[k], batch.pos[k], batch.n_seq_id[k] = token, pos, 1
                    batch.seq_id[k][0], batch.logits[k] = seq, logits
                    batch.n_tokens = k + 1
                    return k

                for s in range(n_seq):
                    if slots[s] is None and pending:
                        i = pending.pop(0)
                        ids = tokens[i]
                        for p, t in enumerate(ids):
                            at = add(t, p, s, p == len(ids) - 1)
                        slots[s] = {"i": i, "pos": len(ids), "out": [], "at": at}
                        prompt_tokens += len(ids)
                    elif slots[s] is not None and slots[s]["out"]:
                        slot = slots[s]
                        slot["at"] = add(slot["out"][-1], slot["pos"], s, True)
                        slot["pos"] += 1
                rc = lc.llama_decode(ctx, batch)
                if rc != 0:
                    raise RuntimeError(f"llama_decode returned {rc} (the context of {n_seq} × {self.n_ctx_per_seq} "
                                       "tokens is too small for these prompts)")
                for s in range(n_seq):
                    slot = slots[s]
                    if slot is None:
                        continue
                    t = int(lc.llama_sampler_sample(samplers[s], ctx, slot["at"]))
                    finished = t in self.stop_ids or bool(lc.llama_vocab_is_eog(self.vocab, t))
                    if not finished:
                        slot["out"].append(t)
                        generated += 1
                        text = self.detokenize(slot["out"]) if decoding.stop else ""
                        finished = len(slot["out"]) >= max_new or any(x in text for x in decoding.stop)
                    if finished:
                        answers[slot["i"]] = self._clean(slot["out"], fmt, decoding.stop)
                        lc.llama_memory_seq_rm(mem, s, -1, -1)
                        lc.llama_sampler_reset(samplers[s])
                        slots[s] = None
                        done += 1
                        if on_progress:
                            on_progress(done, n)
        finally:
            lc.llama_batch_free(batch)
            for smpl in samplers:
                lc.llama_sampler_free(smpl)
        seconds = time.perf_counter() - t0
        stats = {"prompt_tokens": prompt_tokens, "generated_tokens": generated, "seconds": round(seconds, 3),
                 "tokens_per_s": round(generated / max(seconds, 1e-9), 2), "n_parallel": n_seq,
                 "n_ctx_per_seq": self.n_ctx_per_seq}
        return answers, stats

    def _clean(self, ids: list[int], fmt: str, stops: Sequence[str]) -> str:
        text = prompt_format.clean_answer(self.detokenize(ids), fmt)
        for stop in stops:
            if stop and stop in text:
                text = text[: text.find(stop)].strip()
        return text

    def close(self) -> None:
        if self.ctx is not None:
            self.lc.llama_free(self.ctx)
            self.ctx = None
        if self.model is not None:
            self.lc.llama_model_free(self.model)
            self.model = None


def ollama_answers(tag: str, pairs: Sequence[dict], fmt: str, decoding, host: str, *, parallel: int = 4,
                   timeout: float = 600, on_progress: Callable[[int, int], None] | None = None) -> tuple[list[str], dict]:
    """The Ollama release's answers to ``pairs`` (its Modelfile TEMPLATE renders each user message), in order."""
    import ollama

    client = ollama.Client(host=host, timeout=timeout)
    options = {"num_predict": int(decoding.max_new_tokens), "temperature": float(decoding.temperature),
               "top_p": float(decoding.top_p), "seed": 0, **({"top_k": int(decoding.top_k)} if decoding.top_k else {}),
               **({"stop": list(decoding.stop)} if decoding.stop else {})}
    done = [0]
    counts = {"prompt_tokens": 0, "generated_tokens": 0}
    t0 = time.perf_counter()

    def one(pair: dict) -> str:
        got = client.generate(model=tag, prompt=prompt_format.ollama_prompt(pair, fmt), options=options, stream=False)
        counts["prompt_tokens"] += int(got.get("prompt_eval_count") or 0)
        counts["generated_tokens"] += int(got.get("eval_count") or 0)
        text = prompt_format.clean_answer(got.get("response") or "", fmt)
        for stop in decoding.stop:
            if stop and stop in text:
                text = text[: text.find(stop)].strip()
        done[0] += 1
        if on_progress:
            on_progress(done[0], len(pairs))
        return text

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        answers = list(pool.map(one, pairs))
    seconds = time.perf_counter() - t0
    return answers, {**counts, "seconds": round(seconds, 3),
                     "tokens_per_s": round(counts["generated_tokens"] / max(seconds, 1e-9), 2)}
