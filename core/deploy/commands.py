"""The deploy stage from the command line: ``export`` (GGUF), ``modelfile``, ``deploy`` (export, preflight,
``ollama create``, the release) and ``releases`` (list, delete, roll back).

``core/cli.py`` adds each command's parser (``add_…(sub)``: its arguments and their checks) in the order
``python -m core --help`` lists them; heavy libraries are imported inside the commands.
"""
from __future__ import annotations

import json
import sys

from core.cli_common import _actor, _fail, _print, _progress_printer, _seconds


def cmd_export(args) -> int:
    from core.deploy import exporter, exports
    from core.jobs import queue, supervisor

    try:
        job = exports.submit(args.run, args.quant, actor=_actor())
    except (exporter.ExportError, queue.JobError) as exc:
        return _fail(str(exc))
    job = supervisor.wait(job["id"], timeout=args.timeout, on_update=_progress_printer("export"))
    if job["state"] != "succeeded":
        return _fail(f"export job {job['id']} {job['state']}: {job['error']}")
    _print(job["result"], args.json)
    return 0


def cmd_modelfile(args) -> int:
    from core import prompt_format
    from core.deploy import modelfile

    try:
        if args.name:
            modelfile.check_name(args.name)
        prompt_format.check_gguf(args.gguf)
        print(modelfile.build(args.gguf, args.format, system=args.system), end="")
    except (modelfile.ModelfileError, prompt_format.FormatError) as exc:
        return _fail(str(exc))
    return 0


def cmd_deploy(args) -> int:
    from core import prompt_format
    from core.deploy import exporter, modelfile, ollama, preflight, quant_cost, releases
    from core.jobs import queue

    try:
        release = releases.deploy(args.run, args.name, system=args.system, quantization=args.quant,
                                  override_reason=args.override_reason, actor=_actor(),
                                  ollama_quantize=args.ollama_quantize, golden=args.golden,
                                  on_progress=lambda m: print(m, file=sys.stderr, flush=True))
    except (releases.DeployRefused, ollama.OllamaError, modelfile.ModelfileError, exporter.ExportError,
            queue.JobError, preflight.PreflightError, prompt_format.FormatError, quant_cost.QuantCostError) as exc:
        return _fail(str(exc).replace("\n", " | "))
    pf = release["preflight"] if isinstance(release["preflight"], dict) else json.loads(release["preflight"])
    out = {k: release[k] for k in ("id", "name", "tag", "run_id", "quantization", "gguf_path", "gguf_sha256",
                                   "modelfile_path", "ollama_status")}
    out["preflight"] = {k: pf[k] for k in ("passed", "reason", "n", "exact_match_rate", "rouge_l")}
    out["gate_record"] = release.get("gate_record") if isinstance(release.get("gate_record"), dict) else \
        json.loads(release.get("gate_record") or "null")
    if pf.get("held_out"):
        out["preflight"]["held_out"] = pf["held_out"]
    _print(out, args.json)
    return 0


def cmd_releases(args) -> int:
    from core.deploy import releases

    try:
        if args.action == "list":
            rows = releases.list_releases(_actor(), args.project)
            if args.json:
                print(json.dumps(rows, ensure_ascii=False, indent=2, default=str))
                return 0
            for r in rows:
                pf = r.get("preflight") or {}
                print(f"{r['id']}  {r['name'] + ':' + r['tag']:<28} {r['state'] or 'active':<8} {r['run_id']}  "
                      f"{r['quantization'] or '':<6} preflight "
                      f"{'-' if not pf else ('pass' if pf.get('passed') else 'BLOCK')}  "
                      f"{r['created_by'] or ''}  {r['created_at']:%Y-%m-%d %H:%M}"
                      + (f"  rollback of {r['rollback_of']}" if r.get("rollback_of") else "")
                      + (f"  override: {r['override_reason']}" if r.get("override_reason") else ""))
                for line in releases.record_lines(r.get("gate_record")):
                    print(f"    judged on: {line}")
            return 0
        if not args.id:
            return _fail(f"releases {args.action} needs a release id (see `python -m core releases list`)", 2)
        if args.action == "delete":
            rel = releases.delete_release(args.id, actor=_actor())
        else:
            rel = releases.rollback(args.id, actor=_actor(), on_progress=lambda m: print(m, file=sys.stderr))
    except releases.DeployRefused as exc:
        return _fail(str(exc))
    _print({k: rel.get(k) for k in ("id", "name", "tag", "state", "rollback_of", "modelfile_path", "ollama_status")
            if k in rel}, args.json)
    return 0


