"""The datasets stage from the command line: ``dataset`` (import, list, the samples), ``review`` (the
review sample), ``generate`` and ``generate-stop`` (pairs from raw documents) and ``endpoints`` (the
generation endpoints).

``core/cli.py`` adds each command's parser (``add_…(sub)``: its arguments and their checks) in the order
``python -m core --help`` lists them; heavy libraries are imported inside the commands.
"""
from __future__ import annotations

import json
import sys

from core.cli_common import _actor, _fail, _progress_printer, _seconds


def _check_import(args) -> int | None:
    """``dataset import`` names its files and its version: checked before anything is opened (the project
    too), as a usage error."""
    if args.action == "import" and (not args.paths or not args.name):
        return _fail("dataset import needs at least one PATH and --name", 2)
    return None


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


# ── parsers ──────────────────────────────────────────────────────────────────


def add_dataset(sub) -> None:
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
    d.set_defaults(fn=cmd_dataset, check_args=_check_import)


def add_review(sub) -> None:
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


def add_generate(sub) -> None:
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


def add_generate_stop(sub) -> None:
    gs = sub.add_parser("generate-stop", help="stop a generation job and keep the pairs it made")
    gs.add_argument("id", type=int)
    gs.set_defaults(fn=cmd_generate_stop)


def add_endpoints(sub) -> None:
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
