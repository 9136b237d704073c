"""``python -m core``: every stage of the studio from the command line.

Heavy libraries (torch, transformers) are imported inside the commands that need them, so
``--help``, ``score`` and ``dataset`` start in well under a second.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _actor():
    """The CLI acts as the machine's operator: an admin, its OS user name recorded in the audit log."""
    from core.access import principal

    return principal.operator()


def _print(obj, as_json: bool) -> None:
    if as_json:
        print(json.dumps(obj, ensure_ascii=False, indent=2, default=str))
    else:
        for k, v in obj.items():
            print(f"{k}: {v}")


def _fail(message: str, code: int = 1) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


class OutputError(RuntimeError):
    """A file the command was told to write cannot be written."""


def _check_output(path: str | Path) -> Path:
    """An output file the command can write: not a folder, in a folder that exists (checked before the
    command does its work, so that a typo in --out costs nothing)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: a folder; give a file name to write")
    parent = path.parent
    if not parent.is_dir():
        what = "is a file, not a folder" if parent.exists() else "does not exist"
        raise OutputError(f"cannot write {path}: the folder {parent} {what}")
    return path


def _write(path: str | Path, text: str) -> Path:
    """Write a command's output file, or say in one line why it cannot be written."""
    path = _check_output(path)
    try:
        path.write_text(text, encoding="utf-8")
    except IsADirectoryError:
        raise OutputError(f"{path}: a folder; give a file name to write") from None
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def _job_id(text) -> int | None:
    """A job id as typed: ASCII digits only (``str.isdigit`` also takes '²' and '٣')."""
    text = str(text)
    return int(text) if text.isascii() and text.isdigit() else None


# argparse types: a bad number is a usage error (exit 2) naming the option, never a traceback further on

def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _seconds(text: str) -> float:
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, not '{text}'") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not '{text}'")
    return value