def cmd_quant_cost(args) -> int:
    from core.deploy import quant_cost, quant_costs
    from core.jobs import queue, supervisor
    from core.training import runs

    actor = _actor()
    try:
        if args.set_bound is not None or args.clear_bound:
            bound = quant_costs.set_kl_bound(None if args.clear_bound else args.set_bound, actor=actor)
            if not (args.export or args.run):
                _print({"kl_bound": bound}, args.json)
                return 0
        if not (args.export or args.run):
            return _fail("quant-cost needs --export JOB or --run RUN (or --set-bound / --clear-bound)", 2)
        export_id = args.export
        if args.run:
            runs.get_run(args.run, actor)   # a run of another project is no run at all
            if export_id is None:
                done = [j for j in queue.list_jobs(500, "export") if j["run_id"] == args.run and j["state"] == "succeeded"]
                if not done:
                    return _fail(f"run {args.run} has no succeeded export (python -m core export --run {args.run})")
                export_id = done[0]["id"]
        export = queue.get_job(int(export_id))
        if export["kind"] != "export":
            return _fail(f"job {export_id} is a {export['kind']} job, not an export")
        runs.get_run(export["run_id"], actor)
        costs = quant_costs.for_export(export["id"])
        if args.pairs < 1:
            return _fail("--pairs must be at least 1", 2)
        if args.measure or not costs:
            job = quant_costs.submit(export["id"], actor=actor, pairs=args.pairs)
            job = supervisor.wait(job["id"], timeout=args.timeout, on_update=_progress_printer("quant_cost"))
            if job["state"] != "succeeded":
                return _fail(f"quant_cost job {job['id']} {job['state']}: {job['error']}")
            costs = quant_costs.for_export(export["id"])
    except (quant_cost.QuantCostError, queue.JobError, PermissionError) as exc:
        return _fail(str(exc))
    bound = quant_costs.kl_bound()
    choice, why = quant_costs.recommend(costs, bound)
    keys = ("file_bytes", "sequences", "tokens", "ppl", "ppl_unc", "ppl_ratio", "kl_mean", "kl_unc", "kl_median",
            "kl_p99", "kl_max", "same_top", "dp_rms")
    out = {"export_job": export["id"], "run": export["run_id"], "kl_bound": bound,
           "per_quantization": {q: {k: c[k] for k in keys} for q, c in costs.items()},
           "recommended": choice, "why": str(why), "method": quant_cost.METHOD}
    if args.json:
        _print(out, True)
        return 0
    print(f"export job {export['id']} of run {export['run_id']}; KL bound: {bound if bound is not None else 'none'}")
    print(f"{'quant':<8}{'MB':>8}{'tokens':>8}{'PPL':>10}{'PPL/f16':>9}{'mean KL':>11}{'± ':>9}{'p99 KL':>9}"
          f"{'same top':>10}{'Δp RMS':>8}")
    for q in ("f16", "q8_0", "q4_k_m"):
        c = costs.get(q)
        if not c:
            continue
        kl = lambda v, f="{:.5f}": "-" if v is None else f.format(v)  # noqa: E731
        print(f"{q:<8}{(c['file_bytes'] or 0) / 1e6:>8.0f}{c['tokens']:>8}{c['ppl']:>10.4f}{kl(c['ppl_ratio'], '{:.4f}'):>9}"
              f"{kl(c['kl_mean']):>11}{kl(c['kl_unc']):>9}{kl(c['kl_p99'], '{:.4f}'):>9}"
              f"{kl(c['same_top'], '{:.1%}'):>10}{kl(c['dp_rms'], '{:.2%}'):>8}")
    print(f"choose: {choice or '-'} ({why})")
    return 0


