"""``python -m core``: every stage of the studio from the command line.

Heavy libraries (torch, transformers) are imported inside the commands that need them, so
``--help``, ``score`` and ``dataset`` start in well under a second.
"""
from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "cli"


def _print(obj, as_json: bool) -> None:
    if as_json:
        print(json.dumps(obj, ensure_ascii=False, indent=2, default=str))
    else:
        for k, v in obj.items():
            print(f"{k}: {v}")


def _fail(message: str, code: int = 1) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


# ── commands ─────────────────────────────────────────────────────────────────


def cmd_models(args) -> int:
    from core import models

    if args.action == "fetch-default":
        try:
            models.fetch_default(force=args.force)
        except models.ModelError as exc:
            return _fail(str(exc))
        return 0
    for m in models.list_base_models():
        print(m)
    return 0


def cmd_dataset(args) -> int:
    from core import datasets

    try:
        if args.action == "list":
            versions = datasets.list_versions()
            if args.json:
                print(json.dumps(versions, ensure_ascii=False, indent=2, default=str))
            if not args.json:
                from core import review

                for v in versions:
                    state = "reviewed" if review.is_reviewed(v["id"]) else "not reviewed"
                    print(f"{v['id']}  {v['name']:<28} train {v['rows_train']:>6}  test {v['rows_test']:>5}  "
                          f"{v['created_at']:%Y-%m-%d %H:%M}  {state}")
            return 0
        if args.action == "import-samples":
            version = datasets.import_samples(created_by=_user())
            others = [datasets.find_by_name(n) for n in datasets.SAMPLE_DOMAINS if n != version["name"]]
            for v in [version, *others, datasets.find_by_name("general-vi")]:
                print(f"{v['id']} {v['name']}: {v['rows_train']} train, {v['rows_test']} test")
            return 0
        version, report = datasets.import_files(
            args.paths, args.name, test_fraction=args.test_fraction, seed=args.seed,
            general_version=args.mix_general, general_ratio=args.mix_ratio, created_by=_user(),
            encoding=args.encoding, mapping=args.map, bulk=True if args.bulk else None,
        )
    except datasets.DatasetError as exc:
        return _fail(str(exc))
    out = report.as_dict()
    out["dataset_version"] = version["id"] if version else None
    if args.json:
        print(json.dumps(out, ensure_ascii=False, indent=2))
    else:
        for key in ("rows_read", "rows_kept", "rows_rejected", "duplicates_removed", "duplicates_exact",
                    "duplicates_normalized", "normalized"):
            print(f"{key}: {out[key]}")
        if out["columns_mapped"]:
            print("columns mapped: " + ", ".join(f"{k} → {v}" for k, v in out["columns_mapped"].items()))
        for err in out["errors"][:50]:
            print(f"  {err['file']}:{err['line']}: {err['reason']}")
        if len(out["errors"]) > 50 or out["rows_rejected"] > len(out["errors"]):
            print(f"  … {out['rows_rejected'] - min(50, len(out['errors']))} more rejected rows")
        if out.get("bulk"):
            print("bulk import (DuckDB): " + ", ".join(f"{k} {v:.1f} s" for k, v in out["bulk"]["seconds"].items())
                  + f"; {out['bulk']['spilled_mb']:,.0f} MB spilled to disk")
        if version:
            print(f"dataset version {version['id']} ({version['rows_train']} train, {version['rows_test']} test)")
    if not version:
        return _fail(report.failure())
    return 0


def _progress_printer(label: str):
    from core import jobs

    last = {"text": None}

    def show(job) -> None:
        p = jobs.progress(job) or {}
        text = f"{label} job {job['id']}: {job['state']}"
        if p.get("total"):
            text += f"  {p['done']}/{p['total']} {p.get('label', '')}"
            if p.get("per_s"):
                text += f" ({p['per_s']:.2f}/s)"
        if text != last["text"]:
            print(text, file=sys.stderr, flush=True)
            last["text"] = text

    return show