def _share(text: str) -> float:
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number between 0 and 1, not '{text}'") from None
    if not math.isfinite(value) or not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not '{text}'")
    return value


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
    from core.datasets import importer, rows as pair_rows, samples, versions as ds_versions

    try:
        if args.action == "list":
            if args.json:
                versions = ds_versions.list_versions(_actor(), args.project)
                print(json.dumps(versions, ensure_ascii=False, indent=2, default=str))
                return 0
            from core.datasets import review

            for v in review.list_with_status(_actor(), args.project):  # one query, with every review status
                state = "reviewed" if v["review_status"]["reviewed"] else "not reviewed"
                print(f"{v['id']}  {v['name']:<28} train {v['rows_train']:>6}  test {v['rows_test']:>5}  "
                      f"{v['created_at']:%Y-%m-%d %H:%M}  {state}")
            return 0
        if args.action == "import-samples":
            version = samples.import_samples(actor=_actor(), project=args.project)
            others = [ds_versions.find_by_name(n, version["project"]) for n in samples.SAMPLE_DOMAINS
                      if n != version["name"]]
            for v in [version, *others, ds_versions.find_by_name("general-vi", version["project"])]:
                print(f"{v['id']} {v['name']}: {v['rows_train']} train, {v['rows_test']} test")
            return 0
        version, report = importer.import_files(
            args.paths, args.name, test_fraction=args.test_fraction, seed=args.seed,
            general_version=args.mix_general, general_ratio=args.mix_ratio, actor=_actor(), project=args.project,
            encoding=args.encoding, mapping=args.map, bulk=True if args.bulk else None,
        )
    except pair_rows.DatasetError as exc:
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
    from core.jobs import queue

    last = {"text": None}

    def show(job) -> None:
        text = queue.describe(job, every_s=10)   # a compile shows as a phase with its time, not as 0/s
        if text != last["text"]:
            print(text, file=sys.stderr, flush=True)
            last["text"] = text

    return show


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
    from core.datasets import review, rows as pair_rows

    try:
        if args.action == "start":
            out = review.start(args.version, fraction=args.fraction, seed=args.seed, threshold=args.threshold,
                               actor=_actor())
        elif args.action == "show":
            from core.datasets import versions

            versions.get_version(args.version, _actor())   # an unknown version is said so, not "nothing waits"
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
            out = review.decide(args.version, args.item, args.decision, actor=_actor(), edited=edited)
        else:
            out = review.status(args.version)
    except (review.ReviewError, pair_rows.DatasetError) as exc:
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
    from core.jobs import queue, supervisor
    from core.training import runs

    if args.action in ("cancel", "resume") and args.id is not None and _job_id(args.id) is None:
        return _fail(f"jobs {args.action}: the job id must be a number, not '{args.id}'", 2)
    if args.action == "cancel":
        if args.id is None:
            return _fail("jobs cancel needs a job id (see `python -m core jobs list`)", 2)
        try:
            job = supervisor.cancel(_job_id(args.id), actor=_actor())
        except queue.JobError as exc:
            return _fail(str(exc))
        print(f"job {job['id']}: {job['state']}")
        return 0
    if args.action == "tick":
        print(json.dumps(supervisor.tick()))
        return 0
    if args.action == "worker-python":
        try:
            if args.clear or args.id:
                print(supervisor.set_worker_python(None if args.clear else args.id, actor=_actor()))
        except queue.JobError as exc:
            return _fail(str(exc))
        python = supervisor.worker_python()
        print(f"workers run under {python}"
              + (" ($VITUNE_WORKER_PYTHON)" if os.environ.get("VITUNE_WORKER_PYTHON") else ""))
        return 0
    if args.id is not None and _job_id(args.id) is None:
        return _fail(f"jobs {args.action}: the job id must be a number, not '{args.id}'", 2)
    args.id = _job_id(args.id) if args.id is not None else None
    if args.action in ("cancel", "resume") and args.id is None:
        return _fail(f"jobs {args.action} needs a job id (see `python -m core jobs list`)", 2)
    if args.action == "supervise":
        def event(done: dict) -> None:
            for job_id in done["settled"]:
                j = queue.get_job(job_id)
                print(f"job {job_id} ({j['kind']}): {j['state']}" + (f" — {j['error']}" if j["error"] else ""),
                      flush=True)
            for job_id in done["started"]:
                print(f"job {job_id} ({queue.get_job(job_id)['kind']}): started", flush=True)

        try:
            supervisor.supervise(args.interval, until_idle=args.until_idle, on_event=event)
        except KeyboardInterrupt:
            pass
        return 0
    if args.action == "resume":
        try:
            job = runs.resume(args.id, actor=_actor())
        except queue.JobError as exc:
            return _fail(str(exc))
        print(f"queued job {job['id']} for run {job['run_id']}, from {job['config']['resume_from']}")
        return 0
    for j in queue.list_jobs(args.limit, actor=_actor(), project=args.project):
        print(f"{j['id']:>4}  {j['kind']:<9} {j['state']:<10} {j['run_id'] or '':<28} {j['owner'] or ''}")
    return 0


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


def cmd_ask(args) -> int:
    """The playground headless: one question to a run (or its base model) through an inference worker."""
    from core.access.principal import AccessDenied
    from core.playground import playground
    from core.evaluation.inference import Decoding
    from core.jobs import queue

    try:
        decoding = Decoding(max_new_tokens=args.max_new_tokens, temperature=args.temperature)
        if args.run:
            answer = playground.ask_run(args.run, args.question, args.context or "", args.system, decoding,
                                        actor=_actor(), base=args.base)
        elif args.base_model:
            answer = playground.ask(args.base_model, None, args.prompt_format or "chat", args.question,
                                    args.context or "", args.system, decoding, actor=_actor(), project=args.project)
        else:
            return _fail("ask needs --run RUN (add --base for its base model) or --base-model MODEL", 2)
    except (ValueError, queue.JobError, playground.PlaygroundError, AccessDenied) as exc:
        return _fail(str(exc))
    print(json.dumps({"answer": answer}, ensure_ascii=False) if args.json else answer)
    return 0


