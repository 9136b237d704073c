"""Time to first token in the playground: how long a streamed answer takes to show its first piece,
against the time of the whole answer, on the default model.

    .venv/bin/python bench/ttft.py                      # default model (transformers) and its GGUF (llama.cpp)
    .venv/bin/python bench/ttft.py --repeats 5 --max-new-tokens 128 --json out.json

Runs the real path of the chat page in a temporary studio home: ``playground.ask_stream`` starts an
inference worker (a job on the CPU slot), the worker streams newline-delimited JSON pieces over
loopback, and the time is taken in this process (the web process's view: HTTP and JSON included).
The first answer of each model warms its worker and is reported apart (cold: the worker's start and
model load included); the rest give the medians. Every answer is greedy, on the same two-turn
conversation (the second turn carries the first). The load average of the machine is printed before
and after, since other jobs share its cores.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TURN_1 = "Khách hàng phàn nàn về hóa đơn sai, phải xử lý thế nào?"
TURN_2 = "Viết lại câu trả lời trên ngắn gọn hơn."


def one(target: dict, messages: list[dict], decoding, actor) -> dict:
    from core.playground import playground

    info: dict = {}
    t0 = time.perf_counter()
    first = None
    pieces = []
    for piece in playground.stream_target(target, messages, decoding=decoding, actor=actor, project="default", info=info):
        if first is None:
            first = time.perf_counter() - t0
        pieces.append(piece)
    total = time.perf_counter() - t0
    return {"ttft_s": round(first if first is not None else total, 3), "total_s": round(total, 3),
            "pieces": len(pieces), "new_tokens": info.get("new_tokens"), "prompt_tokens": info.get("prompt_tokens"),
            "worker_first_piece_s": info.get("first_piece_s"), "worker_s": info.get("seconds"),
            "answer": "".join(pieces)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="warm answers per model and turn (default 3)")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--only", choices=["base", "gguf"], help="one model only")
    ap.add_argument("--json", help="write the measurements here")
    args = ap.parse_args()

    home = Path(tempfile.mkdtemp(prefix="vitune-ttft-"))
    os.environ["VITUNE_HOME"] = str(home)
    os.environ.setdefault("VITUNE_SLOTS", "cpu")
    os.environ.setdefault("VITUNE_PLAYGROUND_IDLE_S", "120")
    from core.access.principal import operator
    from core.playground import playground
    from core.evaluation.inference import Decoding

    me = operator()
    decoding = Decoding(max_new_tokens=args.max_new_tokens)
    targets = [t for t in playground.targets_for(me, "default", [], []) if t["kind"] in ("base", "gguf")]
    if args.only:
        targets = [t for t in targets if t["kind"] == args.only]
    load_before = os.getloadavg()
    out = {"date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} CPU cores", "max_new_tokens":
           args.max_new_tokens, "load_before": [round(x, 2) for x in load_before], "models": {}}
    print(f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f} "
          f"({os.cpu_count()} cores)", flush=True)
    try:
        for target in targets:
            name = "transformers" if target["kind"] == "base" else "llama.cpp GGUF"
            t0 = time.perf_counter()
            cold = one(target, [{"role": "user", "content": TURN_1}], decoding, me)
            cold["wall_s"] = round(time.perf_counter() - t0, 3)
            turn1 = [{"role": "user", "content": TURN_1}]
            turn2 = turn1 + [{"role": "assistant", "content": cold["answer"]}, {"role": "user", "content": TURN_2}]
            warm = {"turn 1": [one(target, turn1, decoding, me) for _ in range(args.repeats)],
                    "turn 2": [one(target, turn2, decoding, me) for _ in range(args.repeats)]}
            row = {"label": target["label"], "cold_ttft_s": cold["ttft_s"], "cold_total_s": cold["total_s"]}
            for turn, runs in warm.items():
                row[turn] = {k: statistics.median(r[k] for r in runs) for k in ("ttft_s", "total_s", "new_tokens",
                                                                               "prompt_tokens", "pieces")}
            out["models"][name] = row
            print(f"{name:<16} cold: first piece {cold['ttft_s']:.2f} s, whole answer {cold['total_s']:.2f} s "
                  f"(worker start and load included)", flush=True)
            for turn in warm:
                r = row[turn]
                print(f"{name:<16} {turn} (warm, median of {args.repeats}): first piece {r['ttft_s']:.3f} s, whole "
                      f"answer {r['total_s']:.2f} s, {r['new_tokens']:.0f} tokens, prompt {r['prompt_tokens']:.0f} "
                      f"tokens", flush=True)
    finally:
        for job in playground.servers():
            playground.stop(job["id"], actor=me)
    out["load_after"] = [round(x, 2) for x in os.getloadavg()]
    print(f"load average after: {' '.join(f'{x:.2f}' for x in out['load_after'])}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
