"""The playground from the command line: ``ask`` (one question to a run or a base model, through an
inference worker) and ``conversations`` (saved conversations: save, list, show, delete, replay).

``core/cli.py`` adds each command's parser (``add_…(sub)``: its arguments and their checks) in the order
``python -m core --help`` lists them; heavy libraries are imported inside the commands.
"""
from __future__ import annotations

import json
from pathlib import Path

from core.cli_common import _actor, _fail, _print


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


# ── parsers ──────────────────────────────────────────────────────────────────


def add_ask(sub) -> None:
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


def add_conversations(sub) -> None:
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
