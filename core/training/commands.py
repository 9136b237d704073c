"""The training stage from the command line: ``train`` (queue a training job and wait for it, or only
print its config or its GPU memory estimate).

``core/cli.py`` adds each command's parser (``add_…(sub)``: its arguments and their checks) in the order
``python -m core --help`` lists them; heavy libraries are imported inside the commands.
"""
from __future__ import annotations

import sys

from core.cli_common import _actor, _count, _fail, _print, _progress_printer, _seconds


def cmd_train(args) -> int:
    from core.jobs import queue, supervisor
    from core.training import config, presets, runs

    try:
        cfg = config.load_file(args.config) if args.config else presets.preset(args.preset)
        if args.max_steps is not None:
            cfg.max_steps = args.max_steps
        if args.base_model:
            cfg.base_model = args.base_model
        if args.prompt_format:
            cfg.prompt_format = args.prompt_format
        if args.gpus is not None:
            cfg.gpus = args.gpus
        cfg.validate()
        if args.print_config:
            print(config.to_yaml(cfg), end="")
            return 0
        from core.training import vram

        fit = vram.check(cfg, backend="unsloth" if cfg.backend == "auto" else cfg.backend)
        if args.estimate:
            _print(fit, True)
            return 0
        if not args.dataset:
            return _fail("train needs --dataset VERSION (see `python -m core dataset list`)")
        job = runs.submit_train(args.dataset, cfg, actor=_actor(), override_review=args.override_review)
    except (ValueError, queue.JobError) as exc:
        return _fail(str(exc))
    print(fit["message"], file=sys.stderr)
    if job["config"].get("review", {}).get("override"):
        print(f"review gate overridden for {args.dataset}: {job['config']['review']['override']} "
              "(recorded in the audit log)", file=sys.stderr)
    print(f"queued job {job['id']} for run {job['run_id']}", file=sys.stderr)
    if args.no_wait:
        _print({"job": job["id"], "run": job["run_id"], "state": job["state"]}, args.json)
        return 0
    job = supervisor.wait(job["id"], timeout=args.timeout, on_update=_progress_printer("train"))
    _print({"job": job["id"], "run": job["run_id"], "state": job["state"], "error": job["error"],
            "result": job["result"]}, args.json)
    return 0 if job["state"] == "succeeded" else 1


# ── parsers ──────────────────────────────────────────────────────────────────


def add_train(sub) -> None:
    t = sub.add_parser("train", help="queue a training job and wait for it")
    t.add_argument("--dataset", metavar="VERSION", help="the dataset version to train on (required to queue)")
    t.add_argument("--config", help="YAML training config")
    t.add_argument("--preset", default="guide (r=16)", help="preset when no --config is given")
    t.add_argument("--max-steps", type=int)
    t.add_argument("--base-model")
    t.add_argument("--prompt-format", choices=["chat", "alpaca-vi"])
    t.add_argument("--gpus", type=int, metavar="N",
                   help="train one job across N GPUs (torchrun, one rank a GPU; on a box without a GPU, N CPU ranks)")
    t.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and queue nothing")
    t.add_argument("--estimate", action="store_true", help="print the GPU memory estimate as JSON and queue nothing")
    t.add_argument("--override-review", metavar="REASON",
                   help="train a dataset version that has not passed its review sample, recording why")
    t.add_argument("--no-wait", action="store_true")
    t.add_argument("--timeout", type=_seconds, default=24 * 3600)
    t.add_argument("--json", action="store_true")
    t.set_defaults(fn=cmd_train)


# ── sweeps ───────────────────────────────────────────────────────────────────


def _pairs(items: list[str] | None, option: str) -> dict:
    """``--grid r=8,16`` / ``--set max_steps=3`` as a mapping; ValueError naming the option."""
    out = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"{option} {item!r}: write it as NAME=VALUE (e.g. {option} "
                             + ("r=8,16,32)" if option == "--grid" else "max_steps=40)"))
        out[name.strip()] = value.strip()
    return out