def _password(args, what: str) -> str:
    """A password from the terminal (asked twice) or from the first line of stdin; never an argument."""
    import getpass

    if sys.stdin.isatty():
        first = getpass.getpass(f"{what}: ")
        if getpass.getpass("again: ") != first:
            raise SystemExit("error: the two passwords differ")
        return first
    return sys.stdin.readline().rstrip("\n")


def cmd_users(args) -> int:
    from core.access import accounts

    actor = _actor()
    try:
        if args.action == "list":
            for u in accounts.list_users(actor):
                print(accounts.describe(u))
            return 0
        if not args.name:
            return _fail(f"users {args.action} needs an account name", 2)
        if args.action == "add":
            if not args.role:
                return _fail("users add needs --role (admin, engineer, reviewer or viewer)", 2)
            password = None if args.oidc else _password(args, f"password for {args.name}")
            user = accounts.add_user(args.name, args.role, actor=actor, password=password, oidc=args.oidc,
                                     projects=args.projects)
        elif args.action == "set-role":
            if not args.role:
                return _fail("users set-role needs --role", 2)
            user = accounts.set_role(args.name, args.role, actor=actor)
        elif args.action == "set-projects":
            user = accounts.set_projects(args.name, None if args.all_projects else (args.projects or []), actor=actor)
        elif args.action == "disable":
            user = accounts.disable(args.name, actor=actor)
        else:
            user = accounts.reset_password(args.name, _password(args, f"new password for {args.name}"), actor=actor)
    except accounts.AccountError as exc:
        return _fail(str(exc))
    print(accounts.describe(user))
    return 0


def cmd_endpoints(args) -> int:
    from core import secrets
    from core.datasets.generation import documents, endpoints

    actor = _actor()
    try:
        if args.action == "list":
            rows = [e.public() for e in endpoints.configured()]
            if args.json:
                print(json.dumps(rows, ensure_ascii=False, indent=2))
            for r in rows if not args.json else []:
                print(f"{r['name']:<16} {r['base_url']:<40} {r['model']:<24} key: {r['key']:<28} ({r['source']})")
            if not rows and not args.json:
                print(f"no endpoint yet: add one with `python -m core endpoints add NAME --base-url URL --model M` "
                      f"or define [endpoints.NAME] in {secrets.secrets_path()}", file=sys.stderr)
            return 0
        if args.action == "keys":
            print("named keys:", ", ".join(secrets.key_names()) or "none")
            print("allowed hosts:", ", ".join(secrets.allowed_hosts()) or "none")
            return 0
        if not args.name:
            return _fail(f"endpoints {args.action} needs a NAME", 2)
        if args.action == "remove":
            endpoints.remove(args.name, actor=actor)
            print(f"removed endpoint {args.name}")
            return 0
        if not args.base_url or not args.model:
            return _fail("endpoints add needs --base-url and --model", 2)
        e = endpoints.add(args.name, args.base_url, args.model, key=args.key, price_in_per_mtok=args.price_in,
                          price_out_per_mtok=args.price_out, structured=args.structured, max_tokens=args.max_tokens,
                          actor=actor)
    except (documents.GenerateError, secrets.SecretsError) as exc:
        return _fail(str(exc))
    print(json.dumps(e.public(), ensure_ascii=False) if args.json else f"endpoint {e.name}: {e.base_url} ({e.model}), "
          f"key: {e.key or 'none'}")
    return 0


def cmd_projects(args) -> int:
    from core.access import projects

    try:
        if args.action == "add":
            if not args.name:
                return _fail("projects add needs a NAME", 2)
            projects.add_project(args.name, args.title, actor=_actor())
        for p in projects.list_projects(_actor()):
            print(f"{p['name']:<24} {p['title'] or '':<32} by {p['created_by']} at {p['created_at']:%Y-%m-%d %H:%M}")
    except projects.ProjectError as exc:
        return _fail(str(exc))
    return 0


