"""The evaluation stage from the command line: ``evaluate`` (queue an evaluation; list, show, compare,
report), ``gate`` (the verdict and its thresholds), ``score`` (BLEU and ROUGE-L of a file), ``votes``
(the blind preference votes and their win rates) and ``judge`` (the LLM judge: run it over an
evaluation, the votes or the reviews; its scores, its agreement with the team, whether it gates).

``core/cli.py`` adds each command's parser (``add_…(sub)``: its arguments and their checks) in the order
``python -m core --help`` lists them; heavy libraries are imported inside the commands.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.cli_common import _actor, _check_output, _count, _fail, _print, _progress_printer, _seconds, _write


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


DECODING_DEFAULTS = {"max_new_tokens": 128, "batch_size": 0, "temperature": 0.0, "top_p": 1.0, "top_k": 0}


def _eval_row(e: dict) -> str:
    return (f"{e['id']}  {e['artifact'] if e['run_id'] else '(base, no adapter)':<36} {e['dataset_version_id']}/{e['split']:<5} "
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

                from core import i18n

                _write(out, report.build(ids[0], args.compare_with, lang=args.lang or i18n.language_of(_actor())))
            else:
                _write(out, evaluations.examples_csv(ids[0]))
            if args.csv:
                _write(args.csv, evaluations.examples_csv(ids[0]))
            print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)", file=sys.stderr)
            return 0
        if not args.run and not args.base_model:
            return _fail("evaluate needs --run RUN, or --base-model MODEL with --dataset VERSION "
                         "(or an action: list, show, compare, report, csv)", 2)
        given = {k: getattr(args, k) for k in ("max_new_tokens", "batch_size", "temperature", "top_p", "top_k")
                 if getattr(args, k) is not None}
        if args.stop:
            given["stop"] = list(args.stop)
        # an artifact (a GGUF, an Ollama release) is decoded like the run's own evaluation unless told otherwise
        decoding = Decoding(**{**DECODING_DEFAULTS, **given}) if given or not (args.gguf or args.ollama) else None
        job = evaluations.submit(
            args.run, base_model=args.base_model, dataset_version_id=args.dataset, split=args.split,
            limit=args.limit, decoding=decoding, actor=_actor(), prompt_format_name=args.prompt_format,
            gguf=args.gguf, ollama_model=args.ollama, n_parallel=args.parallel,
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
    from core.evaluation import gate, retention
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
        rec = gate.stored(gate.record(args.run, args.quant, verdict_of_run=verdict))
    except queue.JobError as exc:
        return _fail(str(exc), 2)
    e = verdict["evaluation"]
    judged = verdict.get("judge")
    artifact = next(c for c in rec["checks"] if c["name"] == "gguf")
    out = {"run": args.run, "quantization": rec["quantization"], "releasable": rec["releasable"],
           "reason": "; ".join(gate.failing(rec)) or verdict["reason"],
           "evaluation": e["id"] if e else None, "gguf_evaluation": artifact["evaluation"],
           "thresholds": verdict.get("thresholds"),
           **({"judge": {k: judged[k] for k in ("judge", "n", "mean", "gating", "passes", "blocks", "reason")}}
              if judged else {}),
           **({"retention": retention.as_dict(verdict["retention"])} if verdict.get("retention") else {}),
           "checks": rec["checks"]}
    print(json.dumps(out, ensure_ascii=False, indent=2 if args.json else None, default=str))
    return 0 if rec["releasable"] else 1


def _retention_text(out: dict) -> str:
    c = out["check"]
    verdict = {True: "KEPT", False: "NOT KEPT", None: "NOT MEASURED"}[c["passed"]]
    lines = [f"{out['run']}: {c['name']}: {verdict}", c["reason"]["en"]]
    for name, s in c["numbers"]["sets"].items():
        base = s["base"] or {}
        lines.append(f"  {name:<13} n={s['n']:<4} " + "  ".join(
            f"{k} {(base.get(k) if base.get(k) is not None else float('nan')):.4f} → {s['tuned'][k]:.4f}"
            for k in ("bleu", "rouge_l", "perplexity") if s["tuned"].get(k) is not None))
    return "\n".join(lines)


def cmd_retention(args) -> int:
    from core.evaluation import retention
    from core.jobs import queue, supervisor

    who = _actor()
    try:
        if args.action == "settings":
            changes = {k: getattr(args, k) for k in ("rouge_l_drop", "perplexity_ratio")}
            if args.required and args.not_required:
                return _fail("retention settings takes --required or --not-required, not both", 2)
            required = True if args.required else (False if args.not_required else None)
            if any(v is not None for v in changes.values()) or required is not None:
                retention.set_settings(actor=who, required=required, override_reason=args.override_reason, **changes)
            print(json.dumps(retention.settings(), ensure_ascii=False))
            return 0
        if not args.run:
            return _fail(f"retention {args.action} needs --run RUN", 2)
        if args.action == "examples":
            c = retention.check(args.run, args.quant)
            wanted = args.set or next(iter(c.numbers["sets"]), None)
            s = c.numbers["sets"].get(wanted) if wanted else None
            if not s or not s["base_id"]:
                return _fail(f"run {args.run} has no retention result on the set '{wanted}' beside the base's", 2)
            rows = retention.drilldown(s["tuned_id"], s["base_id"], who)
            if args.json:
                print(json.dumps(rows, ensure_ascii=False, indent=2, default=str))
                return 0
            for r in rows[: args.limit or len(rows)]:
                print(f"#{r['idx']:<4} ROUGE-L {r['base_rouge_l']:.3f} → {r['tuned_rouge_l']:.3f}  "
                      f"{(r['instruction'] or '')[:70]}\n      base:  {(r['base'] or '')[:100]}\n"
                      f"      tuned: {(r['tuned'] or '')[:100]}")
            return 0
        if args.action == "run":
            job = retention.submit(args.run, actor=who, quant=args.quant, limit=args.limit,
                                   max_new_tokens=args.max_new_tokens, base=not args.no_base)
            job = supervisor.wait(job["id"], timeout=args.timeout, on_update=_progress_printer("retention"))
            if job["state"] != "succeeded":
                return _fail(f"retention job {job['id']} {job['state']}: {job['error']}")
        out = retention.summary(args.run, who, args.quant)
        out.pop("check_obj")
        if args.json:
            print(json.dumps(out, ensure_ascii=False, indent=2, default=str))
        else:
            print(_retention_text(out))
        return 0
    except (ValueError, queue.JobError) as exc:
        return _fail(str(exc))


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


def _judge_wait(job: dict, args) -> int:
    from core.evaluation import judge
    from core.jobs import supervisor

    print(f"queued judge job {job['id']} ({job['config']['items']} answers, judge {job['config']['judge']}); stop it "
          f"and keep what it judged with `python -m core judge stop {job['id']}`", file=sys.stderr)
    job = supervisor.wait(job["id"], timeout=args.timeout, on_update=_progress_printer("judge"))
    run = judge.run_of(job["id"]) or {}
    failed = judge.failures(job["id"])
    out = {"job": job["id"], "state": job["state"], "error": job["error"], "judge": job["config"]["judge"],
           "rubric_version": job["config"]["rubric_version"], "what": job["config"]["what"], "ref": job["config"]["ref"],
           **{k: run.get(k) for k in ("items", "asked", "scored", "failed", "tokens_in", "tokens_out", "cost",
                                      "stopped")}, "failures": failed}
    if job["config"]["what"] == "example":
        out["summary"] = judge.summary(job["config"]["ref"], judge=job["config"]["judge"],
                                       rubric_version=job["config"]["rubric_version"])
    if args.json:
        print(json.dumps(out, ensure_ascii=False, indent=2, default=str))
    else:
        for k, v in out.items():
            if k not in ("failures", "summary"):
                print(f"{k}: {v}")
        if out.get("summary"):
            sm = out["summary"]
            print(f"mean: {sm['mean']} over {sm['n']} of {sm['examples']} examples; scores 1–5: "
                  f"{[sm['distribution'][s] for s in range(1, 6)]}")
        for f in failed:
            print(f"  {f['kind']} {f['ref']}#{f['part']}: {f['error']}")
    if job["state"] != "succeeded":
        return _fail(f"judge job {job['id']} {job['state']}: {job['error']}")
    return 0


def cmd_judge(args) -> int:
    from core.evaluation import gate, judge
    from core.jobs import queue

    action, who = args.action, _actor()
    try:
        if action in ("run", "votes", "reviews"):
            if not args.local and not args.endpoint:
                return _fail("judge needs --local (the default model) or --endpoint NAME", 2)
            if args.local and args.endpoint:
                return _fail("judge takes --local or --endpoint NAME, not both", 2)
            common = dict(endpoint=args.endpoint, local=args.local, max_items=args.max_items, max_cost=args.max_cost,
                          actor=who)
            if action == "run":
                if not args.target:
                    return _fail("judge run needs an evaluation id", 2)
                job = judge.submit_evaluation(args.target, **common)
            elif action == "votes":
                job = judge.submit_votes(**common, project=args.project)
            else:
                job = judge.submit_reviews(**common, project=args.project)
            return _judge_wait(job, args)
        if action == "stop":
            job = queue.get_job(int(args.target)) if (args.target or "").isdigit() else None
            if not job or job["kind"] != "judge" or job["state"] not in ("queued", "running"):
                return _fail(f"{args.target} is not a queued or running judge job", 2)
            judge.request_stop(job, actor=who)
            print(f"judge job {job['id']} will stop after its current answer and keep what it judged")
            return 0
        if action == "show":
            if not args.target:
                return _fail("judge show needs an evaluation id", 2)
            out = judge.verdict_of(args.target, who)
            out["summary"] = judge.summary(args.target, who)
            out["examples"] = list(judge.verdicts(args.target).values())
            if args.json:
                _print(out, True)
                return 0
            print(f"{args.target}: judge {out['judge'] or '(none)'}, mean {out['mean']} over {out['n']} examples "
                f"({out['share']:.0%}); {out['failed']} failed; cost {out['cost']:.4f}\n{out['reason']}\n"
                f"agreement: {json.dumps(out['agreement'], ensure_ascii=False)}")
            return 0
        if action == "agreement":
            found = judge.judges(who)
            wanted = [j for j in found if not args.target or j["judge"] == args.target]
            if args.target and not wanted:
                wanted = [{"judge": args.target, "rubric_version": None}]
            rows = [judge.agreement(j["judge"], j["rubric_version"], actor=who, project=args.project) for j in wanted]
            if args.json:
                print(json.dumps(rows, ensure_ascii=False, indent=2, default=str))
                return 0
            if not rows:
                print("no judge has scored anything yet (`python -m core judge votes --local` scores the blind votes)")
            for a in rows:
                v, r = a["votes"], a["reviews"]
                print(f"{a['judge']} (rubric {a['rubric_version']}):\n"
                      f"  votes: n={v['n']}, agrees with {v['agreement'] if v['agreement'] is not None else '–'} "
                      f"(decisive: {v['agreement_decisive'] if v['agreement_decisive'] is not None else '–'} of "
                      f"{v['n_decisive']}), Kendall tau {v['kendall_tau']}" + (f"; {v['note']}" if v["note"] else "")
                      + f"\n  reviews: n={r['n']}, concordance {r['concordance']} over {r['pairs']} pairs, Kendall "
                      f"tau {r['kendall_tau']}, mean by decision {r['mean_by_decision']}"
                      + (f"; {r['note']}" if r["note"] else ""))
            return 0
        if action == "gate":
            if args.enable and args.disable:
                return _fail("judge gate takes --enable or --disable, not both", 2)
            if args.enable or args.disable or args.min_mean is not None or args.min_share is not None:
                enabled = args.enable or (not args.disable and gate.judge_gate()["enabled"])
                judge.set_gate(enabled, judge=args.target, min_mean=args.min_mean, min_share=args.min_share,
                               actor=who, override_reason=args.override_reason)
            print(json.dumps(gate.judge_gate(), ensure_ascii=False))
            return 0
        if action == "limits":
            if any(v is not None for v in (args.max_items, args.max_cost, args.timeout_s, args.max_tokens)):
                judge.set_limits(max_items=args.max_items, max_cost=args.max_cost, timeout_s=args.timeout_s,
                                 max_tokens=args.max_tokens, actor=who)
            print(json.dumps(judge.limits(), ensure_ascii=False))
            return 0
    except (ValueError, queue.JobError) as exc:
        return _fail(str(exc))
    return _fail(f"unknown judge action '{action}'", 2)


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
    e.add_argument("--gguf", choices=["f16", "q8_0", "q4_k_m"],
                   help="with --run: evaluate the run's exported GGUF at this quantization (llama.cpp, the file that "
                        "ships) instead of its adapter; decoded like the run's own evaluation unless told otherwise")
    e.add_argument("--ollama", metavar="NAME:TAG",
                   help="with --run: evaluate the release NAME:TAG as the Ollama server serves it (ollama client)")
    e.add_argument("--parallel", type=int, help="--gguf: sequences llama.cpp decodes together (default 8)")
    e.add_argument("--max-new-tokens", type=int, help="default 128 (--gguf/--ollama: the run's evaluation's)")
    e.add_argument("--batch-size", type=int,
                   help="prompts generated together (default 0: chosen from the GPU's free memory; 8 on a CPU)")
    e.add_argument("--temperature", type=float, help="0: greedy (the default)")
    e.add_argument("--top-p", type=float, help="default 1.0")
    e.add_argument("--top-k", type=int, help="default 0 (off)")
    e.add_argument("--stop", action="append", metavar="TEXT", help="stop string (repeatable)")
    e.add_argument("--out", help="report / csv: the file to write")
    e.add_argument("--csv", help="report: also write the examples' CSV here")
    e.add_argument("--lang", choices=["vi", "en"], help="report: its language (default: the operator's, "
                   "`python -m core i18n language`)")
    e.add_argument("--compare-with", metavar="EVAL", help="report: compare with this evaluation "
                   "(default: the base model's evaluation on the same split, when there is one)")
    e.add_argument("--timeout", type=_seconds, default=6 * 3600)
    e.add_argument("--json", action="store_true")
    e.set_defaults(fn=cmd_evaluate)


def add_gate(sub) -> None:
    g = sub.add_parser("gate", help="exit 0 only when the run is releasable; show or set the thresholds",
                       description="`gate --run RUN [--quant Q]` judges a release of the run's GGUF at Q (default: the "
                                   "run's default quantization): the merged model's evaluation and the GGUF's own, and "
                                   "prints the gate's record (each check, its numbers and reason in English and "
                                   "Vietnamese); exit 0 only when every check that gates passed.")
    g.add_argument("--run")
    g.add_argument("--quant", choices=["f16", "q8_0", "q4_k_m"], help="the quantization a release would ship")
    g.add_argument("--json", action="store_true", help="the record, indented")
    g.add_argument("--set-thresholds", nargs=2, type=float, metavar=("BLEU", "ROUGE_L"),
                   help="set the gate's thresholds (recorded in the audit log; below 0.35/0.45 needs --override-reason)")
    g.add_argument("--override-reason", help="why the thresholds go below the floor (recorded)")
    g.add_argument("--set-min-share", type=float, metavar="SHARE",
                   help="the share of the held-out split a gating evaluation must cover (default 1.0)")
    g.set_defaults(fn=cmd_gate)


def add_retention(sub) -> None:
    r = sub.add_parser(
        "retention", help="general Vietnamese kept? the base model against the tuned run (and its GGUF)",
        description="`retention run --run RUN` evaluates the base model and the run on general Vietnamese (the test "
                    "split of the general data mixed into its version, and the studio's own general set): BLEU, "
                    "ROUGE-L and the perplexity of the reference answers; `retention show --run RUN` the check the "
                    "gate asks (tuned ROUGE-L ≥ base − 0.05, perplexity ≤ base × 1.25 by default); `retention "
                    "examples --run RUN [--set shipped]` the examples, the largest loss first; `retention settings` "
                    "(admins; audited) the check's bounds.")
    r.add_argument("action", choices=["run", "show", "examples", "settings"])
    r.add_argument("--run")
    r.add_argument("--quant", help="the run's GGUF at this quantization (an intact export) as the tuned target")
    r.add_argument("--limit", type=_count, help="run: the first N pairs of each set; examples: show N")
    r.add_argument("--max-new-tokens", type=_count, default=128)
    r.add_argument("--no-base", action="store_true", help="run: do not evaluate the base model")
    r.add_argument("--set", choices=["general-test", "shipped"], help="examples: which set")
    r.add_argument("--rouge-l-drop", type=_share, help="settings: the ROUGE-L the tuned run may lose (default 0.05)")
    r.add_argument("--perplexity-ratio", type=float, help="settings: tuned ÷ base perplexity at most (default 1.25)")
    r.add_argument("--required", action="store_true", help="settings: a run without the check is not releasable")
    r.add_argument("--not-required", action="store_true", help="settings: the check gates only where measured")
    r.add_argument("--override-reason", help="settings: why the bounds are looser than the defaults (recorded)")
    r.add_argument("--timeout", type=_seconds, default=6 * 3600)
    r.add_argument("--json", action="store_true")
    r.set_defaults(fn=cmd_retention)


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


def add_judge(sub) -> None:
    j = sub.add_parser(
        "judge", help="the LLM judge: 1–5 scores of an evaluation's answers, its agreement with the team, the gate",
        description="`judge run EVAL --local|--endpoint NAME` scores the evaluation's examples that have no score yet "
                    "(a Vietnamese rubric: correct against the reference, complete, nothing invented, in Vietnamese); "
                    "`judge votes` / `judge reviews` score the blind votes' answers and the reviewed pairs, to "
                    "measure the judge against the team; `judge show EVAL`; `judge agreement [JUDGE]`; "
                    "`judge gate --enable JUDGE --min-mean X` (admins; audited) lets its mean gate a release; "
                    "`judge limits` (admins) caps what judging one evaluation may take.")
    j.add_argument("action", choices=["run", "votes", "reviews", "show", "agreement", "gate", "limits", "stop"])
    j.add_argument("target", nargs="?", metavar="EVAL|JUDGE|JOB",
                   help="run, show: the evaluation; agreement, gate --enable: the judge (local:MODEL or "
                        "endpoint:NAME:MODEL); stop: the judge job")
    j.add_argument("--local", action="store_true", help="the default model as the judge (llama.cpp's server)")
    j.add_argument("--endpoint", metavar="NAME", help="a configured endpoint as the judge")
    j.add_argument("--max-items", type=_count, help="answers to judge at most (within the studio's limit)")
    j.add_argument("--max-cost", type=float, help="what judging may spend at most, in the endpoint's currency "
                   "(within the studio's limit; an evaluation's earlier judge runs count)")
    j.add_argument("--enable", action="store_true", help="gate: let the judge's mean gate a release")
    j.add_argument("--disable", action="store_true", help="gate: show the judge's mean, but do not gate on it")
    j.add_argument("--min-mean", type=float, help="gate: the judge's mean must be at least this (1–5; default 3.5)")
    j.add_argument("--min-share", type=float, help="gate: the share of the evaluation the judge must have scored "
                   "(default 0.8)")
    j.add_argument("--override-reason", help="gate --enable: why a judge whose agreement with the team is too small "
                   "to say, or too low, may gate anyway (recorded)")
    j.add_argument("--timeout-s", type=float, help="limits: seconds to wait for one answer of the judge")
    j.add_argument("--max-tokens", type=int, help="limits: tokens of one answer of the judge")
    j.add_argument("--timeout", type=_seconds, default=6 * 3600, help="seconds to wait for the judge job")
    j.add_argument("--json", action="store_true")
    j.set_defaults(fn=cmd_judge)