def cmd_train(args) -> int:
    from core import config, jobs

    try:
        cfg = config.load_file(args.config) if args.config else config.preset(args.preset)
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
        from core import vram

        fit = vram.check(cfg, backend="unsloth" if cfg.backend == "auto" else cfg.backend)
        if args.estimate:
            _print(fit, True)
            return 0
        if not args.dataset:
            return _fail("train needs --dataset VERSION (see `python -m core dataset list`)")
        job = jobs.submit_train(args.dataset, cfg, owner=_user(), override_review=args.override_review)
    except (ValueError, jobs.JobError) as exc:
        return _fail(str(exc))
    print(fit["message"], file=sys.stderr)
    if job["config"].get("review", {}).get("override"):
        print(f"review gate overridden for {args.dataset}: {job['config']['review']['override']} "
              "(recorded in the audit log)", file=sys.stderr)
    print(f"queued job {job['id']} for run {job['run_id']}", file=sys.stderr)
    if args.no_wait:
        _print({"job": job["id"], "run": job["run_id"], "state": job["state"]}, args.json)
        return 0
    job = jobs.wait(job["id"], timeout=args.timeout, on_update=_progress_printer("train"))
    _print({"job": job["id"], "run": job["run_id"], "state": job["state"], "error": job["error"],
            "result": job["result"]}, args.json)
    return 0 if job["state"] == "succeeded" else 1


def _show_item(item: dict | None, version_id: str, as_json: bool) -> None:
    if item is None:
        print(json.dumps(None) if as_json else f"{version_id}: no pair waits for a decision")
        return
    pair = {k: item[k] for k in ("idx", "split", "row_index", "instruction", "input", "output", "decision",
                                 "reviewer", "edited")}
    if as_json:
        print(json.dumps(pair, ensure_ascii=False, indent=2, default=str))
        return
    print(f"pair {item['idx']} ({item['split']} row {item['row_index']})"
          + (f" — {item['decision']} by {item['reviewer']}" if item["decision"] else ""))
    for k in ("instruction", "input", "output"):
        print(f"[{k}]\n{item[k]}\n")


def cmd_review(args) -> int:
    from core import datasets, review

    try:
        if args.action == "start":
            out = review.start(args.version, fraction=args.fraction, seed=args.seed, threshold=args.threshold,
                               created_by=_user())
        elif args.action == "show":
            if args.item is not None:
                r = review.current(args.version)
                got = [i for i in review.items(r["id"]) if i["idx"] == args.item] if r else []
                if not got:
                    return _fail(f"{args.version}: no review pair {args.item}")
                _show_item(got[0], args.version, args.json)
            elif args.all:
                r = review.current(args.version)
                got = review.items(r["id"]) if r else []
                if args.json:
                    print(json.dumps(got, ensure_ascii=False, indent=2, default=str))
                for i in [] if args.json else got:
                    print(f"{i['idx']:>4}  {i['decision'] or 'pending':<9} {i['reviewer'] or '':<16} "
                          f"{i['instruction'][:70]!r}")
            else:
                _show_item(review.next_item(args.version), args.version, args.json)
            return 0
        elif args.action == "decide":
            if args.item is None or not args.decision:
                return _fail("review decide needs --item N and one of --approve, --edit, --reject", 2)
            edited = None
            if args.decision == "edited":
                edited = {k: getattr(args, k) for k in ("instruction", "input", "output") if getattr(args, k) is not None}
                if not edited:
                    return _fail("--edit needs at least one of --instruction, --input, --output", 2)
            out = review.decide(args.version, args.item, args.decision, args.reviewer or _user(), edited)
        else:
            out = review.status(args.version)
    except (review.ReviewError, datasets.DatasetError) as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps(out, ensure_ascii=False, indent=2, default=str))
    else:
        rate = "–" if out["approval_rate"] is None else f"{out['approval_rate']:.0%}"
        print(f"{out['dataset_version']}: {out['done']}/{out['sample_size']} decided, approval {rate}, "
              f"threshold {out['threshold']:.0%} — {out['reason']}")
        if out["child_version"]:
            print(f"edits were written to the child version {out['child_version']}")
    return 0 if args.action != "status" or out["reviewed"] else 1


