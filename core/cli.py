"""``python -m core``: every stage of the studio from the command line.

Each stage's commands live in its folder, ``core/<stage>/commands.py``: the commands, and for each an
``add_<command>(sub)`` that adds its parser (its arguments and their checks). This module assembles
them into one parser, in the order ``--help`` has always listed them, and is the edge: ``main`` turns
every error into one line. What the commands share is in ``core/cli_common.py``.

Heavy libraries (torch, transformers) are imported inside the commands that need them, so
``--help``, ``score`` and ``dataset`` start in well under a second.
"""
from __future__ import annotations

import argparse
import os
import sys

from core.access import commands as access
from core.cli_common import OutputError, _actor, _fail
from core.datasets import commands as datasets
from core.deploy import commands as deploy
from core.evaluation import commands as evaluation
from core.jobs import commands as jobs
from core.playground import commands as playground
from core.training import commands as training


# ── the commands of no stage: base models, the interface's languages ─────────


def cmd_models(args) -> int:
    from core import models

    if args.action == "fetch-default":
        try:
            models.fetch_default(force=args.force)
        except models.ModelError as exc:
            return _fail(str(exc))
        return 0
    if args.action in ("allow", "disallow", "allowed"):
        from core import base_models

        try:
            if args.action != "allowed" and not args.name:
                return _fail(f"models {args.action} needs a model hub name (org/name) or a folder", 2)
            if args.action == "allow":
                base_models.allow(args.name, actor=_actor())
            elif args.action == "disallow":
                base_models.disallow(args.name, actor=_actor())
        except (ValueError, PermissionError) as exc:
            return _fail(str(exc))
        print("base models: the folders under " + ", ".join(dict.fromkeys(str(f) for f in base_models.folders()[:2]))
              + (", and:" if base_models.allowed() else "; nothing else allowed"))
        for name in base_models.allowed():
            print(name)
        return 0
    for m in models.list_base_models():
        print(m)
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


# ── parser ───────────────────────────────────────────────────────────────────


def _add_models(sub) -> None:
    m = sub.add_parser("models", help="prepare and list base models; the ones an admin allows beside models/base")
    m.add_argument("action", choices=["fetch-default", "list", "allow", "disallow", "allowed"])
    m.add_argument("name", nargs="?", help="allow / disallow: a model hub name (org/name) or a folder (audited)")
    m.add_argument("--force", action="store_true", help="prepare the default model again")
    m.set_defaults(fn=cmd_models)


def _add_i18n(sub) -> None:
    ln = sub.add_parser("i18n", help="the interface's languages: compile / extract / check the catalogues, "
                                     "or show or set your own language")
    ln.add_argument("action", choices=["compile", "extract", "check", "language"])
    ln.add_argument("lang", nargs="?", help="language: vi or en")
    ln.set_defaults(fn=cmd_i18n)


# every command, in the order `python -m core --help` lists them (the order they came in: the stages
# interleave)
COMMANDS = (
    _add_models, datasets.add_dataset, training.add_train, datasets.add_review,
    jobs.add_jobs, evaluation.add_evaluate, playground.add_ask, datasets.add_generate,
    datasets.add_generate_stop, evaluation.add_gate, evaluation.add_score, deploy.add_export,
    deploy.add_modelfile, deploy.add_deploy, deploy.add_releases, deploy.add_quant_cost, access.add_users,
    datasets.add_endpoints, access.add_projects, access.add_demo, playground.add_conversations,
    evaluation.add_votes, _add_i18n, access.add_audit, evaluation.add_judge, training.add_sweep,
    evaluation.add_retention,
)


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
    for add in COMMANDS:
        add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    refused = args.check_args(args) if hasattr(args, "check_args") else None   # a command's own check, first
    if refused is not None:
        return refused
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
