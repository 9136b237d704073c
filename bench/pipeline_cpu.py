"""Wall time and peak RSS of the whole default pipeline on this machine (CPU).

    .venv/bin/python bench/pipeline_cpu.py

Runs, in a temporary studio home, through the CLI: sample import → train the demo sample (internal
notes) with the demo preset (40 steps) → evaluate the 22 held-out pairs (the gate passes) → export f16 +
q8_0 (the default for the 270M model) → Modelfile. Target: ≤ 5 min on 2 cores.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def watch_rss(home: Path, peak: list[float], stop: threading.Event) -> None:
    """The largest RSS of any process of this pipeline (the CLI commands and the workers they start,
    which run in their own session and so escape getrusage), sampled every 0.2 s."""
    import psutil

    while not stop.is_set():
        for p in psutil.process_iter(["environ", "memory_info"]):
            try:
                if (p.info["environ"] or {}).get("VITUNE_HOME") == str(home) and p.info["memory_info"]:
                    peak[0] = max(peak[0], p.info["memory_info"].rss / 1024**2)
            except (psutil.Error, AttributeError):
                continue
        stop.wait(0.2)


def main() -> int:
    home = Path(tempfile.mkdtemp(prefix="vitune-bench-"))
    peak, stop = [0.0], threading.Event()
    threading.Thread(target=watch_rss, args=(home, peak, stop), daemon=True).start()
    env = dict(os.environ, VITUNE_HOME=str(home))
    stages: list[tuple[str, float]] = []

    def run(label: str, *args: str) -> str:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "core", *args], cwd=REPO, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"{label} failed:\n{proc.stderr[-2000:]}")
        stages.append((label, time.perf_counter() - t0))
        print(f"{label:<28} {stages[-1][1]:7.1f} s", flush=True)
        return proc.stdout

    start = time.perf_counter()
    dataset = run("import samples", "dataset", "import-samples").split()[0]
    train = json.loads(run("train (40 steps)", "train", "--dataset", dataset, "--preset", "demo pass (CPU, 40 steps)", "--json"))
    ev = json.loads(run("evaluate (22 pairs)", "evaluate", "--run", train["run"], "--max-new-tokens", "48", "--json"))
    exp = json.loads(run("export (f16 + q8_0)", "export", "--run", train["run"], "--quant", "f16", "q8_0", "--json"))
    run("modelfile", "modelfile", "--gguf", exp["gguf"]["q8_0"], "--system", "Bạn là trợ lý CSKH.")
    total = time.perf_counter() - start
    stop.set()
    print(f"{'total':<28} {total:7.1f} s")
    print(f"peak RSS of any process    {peak[0]:7.0f} MiB")
    print(f"BLEU {ev['bleu']:.4f}  ROUGE-L {ev['rouge_l']:.4f}  gate {'PASS' if ev['passed'] else 'FAIL'}  (home: {home})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