# ── parsers ──────────────────────────────────────────────────────────────────


def add_export(sub) -> None:
    x = sub.add_parser("export", help="merge a run and export GGUF with llama.cpp")
    x.add_argument("--run", required=True)
    x.add_argument("--quant", nargs="+", choices=["f16", "q8_0", "q4_k_m"],
                   help="default: q4_k_m, or q8_0 for a base model under a billion parameters")
    x.add_argument("--timeout", type=_seconds, default=3600)
    x.add_argument("--json", action="store_true")
    x.set_defaults(fn=cmd_export)


def add_modelfile(sub) -> None:
    mf = sub.add_parser("modelfile", help="print an Ollama Modelfile for a GGUF")
    mf.add_argument("--gguf", required=True)
    mf.add_argument("--system", default=None)
    mf.add_argument("--format", default="chat", choices=["chat", "alpaca-vi"])
    mf.add_argument("--name")
    mf.set_defaults(fn=cmd_modelfile)


def add_deploy(sub) -> None:
    dp = sub.add_parser("deploy", help="export, write the Modelfile, ollama create, record the release")
    dp.add_argument("--run", required=True)
    dp.add_argument("--name", required=True, help="Ollama model name, e.g. gemma3-vi-cskh:v1")
    dp.add_argument("--system")
    dp.add_argument("--quant", choices=["f16", "q8_0", "q4_k_m"],
                    help="default: q4_k_m, or q8_0 for a base model under a billion parameters (q4_k_m loses a "
                         "short fine-tune of a model that small; the preflight blocks it)")
    dp.add_argument("--override-reason", help="deploy a run that has not passed the gate, recording why")
    dp.add_argument("--ollama-quantize", choices=["q4_K_M", "q4_K_S", "q8_0"],
                    help="let `ollama create --quantize` quantize (only with --quant f16)")
    dp.add_argument("--golden", type=int, default=8, help="held-out prompts in the preflight")
    dp.add_argument("--json", action="store_true")
    dp.set_defaults(fn=cmd_deploy)


def add_releases(sub) -> None:
    rl = sub.add_parser("releases", help="list releases, delete one (ollama rm) or roll back to one")
    rl.add_argument("action", choices=["list", "delete", "rollback"])
    rl.add_argument("id", nargs="?", help="release id (delete, rollback)")
    rl.add_argument("--json", action="store_true")
    rl.set_defaults(fn=cmd_releases)


def add_quant_cost(sub) -> None:
    qc = sub.add_parser("quant-cost", help="perplexity and KL divergence from f16 of an export's quantizations "
                                           "(llama.cpp's --kl-divergence method); the admin's KL bound")
    qc.add_argument("--export", type=int, help="an export job's id (default with --run: the run's newest export)")
    qc.add_argument("--run", help="a run: its newest succeeded export")
    qc.add_argument("--measure", action="store_true", help="measure again (a quant_cost job) even if measured")
    qc.add_argument("--pairs", type=int, default=8,
                    help="held-out pairs to measure on (with --measure; default 8, as at export)")
    qc.add_argument("--set-bound", type=float, metavar="NATS",
                    help="admins: refuse a release whose mean KL from f16 is above this (audited)")
    qc.add_argument("--clear-bound", action="store_true", help="admins: lift the KL bound (audited)")
    qc.add_argument("--timeout", type=_seconds, default=3600)
    qc.add_argument("--json", action="store_true")
    qc.set_defaults(fn=cmd_quant_cost)