def cmd_demo(args) -> int:
    from core.access import demo_links

    try:
        if args.action == "create":
            prompts = list(args.prompt or [])
            if args.conversation:   # a saved conversation's questions become the link's demo prompts
                from core.playground import conversations

                try:
                    prompts += conversations.questions(conversations.get(args.conversation, _actor()))
                except conversations.ConversationError as exc:
                    return _fail(str(exc), 2)
            link, token = demo_links.create(actor=_actor(), runs=args.run or [], releases=args.release or [],
                                            prompts=prompts, days=args.days, title=args.title)
            out = {**{k: link[k] for k in ("id", "project", "runs", "releases", "expires_at")},
                   "url": f"{args.base_url.rstrip('/')}/?demo={token}"}
            _print(out, args.json)
            print("the link is shown once: send it to the client; `python -m core demo revoke "
                  f"{link['id']}` ends it", file=sys.stderr)
            return 0
        if args.action == "revoke":
            if not args.id:
                return _fail("demo revoke needs the link's id (see `python -m core demo list`)", 2)
            link = demo_links.revoke(args.id, actor=_actor())
            print(f"{link['id']}: revoked")
            return 0
        for d in demo_links.list_links(_actor()):
            state = "revoked" if d["revoked_at"] else f"until {d['expires_at']:%Y-%m-%d %H:%M}"
            print(f"{d['id']}  {d['project']:<16} {state:<24} runs {','.join(d['runs']) or '-'}  "
                  f"releases {','.join(d['releases']) or '-'}  by {d['created_by']}")
    except demo_links.DemoLinkError as exc:
        return _fail(str(exc))
    return 0


def cmd_conversations(args) -> int:
    from core.playground import conversations as convs
    from core.playground import playground

    who, project = _actor(), getattr(args, "project", None)
    try:
        if args.action == "save":
            if not args.file or not args.title:
                return _fail("conversations save needs --title and --file (a JSON list of {role, content} turns)", 2)
            try:
                turns = json.loads(Path(args.file).read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError) as exc:
                return _fail(f"{args.file}: cannot be read ({exc})", 2)
            except json.JSONDecodeError as exc:
                return _fail(f"{args.file}: line {exc.lineno}, column {exc.colno}: not JSON ({exc.msg})", 2)
            conv = convs.save(args.title, turns, model=args.model, system=args.system, actor=who, project=project)
            _print({k: conv[k] for k in ("id", "project", "title", "model")} | {"turns": len(conv["turns"])}, args.json)
            return 0
        if args.action == "list":
            rows = convs.list_saved(who, project)
            if args.json:
                print(json.dumps(rows, ensure_ascii=False, indent=2, default=str))
            for r in [] if args.json else rows:
                print(f"{r['id']}  {r['project']:<12} {len(r['turns']):>2} turns  {r['title']}  ({r['model'] or '-'}, "
                      f"by {r['created_by']})")
            return 0
        if not args.id:
            return _fail(f"conversations {args.action} needs the conversation's id (see `python -m core conversations list`)", 2)
        if args.action == "show":
            _print(convs.get(args.id, who), args.json)
            return 0
        if args.action == "delete":
            convs.delete(args.id, actor=who)
            print(f"{args.id}: deleted")
            return 0
        conv = convs.get(args.id, who)   # replay
        model = args.model or conv["model"]
        if not model:
            return _fail("replay needs --model (the conversation names none)", 2)
        out = []
        for n, question, pieces in convs.replay(conv, convs.target(model, actor=who, project=project), actor=who,
                                                project=project):
            if not args.json:
                print(f"\n[{n}] {question}\n", flush=True)
            answer = ""
            for piece in pieces:
                answer += piece
                if not args.json:
                    print(piece, end="", flush=True)
            out.append({"turn": n, "question": question, "answer": answer})
        print(json.dumps(out, ensure_ascii=False, indent=2) if args.json else "")
        return 0
    except convs.ConversationError as exc:
        return _fail(str(exc), 2)
    except playground.PlaygroundError as exc:
        return _fail(str(exc))


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


