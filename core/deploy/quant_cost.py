"""The cost of quantization, worker side: perplexity of each GGUF of an export on the held-out answers
and the KL divergence of each quantization's next-token distribution from f16's, measured the way
llama.cpp's ``llama-perplexity --kl-divergence`` measures it.

llama.cpp's method (ggml-org/llama.cpp, ``tools/perplexity/perplexity.cpp``: ``kl_divergence`` and the
``log_softmax`` that takes the base model's log-probabilities): the base model (f16) is run first and its
log-softmax over the whole vocabulary kept for every scored position; the quantized model is then run on
the same tokens, and at each position

    KL = Σ_i p_base(i) · (log p_base(i) − log p_q(i))        (nats; natural logarithms)

summed over the vocabulary; the report's "Mean KLD" is its mean over the scored positions, with the
uncertainty ``sqrt((mean(KL²) − mean(KL)²) / (n − 1))`` (its ``mean_and_uncertainty``). Beside it:
PPL = exp(mean negative log-likelihood of the actual next token), "Same top p" (the share of positions
where both models' most likely token is the same) and "Δp RMS" (the root mean square of
p_q(actual token) − p_base(actual token)).

What differs here, on purpose:
- the text is not a corpus cut into chunks of which only the second half is scored: it is each held-out
  pair rendered in the run's own training format (``core.prompt_format.render_training_text``), fed
  teacher-forced, and only the answer's tokens are scored (the answer and the end-of-turn marker that
  closes it, where a quantization that loses the stop shows), each with the whole prompt before it;
- llama.cpp stores the base log-probabilities as 16-bit integers and leaves out the terms where
  log p_base < −16; here both distributions are full float32 logits from llama.cpp, and the sums run in
  float64 over the whole vocabulary (``bench/quant_cost_default.py --llama-cpp-arithmetic`` computes both on
  the same logits; docs/deploy.md gives the difference where it was measured).

The logits are llama.cpp's own (llama-cpp-python's binding; ``answer_logits`` asks llama.cpp for the rows
that predict the answer, which ``logits_all=True`` gives too, at every position): what Ollama's runtime
computes from the very files the studio ships. All GGUFs of the export are loaded at once and each sequence is run
through each of them in turn, so that only one sequence's logits are held at a time.

``run`` is the ``quant_cost`` job (an export made before these measurements, or measured again);
``core.deploy.exporter`` calls ``measure`` at the end of every export. The result is written to
``quant_cost.json`` in the job folder; ``core.deploy.quant_costs`` (app side) stores it.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Callable

from core import prompt_format

REPORT = "quant_cost.json"
METHOD = ("llama.cpp llama-perplexity --kl-divergence (tools/perplexity/perplexity.cpp), teacher-forced on the "
          "held-out answers in the training prompt format; float64 over the full vocabulary")
DEFAULT_PAIRS = 8         # held-out pairs measured at each export (the first of the test split, as the preflight's)
MAX_TOKENS = 1024         # a sequence longer than this is cut (its answer scored up to here)


class QuantCostError(RuntimeError):
    pass


# ── the arithmetic (numpy, float64) ─────────────────────────────────────────


def log_softmax(logits):
    """Rows of logits → rows of log-probabilities (float64)."""
    import numpy as np

    x = np.asarray(logits, dtype=np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


class Tally:
    """Running sums of one quantized model against the base, as llama.cpp's ``kl_divergence_result``."""

    def __init__(self):
        self.n = 0
        self.sum_nll = self.sum_nll2 = 0.0
        self.sum_kld = self.sum_kld2 = 0.0
        self.sum_dp2 = 0.0
        self.same_top = 0
        self.kld: list[float] = []

    def add(self, lp_q, lp_base, targets) -> None:
        """Positions (rows) of both models' log-probabilities and the actual next tokens."""
        import numpy as np

        rows = np.arange(len(targets))
        nll = -lp_q[rows, targets]
        self.n += len(targets)
        self.sum_nll += float(nll.sum())
        self.sum_nll2 += float((nll * nll).sum())
        if lp_base is None:
            return
        kld = (np.exp(lp_base) * (lp_base - lp_q)).sum(axis=-1)
        self.kld.extend(float(k) for k in kld)
        self.sum_kld += float(kld.sum())
        self.sum_kld2 += float((kld * kld).sum())
        dp = np.exp(lp_q[rows, targets]) - np.exp(lp_base[rows, targets])
        self.sum_dp2 += float((dp * dp).sum())
        self.same_top += int((lp_q.argmax(axis=-1) == lp_base.argmax(axis=-1)).sum())

    @staticmethod
    def _mean_unc(s: float, s2: float, n: int) -> tuple[float, float]:
        """llama.cpp's ``mean_and_uncertainty``: the mean, and its standard error (0 for ten values or fewer)."""
        if n < 1:
            return 0.0, 0.0
        f = s / n
        var = s2 / n - f * f
        return f, (math.sqrt(var / (n - 1)) if var > 0 and n > 10 else 0.0)

    def summary(self) -> dict:
        log_ppl, log_ppl_unc = self._mean_unc(self.sum_nll, self.sum_nll2, self.n)
        out = {"tokens": self.n, "ppl": math.exp(log_ppl), "ppl_unc": math.exp(log_ppl) * log_ppl_unc,
               "mean_nll": log_ppl}
        if self.kld:
            kl, kl_unc = self._mean_unc(self.sum_kld, self.sum_kld2, self.n)
            ordered = sorted(self.kld)
            top = self.same_top / self.n
            out.update(kl_mean=kl, kl_unc=kl_unc, kl_median=_percentile(ordered, 0.5),
                       kl_p99=_percentile(ordered, 0.99), kl_max=ordered[-1], same_top=top,
                       same_top_unc=math.sqrt(top * (1 - top) / (self.n - 1)) if self.n > 1 else 0.0,
                       dp_rms=math.sqrt(self.sum_dp2 / self.n))
        return out


