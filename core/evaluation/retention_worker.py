"""The retention job, worker side: general Vietnamese answered by each target (the base model, the tuned run,
a GGUF of it), scored the studio's way (syllable BLEU and ROUGE-L, ``core.evaluation.scoring``), and the
perplexity of the reference answers under the target, teacher-forced.

``core.evaluation.retention`` (app side) writes the sets into the job folder (``sets.json``) and queues the
job; ``run`` loads one target at a time, writes ``<target>-<set>.jsonl`` (every example) and returns one
summary per (target, set); the supervisor stores them. Nothing here opens the database.

Perplexity: each pair is rendered as training renders it (``prompt_format.render_training_text``: the
prompt, the answer, the format's end-of-turn marker), and the answer's tokens — those after the rendered
prompt (``render_prompt``) — are scored with the target's next-token log-probabilities. A set's perplexity is
``exp(sum of NLL / answer tokens)`` over all its answers (token-weighted, as llama.cpp's ``llama-perplexity``
averages). The base model and the tuned run read the same texts with the same tokenizer, so their perplexities
compare directly; a GGUF's tokenizer is the base model's (llama.cpp's conversion keeps the vocabulary).
"""
from __future__ import annotations

import gc
import json
import math
import time
from pathlib import Path
from typing import Callable

from core import prompt_format
from core.evaluation import inference, scoring
from core.evaluation.inference import Decoding

SETS_FILE = "sets.json"
NLL_BATCH = 4     # sequences scored together (a Gemma vocabulary of 262k makes each position's logits 1 MB)


def _ids(tok, text: str) -> list[int]:
    """A text's token ids the way the trainer reads it: its own BOS where the text lacks one."""
    bos = getattr(tok, "bos_token", None) or ""
    return tok(text, add_special_tokens=not (bos and text.startswith(bos)))["input_ids"]


def answer_spans(tok, rows: list[dict], fmt: str) -> list[tuple[list[int], int]]:
    """For each pair: the training text's ids and where its answer starts (the length of the prompt's ids
    they share: the rendered prompt is a prefix of the training text)."""
    out = []
    for row in rows:
        full = _ids(tok, prompt_format.render_training_text(row, fmt, tok))
        prompt = _ids(tok, prompt_format.render_prompt(row, fmt, tok))
        start = 0
        for a, b in zip(full, prompt):
            if a != b:
                break
            start += 1
        out.append((full, max(1, min(start, len(full) - 1))))
    return out


def _nll_hf(loaded, spans: list[tuple[list[int], int]]) -> list[tuple[float, int]]:
    """(sum of NLL, tokens) of each answer under a transformers model."""
    import torch

    model = loaded.model
    pad = loaded.tokenizer.pad_token_id or 0
    out: list[tuple[float, int]] = []
    for start in range(0, len(spans), NLL_BATCH):
        chunk = spans[start : start + NLL_BATCH]
        width = max(len(ids) for ids, _ in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for r, (seq, _) in enumerate(chunk):
            ids[r, : len(seq)] = torch.tensor(seq)
            mask[r, : len(seq)] = 1
        with torch.inference_mode():
            logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits
        for r, (seq, begin) in enumerate(chunk):
            # position p predicts token p + 1: the answer's tokens begin..len-1 are predicted at begin-1..len-2
            pred = logits[r, begin - 1 : len(seq) - 1].float()
            target = torch.tensor(seq[begin:], device=pred.device)
            nll = torch.nn.functional.cross_entropy(pred, target, reduction="sum").item()
            out.append((nll, len(seq) - begin))
        del logits
    return out


def _nll_gguf(gguf: str, spans: list[tuple[list[int], int]]) -> list[tuple[float, int]]:
    """(sum of NLL, tokens) of each answer under a GGUF, from the logits llama.cpp gives for every position
    (a context of its own with ``logits_all``), the same token ids as the base model's tokenizer made."""
    import os

    import llama_cpp
    import numpy as np

    from core.native import quiet_stderr

    width = max(len(ids) for ids, _ in spans) + 8
    with quiet_stderr():
        llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=max(512, width), logits_all=True, verbose=False, seed=0,
                              n_threads=max(1, min(4, os.cpu_count() or 1)), n_batch=max(512, width))
    out = []
    try:
        for seq, begin in spans:
            llm.reset()
            llm.eval(seq)
            logits = np.asarray(llm.scores[begin - 1 : len(seq) - 1], dtype=np.float64)
            top = logits.max(axis=1, keepdims=True)
            logz = (top[:, 0] + np.log(np.exp(logits - top).sum(axis=1)))
            picked = logits[np.arange(len(seq) - begin), np.asarray(seq[begin:])]
            out.append((float((logz - picked).sum()), len(seq) - begin))
    finally:
        llm.close() if hasattr(llm, "close") else None
    return out