def _setting(text: str):
    """A --set value as YAML reads it (3 → int, 2e-4 → float, true → bool)."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _sweep_table(v: dict) -> str:
    lines = [f"sweep {v['sweep']['id']} ({v['sweep']['name']}): {v['state']}; {v['counts']['trained']}/"
             f"{v['counts']['runs']} trained, {v['counts']['evaluated']} evaluated, {v['counts']['failed']} failed"]
    for r in v["runs"]:
        score = (f"BLEU {r['bleu']:.3f} ROUGE-L {r['rouge_l']:.3f} n={r['n']} "
                 + ("releasable" if r["releasable"] else ("passed" if r["passed"] else "below the gate"))
                 if r["evaluation"] else f"training {r['train_state']}, evaluation {r['eval_state'] or '–'}")
        lines.append(f"{'★' if r['best'] else ' '} {r['rank'] or '–':>2}  {r['run_id']:<30} {r['label']:<28} {score}")
    if v["best"]:
        lines.append(f"best: {v['best']}")
    return "\n".join(lines)


def cmd_sweep(args) -> int:
    from core.jobs import queue
    from core.training import sweeps

    who = _actor()
    try:
        if args.action == "list":
            for s in sweeps.list_sweeps(who, args.project):
                print(f"{s['id']:<32} {s['state']:<10} {s['n_runs']:>3} runs {s['trained']:>3} trained "
                      f"{s['evaluated']:>3} evaluated  {s['name']}")
            return 0
        if args.action in ("show", "cancel"):
            if not args.id:
                return _fail(f"sweep {args.action} needs a sweep id (see `python -m core sweep list`)", 2)
            if args.action == "cancel":
                done = sweeps.cancel(args.id, actor=who)
                print(f"sweep {args.id}: cancelled; jobs cancelled: {', '.join(map(str, done['cancelled'])) or 'none'}")
                return 0
            v = sweeps.view(args.id, who)
            if args.json:
                _print(sweeps.summary(v), True)
            else:
                print(_sweep_table(v))
            return 0
        if args.id:
            return _fail(f"sweep {args.action} takes no id; give the grid with --grid or a YAML file with --file", 2)
        spec = sweeps.load_file(args.file) if args.file else {}
        grid = dict(spec.get("grid") or {})
        grid.update({sweeps.ALIASES.get(k, k): sweeps.parse_values(k, v) for k, v in _pairs(args.grid, "--grid").items()})
        settings = dict(spec.get("settings") or {})
        settings.update({k: _setting(v) for k, v in _pairs(args.set, "--set").items()})
        if args.max_steps is not None:
            settings["max_steps"] = args.max_steps
        evaluate = dict(spec.get("evaluate") or {})
        if args.eval_limit is not None:
            evaluate["limit"] = args.eval_limit
        if args.max_new_tokens is not None:
            evaluate["max_new_tokens"] = args.max_new_tokens
        merged = {**{k: v for k, v in spec.items() if v not in (None, {}, [])}, "grid": grid, "settings": settings,
                  "evaluate": evaluate}
        if args.preset:
            merged["preset"] = args.preset
        if args.name:
            merged["name"] = args.name
        if args.dataset:
            merged["dataset"] = args.dataset
        if not merged["grid"]:
            merged.pop("grid")
        planned = sweeps.plan(merged, actor=who)
        est = planned["estimate"]
        if args.action == "plan":
            if args.json:
                _print({"runs": [{"params": r["params"]} for r in planned["runs"]], "estimate": {
                    k: (str(v) if k == "message" else v) for k, v in est.items() if k != "measured"}}, True)
            else:
                for i, r in enumerate(planned["runs"], start=1):
                    print(f"{i:>3}  {sweeps.describe(r['params'])}")
                print(est["message"])
            return 0
        print(est["message"], file=sys.stderr)
        started = sweeps.submit(planned["spec"], actor=who, override_review=args.override_review)
    except (ValueError, queue.JobError, PermissionError) as exc:
        return _fail(str(exc))
    print(f"queued sweep {started['id']}: {len(started['runs'])} training jobs "
          f"({', '.join(str(r['job']) for r in started['runs'])}), each evaluated when it has trained", file=sys.stderr)
    if args.no_wait:
        _print({"sweep": started["id"], "jobs": [r["job"] for r in started["runs"]]}, args.json)
        return 0
    last = {"line": None}

    def progress(v: dict) -> None:
        c = v["counts"]
        line = f"sweep {v['sweep']['id']}: {c['trained']}/{c['runs']} trained, {c['evaluated']} evaluated, {c['failed']} failed"
        if line != last["line"]:
            print(line, file=sys.stderr, flush=True)
            last["line"] = line

    v = sweeps.wait(started["id"], timeout=args.timeout, on_update=progress)
    if args.json:
        _print(sweeps.summary(v), True)
    else:
        print(_sweep_table(v))
    return 0 if v["state"] == "finished" and not v["counts"]["failed"] else 1


def add_sweep(sub) -> None:
    s = sub.add_parser("sweep", help="many training runs over a grid or list of settings, each evaluated, ranked")
    s.add_argument("action", nargs="?", default="run", choices=["run", "plan", "list", "show", "cancel"],
                   help="run (the default): queue every run and wait until each is trained and evaluated; plan: "
                        "the runs, their count and a time estimate, queuing nothing; list; show ID; cancel ID")
    s.add_argument("id", nargs="?", help="the sweep id (show, cancel)")
    s.add_argument("--file", help="a YAML sweep spec (name, dataset, preset, settings, grid, runs, evaluate)")
    s.add_argument("--dataset", metavar="VERSION", help="the dataset version every run trains on")
    s.add_argument("--preset", help="the preset every run starts from (default: the demo pass)")
    s.add_argument("--grid", action="append", metavar="NAME=V1,V2",
                   help="a setting and its values (repeatable): r, alpha, lr, epochs, batch, accumulation, gpus, preset, model")
    s.add_argument("--set", action="append", metavar="NAME=VALUE", help="a training setting for every run (repeatable)")
    s.add_argument("--max-steps", type=_count, help="every run's max steps")
    s.add_argument("--eval-limit", type=_count, help="evaluate only the first N held-out pairs (the gate needs all)")
    s.add_argument("--max-new-tokens", type=_count, help="the evaluations' answer length (default 128)")
    s.add_argument("--name")
    s.add_argument("--override-review", metavar="REASON",
                   help="train a dataset version that has not passed its review sample, recording why")
    s.add_argument("--no-wait", action="store_true")
    s.add_argument("--timeout", type=_seconds, default=7 * 24 * 3600)
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_sweep)
