"""The training stage from the command line: ``train`` (queue a training job and wait for it, or only
print its config or its GPU memory estimate).

``core/cli.py`` adds each command's parser (``add_…(sub)``: its arguments and their checks) in the order
``python -m core --help`` lists them; heavy libraries are imported inside the commands.
"""
from __future__ import annotations

import sys

from core.cli_common import _actor, _fail, _print, _progress_printer, _seconds


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
    t.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and queue nothing")
    t.add_argument("--estimate", action="store_true", help="print the GPU memory estimate as JSON and queue nothing")
    t.add_argument("--override-review", metavar="REASON",
                   help="train a dataset version that has not passed its review sample, recording why")
    t.add_argument("--no-wait", action="store_true")
    t.add_argument("--timeout", type=_seconds, default=24 * 3600)
    t.add_argument("--json", action="store_true")
    t.set_defaults(fn=cmd_train)