def cmd_i18n(args) -> int:
    from core import i18n

    if args.action == "compile":
        for lang in i18n.LANGUAGES:
            print(f"compiled {i18n.compile_catalogue(lang)}")
        return 0
    if args.action == "extract":
        missing = i18n.update()
        for lang, n in missing.items():
            print(f"{i18n.po_path(lang)}: {n} string(s) without a translation")
        return 0 if not any(missing.values()) else 1
    if args.action == "check":
        missing = i18n.untranslated("vi")
        for message in missing:
            print(f"no Vietnamese for: {message!r}")
        return 0 if not missing else 1
    # language: the operator's own interface language (the browser on loopback in operator mode)
    who = _actor()
    if args.lang:
        try:
            i18n.set_language(who, args.lang)
        except ValueError as exc:
            return _fail(str(exc), 2)
    print(f"{who.name}: {i18n.language_of(who)} ({i18n.LANGUAGES[i18n.language_of(who)]})")
    return 0


def cmd_audit(args) -> int:
    from core.access import audit

    rows = audit.entries(_actor(), actor_name=args.who, action=args.action, subject=args.subject,
                         project=args.project, limit=args.limit)
    if args.csv:
        _write(args.csv, audit.as_csv(rows))
        print(f"wrote {len(rows)} rows to {args.csv}", file=sys.stderr)
        return 0
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2, default=str))
        return 0
    for r in rows:
        print(f"{r['ts']:%Y-%m-%d %H:%M:%S}  {r['actor'] or '-':<20} {r['role'] or '-':<9} {r['action']:<22} "
              f"{r['subject'] or '':<26} {r['project'] or ''}")
    return 0


def cmd_generate(args) -> int:
    from core.datasets.generation import documents, endpoints, generations
    from core.datasets.generation.answers import read_template
    from core.jobs import queue, supervisor

    try:
        prompt = read_template(args.prompt_file) if args.prompt_file else None
        if not args.local and not args.endpoint:
            names = ", ".join(e.name for e in endpoints.configured()) or "none configured"
            return _fail(f"generate needs --local (the default model) or --endpoint NAME ({names})", 2)
        job = generations.submit(args.docs, args.name, endpoint=args.endpoint, local=args.local,
                              max_tokens=args.max_tokens, temperature=args.temperature, prompt=prompt,
                              n_pairs=args.pairs_per_chunk, max_chunks=args.max_chunks,
                              chunk_chars=args.chunk_chars, overlap=args.overlap, max_retries=args.retries,
                              actor=_actor(), project=args.project)
    except (documents.GenerateError, queue.JobError) as exc:
        return _fail(str(exc))
    print(f"queued generation job {job['id']} ({job['job_dir']}); stop it and keep what was made with "
          f"`python -m core generate-stop {job['id']}`", file=sys.stderr)
    job = supervisor.wait(job["id"], timeout=args.timeout, on_update=_progress_printer("generate"))
    result = dict(job["result"] or {})
    out = {"job": job["id"], "state": job["state"], "error": job["error"],
           "dataset_version": result.get("dataset_version"), **{k: result.get(k) for k in (
               "pairs", "duplicates", "chunks_done", "chunks_total", "malformed_answers", "failed_chunks",
               "retries", "tokens_in", "tokens_out", "cost", "elapsed_s", "stopped", "note", "pairs_file",
               "rejects_file")}}
    out["rejects"] = generations.rejects(job)
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
    from core.datasets.generation import generations
    from core.jobs import queue

    try:
        job = queue.get_job(args.id)
    except queue.JobError as exc:
        return _fail(str(exc))
    if job["kind"] != "generate" or job["state"] not in ("queued", "running"):
        return _fail(f"job {args.id} is not a queued or running generation")
    generations.request_stop(job, actor=_actor())
    print(f"job {args.id} will stop after its current request and keep what it made")
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
    from core.deploy import exporter, modelfile, ollama, preflight, releases
    from core.jobs import queue

    try:
        release = releases.deploy(args.run, args.name, system=args.system, quantization=args.quant,
                                  override_reason=args.override_reason, actor=_actor(),
                                  ollama_quantize=args.ollama_quantize, golden=args.golden,
                                  on_progress=lambda m: print(m, file=sys.stderr, flush=True))
    except (releases.DeployRefused, ollama.OllamaError, modelfile.ModelfileError, exporter.ExportError,
            queue.JobError, preflight.PreflightError, prompt_format.FormatError) as exc:
        return _fail(str(exc).replace("\n", " | "))
    pf = release["preflight"] if isinstance(release["preflight"], dict) else json.loads(release["preflight"])
    out = {k: release[k] for k in ("id", "name", "tag", "run_id", "quantization", "gguf_path", "gguf_sha256",
                                   "modelfile_path", "ollama_status")}
    out["preflight"] = {k: pf[k] for k in ("passed", "reason", "n", "exact_match_rate", "rouge_l")}
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


