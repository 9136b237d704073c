"""Issue 15's numbers on one GPU, side by side: evaluation generation (today's batched path against the
static engine, on a Gemma 3 and a Gemma 4 architecture) and training (the guide's 2 × 4 against the
"fit to this GPU" preset, then the fitted run again on the compile caches the first one left).

    python bench/gpu_speed.py --part eval  --out DIR [--work DIR] [--budget-s 540]
    python bench/gpu_speed.py --part train --out DIR [--work DIR] [--steps 15] [--budget-s 540]

Models have random weights (no weights can be fetched; speed and memory do not depend on them) and the
Gemma vocabulary size (262,144 rows), built by ``bench/train_throughput.py``'s ``build_model``.
Every measurement runs in its own process, as a team's worker does. Writes ``DIR/gpu-speed-PART.json``
(and, for training, ``DIR/loss-per-token.svg``: both runs' loss against tokens seen) and prints tables.

Evaluation: 64 prompts of the sample data, 48 new tokens, greedy; today's path at batch 64 (plain
``generate`` a batch), the static engine at the batch it chooses, called twice (the first call
compiles; the second is what every later batch of an evaluation costs). The bound: one decoding step
reads every weight once, so at batch B the weights' bytes / the GPU's memory bandwidth is a step's
least time, and B tokens a step is the most tokens/s.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

HBM_TB_S = 4.8   # the H200's memory bandwidth, NVIDIA's figure (the issue's arithmetic used 4.3)


def gpu_name() -> str | None:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def eval_part(args, work: Path, started: float) -> dict:
    from train_throughput import build_model

    out: dict = {}
    for arch in args.archs.split(","):
        t = time.time()
        model = build_model(work / f"{arch}-1.7b", arch, "1.7b", 262_144)
        out[arch] = {"build_s": round(time.time() - t, 1), "runs": []}
        for engine, batch, repeat in (("dynamic", 64, 1), ("static", 0, 2)):
            if time.time() - started > args.budget_s:
                out[arch]["runs"].append({"engine": engine, "skipped": "over the call's budget"})
                continue
            res = work / f"eval-{arch}-{engine}.json"
            cmd = [sys.executable, str(REPO / "bench" / "eval_generation.py"), "--base-model", str(model), "--device",
                   "cuda", "--prompts", "64", "--max-new-tokens", "48", "--engine", engine, "--batch-sizes", str(batch),
                   "--repeat", str(repeat), "--no-loop", "--json", str(res)]
            t = time.time()
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(30, args.budget_s - (t - started)))
                log = proc.stdout + proc.stderr
            except subprocess.TimeoutExpired as exc:
                log = f"timed out: {exc}"
            (args.out / f"eval-{arch}-{engine}.log").write_text(log)
            if not res.exists():
                out[arch]["runs"].append({"engine": engine, "error": log[-2000:]})
                continue
            got = json.loads(res.read_text())
            for r in got["results"]:
                step_bound_s = got["weight_bytes"] / (HBM_TB_S * 1e12)
                r["bound_tokens_per_s"] = r["batch"] * 1 / step_bound_s
                r["of_bound"] = r["tokens_per_s"] / r["bound_tokens_per_s"]
                r["process_s"] = round(time.time() - t, 1)
                out[arch]["runs"].append(r)
            out[arch]["weight_bytes"] = got["weight_bytes"]
        runs = [r for r in out[arch]["runs"] if "tokens_per_s" in r]
        today = next((r for r in runs if r["engine"] == "dynamic"), None)
        steady = [r for r in runs if r["engine"] == "static" and r.get("call") == 2]
        if today and steady and today["tokens_per_s"]:
            out[arch]["speedup_tokens_per_s"] = steady[0]["tokens_per_s"] / today["tokens_per_s"]
            out[arch]["identical_answers"] = sum(a == b for a, b in zip(steady[0]["ids"], today["ids"]))
    for arch, o in out.items():
        print(f"\n{arch} 1.7B (random weights), 64 prompts, 48 new tokens, greedy")
        print("| path | batch | seconds | generated tokens/s | weight-read bound tokens/s | of the bound |\n|---|---|---|---|---|---|")
        for r in o["runs"]:
            if "tokens_per_s" not in r:
                print(f"| {r['engine']} | – | {r.get('error', r.get('skipped', ''))[:200]!r} | | | |")
                continue
            print(f"| {r['mode']} | {r['batch']} | {r['seconds']:.2f} | {r['tokens_per_s']:,.0f} | "
                  f"{r['bound_tokens_per_s']:,.0f} | {r['of_bound']:.1%} |")
        if "speedup_tokens_per_s" in o:
            print(f"static engine / today's batched path: {o['speedup_tokens_per_s']:.1f}× tokens/s (target ≥ 5×); "
                  f"generated ids identical in {o['identical_answers']}/64 answers")
    for o in out.values():
        for r in o["runs"]:
            r.pop("answers", None)
            r.pop("ids", None)
    return out


def train_part(args, work: Path, started: float) -> dict:
    from train_throughput import build_model, run_worker

    t = time.time()
    model = build_model(work / "gemma3-1.7b", "gemma3", "1.7b", 262_144)
    out: dict = {"build_s": round(time.time() - t, 1), "runs": []}
    home = work / "home"   # the compile caches of the runs (core.jobs.compile_cache): cold for the first of each shape
    os.environ["VITUNE_HOME"] = str(home)
    plan = [("guide 2 × 4 (packing)", {}), ("fit to this GPU", {"fit_to_gpu": True}),
            ("fit to this GPU, again (warm compile caches)", {"fit_to_gpu": True})]
    plan = [step for step, name in zip(plan, ("guide", "fit", "again")) if name in args.runs.split(",")]
    for label, extra in plan:
        left = args.budget_s - (time.time() - started)
        if left < 60:
            out["runs"].append({"label": label, "skipped": "over the call's budget"})
            continue
        res = run_worker(model, "unsloth", args.steps, work, min(args.run_timeout, left), extra=extra)
        res["label"] = label
        out["runs"].append(res)
        print(f"[{time.time() - started:.0f} s] {label}: " + json.dumps({k: v for k, v in res.items()
                                                                        if k not in ("metrics", "log")})[:1500], flush=True)
    ok = {r["label"]: r for r in out["runs"] if "tokens_per_s" in r}
    guide, fit, again = (ok.get(label) for label in ("guide 2 × 4 (packing)", "fit to this GPU",
                                                       "fit to this GPU, again (warm compile caches)"))
    if guide and fit:
        out["fit_speedup"] = fit["tokens_per_s"] / guide["tokens_per_s"]
    if fit and again:
        out["second_start_speedup"] = fit["first_step_s"] / again["first_step_s"]
    print(f"\ngemma3 1.7B (random weights), r=16, seq 2048, adamw_8bit, bf16, {args.steps} steps; tokens/s over steps "
          f"5…{args.steps}; first step: from the worker's start to its first step's end")
    print("| run | batch × accumulation | tokens a step | tokens/s | peak GiB | first step s | compile s | final loss |")
    print("|---|---|---|---|---|---|---|---|")
    for r in out["runs"]:
        if "tokens_per_s" not in r:
            print(f"| {r['label']} | {str(r.get('error') or r.get('skipped'))[:300]!r} | | | | | | |")
            continue
        print(f"| {r['label']} | {r['batch']} × {r['accumulation']} | {r['tokens_per_step']:,} | {r['tokens_per_s']:,.0f} | "
              f"{r['peak_gib']:.2f} | {r['first_step_s']:.0f} | {r.get('compile_s') or 0:.0f} | {r['final_loss']:.3f} |")
    if "fit_speedup" in out:
        print(f"fit / guide tokens/s: {out['fit_speedup']:.2f}× (target ≥ 1.3×, same tokens a step)")
    if "second_start_speedup" in out:
        print(f"first step of the fitted run, cold / warm caches: {out['second_start_speedup']:.2f}× (target ≥ 2×)")
    curves = {r["label"]: [(m["step"] * r["tokens_per_step"], m["loss"]) for m in r["metrics"] if m.get("loss") is not None]
              for r in out["runs"] if "metrics" in r}
    (args.out / "loss-per-token.svg").write_text(svg_lines(curves, "tokens seen", "training loss"))
    return out


def svg_lines(curves: dict[str, list[tuple[float, float]]], xlabel: str, ylabel: str, w: int = 640, h: int = 360) -> str:
    """A line chart as SVG text (no plotting package on the GPU machine)."""
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    points = [p for c in curves.values() for p in c]
    if not points:
        return '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'
    x0, x1 = 0, max(x for x, _ in points) or 1
    y0, y1 = min(y for _, y in points), max(y for _, y in points)
    y0, y1 = (y0 - 0.05 * (y1 - y0 or 1)), (y1 + 0.05 * (y1 - y0 or 1))
    L, R, T, B = 60, 20, 20, 50
    sx = lambda x: L + (x - x0) / (x1 - x0) * (w - L - R)
    sy = lambda y: T + (y1 - y) / (y1 - y0) * (h - T - B)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
             f'<rect width="{w}" height="{h}" fill="white"/>',
             f'<line x1="{L}" y1="{h - B}" x2="{w - R}" y2="{h - B}" stroke="black"/>',
             f'<line x1="{L}" y1="{T}" x2="{L}" y2="{h - B}" stroke="black"/>',
             f'<text x="{(w + L) / 2}" y="{h - 12}" text-anchor="middle">{xlabel}</text>',
             f'<text x="14" y="{(h - B) / 2}" transform="rotate(-90 14 {(h - B) / 2})" text-anchor="middle">{ylabel}</text>']
    for k in range(5):
        xv, yv = x0 + k * (x1 - x0) / 4, y0 + k * (y1 - y0) / 4
        parts.append(f'<text x="{sx(xv):.0f}" y="{h - B + 16}" text-anchor="middle">{xv:,.0f}</text>')
        parts.append(f'<text x="{L - 6}" y="{sy(yv) + 4:.0f}" text-anchor="end">{yv:.2f}</text>')
    for i, (name, c) in enumerate(curves.items()):
        color = colors[i % len(colors)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in c)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{path}"/>')
        parts.append(f'<text x="{w - R - 8}" y="{T + 16 + 16 * i}" text-anchor="end" fill="{color}">{name}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", required=True, help="eval, train, or both in the order given (train,eval)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=Path("/tmp/vitune-gpu-speed"))
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--archs", default="gemma3,gemma4", help="eval: the architectures, in order")
    ap.add_argument("--run-timeout", type=float, default=260)
    ap.add_argument("--runs", default="guide,fit,again",
                    help="train: which runs, of guide (2 × 4), fit (fit to this GPU), again (fit on warm caches)")
    ap.add_argument("--budget-s", type=float, default=540, help="start nothing new after this many seconds")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    for part in args.part.split(","):
        if part not in ("eval", "train"):
            print(f"unknown part '{part}' (eval, train)", file=sys.stderr)
            return 2
        t = time.time()
        result = {"date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "gpu": gpu_name(),
                  "python": sys.version.split()[0], "part": part}
        try:
            import torch
            import transformers

            result.update(torch=torch.__version__, transformers=transformers.__version__)
        except ImportError:
            pass
        result["results"] = eval_part(args, args.work, started) if part == "eval" else train_part(args, args.work, started)
        result["seconds"] = round(time.time() - t, 1)
        (args.out / f"gpu-speed-{part}.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
