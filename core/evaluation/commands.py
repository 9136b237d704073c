"""The evaluation stage from the command line: ``evaluate`` (queue an evaluation; list, show, compare,
report), ``gate`` (the verdict and its thresholds), ``score`` (BLEU and ROUGE-L of a file) and ``votes``
(the blind preference votes and their win rates).

``core/cli.py`` adds each command's parser (``add_…(sub)``: its arguments and their checks) in the order
``python -m core --help`` lists them; heavy libraries are imported inside the commands.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.cli_common import _actor, _check_output, _fail, _print, _progress_printer, _seconds, _write


# an argparse type, as core/cli_common.py's: score's thresholds, a usage error when not a share

def _share(text: str) -> float:
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number between 0 and 1, not '{text}'") from None
    if not math.isfinite(value) or not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not '{text}'")
    return value


def _eval_row(e: dict) -> str:
    return (f"{e['id']}  {e['run_id'] or '(base, no adapter)':<28} {e['dataset_version_id']}/{e['split']:<5} "
            f"n={e['n']:<5} BLEU {e['bleu']:.4f}  ROUGE-L {e['rouge_l']:.4f}  {'PASS' if e['passed'] else 'FAIL'}")


def cmd_evaluate(args) -> int:
    from core.evaluation import evaluations
    from core.jobs import queue, supervisor
    from core.evaluation.inference import Decoding

    action, ids = args.action, args.ids
    needs = {"show": 1, "compare": 2, "report": 1, "csv": 1, "list": 0}
    if action and len(ids) != needs[action]:
        return _fail(f"evaluate {action} needs {needs[action]} evaluation id(s), got {len(ids)}", 2)
    if not action and ids:
        return _fail(f"unknown evaluate action '{ids[0]}' (list, show, compare, report, csv; or --run RUN)", 2)
    try:
        if action == "list":
            rows = evaluations.leaderboard(_actor(), args.dataset, args.base_model, args.split_filter, args.project)
            if args.json:
                from core.evaluation import words

                for e in rows:   # bleu_words / rouge_l_words are columns; this says what they are, or why absent
                    e["word_view"] = words.view(e)
                print(json.dumps(rows, ensure_ascii=False, indent=2, default=str))
            else:
                for e in rows:
                    print(f"#{e['rank']:<3} " + _eval_row(e))
            return 0
        if action == "show":
            from core.evaluation import words

            e = evaluations.ensure_word_scores(ids[0])   # computed and stored now where it has none
            e["verdict"] = "PASS" if e["passed"] else "FAIL"
            e["word_view"] = words.view(e)
            _print(e, args.json)
            return 0
        if action == "compare":
            c = evaluations.compare(ids[0], ids[1])
            if args.json:
                print(json.dumps(c, ensure_ascii=False, indent=2, default=str))
                return 0
            print(f"A {c['a']['label']}\nB {c['b']['label']}")
            print(f"whole evaluations:  BLEU {c['a']['bleu']:.4f} → {c['b']['bleu']:.4f} ({c['delta']['bleu']:+.4f})  "
                  f"ROUGE-L {c['a']['rouge_l']:.4f} → {c['b']['rouge_l']:.4f} ({c['delta']['rouge_l']:+.4f})")
            sh = c["shared"]
            print(f"{sh['n']} shared examples: BLEU {sh['a']['bleu']:.4f} → {sh['b']['bleu']:.4f} "
                  f"({sh['delta']['bleu']:+.4f})  ROUGE-L {sh['a']['rouge_l']:.4f} → {sh['b']['rouge_l']:.4f} "
                  f"({sh['delta']['rouge_l']:+.4f})")
            print(f"better {c['counts']['better']}, worse {c['counts']['worse']}, same {c['counts']['same']}")
            for title, items in (("most improved", c["better"][:5]), ("most worsened", c["worse"][:5])):
                for p in items:
                    print(f"  {title}: #{p['idx_b']} ROUGE-L {p['rouge_l_a']:.3f} → {p['rouge_l_b']:.3f}  "
                          f"{(p['instruction'] or '')[:60]}")
            return 0
        if action in ("report", "csv"):
            if not args.out:
                return _fail(f"evaluate {action} needs --out FILE", 2)
            out = _check_output(args.out)
            if args.csv:
                _check_output(args.csv)
            if action == "report":
                from core.evaluation import report

                _write(out, report.build(ids[0], args.compare_with))
            else:
                _write(out, evaluations.examples_csv(ids[0]))
            if args.csv:
                _write(args.csv, evaluations.examples_csv(ids[0]))
            print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)", file=sys.stderr)
            return 0
        if not args.run and not args.base_model:
            return _fail("evaluate needs --run RUN, or --base-model MODEL with --dataset VERSION "
                         "(or an action: list, show, compare, report, csv)", 2)
        decoding = Decoding(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                            temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                            stop=list(args.stop or []))
        job = evaluations.submit(
            args.run, base_model=args.base_model, dataset_version_id=args.dataset, split=args.split,
            limit=args.limit, decoding=decoding, actor=_actor(), prompt_format_name=args.prompt_format,
        )
    except (ValueError, queue.JobError) as exc:
        return _fail(str(exc))
    job = supervisor.wait(job["id"], timeout=args.timeout, on_update=_progress_printer("evaluate"))
    if job["state"] != "succeeded":
        return _fail(f"evaluation job {job['id']} {job['state']}: {job['error']}")
    result = dict(job["result"])
    result["evaluation"] = job["config"]["evaluation_id"]
    result["decoding"] = job["config"]["decoding"]
    result.pop("predictions", None)
    _print(result, args.json)
    return 0


def cmd_gate(args) -> int:
    from core.evaluation import gate
    from core.jobs import queue

    if args.set_thresholds or args.set_min_share is not None:
        try:
            if args.set_thresholds:
                gate.set_thresholds(*args.set_thresholds, actor=_actor(), override_reason=args.override_reason)
            if args.set_min_share is not None:
                gate.set_min_share(args.set_min_share, actor=_actor())
        except ValueError as exc:
            return _fail(str(exc), 2)
    if not args.run:
        print(json.dumps({"thresholds": gate.thresholds(), "min_share": gate.min_share(), "floor": gate.FLOOR}))
        return 0
    try:
        verdict = gate.verdict(args.run)
    except queue.JobError as exc:
        return _fail(str(exc), 2)
    e = verdict["evaluation"]
    print(json.dumps({"run": args.run, "releasable": verdict["releasable"], "reason": verdict["reason"],
                      "evaluation": e["id"] if e else None, "thresholds": verdict.get("thresholds")},
                     ensure_ascii=False))
    return 0 if verdict["releasable"] else 1


def cmd_score(args) -> int:
    from core.evaluation import scoring

    thresholds = {"bleu": args.bleu, "rouge_l": args.rouge_l}
    try:
        refs, preds = scoring.read_pairs(Path(args.input))
    except scoring.ScoreFileError as exc:
        return _fail(str(exc))
    result = scoring.score(refs, preds, thresholds)
    if args.json:
        print(json.dumps(result.summary(), ensure_ascii=False))
    else:
        print(f"n={result.n}  BLEU={result.bleu:.4f}  ROUGE-L={result.rouge_l:.4f}  "
              f"{'PASS' if result.passed else 'FAIL'} (BLEU > {args.bleu}, ROUGE-L > {args.rouge_l})")
    return 0


def cmd_votes(args) -> int:
    from core.evaluation import votes

    if args.action == "winrate":
        rows = votes.win_rates(_actor(), getattr(args, "project", None), model=args.model)
        if args.json:
            print(json.dumps(rows, ensure_ascii=False, indent=2, default=str))
            return 0
        if not rows:
            print("no votes yet (the playground's Blind vote mode records them)")
        for r in rows:
            print(f"{r['model_1']}  vs  {r['model_2']}: {r['votes']} vote(s), {r['wins_1']}–{r['wins_2']}, "
                  f"{r['ties']} tie(s); win rate {r['win_rate_1']:.2f} / {r['win_rate_2']:.2f}")
        return 0
    rows = votes.list_votes(_actor(), getattr(args, "project", None), limit=args.limit)
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2, default=str))
        return 0
    for r in rows:
        print(f"{r['created_at']:%Y-%m-%d %H:%M}  {r['id']}  {r['voter']:<16} {r['choice']:<4} {r['model_a']}  vs  "
              f"{r['model_b']}  · {r['prompt'][:60]}")
    return 0


# ── parsers ──────────────────────────────────────────────────────────────────


def add_evaluate(sub) -> None:
    e = sub.add_parser(
        "evaluate", help="evaluate a run (or a base model) on a held-out split; list, compare and report evaluations",
        description="`evaluate --run RUN` queues an evaluation and waits; `evaluate list` is the leaderboard; "
                    "`evaluate compare A B` shows metric deltas and the examples that got better or worse; "
                    "`evaluate report EVAL --out FILE.html` writes the self-contained client report; "
                    "`evaluate csv EVAL --out FILE.csv` the examples.")
    e.add_argument("action", nargs="?", choices=["list", "show", "compare", "report", "csv"])
    e.add_argument("ids", nargs="*", metavar="EVAL", help="evaluation id(s) for show, compare, report, csv")
    e.add_argument("--run")
    e.add_argument("--base-model", help="evaluate this base model without an adapter (or: filter the list)")
    e.add_argument("--dataset", metavar="VERSION", help="dataset version (or: filter the list)")
    e.add_argument("--split", default="test", choices=["test", "train"])
    e.add_argument("--prompt-format", choices=["chat", "alpaca-vi"],
                   help="with --base-model: the prompt format (use the tuned run's to compare the two)")
    e.add_argument("--split-filter", choices=["test", "train"], help="list: only this split")
    e.add_argument("--limit", type=int, help="only the first N examples of the split")
    e.add_argument("--max-new-tokens", type=int, default=128)
    e.add_argument("--batch-size", type=int, default=0,
                   help="prompts generated together (default 0: chosen from the GPU's free memory; 8 on a CPU)")
    e.add_argument("--temperature", type=float, default=0.0, help="0: greedy (the default)")
    e.add_argument("--top-p", type=float, default=1.0)
    e.add_argument("--top-k", type=int, default=0)
    e.add_argument("--stop", action="append", metavar="TEXT", help="stop string (repeatable)")
    e.add_argument("--out", help="report / csv: the file to write")
    e.add_argument("--csv", help="report: also write the examples' CSV here")
    e.add_argument("--compare-with", metavar="EVAL", help="report: compare with this evaluation "
                   "(default: the base model's evaluation on the same split, when there is one)")
    e.add_argument("--timeout", type=_seconds, default=6 * 3600)
    e.add_argument("--json", action="store_true")
    e.set_defaults(fn=cmd_evaluate)


def add_gate(sub) -> None:
    g = sub.add_parser("gate", help="exit 0 only when the run is releasable; show or set the thresholds")
    g.add_argument("--run")
    g.add_argument("--set-thresholds", nargs=2, type=float, metavar=("BLEU", "ROUGE_L"),
                   help="set the gate's thresholds (recorded in the audit log; below 0.35/0.45 needs --override-reason)")
    g.add_argument("--override-reason", help="why the thresholds go below the floor (recorded)")
    g.add_argument("--set-min-share", type=float, metavar="SHARE",
                   help="the share of the held-out split a gating evaluation must cover (default 1.0)")
    g.set_defaults(fn=cmd_gate)


def add_score(sub) -> None:
    s = sub.add_parser("score", help="BLEU and ROUGE-L of a JSONL of {reference, prediction}")
    s.add_argument("--input", required=True)
    s.add_argument("--bleu", type=_share, default=0.35, help="BLEU threshold")
    s.add_argument("--rouge-l", type=_share, default=0.45, help="ROUGE-L threshold")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_score)


def add_votes(sub) -> None:
    vt = sub.add_parser("votes", help="blind preference votes: list them, or the win rates per pair of models")
    vt.add_argument("action", choices=["list", "winrate"])
    vt.add_argument("--model", help="winrate: only the pairs this model is in (e.g. run:RUN)")
    vt.add_argument("--limit", type=int, default=200)
    vt.add_argument("--json", action="store_true")
    vt.set_defaults(fn=cmd_votes)