# ── parser ───────────────────────────────────────────────────────────────────


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m core", description="ViTune Studio from the command line. It acts "
                                "as the machine's operator (an admin; your OS user name goes into the audit log).")
    p.add_argument("--project", default=None, help="the project (one per client) to list or to put new work in; "
                   "default: every project to list, 'default' for new work")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--project", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command", required=True)
    _add = sub.add_parser  # every command also takes --project after its name
    sub.add_parser = lambda *a, **kw: _add(*a, parents=[common], **kw)

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
    t.add_argument("--timeout", type=_seconds, default=24 * 3600)
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
    rv.add_argument("--json", action="store_true")
    rv.set_defaults(fn=cmd_review)

    j = sub.add_parser("jobs", help="list, cancel or resume jobs; run the supervisor (one tick, or on and on)")
    j.add_argument("action", choices=["list", "cancel", "resume", "tick", "supervise", "worker-python"],
                   help="resume: queue a failed or cancelled training job again from its last checkpoint; "
                        "supervise: start queued jobs and ingest finished ones until stopped (Ctrl-C); "
                        "worker-python [PYTHON]: show, or check and record, the interpreter workers run under")
    j.add_argument("id", nargs="?", help="job id (cancel, resume); interpreter path (worker-python)")
    j.add_argument("--clear", action="store_true", help="worker-python: back to the studio's own interpreter")
    j.add_argument("--limit", type=_count, default=30)
    j.add_argument("--interval", type=_seconds, default=2.0, help="seconds between supervisor ticks (supervise)")
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

    ak = sub.add_parser("ask", help="ask a run (or a base model) one question, as the playground does")
    ak.add_argument("question")
    ak.add_argument("--run")
    ak.add_argument("--base", action="store_true", help="with --run: its base model, without the adapter")
    ak.add_argument("--base-model")
    ak.add_argument("--prompt-format", choices=["chat", "alpaca-vi"])
    ak.add_argument("--context", help="the input / context")
    ak.add_argument("--system")
    ak.add_argument("--max-new-tokens", type=int, default=128)
    ak.add_argument("--temperature", type=float, default=0.0)
    ak.add_argument("--json", action="store_true")
    ak.set_defaults(fn=cmd_ask)

    gen = sub.add_parser("generate", help="generate instruction pairs from raw documents with an LLM")
    gen.add_argument("--docs", nargs="+", required=True, help="txt, md, docx or pdf documents")
    gen.add_argument("--name", required=True, help="name of the dataset version to create")
    gen.add_argument("--endpoint", metavar="NAME", help="a configured endpoint (python -m core endpoints list)")
    gen.add_argument("--local", action="store_true", help="the default model through llama.cpp's server on loopback")
    gen.add_argument("--prompt-file", help="the generation prompt template ({chunk}, {n_pairs})")
    gen.add_argument("--max-chunks", type=int)
    gen.add_argument("--pairs-per-chunk", type=int, default=3)
    gen.add_argument("--chunk-chars", type=int, default=1500)
    gen.add_argument("--overlap", type=int, default=200)
    gen.add_argument("--retries", type=int, default=2, help="extra attempts for a malformed answer")
    gen.add_argument("--max-tokens", type=int)
    gen.add_argument("--temperature", type=float)
    gen.add_argument("--timeout", type=_seconds, default=24 * 3600)
    gen.add_argument("--json", action="store_true")
    gen.set_defaults(fn=cmd_generate)

    gs = sub.add_parser("generate-stop", help="stop a generation job and keep the pairs it made")
    gs.add_argument("id", type=int)
    gs.set_defaults(fn=cmd_generate_stop)

    g = sub.add_parser("gate", help="exit 0 only when the run is releasable; show or set the thresholds")
    g.add_argument("--run")
    g.add_argument("--set-thresholds", nargs=2, type=float, metavar=("BLEU", "ROUGE_L"),
                   help="set the gate's thresholds (recorded in the audit log; below 0.35/0.45 needs --override-reason)")
    g.add_argument("--override-reason", help="why the thresholds go below the floor (recorded)")
    g.add_argument("--set-min-share", type=float, metavar="SHARE",
                   help="the share of the held-out split a gating evaluation must cover (default 1.0)")
    g.set_defaults(fn=cmd_gate)

    s = sub.add_parser("score", help="BLEU and ROUGE-L of a JSONL of {reference, prediction}")
    s.add_argument("--input", required=True)
    s.add_argument("--bleu", type=_share, default=0.35, help="BLEU threshold")
    s.add_argument("--rouge-l", type=_share, default=0.45, help="ROUGE-L threshold")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_score)

    x = sub.add_parser("export", help="merge a run and export GGUF with llama.cpp")
    x.add_argument("--run", required=True)
    x.add_argument("--quant", nargs="+", choices=["f16", "q8_0", "q4_k_m"],
                   help="default: q4_k_m, or q8_0 for a base model under a billion parameters")
    x.add_argument("--timeout", type=_seconds, default=3600)
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

    us = sub.add_parser("users", help="accounts: add (the password is read from the terminal or stdin), list, "
                                      "set-role, set-projects, disable, reset-password")
    us.add_argument("action", choices=["add", "list", "set-role", "set-projects", "disable", "reset-password"])
    us.add_argument("name", nargs="?", help="account name (an email with --oidc)")
    us.add_argument("--role", choices=["admin", "engineer", "reviewer", "viewer"])
    us.add_argument("--oidc", action="store_true", help="an account that signs in through OIDC (st.login): no password")
    us.add_argument("--projects", nargs="*", metavar="PROJECT", help="limit the account to these projects")
    us.add_argument("--all-projects", action="store_true", help="set-projects: every project")
    us.set_defaults(fn=cmd_users)

    ep = sub.add_parser("endpoints", help="generation endpoints: list, add (admins; an allowed host and a named "
                                          "server-side key), remove")
    ep.add_argument("action", choices=["list", "add", "remove", "keys"])
    ep.add_argument("name", nargs="?")
    ep.add_argument("--base-url")
    ep.add_argument("--model")
    ep.add_argument("--key", metavar="KEY_NAME", help="a named key on the server (endpoints keys lists them)")
    ep.add_argument("--price-in", type=float, default=0.0, help="cost of a million prompt tokens")
    ep.add_argument("--price-out", type=float, default=0.0, help="cost of a million answer tokens")
    ep.add_argument("--structured", action="store_true", help="send the answer's JSON schema (llama.cpp: a grammar)")
    ep.add_argument("--max-tokens", type=int, default=1024)
    ep.add_argument("--json", action="store_true")
    ep.set_defaults(fn=cmd_endpoints)

    pj = sub.add_parser("projects", help="projects (one per client): list, add")
    pj.add_argument("action", choices=["list", "add"])
    pj.add_argument("name", nargs="?")
    pj.add_argument("--title")
    pj.set_defaults(fn=cmd_projects)

    dm = sub.add_parser("demo", help="client demo links: create (prints the link once), list, revoke")
    dm.add_argument("action", choices=["create", "list", "revoke"])
    dm.add_argument("id", nargs="?", help="revoke: the link's id")
    dm.add_argument("--run", action="append", help="a run the link shows (repeatable)")
    dm.add_argument("--release", action="append", help="a release the link shows (repeatable)")
    dm.add_argument("--prompt", action="append", help="a demo prompt offered on the link's page (repeatable)")
    dm.add_argument("--conversation", help="create: a saved conversation whose questions the link offers as prompts")
    dm.add_argument("--days", type=float, default=7.0, help="until it expires (default 7)")
    dm.add_argument("--title")
    dm.add_argument("--base-url", default="http://localhost:8501", help="the studio's address the client opens")
    dm.add_argument("--json", action="store_true")
    dm.set_defaults(fn=cmd_demo)

    cv = sub.add_parser("conversations", help="saved playground conversations: save, list, show, delete, or "
                                              "replay one against a model (its questions asked again, streamed)")
    cv.add_argument("action", choices=["list", "show", "save", "delete", "replay"])
    cv.add_argument("id", nargs="?")
    cv.add_argument("--title")
    cv.add_argument("--file", help="save: a JSON list of turns, [{\"role\": \"user\", \"content\": \"…\"}, …]")
    cv.add_argument("--model", help="the playground's model id (run:RUN, gguf:PATH, base:PATH…): save records it, "
                                    "replay asks it")
    cv.add_argument("--system", help="save: the system prompt")
    cv.add_argument("--json", action="store_true")
    cv.set_defaults(fn=cmd_conversations)

    vt = sub.add_parser("votes", help="blind preference votes: list them, or the win rates per pair of models")
    vt.add_argument("action", choices=["list", "winrate"])
    vt.add_argument("--model", help="winrate: only the pairs this model is in (e.g. run:RUN)")
    vt.add_argument("--limit", type=int, default=200)
    vt.add_argument("--json", action="store_true")
    vt.set_defaults(fn=cmd_votes)

    ln = sub.add_parser("i18n", help="the interface's languages: compile / extract / check the catalogues, "
                                     "or show or set your own language")
    ln.add_argument("action", choices=["compile", "extract", "check", "language"])
    ln.add_argument("lang", nargs="?", help="language: vi or en")
    ln.set_defaults(fn=cmd_i18n)

    au = sub.add_parser("audit", help="the audit log: who did what, when (filters; --csv FILE)")
    au.add_argument("--who", help="an account")
    au.add_argument("--action", help="an action or its prefix, e.g. release. or gate.override")
    au.add_argument("--subject", help="an object's id")
    au.add_argument("--limit", type=_count, default=200)
    au.add_argument("--csv")
    au.add_argument("--json", action="store_true")
    au.set_defaults(fn=cmd_audit)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "dataset" and args.action == "import" and (not args.paths or not args.name):
        return _fail("dataset import needs at least one PATH and --name", 2)
    from core.access.principal import AccessDenied
    from core.access.projects import ProjectError
    from core.jobs.queue import JobError
    from core.store import StoreBusy

    try:
        if getattr(args, "project", None) and not (args.command == "projects" and args.action == "add"):
            from core.access import projects

            projects.check(_actor(), args.project)   # an unknown project is said so, not an empty list
        code = args.fn(args)
        sys.stdout.flush()   # inside the try: a closed pipe is found here, not at the interpreter's exit
        return code
    except (StoreBusy, AccessDenied, ProjectError, OutputError, JobError) as exc:
        # JobError: a job the command waits for that is still not done at --timeout (it goes on)
        return _fail(str(exc))
    except BrokenPipeError:
        return _stdout_closed()
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Exception as exc:  # the edge: one line here, the trace in the error log
        from core import errors

        return _fail(errors.report(exc, "python -m core " + " ".join(sys.argv[1:] if argv is None else argv)))
    finally:
        if os.environ.get("VITUNE_STORE_STATS"):   # what the command cost the studio database
            from core import store

            c = store.counters()
            print(f"store: {c['opens']:.0f} file opens, {c['connections']:.0f} connections, {c['queries']:.0f} "
                  f"queries, {c['lock_conflicts']:.0f} lock conflicts ({c['lock_wait_s']:.2f} s waiting), "
                  f"{c['handoffs']:.0f} handoffs", file=sys.stderr)


def _stdout_closed() -> int:
    """The reader of our output went away (``python -m core evaluate list | head``): stop quietly, as
    coreutils do. stdout is pointed at /dev/null so that the interpreter's last flush does not fail too."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass
    return 141  # 128 + SIGPIPE, what a shell reports for `ls | head`