def cmd_jobs(args) -> int:
    from core import jobs

    if args.action == "cancel":
        try:
            job = jobs.cancel(args.id, actor=_user())
        except jobs.JobError as exc:
            return _fail(str(exc))
        print(f"job {job['id']}: {job['state']}")
        return 0
    if args.action == "tick":
        print(json.dumps(jobs.tick()))
        return 0
    if args.action == "supervise":
        def event(done: dict) -> None:
            for job_id in done["settled"]:
                j = jobs.get_job(job_id)
                print(f"job {job_id} ({j['kind']}): {j['state']}" + (f" — {j['error']}" if j["error"] else ""),
                      flush=True)
            for job_id in done["started"]:
                print(f"job {job_id} ({jobs.get_job(job_id)['kind']}): started", flush=True)

        try:
            jobs.supervise(args.interval, until_idle=args.until_idle, on_event=event)
        except KeyboardInterrupt:
            pass
        return 0
    if args.action == "resume":
        try:
            job = jobs.resume(args.id, actor=_user())
        except jobs.JobError as exc:
            return _fail(str(exc))
        print(f"queued job {job['id']} for run {job['run_id']}, from {job['config']['resume_from']}")
        return 0
    for j in jobs.list_jobs(args.limit):
        print(f"{j['id']:>4}  {j['kind']:<9} {j['state']:<10} {j['run_id'] or '':<28} {j['owner'] or ''}")
    return 0


def _eval_row(e: dict) -> str:
    return (f"{e['id']}  {e['run_id'] or '(base, no adapter)':<28} {e['dataset_version_id']}/{e['split']:<5} "
            f"n={e['n']:<5} BLEU {e['bleu']:.4f}  ROUGE-L {e['rouge_l']:.4f}  {'PASS' if e['passed'] else 'FAIL'}")


def cmd_evaluate(args) -> int:
    from core import evaluate, jobs
    from core.inference import Decoding

    action, ids = args.action, args.ids
    needs = {"show": 1, "compare": 2, "report": 1, "csv": 1, "list": 0}
    if action and len(ids) != needs[action]:
        return _fail(f"evaluate {action} needs {needs[action]} evaluation id(s), got {len(ids)}", 2)
    if not action and ids:
        return _fail(f"unknown evaluate action '{ids[0]}' (list, show, compare, report, csv; or --run RUN)", 2)
    try:
        if action == "list":
            rows = evaluate.leaderboard(args.dataset, args.base_model, args.split_filter)
            if args.json:
                print(json.dumps(rows, ensure_ascii=False, indent=2, default=str))
            else:
                for e in rows:
                    print(f"#{e['rank']:<3} " + _eval_row(e))
            return 0
        if action == "show":
            e = evaluate.get_evaluation(ids[0])
            e["verdict"] = "PASS" if e["passed"] else "FAIL"
            _print(e, args.json)
            return 0
        if action == "compare":
            c = evaluate.compare(ids[0], ids[1])
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
            out = Path(args.out)
            if action == "report":
                text = evaluate.report_html(ids[0], args.compare_with)
                out.write_text(text, encoding="utf-8")
            else:
                out.write_text(evaluate.examples_csv(ids[0]), encoding="utf-8")
            if args.csv:
                Path(args.csv).write_text(evaluate.examples_csv(ids[0]), encoding="utf-8")
            print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)", file=sys.stderr)
            return 0
        if not args.run and not args.base_model:
            return _fail("evaluate needs --run RUN, or --base-model MODEL with --dataset VERSION "
                         "(or an action: list, show, compare, report, csv)", 2)
        decoding = Decoding(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                            temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                            stop=list(args.stop or []))
        job = evaluate.submit(
            args.run, base_model=args.base_model, dataset_version_id=args.dataset, split=args.split,
            limit=args.limit, decoding=decoding, owner=_user(), prompt_format_name=args.prompt_format,
        )
    except (ValueError, jobs.JobError) as exc:
        return _fail(str(exc))
    job = jobs.wait(job["id"], timeout=args.timeout, on_update=_progress_printer("evaluate"))
    if job["state"] != "succeeded":
        return _fail(f"evaluation job {job['id']} {job['state']}: {job['error']}")
    result = dict(job["result"])
    result["evaluation"] = job["config"]["evaluation_id"]
    result["decoding"] = job["config"]["decoding"]
    result.pop("predictions", None)
    _print(result, args.json)
    return 0


