"""Team access from the command line: ``users`` (accounts), ``projects``, ``demo`` (client demo links) and
``audit`` (the audit log).

``core/cli.py`` adds each command's parser (``add_…(sub)``: its arguments and their checks) in the order
``python -m core --help`` lists them; heavy libraries are imported inside the commands.
"""
from __future__ import annotations

import json
import sys

from core.cli_common import _actor, _count, _fail, _print, _write


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
        elif args.action == "unbind":
            user = accounts.unbind_oidc(args.name, actor=actor)
        else:
            user = accounts.reset_password(args.name, _password(args, f"new password for {args.name}"), actor=actor)
    except accounts.AccountError as exc:
        return _fail(str(exc))
    print(accounts.describe(user))
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


# ── parsers ──────────────────────────────────────────────────────────────────


def add_users(sub) -> None:
    us = sub.add_parser("users", help="accounts: add (the password is read from the terminal or stdin), list, "
                                      "set-role, set-projects, disable, reset-password, unbind (a company account's "
                                      "identity: its next sign-in binds it again)")
    us.add_argument("action", choices=["add", "list", "set-role", "set-projects", "disable", "reset-password", "unbind"])
    us.add_argument("name", nargs="?", help="account name (an email with --oidc)")
    us.add_argument("--role", choices=["admin", "engineer", "reviewer", "viewer"])
    us.add_argument("--oidc", action="store_true", help="an account that signs in through OIDC (st.login): no password")
    us.add_argument("--projects", nargs="*", metavar="PROJECT", help="limit the account to these projects")
    us.add_argument("--all-projects", action="store_true", help="set-projects: every project")
    us.set_defaults(fn=cmd_users)


def add_projects(sub) -> None:
    pj = sub.add_parser("projects", help="projects (one per client): list, add")
    pj.add_argument("action", choices=["list", "add"])
    pj.add_argument("name", nargs="?")
    pj.add_argument("--title")
    pj.set_defaults(fn=cmd_projects)


def add_demo(sub) -> None:
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


def add_audit(sub) -> None:
    au = sub.add_parser("audit", help="the audit log: who did what, when (filters; --csv FILE)")
    au.add_argument("--who", help="an account")
    au.add_argument("--action", help="an action or its prefix, e.g. release. or gate.override")
    au.add_argument("--subject", help="an object's id")
    au.add_argument("--limit", type=_count, default=200)
    au.add_argument("--csv")
    au.add_argument("--json", action="store_true")
    au.set_defaults(fn=cmd_audit)