def _percentile(ordered: list[float], fraction: float) -> float:
    """llama.cpp's ``percentile``: linear between the two nearest sorted values."""
    p = fraction * (len(ordered) - 1)
    i = int(p)
    return (1 - (p - i)) * ordered[i] + (p - i) * ordered[min(i + 1, len(ordered) - 1)]


# ── the sequences ────────────────────────────────────────────────────────────


def sequences(pairs: list[dict], fmt: str, tokenizer, tokenize: Callable[[str], list[int]]) -> list[dict]:
    """Each held-out pair as llama.cpp's tokens (BOS added, as llama.cpp and Ollama do) of its training text,
    and where its answer starts: the first token after the prompt the model answers (``render_prompt``)."""
    out = []
    for n, pair in enumerate(pairs):
        prompt = prompt_format.render_prompt(pair, fmt, tokenizer)
        full = prompt_format.render_training_text(pair, fmt, tokenizer)
        p_ids, f_ids = tokenize(prompt), tokenize(full)
        start = 0   # the prompt's tokens as a prefix of the whole text's (a merge across the seam ends it early)
        while start < min(len(p_ids), len(f_ids)) and p_ids[start] == f_ids[start]:
            start += 1
        f_ids = f_ids[:MAX_TOKENS]
        if start < 1 or start >= len(f_ids):
            continue
        out.append({"idx": n, "tokens": f_ids, "answer_start": start})
    return out


def _load(path: str, n_ctx: int):
    import llama_cpp

    from core.native import quiet_stderr

    with quiet_stderr():
        return llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=min(n_ctx, 512),
                               n_threads=os.cpu_count() or 2, verbose=False, seed=0)


def answer_logits(llm, seq: dict):
    """llama.cpp's raw logits (float32) at the positions that predict the answer's tokens, and those tokens.

    The whole sequence is decoded in one batch with llama.cpp's logits requested only at those positions
    (``logits_all=True`` would compute the vocabulary projection at every prompt position too, most of the
    time on a 262k-token vocabulary, for rows that are not scored; the rows asked for are the same either
    way: tests/test_quant_cost.py compares them with ``logits_all``'s)."""
    import numpy as np

    tokens, start = seq["tokens"], seq["answer_start"]
    n_vocab = llm.n_vocab()
    llm.reset()
    llm._ctx.kv_cache_clear()
    batch = llm._batch
    batch.set_batch(batch=tokens, n_past=0, logits_all=False)
    for i in range(len(tokens)):
        batch.batch.logits[i] = start - 1 <= i < len(tokens) - 1   # row i predicts token i + 1
    llm._ctx.decode(batch)
    logits = np.empty((len(tokens) - start, n_vocab), dtype=np.float32)
    for row, i in enumerate(range(start - 1, len(tokens) - 1)):
        logits[row] = np.ctypeslib.as_array(llm._ctx.get_logits_ith(i), shape=(n_vocab,))
    return logits, np.asarray(tokens[start:], dtype=np.int64)