def cmd_generate(args) -> int:
    from core import generate, jobs

    try:
        prompt = Path(args.prompt_file).read_text(encoding="utf-8") if args.prompt_file else None
    except (OSError, UnicodeDecodeError) as exc:
        return _fail(f"{args.prompt_file}: cannot read the prompt template ({exc})")
    try:
        backend = None
        if not args.local:
            saved = generate.saved_backend()
            backend = generate.Backend.from_dict({
                **saved.to_dict(),
                **{k: v for k, v in (("base_url", args.base_url), ("model", args.model),
                                     ("api_key_env", args.api_key_env), ("max_tokens", args.max_tokens),
                                     ("temperature", args.temperature)) if v is not None},
                **({"structured": True} if args.structured else {}),
            })
        elif args.max_tokens or args.temperature is not None:
            backend = generate.Backend(max_tokens=args.max_tokens or 768,
                                       temperature=0.7 if args.temperature is None else args.temperature)
        job = generate.submit(args.docs, args.name, backend=backend, local=args.local, prompt=prompt,
                              n_pairs=args.pairs_per_chunk, max_chunks=args.max_chunks,
                              chunk_chars=args.chunk_chars, overlap=args.overlap, max_retries=args.retries,
                              owner=_user())
    except (generate.GenerateError, jobs.JobError) as exc:
        return _fail(str(exc))
    print(f"queued generation job {job['id']} ({job['job_dir']}); stop it and keep what was made with "
          f"`python -m core generate-stop {job['id']}`", file=sys.stderr)
    job = jobs.wait(job["id"], timeout=args.timeout, on_update=_progress_printer("generate"))
    result = dict(job["result"] or {})
    out = {"job": job["id"], "state": job["state"], "error": job["error"],
           "dataset_version": result.get("dataset_version"), **{k: result.get(k) for k in (
               "pairs", "duplicates", "chunks_done", "chunks_total", "malformed_answers", "failed_chunks",
               "retries", "tokens_in", "tokens_out", "cost", "elapsed_s", "stopped", "note", "pairs_file",
               "rejects_file")}}
    out["rejects"] = generate.rejects(job)
    if args.json:
        print(json.dumps(out, ensure_ascii=False, indent=2, default=str))
    else:
        for k, v in out.items():
            if k != "rejects":
                print(f"{k}: {v}")
        for r in out["rejects"]:
            print(f"  {r['doc']} chunk {r['chunk']}: {r['attempts'][-1]['reason'] if r['attempts'] else 'stopped'}")
    if job["state"] != "succeeded":
        return _fail(f"generation job {job['id']} {job['state']}: {job['error']}")
    if not out["dataset_version"]:
        return _fail("no valid pair was generated; nothing was imported (see the rejects above)")
    return 0


def cmd_generate_stop(args) -> int:
    from core import generate, jobs

    try:
        job = jobs.get_job(args.id)
    except jobs.JobError as exc:
        return _fail(str(exc))
    if job["kind"] != "generate" or job["state"] not in ("queued", "running"):
        return _fail(f"job {args.id} is not a queued or running generation")
    generate.request_stop(job)
    print(f"job {args.id} will stop after its current request and keep what it made")
    return 0