def _load(target: dict):
    if target["kind"] == "gguf":
        return inference.load_gguf(target["gguf"], target["prompt_format"], tokenizer_from=target["base_model"])
    return inference.load(target["base_model"], target.get("adapter_dir"), target["prompt_format"])


def _tokenizer_of(loaded, target: dict):
    if loaded.backend == "llama.cpp":
        from core.models import load_tokenizer

        return loaded.tokenizer or load_tokenizer(target["base_model"])
    return loaded.tokenizer


def run(job: dict, job_dir: Path, status, log: Callable[[str], None]) -> dict:
    """In the worker: every target on every set; one summary per (target, set)."""
    t0 = time.time()
    sets = json.loads((job_dir / SETS_FILE).read_text(encoding="utf-8"))
    decoding = Decoding.from_dict(job.get("decoding"))
    targets = job["targets"]
    total = sum(len(s["rows"]) for s in sets) * len(targets)
    done = 0
    status.update(progress={"done": 0, "total": total, "label": "examples"})
    summaries = []
    for target in targets:
        log(f"{target['label']}: loading ({target['kind']})")
        loaded = _load(target)
        tok = _tokenizer_of(loaded, target)
        for s in sets:
            rows = s["rows"]
            if not rows:
                continue
            t1 = time.time()
            status.update(phase=f"{target['label']} · {s['name']}")
            prompts = [prompt_format.render_prompt(r, loaded.prompt_format, loaded.tokenizer) for r in rows]
            base_done = done

            def on_progress(n: int, _total: int) -> None:
                status.update(progress={"done": base_done + n, "total": total, "label": "examples"})

            predictions = inference.generate(loaded, prompts, decoding, on_progress)
            done += len(rows)
            scores = scoring.score([r["output"] for r in rows], predictions, job.get("thresholds"))
            spans = answer_spans(tok, rows, loaded.prompt_format)
            nll = _nll_gguf(target["gguf"], spans) if target["kind"] == "gguf" else _nll_hf(loaded, spans)
            tokens = sum(n for _, n in nll)
            ppl = math.exp(sum(v for v, _ in nll) / tokens) if tokens else None
            path = job_dir / f"{target['kind']}-{s['name']}.jsonl"
            with path.open("w", encoding="utf-8") as fh:
                for i, (row, pred, per, (v, n)) in enumerate(zip(rows, predictions, scores.per_example, nll)):
                    fh.write(json.dumps({"idx": i, "instruction": row["instruction"], "input": row.get("input") or "",
                                         "reference": row["output"], "prediction": pred, **per,
                                         "nll": v / n if n else None, "tokens": n}, ensure_ascii=False) + "\n")
            log(f"{target['label']} on {s['name']} (n={len(rows)}): BLEU {scores.bleu:.4f}  ROUGE-L "
                f"{scores.rouge_l:.4f}  perplexity {ppl:.3f} over {tokens} answer tokens ({time.time() - t1:.1f} s)")
            summaries.append({"target": target["kind"], "label": target["label"], "quant": target.get("quant"),
                              "gguf": target.get("gguf"), "set_name": s["name"], "set_ref": s.get("ref"),
                              "set_key": s["key"], "n": len(rows), "bleu": scores.bleu, "rouge_l": scores.rouge_l,
                              "perplexity": ppl, "answer_tokens": tokens, "duration_s": time.time() - t1,
                              "examples": str(path)})
        del loaded
        gc.collect()
    return {"results": summaries, "duration_s": time.time() - t0}