def measure(gguf: dict[str, str], pairs: list[dict], fmt: str, tokenizer, log: Callable[[str], None] = print,
            on_sequence: Callable[[int, int], None] | None = None) -> dict:
    """Perplexity of every GGUF (``{quantization: path}``, f16 among them) on the pairs' answers, and each
    quantization's KL divergence from f16 at every answer token. Returns the report (``per_quantization``,
    ``per_sequence``)."""
    import numpy as np

    if "f16" not in gguf:
        raise QuantCostError("the export has no f16 GGUF to measure the quantizations against")
    t0 = time.time()
    order = ["f16", *[q for q in gguf if q != "f16"]]
    probe = _load(gguf["f16"], 64)
    seqs = sequences(pairs, fmt, tokenizer,
                     lambda text: probe.tokenize(text.encode("utf-8"), add_bos=True, special=True))
    del probe
    if not seqs:
        raise QuantCostError("no held-out pair has answer tokens to score")
    n_ctx = max(64, -(-max(len(s["tokens"]) for s in seqs) // 64) * 64)
    models = {q: _load(gguf[q], n_ctx) for q in order}
    tallies = {q: Tally() for q in order}
    per_sequence = []
    for k, seq in enumerate(seqs):
        base_lp, targets = None, None
        row = {"idx": seq["idx"], "tokens": len(seq["tokens"]), "answer_tokens": len(seq["tokens"]) - seq["answer_start"]}
        for q in order:
            logits, targets = answer_logits(models[q], seq)
            lp = log_softmax(logits)
            t = Tally()
            t.add(lp, base_lp, targets)
            tallies[q].add(lp, base_lp, targets)
            s = t.summary()
            row[q] = {"nll": s["mean_nll"], **({"kl": s["kl_mean"], "same_top": s["same_top"]} if "kl_mean" in s else {})}
            if q == "f16":
                base_lp = lp
        per_sequence.append(row)
        if on_sequence:
            on_sequence(k + 1, len(seqs))
    del models
    summary = {q: tallies[q].summary() for q in order}
    for q in order:
        if q != "f16":
            summary[q]["ppl_ratio"] = summary[q]["ppl"] / summary["f16"]["ppl"]
        s = summary[q]
        log(f"{q}: PPL {s['ppl']:.4f} ± {s['ppl_unc']:.4f} over {s['tokens']} answer tokens"
            + (f"; mean KL from f16 {s['kl_mean']:.6f} ± {s['kl_unc']:.6f} nats, same top token "
               f"{s['same_top']:.1%}, Δp RMS {s['dp_rms']:.2%}" if "kl_mean" in s else ""))
    return {"method": METHOD, "sequences": len(seqs), "pairs": len(pairs), "prompt_format": fmt,
            "per_quantization": summary, "per_sequence": per_sequence, "duration_s": round(time.time() - t0, 1),
            "numpy": np.__version__}


def write(job_dir: Path, report: dict) -> Path:
    path = Path(job_dir) / REPORT
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
    tmp.replace(path)
    return path


def run(job: dict, job_dir: Path, status, log: Callable[[str], None]) -> dict:
    """In the worker (the ``quant_cost`` job): measure an earlier export's GGUFs."""
    from core.models import load_tokenizer

    for q, path in job["gguf"].items():
        if not Path(path).exists():
            raise QuantCostError(f"the export's {q} GGUF is gone ({path}); export the run again")
    status.update(progress={"done": 0, "total": len(job["pairs"]), "label": "quantization cost"})
    report = measure(job["gguf"], job["pairs"], job["prompt_format"], load_tokenizer(job["merged_dir"]), log,
                     lambda d, t: status.update(progress={"done": d, "total": t, "label": "quantization cost"}))
    report["export_job"] = job["export_job"]
    return {"quant_cost": str(write(job_dir, report)), "export_job": job["export_job"]}