def cmd_gate(args) -> int:
    from core import evaluate, jobs

    if args.set_thresholds:
        try:
            value = evaluate.set_thresholds(*args.set_thresholds, actor=_user())
        except ValueError as exc:
            return _fail(str(exc), 2)
        print(json.dumps({"thresholds": value}))
        return 0
    if not args.run:
        print(json.dumps({"thresholds": evaluate.thresholds()}))
        return 0
    try:
        verdict = evaluate.verdict(args.run)
    except jobs.JobError as exc:
        return _fail(str(exc), 2)
    e = verdict["evaluation"]
    print(json.dumps({"run": args.run, "releasable": verdict["releasable"], "reason": verdict["reason"],
                      "evaluation": e["id"] if e else None, "thresholds": verdict.get("thresholds")},
                     ensure_ascii=False))
    return 0 if verdict["releasable"] else 1


def cmd_score(args) -> int:
    from core import scoring

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


def cmd_export(args) -> int:
    from core import export, jobs

    try:
        job = export.submit(args.run, args.quant, owner=_user())
    except (export.ExportError, jobs.JobError) as exc:
        return _fail(str(exc))
    job = jobs.wait(job["id"], timeout=args.timeout, on_update=_progress_printer("export"))
    if job["state"] != "succeeded":
        return _fail(f"export job {job['id']} {job['state']}: {job['error']}")
    _print(job["result"], args.json)
    return 0


def cmd_modelfile(args) -> int:
    from core import modelfile, prompt_format

    try:
        if args.name:
            modelfile.check_name(args.name)
        if not Path(args.gguf).exists():
            return _fail(f"{args.gguf}: no such file")
        print(modelfile.build(args.gguf, args.format, system=args.system), end="")
    except (modelfile.ModelfileError, prompt_format.FormatError) as exc:
        return _fail(str(exc))
    return 0


def cmd_deploy(args) -> int:
    from core import deploy, export, jobs, modelfile, preflight, prompt_format

    try:
        release = deploy.deploy(args.run, args.name, system=args.system, quantization=args.quant,
                                override_reason=args.override_reason, actor=_user(),
                                ollama_quantize=args.ollama_quantize, golden=args.golden,
                                on_progress=lambda m: print(m, file=sys.stderr, flush=True))
    except (deploy.DeployRefused, modelfile.ModelfileError, export.ExportError, jobs.JobError,
            preflight.PreflightError, prompt_format.FormatError) as exc:
        return _fail(str(exc).replace("\n", " | "))
    pf = release["preflight"] if isinstance(release["preflight"], dict) else json.loads(release["preflight"])
    out = {k: release[k] for k in ("id", "name", "tag", "run_id", "quantization", "gguf_path", "gguf_sha256",
                                   "modelfile_path", "ollama_status")}
    out["preflight"] = {k: pf[k] for k in ("passed", "reason", "n", "exact_match_rate", "rouge_l")}
    _print(out, args.json)
    return 0


def cmd_releases(args) -> int:
    from core import deploy

    try:
        if args.action == "list":
            rows = deploy.list_releases()
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
            return 0
        if not args.id:
            return _fail(f"releases {args.action} needs a release id (see `python -m core releases list`)", 2)
        if args.action == "delete":
            rel = deploy.delete_release(args.id, actor=_user())
        else:
            rel = deploy.rollback(args.id, actor=_user(), on_progress=lambda m: print(m, file=sys.stderr))
    except deploy.DeployRefused as exc:
        return _fail(str(exc))
    _print({k: rel[k] for k in ("id", "name", "tag", "state", "rollback_of", "ollama_status")}, args.json)
    return 0


