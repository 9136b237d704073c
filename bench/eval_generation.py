"""Evaluation generation: the studio's batched generation vs the guide's one-prompt-at-a-time loop.

    .venv/bin/python bench/eval_generation.py                                  # default model, CPU
    python bench/eval_generation.py --device cuda --base-model google/gemma-3-1b-it --prompts 256 \\
        --batch-sizes 16 32 64 [--adapter RUN_DIR/adapter] [--json out.json]

Both modes answer the same prompts (the sample data's pairs in the run's prompt format) with the
same greedy settings and the same stop tokens:

- loop: the guide's ``ask_vi`` pattern — one ``tokenizer(prompt)`` and one ``model.generate`` per
  prompt, batch 1 (with the KV cache, as ``generate`` always uses it);
- batched: ``core.evaluation.inference.generate`` — prompts sorted by length, left-padded batches, KV cache.

Prints a table (seconds, examples/s, generated tokens/s, speed-up over the loop) and how many
answers are identical between the two modes (greedy decoding; padding may change a rare token in
reduced precision). Target on an H200: ≥ 10× the loop; on the CPU the ratio is reported.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from core import paths, prompt_format
from core.evaluation import inference
from core.evaluation.inference import Decoding  # noqa: E402


def sample_pairs(n: int) -> list[dict]:
    rows = []
    for name in ("customer_care.jsonl", "contracts.jsonl", "general_vi.jsonl"):
        for line in (REPO / "data" / "samples" / name).read_text(encoding="utf-8").splitlines():
            rows.append(json.loads(line))
    # interleave the files so that prompt lengths vary, and repeat when more are asked for than exist
    rows = rows[::2] + rows[1::2]
    return [rows[i % len(rows)] for i in range(n)]


def loop(loaded, prompts: list[str], decoding: Decoding) -> list[str]:
    """The guide's evaluation loop: one prompt at a time."""
    import torch

    tok, model = loaded.tokenizer, loaded.model
    eos = prompt_format.stop_token_ids(loaded.prompt_format, tok)
    answers = []
    for prompt in prompts:
        inputs = tok(prompt, return_tensors="pt").to(model.device)
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=decoding.max_new_tokens, do_sample=False, temperature=None,
                                 top_p=None, top_k=None, eos_token_id=eos, pad_token_id=tok.pad_token_id)
        answers.append(inference.clean(tok, out[0, inputs["input_ids"].shape[1]:].tolist(), loaded.prompt_format, eos))
    return answers


def sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-model", default=str(paths.default_base_model_dir()))
    ap.add_argument("--adapter", help="a run's adapter folder (optional)")
    ap.add_argument("--prompt-format", default="chat", choices=prompt_format.FORMATS)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--engine", default="dynamic", choices=["dynamic", "static"],
                    help="the batched path's engine (static: fixed shapes and a compiled step; batch 0 = chosen)")
    ap.add_argument("--repeat", type=int, default=1, help="time the batched path this many times (the first compiles)")
    ap.add_argument("--no-loop", action="store_true", help="skip the one-prompt-at-a-time loop")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    t0 = time.perf_counter()
    loaded = inference.load(args.base_model, args.adapter, args.prompt_format, device=args.device)
    if args.device == "cpu":
        loaded.model.to("cpu")
    print(f"loaded {args.base_model} on {args.device} ({loaded.backend}, {next(loaded.model.parameters()).dtype}) "
          f"in {time.perf_counter() - t0:.1f} s", flush=True)
    pairs = sample_pairs(args.prompts)
    prompts = [prompt_format.render_prompt(p, loaded.prompt_format, loaded.tokenizer) for p in pairs]
    decoding = Decoding(max_new_tokens=args.max_new_tokens)
    count = lambda answers: sum(len(loaded.tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers)

    if args.engine == "dynamic":   # the static engine's first timed call is its warm-up (and compile), on purpose
        inference.generate(loaded, prompts[:2], Decoding(max_new_tokens=4, batch_size=2), engine="dynamic")
    results = []
    reference = None
    loop_s = None
    if not args.no_loop:
        sync(args.device)
        t = time.perf_counter()
        reference = loop(loaded, prompts, decoding)
        sync(args.device)
        loop_s = time.perf_counter() - t
        results.append({"mode": "loop (guide)", "batch": 1, "seconds": loop_s, "tokens": count(reference),
                        "identical": len(prompts), "answers": reference})
    for bs in args.batch_sizes:
        decoding.batch_size = bs
        for k in range(args.repeat):
            sync(args.device)
            t = time.perf_counter()
            info: dict = {}
            answers = inference.generate(loaded, prompts, decoding, engine=args.engine, info=info)
            sync(args.device)
            plan = info.get("plan") or {}
            results.append({"mode": f"batched, {info.get('engine')} engine" + (" (first call)" if args.repeat > 1 and k == 0 else ""),
                            "engine": info.get("engine"), "call": k + 1, "batch": plan.get("batch", bs),
                            "plan": plan or None, "fallback": info.get("fallback"),
                            # generated ids, not the answers re-tokenized: a random-weight model's ids may decode to nothing
                            "seconds": time.perf_counter() - t, "tokens": sum(map(len, info["new_ids"])),
                            "answers": answers, "ids": info["new_ids"],
                            "identical": sum(a == b for a, b in zip(answers, reference)) if reference else None})
    print(f"\n{len(prompts)} prompts, greedy, max {args.max_new_tokens} new tokens, {args.device}\n")
    print(f"| mode | batch | seconds | examples/s | generated tokens/s | speed-up | answers identical to the loop |")
    print(f"|---|---|---|---|---|---|---|")
    for r in results:
        r["examples_per_s"] = len(prompts) / r["seconds"]
        r["tokens_per_s"] = r["tokens"] / r["seconds"]
        r["speedup"] = loop_s / r["seconds"] if loop_s else None
        print(f"| {r['mode']} | {r['batch']} | {r['seconds']:.2f} | {r['examples_per_s']:.2f} | "
              f"{r['tokens_per_s']:.0f} | " + (f"{r['speedup']:.2f}×" if r["speedup"] else "–") + " | "
              + (f"{r['identical']}/{len(prompts)}" if r["identical"] is not None else "–") + " |")
    params = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results, "weight_bytes": params,
                                               "dtype": str(next(loaded.model.parameters()).dtype)},
                                              indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
