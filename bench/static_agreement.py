"""Do the static engine and the dynamic path give the same greedy answers, and where they do not, why?

On the H200 the static engine's answers on a random-weight Gemma 4 matched the dynamic path's in 0 of
64 (Gemma 3: 64 of 64). This bench tells a numerical near-tie from a wrong answer: both engines answer
the same prompts in bf16 and in float32; for each answer that differs, the first token where it does
is scored again by one plain forward pass of that prompt alone (no padding, no cache, no compile) — the
logit gap between the two engines' tokens there, beside the gap between that pass's own top two.
A real bug shows as disagreement that float32 does not cure, at positions where the plain pass prefers
one engine's token by a wide margin; rounding shows as gaps of the size of bf16's step.

    python bench/static_agreement.py --base-model DIR --device cuda --prompts 64 --json out.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from core import prompt_format  # noqa: E402
from core.evaluation import inference  # noqa: E402
from core.evaluation.inference import Decoding  # noqa: E402


def first_difference(a: list[int], b: list[int]) -> int | None:
    for k, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return k
    return None if len(a) == len(b) else min(len(a), len(b))


def plain_gaps(loaded, prompt: str, prefix: list[int], a: int, b: int) -> dict:
    """One forward pass of ``prompt`` + ``prefix`` alone: logit(a) − logit(b) at the next position, and
    that pass's own top-1 − top-2 gap (how close a tie it is)."""
    import torch

    tok, model = loaded.tokenizer, loaded.model
    ids = tok(prompt, add_special_tokens=True)["input_ids"] + prefix
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids], device=model.device)).logits[0, -1].float()
    top = torch.topk(logits, 2).values.tolist()
    return {"a_minus_b": float(logits[a] - logits[b]), "top1_minus_top2": top[0] - top[1],
            "plain_pick": int(logits.argmax()), "a": a, "b": b}


def compare(loaded, prompts: list[str], max_new: int) -> dict:
    import torch

    ids = {}
    for engine in ("dynamic", "static"):
        info: dict = {}
        inference.generate(loaded, prompts, Decoding(max_new_tokens=max_new, batch_size=64 if engine == "dynamic" else 0),
                           engine=engine, info=info)
        ids[engine] = info["new_ids"]
        if info.get("fallback"):
            return {"error": f"static engine fell back: {info['fallback']}"}
    same = sum(a == b for a, b in zip(ids["dynamic"], ids["static"]))
    first_tokens = sum(a[:1] == b[:1] for a, b in zip(ids["dynamic"], ids["static"]))
    diffs = []
    for p, a, b in zip(prompts, ids["dynamic"], ids["static"]):
        k = first_difference(a, b)
        if k is None or k >= min(len(a), len(b)):
            continue
        g = plain_gaps(loaded, p, a[:k], a[k], b[k])
        g.update(position=k, plain_agrees_with=("dynamic" if g["plain_pick"] == a[k] else
                                                "static" if g["plain_pick"] == b[k] else "neither"))
        diffs.append(g)
    agree = {w: sum(d["plain_agrees_with"] == w for d in diffs) for w in ("dynamic", "static", "neither")}
    gaps = sorted(abs(d["a_minus_b"]) for d in diffs)
    return {"dtype": str(next(loaded.model.parameters()).dtype), "identical": same, "of": len(prompts),
            "same_first_token": first_tokens, "differences": len(diffs), "plain_pass_agrees_with": agree,
            "median_abs_gap_at_difference": gaps[len(gaps) // 2] if gaps else None,
            "max_abs_gap_at_difference": gaps[-1] if gaps else None,
            "median_position": sorted(d["position"] for d in diffs)[len(diffs) // 2] if diffs else None,
            "diffs": diffs[:16], "cuda_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-model", required=True)
    ap.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--dtypes", default="bfloat16,float32")
    ap.add_argument("--json")
    args = ap.parse_args()
    import torch
    from eval_generation import sample_pairs

    loaded = inference.load(args.base_model, None, "chat", device=args.device)
    prompts = [prompt_format.render_prompt(p, "chat", loaded.tokenizer) for p in sample_pairs(args.prompts)]
    out = {"model": args.base_model, "prompts": len(prompts), "max_new_tokens": args.max_new_tokens, "runs": []}
    for name in args.dtypes.split(","):
        loaded.model.to(getattr(torch, name))
        t = time.time()
        got = compare(loaded, prompts, args.max_new_tokens)
        got["seconds"] = round(time.time() - t, 1)
        out["runs"].append(got)
        print(json.dumps({k: v for k, v in got.items() if k != "diffs"}), flush=True)
        torch._dynamo.reset()   # the next dtype compiles its own graphs
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
