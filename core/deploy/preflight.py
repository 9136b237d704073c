"""Preflight, worker side: before ``ollama create``, the quantized GGUF answers a golden set of the
run's held-out prompts through llama.cpp, with exactly the prompt the Modelfile's TEMPLATE renders,
and is compared with the merged model's transformers answers (exact-match rate and ROUGE-L from
``core.evaluation.scoring``).

A broken template blocks the release: a TEMPLATE that renders a different prompt from training,
mostly empty answers, or answers that run to the token limit where the merged model stops.

Both models' answers are also scored against the prompts' held-out answers with the gate's BLEU and
ROUGE-L (``held_out`` in the report), so the team sees what the quantization costs in the gate's own
terms on the very file it ships. This does not block yet: eight prompts cut at ``MAX_TOKENS`` are a thin
sample, and a threshold wants real Gemma 4 numbers; the report flags a GGUF that falls below the gate
where the merged model passes it.

The report is written to ``preflight.json`` in the job folder and returned as the job's result;
``core.deploy.preflights`` (app side) queues the job, and deploy stores the report with the release.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from core import prompt_format
from core.deploy import modelfile
from core.evaluation import inference, scoring

GOLDEN_SIZE = 8
MAX_TOKENS = 48
REPORT = "preflight.json"


class PreflightError(RuntimeError):
    pass


def template_of(modelfile_text: str) -> str:
    """The TEMPLATE of a Modelfile, read the way Ollama reads it."""
    try:
        return modelfile.template_of(modelfile_text)
    except modelfile.ModelfileError as exc:
        raise PreflightError(str(exc)) from None


system_of = modelfile.system_of
stops_of = modelfile.stops_of


def judge(examples: list[dict], max_tokens: int) -> tuple[bool, str]:
    """Whether the GGUF behind this template may be released, and why (not)."""
    n = len(examples)
    if not n:
        return False, "no golden prompts were answered"
    drift = [e for e in examples if not e["prompt_matches_training"]]
    if drift:
        return False, (f"the Modelfile TEMPLATE renders a different prompt from the one the run was trained with "
                       f"on {len(drift)}/{n} golden prompts (first difference at character "
                       f"{drift[0]['first_difference']})")
    empty = sum(1 for e in examples if not e["gguf_answer"].strip())
    if empty * 2 > n:
        return False, f"the GGUF gave an empty answer on {empty}/{n} golden prompts: the template or stop words are broken"
    runaway = sum(1 for e in examples if e["gguf_hit_max"] and not e["reference_hit_max"])
    if runaway * 2 > n:
        return False, (f"the GGUF ran to the {max_tokens}-token limit without a stop on {runaway}/{n} golden prompts "
                       "where the merged model stopped. The prompts match training, so the quantization is the likely "
                       "cause (a small model loses its stop at q4_k_m): export q8_0 or f16, or train longer")
    return True, f"{n - empty}/{n} answers non-empty; no runaway answers beyond the merged model's"


def held_out_scores(pairs: list[dict], merged_answers: list[str], gguf_answers: list[str],
                    thresholds: dict | None = None) -> dict:
    """Both models' answers against the prompts' held-out answers, in the gate's BLEU and ROUGE-L and
    judged by its thresholds (the app side sends the studio's own; the defaults otherwise); with the GGUF's
    per-prompt scores under ``per_example``."""
    thresholds = thresholds or scoring.DEFAULT_THRESHOLDS
    held = [p.get("output") or "" for p in pairs]
    merged = scoring.score(held, merged_answers, thresholds)
    gguf = scoring.score(held, gguf_answers, thresholds)
    return {"merged": merged.summary(), "gguf": gguf.summary(),
            "gguf_below_gate_where_merged_passes": merged.passed and not gguf.passed,
            "per_example": gguf.per_example}


def _first_difference(a: str, b: str) -> int:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return -1 if len(a) == len(b) else min(len(a), len(b))


def _cut(text: str, stops: list[str]) -> tuple[str, bool]:
    hit = False
    for stop in stops:
        at = text.find(stop)
        if at >= 0:
            text, hit = text[:at], True
    return text.strip(), hit


def run(job: dict, job_dir: Path, status, log: Callable[[str], None]) -> dict:
    """In the worker: render, answer through llama.cpp and transformers, compare, judge."""
    import llama_cpp
    import torch

    from core.native import quiet_stderr

    t0 = time.time()
    fmt = job["prompt_format"]
    pairs = job["pairs"]
    max_tokens = int(job["max_tokens"])
    text = job["modelfile"]
    template, system, stops = template_of(text), system_of(text), stops_of(text)
    total = 2 * len(pairs)
    status.update(progress={"done": 0, "total": total, "label": "loading the merged model"})
    merged = inference.load(job["merged_dir"], None, fmt, dtype=torch.float32)
    tok = merged.tokenizer
    training = [prompt_format.render_prompt(p, fmt, tok, system=system) for p in pairs]
    rendered = [prompt_format.render_ollama_template(template, prompt_format.ollama_prompt(p, fmt), system)
                for p in pairs]

    log(f"transformers: {len(pairs)} golden prompts, greedy, {max_tokens} tokens")
    references = []
    ref_hit = []
    eos = prompt_format.stop_token_ids(fmt, tok)
    for i, prompt in enumerate(training):
        ids = {k: v.to(merged.model.device) for k, v in tok(prompt, return_tensors="pt").items()}
        with torch.inference_mode():
            out = merged.model.generate(**ids, max_new_tokens=max_tokens, do_sample=False, eos_token_id=eos,
                                        pad_token_id=tok.pad_token_id)
        new = out[0, ids["input_ids"].shape[1]:].tolist()
        stopped = any(t in eos for t in new)
        hit_stop = _cut(tok.decode(new, skip_special_tokens=False), stops)[1]
        answer = _cut(inference.clean(tok, new, fmt, eos), stops)[0]
        references.append(answer)
        ref_hit.append(not stopped and not hit_stop and len(new) >= max_tokens)
        status.update(progress={"done": i + 1, "total": total, "label": "merged model (transformers)"})

    log(f"llama.cpp: {job['gguf']}")
    with quiet_stderr():
        llm = llama_cpp.Llama(model_path=job["gguf"], n_ctx=4096, n_threads=2, verbose=False, seed=0)
    stop_ids = {llm.token_eos()}
    for s in (*prompt_format.TURN_ENDS, "<eos>"):
        got = llm.tokenize(s.encode(), add_bos=False, special=True)
        if len(got) == 1:
            stop_ids.add(got[0])
    answers, hits = [], []
    for i, prompt in enumerate(rendered):
        llm.reset()
        tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
        out: list[int] = []
        stopped = False
        for t in llm.generate(tokens, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0):
            if t in stop_ids:
                stopped = True
                break
            out.append(t)
            if len(out) >= max_tokens:
                break
        raw = llm.detokenize(out, special=False).decode("utf-8", errors="replace")
        answer, hit_stop = _cut(raw, stops)
        answers.append(answer)
        hits.append(not stopped and not hit_stop and len(out) >= max_tokens)
        status.update(progress={"done": len(pairs) + i + 1, "total": total, "label": "GGUF (llama.cpp)"})

    scores = scoring.score(references, answers)
    held_out = held_out_scores(pairs, references, answers, job.get("thresholds"))
    gguf_vs_held_out = held_out.pop("per_example")   # kept per prompt in the examples below
    examples = []
    for p, train_p, rend, ref, ans, rh, gh, per, vs in zip(pairs, training, rendered, references, answers, ref_hit,
                                                            hits, scores.per_example, gguf_vs_held_out):
        examples.append({
            "instruction": p["instruction"], "input": p["input"], "prompt": rend,
            "prompt_matches_training": rend == train_p, "first_difference": _first_difference(rend, train_p),
            "reference_answer": ref, "gguf_answer": ans, "exact_match": ans == ref,
            "reference_hit_max": rh, "gguf_hit_max": gh, "rouge_l": per["rouge_l"],
            "held_out_answer": p.get("output") or "", "gguf_rouge_l_vs_held_out": vs["rouge_l"],
        })
    passed, reason = judge(examples, max_tokens)
    report = {
        "passed": passed,
        "reason": reason,
        "n": len(examples),
        "exact_match_rate": sum(e["exact_match"] for e in examples) / len(examples),
        "rouge_l": scores.rouge_l,
        "empty_answers": sum(1 for e in examples if not e["gguf_answer"]),
        "runaway_answers": sum(1 for e in examples if e["gguf_hit_max"]),
        "max_tokens": max_tokens,
        "held_out": held_out,
        "gguf": job["gguf"],
        "prompt_format": fmt,
        "duration_s": round(time.time() - t0, 1),
        "examples": examples,
    }
    (job_dir / REPORT).write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    log(f"preflight {'passed' if passed else 'BLOCKED'}: {reason}; exact match {report['exact_match_rate']:.2f}, "
        f"ROUGE-L {report['rouge_l']:.3f}; against the held-out answers: GGUF BLEU {held_out['gguf']['bleu']:.3f} "
        f"ROUGE-L {held_out['gguf']['rouge_l']:.3f}, merged model BLEU {held_out['merged']['bleu']:.3f} "
        f"ROUGE-L {held_out['merged']['rouge_l']:.3f}")
    return report