# ── parser ───────────────────────────────────────────────────────────────────


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m core", description="ViTune Studio from the command line.")
    sub = p.add_subparsers(dest="command", required=True)

    m = sub.add_parser("models", help="prepare and list base models")
    m.add_argument("action", choices=["fetch-default", "list"])
    m.add_argument("--force", action="store_true", help="prepare the default model again")
    m.set_defaults(fn=cmd_models)

    d = sub.add_parser("dataset", help="import and list dataset versions")
    d.add_argument("action", choices=["import", "list", "import-samples"])
    d.add_argument("paths", nargs="*", help="JSONL, JSON, CSV or Parquet files, or folders saved by `datasets` (import)")
    d.add_argument("--name", help="name of the new dataset version")
    d.add_argument("--test-fraction", type=float, default=0.1)
    d.add_argument("--seed", type=int, default=42)
    d.add_argument("--mix-general", metavar="VERSION", help="mix in general Vietnamese pairs from this version")
    d.add_argument("--mix-ratio", type=float, default=0.05, help="share of general pairs in train (0.05–0.10)")
    d.add_argument("--encoding", help="text encoding of the files when not UTF-8 (e.g. cp1258, utf-16)")
    d.add_argument("--map", action="append", metavar="COLUMN=FIELD",
                   help="map a file column to instruction, input or output (repeatable), e.g. --map question=instruction")
    d.add_argument("--bulk", action="store_true",
                   help="import in DuckDB SQL (bounded memory, for millions of pairs); automatic for JSONL files "
                        "over 64 MB")
    d.add_argument("--json", action="store_true")
    d.set_defaults(fn=cmd_dataset)

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
    t.add_argument("--timeout", type=float, default=24 * 3600)
    t.add_argument("--json", action="store_true")
    t.set_defaults(fn=cmd_train)

    rv = sub.add_parser("review", help="the review sample of a dataset version: start, show, decide, status",
                        description="Draw a seeded sample (default 10 %%) of a dataset version, decide each pair "
                                    "(approve, edit, reject), and see whether the version passed (approval rate "
                                    "at or above the threshold, default 90 %%). `status` exits 1 until it has.")
    rv.add_argument("action", choices=["start", "show", "decide", "status"])
    rv.add_argument("version", help="dataset version id")
    rv.add_argument("--fraction", type=float, default=0.10, help="share of the pairs to review (start; 0.10–1)")
    rv.add_argument("--seed", type=int, default=42, help="seed of the sample (start)")
    rv.add_argument("--threshold", type=float, default=0.90, help="approval rate needed (start)")
    rv.add_argument("--item", type=int, help="pair number in the sample (show, decide)")
    rv.add_argument("--all", action="store_true", help="list every pair of the sample (show)")
    dec = rv.add_mutually_exclusive_group()
    dec.add_argument("--approve", dest="decision", action="store_const", const="approved")
    dec.add_argument("--edit", dest="decision", action="store_const", const="edited")
    dec.add_argument("--reject", dest="decision", action="store_const", const="rejected")
    rv.add_argument("--instruction", help="edited instruction (decide --edit)")
    rv.add_argument("--input", help="edited input (decide --edit)")
    rv.add_argument("--output", help="edited output (decide --edit)")
    rv.add_argument("--reviewer", help="the reviewer's name (default: your user name)")
    rv.add_argument("--json", action="store_true")
    rv.set_defaults(fn=cmd_review)

    j = sub.add_parser("jobs", help="list, cancel or resume jobs; run the supervisor (one tick, or on and on)")
    j.add_argument("action", choices=["list", "cancel", "resume", "tick", "supervise"],
                   help="resume: queue a failed or cancelled training job again from its last checkpoint; "
                        "supervise: start queued jobs and ingest finished ones until stopped (Ctrl-C)")
    j.add_argument("id", nargs="?", type=int)
    j.add_argument("--limit", type=int, default=30)
    j.add_argument("--interval", type=float, default=2.0, help="seconds between supervisor ticks (supervise)")
    j.add_argument("--until-idle", action="store_true", help="supervise: stop once nothing is queued or running")
    j.set_defaults(fn=cmd_jobs)

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
    e.add_argument("--batch-size", type=int, default=8)
    e.add_argument("--temperature", type=float, default=0.0, help="0: greedy (the default)")
    e.add_argument("--top-p", type=float, default=1.0)
    e.add_argument("--top-k", type=int, default=0)
    e.add_argument("--stop", action="append", metavar="TEXT", help="stop string (repeatable)")
    e.add_argument("--out", help="report / csv: the file to write")
    e.add_argument("--csv", help="report: also write the examples' CSV here")
    e.add_argument("--compare-with", metavar="EVAL", help="report: compare with this evaluation "
                   "(default: the base model's evaluation on the same split, when there is one)")
    e.add_argument("--timeout", type=float, default=6 * 3600)
    e.add_argument("--json", action="store_true")
    e.set_defaults(fn=cmd_evaluate)

    gen = sub.add_parser("generate", help="generate instruction pairs from raw documents with an LLM")
    gen.add_argument("--docs", nargs="+", required=True, help="txt, md, docx or pdf documents")
    gen.add_argument("--name", required=True, help="name of the dataset version to create")
    gen.add_argument("--base-url", help="OpenAI-compatible endpoint, e.g. https://api.openai.com/v1")
    gen.add_argument("--model")
    gen.add_argument("--api-key-env", metavar="VAR", help="the environment variable holding the API key")
    gen.add_argument("--local", action="store_true", help="the default model through llama.cpp's server on loopback")
    gen.add_argument("--structured", action="store_true", help="send the answer's JSON schema (llama.cpp: a grammar)")
    gen.add_argument("--prompt-file", help="the generation prompt template ({chunk}, {n_pairs})")
    gen.add_argument("--max-chunks", type=int)
    gen.add_argument("--pairs-per-chunk", type=int, default=3)
    gen.add_argument("--chunk-chars", type=int, default=1500)
    gen.add_argument("--overlap", type=int, default=200)
    gen.add_argument("--retries", type=int, default=2, help="extra attempts for a malformed answer")
    gen.add_argument("--max-tokens", type=int)
    gen.add_argument("--temperature", type=float)
    gen.add_argument("--timeout", type=float, default=24 * 3600)
    gen.add_argument("--json", action="store_true")
    gen.set_defaults(fn=cmd_generate)

    gs = sub.add_parser("generate-stop", help="stop a generation job and keep the pairs it made")
    gs.add_argument("id", type=int)
    gs.set_defaults(fn=cmd_generate_stop)

    g = sub.add_parser("gate", help="exit 0 only when the run is releasable; show or set the thresholds")
    g.add_argument("--run")
    g.add_argument("--set-thresholds", nargs=2, type=float, metavar=("BLEU", "ROUGE_L"),
                   help="set the project's gate thresholds (recorded in the audit log)")
    g.set_defaults(fn=cmd_gate)

    s = sub.add_parser("score", help="BLEU and ROUGE-L of a JSONL of {reference, prediction}")
    s.add_argument("--input", required=True)
    s.add_argument("--bleu", type=float, default=0.35, help="BLEU threshold")
    s.add_argument("--rouge-l", type=float, default=0.45, help="ROUGE-L threshold")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_score)

    x = sub.add_parser("export", help="merge a run and export GGUF with llama.cpp")
    x.add_argument("--run", required=True)
    x.add_argument("--quant", nargs="+", choices=["f16", "q8_0", "q4_k_m"],
                   help="default: q4_k_m, or q8_0 for a base model under a billion parameters")
    x.add_argument("--timeout", type=float, default=3600)
    x.add_argument("--json", action="store_true")
    x.set_defaults(fn=cmd_export)

    mf = sub.add_parser("modelfile", help="print an Ollama Modelfile for a GGUF")
    mf.add_argument("--gguf", required=True)
    mf.add_argument("--system", default=None)
    mf.add_argument("--format", default="chat", choices=["chat", "alpaca-vi"])
    mf.add_argument("--name")
    mf.set_defaults(fn=cmd_modelfile)

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

    rl = sub.add_parser("releases", help="list releases, delete one (ollama rm) or roll back to one")
    rl.add_argument("action", choices=["list", "delete", "rollback"])
    rl.add_argument("id", nargs="?", help="release id (delete, rollback)")
    rl.add_argument("--json", action="store_true")
    rl.set_defaults(fn=cmd_releases)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "dataset" and args.action == "import" and (not args.paths or not args.name):
        return _fail("dataset import needs at least one PATH and --name", 2)
    from core.store import StoreBusy

    try:
        return args.fn(args)
    except StoreBusy as exc:
        return _fail(str(exc))
