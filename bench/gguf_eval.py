"""The GGUF evaluation's speed: the studio's batched llama.cpp generation (``core.evaluation.gguf_eval``, what an
evaluation of an exported GGUF runs) at several parallel-sequence counts, on every core or with every layer on the
GPU where llama.cpp was built with CUDA.

    .venv/bin/python bench/gguf_eval.py                                   # the default model's GGUF, CPU
    python bench/gguf_eval.py --gguf model-q4_k_m.gguf --tokenizer BASE_MODEL_DIR --prompts 64 \\
        --parallel 1 8 32 --max-new-tokens 128 [--json out.json]

The prompts are the sample data's pairs in the chat prompt format (rendered with ``--tokenizer``'s chat template,
as an evaluation renders them), greedy. Prints, for each parallel count: seconds, generated tokens/s, examples/s,
and the projected time for 500 examples at that pace (500 / examples/s: generation only, the model's load and the
scoring left out), with the backend (device, layers offloaded, threads, what it fell back to).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from core import paths, prompt_format  # noqa: E402
from core.evaluation import gguf_eval  # noqa: E402
from core.evaluation.inference import Decoding  # noqa: E402
from eval_generation import sample_pairs  # noqa: E402   (the same prompts as the transformers bench)

PROJECTED = 500


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", help="default: the default model's q4_k_m GGUF")
    ap.add_argument("--tokenizer", help="the model folder whose chat template renders the prompts "
                                        "(default: the default base model)")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--parallel", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--cpu", action="store_true", help="no GPU offload even where llama.cpp has CUDA")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)

    from core import models
    from core.models import load_tokenizer

    gguf = args.gguf or str(models.gguf_path(lambda m: print(m, file=sys.stderr)))
    tok = load_tokenizer(args.tokenizer or str(paths.default_base_model_dir()))
    prompts = [prompt_format.render_prompt(p, "chat", tok) for p in sample_pairs(args.prompts)]
    decoding = Decoding(max_new_tokens=args.max_new_tokens)
    results = []
    print(f"{Path(gguf).name}: {len(prompts)} prompts, greedy, up to {args.max_new_tokens} new tokens")
    print(f"{'parallel':>8} {'seconds':>8} {'tokens/s':>9} {'examples/s':>10} {'500 examples':>13}  backend")
    for n in args.parallel:
        gen = gguf_eval.LlamaBatchGenerator(gguf, n_parallel=n, gpu=False if args.cpu else None)
        try:
            t0 = time.perf_counter()
            answers, stats = gen.generate(prompts, decoding, "chat")
            seconds = time.perf_counter() - t0
        finally:
            gen.close()
        per_s = len(prompts) / max(seconds, 1e-9)
        row = {"parallel": n, "prompts": len(prompts), "seconds": round(seconds, 2), **stats,
               "examples_per_s": round(per_s, 3), "projected_500_s": round(PROJECTED / per_s, 1),
               "nonempty": sum(bool(a.strip()) for a in answers),
               "backend": {k: v for k, v in gen.backend.items() if k != "system_info"}}
        results.append(row)
        b = row["backend"]
        print(f"{n:>8} {seconds:>8.1f} {stats['tokens_per_s']:>9.1f} {per_s:>10.2f} {row['projected_500_s']:>11.0f} s  "
              f"{b['device']}, {b['gpu_layers']}/{b['layers']} layers offloaded, {b['n_threads']} threads"
              + (f" (fell back: {b['fallback']})" if b.get("fallback") else ""))
    if args.json:
        Path(args.json).write_text(json.dumps({"gguf": gguf, "max_new_tokens": args.max_new_tokens,
                                               "results": results}, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
