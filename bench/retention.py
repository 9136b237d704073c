"""General Vietnamese kept, with and without the general mix: two short trainings of the default model on the
demo domain (the internal notes), one on the bundled sample version (5 % general Vietnamese mixed into its
training split, as the guide prescribes) and one on the same notes without it, then the retention check of
each (``python -m core retention run``) against the base model, and each run's domain evaluation.

    .venv/bin/python bench/retention.py                       # the numbers in docs/evaluation.md
    .venv/bin/python bench/retention.py --max-steps 2 --limit 3 --max-new-tokens 8   # the CPU pass of the tests

Everything goes through the CLI in a temporary studio home (or ``--home``); the base model is evaluated once
(the second run reuses its stored results: same base, prompt format, pairs and decoding). ``--out FILE``
writes the numbers as JSON. Train on a machine nobody else is loading: it takes the CPU for minutes.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--home", help="the studio home to use (default: a new temporary one)")
    p.add_argument("--preset", default="demo pass (CPU, 40 steps)")
    p.add_argument("--max-steps", type=int, help="train this many steps instead of the preset's")
    p.add_argument("--limit", type=int, help="the first N pairs of each set (default: all)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--no-domain", action="store_true", help="skip the domain evaluations")
    p.add_argument("--out", help="write the numbers here as JSON")
    args = p.parse_args(argv)
    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="vitune-retention-"))
    env = dict(os.environ, VITUNE_HOME=str(home), VITUNE_SLOTS=os.environ.get("VITUNE_SLOTS", "cpu"))
    times: dict[str, float] = {}

    def cli(label: str, *cmd: str) -> str:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "core", *cmd], cwd=REPO, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"{label} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        times[label] = round(time.perf_counter() - t0, 1)
        print(f"{label:<34} {times[label]:7.1f} s", flush=True)
        return proc.stdout

    start = time.perf_counter()
    mixed_version = cli("import samples (5 % general mix)", "dataset", "import-samples").split()[0]
    plain = json.loads(cli("import the notes without the mix", "dataset", "import",
                           str(REPO / "data" / "samples" / "internal_notes.jsonl"), "--name", "notes-no-mix", "--json"))
    plain_version = plain["dataset_version"]
    steps = ["--max-steps", str(args.max_steps)] if args.max_steps else []
    runs = {}
    for name, version, extra in (("with mix", mixed_version, []),
                                 ("without mix", plain_version,
                                  ["--override-review", "bench/retention.py: the bundled notes without their mix"])):
        out = json.loads(cli(f"train {name}", "train", "--dataset", version, "--preset", args.preset, *steps,
                             *extra, "--json"))
        runs[name] = out["run"]
    limit = ["--limit", str(args.limit)] if args.limit else []
    domain, kept = {}, {}
    for name, run in runs.items():
        if not args.no_domain:
            domain[name] = json.loads(cli(f"evaluate the domain, {name}", "evaluate", "--run", run, "--max-new-tokens",
                                          "48", *limit, "--json"))
        kept[name] = json.loads(cli(f"retention, {name}", "retention", "run", "--run", run, "--max-new-tokens",
                                    str(args.max_new_tokens), *limit, "--json"))
    total = time.perf_counter() - start
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    report = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": commit,
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
              "preset": args.preset, "max_steps": args.max_steps, "limit": args.limit,
              "max_new_tokens": args.max_new_tokens, "runs": runs, "seconds": times, "total_s": round(total, 1),
              "domain": {k: {m: v[m] for m in ("n", "bleu", "rouge_l", "passed")} for k, v in domain.items()},
              "retention": {k: v["check"] for k, v in kept.items()}}
    print(f"\n{'':<13}{'set':<14}{'n':>5} {'BLEU':>8} {'ROUGE-L':>8} {'perplexity':>11}")
    for name, check in report["retention"].items():
        for set_name, s in check["numbers"]["sets"].items():
            rows = ([("base", s["base"])] if s["base"] else []) + [(name, s["tuned"])]
            for who, got in rows:
                print(f"{who:<13}{set_name:<14}{s['n']:>5} {got['bleu']:>8.4f} {got['rouge_l']:>8.4f} "
                      f"{got['perplexity']:>11.3f}")
        print(f"  check: {'passed' if check['passed'] else 'FAILED' if check['passed'] is False else 'not measured'}"
              f" — {check['reason']['en']}")
    for name, d in report["domain"].items():
        print(f"domain held-out, {name}: n={d['n']} BLEU {d['bleu']:.4f} ROUGE-L {d['rouge_l']:.4f}")
    print(f"total {total:.1f} s (home: {home})")
    if args.out:
        Path(args.out).write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
