"""The cost of quantization of the default model itself (no adapter): its f16, q8_0 and q4_k_m GGUFs made by the
studio's exporter (llama.cpp's converter and quantizer), measured by core.deploy.quant_cost on the first N
held-out pairs of the demo dataset (internal notes), in the chat format; with ``--llama-cpp-arithmetic``, also
llama.cpp's own KL arithmetic (16-bit base log-probabilities, terms with log p_base > -16) on the same logits.

    .venv/bin/python bench/quant_cost_default.py [--pairs 16] [--out DIR] [--llama-cpp-arithmetic]

A trained run's export is measured with ``python -m core quant-cost --run RUN --measure --pairs N``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def llama_cpp_kl(lb, lq) -> list[float]:
    """perplexity.cpp's arithmetic, row by row: the base row stored as uint16 steps above max - 16, the
    quantized model's log-softmax in float32, terms with log p_base <= -16 left out."""
    import numpy as np

    out = []
    for x, y in zip(lb.astype(np.float32), lq.astype(np.float32)):
        mx = x.max()
        mn = max(x.min(), mx - 16)
        lse = np.float32(np.log(np.exp((x - mx).astype(np.float64)).sum()))
        min_lp = mn - mx - lse
        scale = np.float32((mx - mn) / 65535.0)
        u = np.where(x > mn, np.rint((x - mn) / scale), 0)
        plb = scale * u + min_lp
        my = y.max()
        lse_q = np.float32(np.log(np.exp((y - my).astype(np.float64)).sum()))
        keep = plb > -16
        out.append(float((np.exp(plb[keep]) * (plb[keep] - y[keep] + (my + lse_q))).sum()))
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=16)
    ap.add_argument("--out", default=None)
    ap.add_argument("--llama-cpp-arithmetic", action="store_true")
    args = ap.parse_args()
    os.environ["VITUNE_HOME"] = tempfile.mkdtemp(prefix="quant-cost-home-")
    subprocess.run([sys.executable, "-m", "core", "dataset", "import-samples"], cwd=REPO, check=True,
                   capture_output=True)
    import numpy as np

    from core import paths
    from core.datasets import versions
    from core.deploy import exporter, quant_cost, quant_costs
    from core.models import load_tokenizer

    pairs = quant_costs.held_out_pairs(versions.find_by_name("sample-ghichu-noibo")["id"], args.pairs)
    out = Path(args.out or tempfile.mkdtemp(prefix="quant-cost-"))
    out.mkdir(parents=True, exist_ok=True)
    base = paths.default_base_model_dir()
    t0 = time.time()
    f16 = out / "default-f16.gguf"
    if not f16.exists():
        exporter.convert(base, f16, lambda m: None)
    files = {"f16": str(f16)}
    for q in ("q8_0", "q4_k_m"):
        p = out / f"default-{q}.gguf"
        if not p.exists():
            exporter.quantize(f16, p, q)
        files[q] = str(p)
    export_s = round(time.time() - t0, 1)
    tok = load_tokenizer(str(base))
    report = quant_cost.measure(files, pairs, "chat", tok, print)
    quant_cost.write(out, report)
    result = {"pairs": len(pairs), "export_s": export_s, "measure_s": report["duration_s"],
              "bytes": {q: os.path.getsize(p) for q, p in files.items()},
              "per_quantization": report["per_quantization"]}
    if args.llama_cpp_arithmetic:
        llm = {q: quant_cost._load(p, 1024) for q, p in files.items()}
        seqs = quant_cost.sequences(pairs, "chat", tok, lambda t: llm["f16"].tokenize(t.encode(), add_bos=True,
                                                                                     special=True))
        for q in ("q8_0", "q4_k_m"):
            exact, theirs = [], []
            for s in seqs:
                lb, _ = quant_cost.answer_logits(llm["f16"], s)
                lq, _ = quant_cost.answer_logits(llm[q], s)
                a, b = quant_cost.log_softmax(lb), quant_cost.log_softmax(lq)
                exact += list((np.exp(a) * (a - b)).sum(-1))
                theirs += llama_cpp_kl(lb, lq)
            result.setdefault("llama_cpp_arithmetic", {})[q] = {
                "exact_mean": float(np.mean(exact)), "llama_cpp_mean": float(np.mean(theirs)),
                "max_abs_diff_per_token": float(np.max(np.abs(np.array(exact) - np.array(theirs))))}
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
