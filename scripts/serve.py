"""Start the studio's web app: ``python scripts/serve.py [Streamlit options]``, e.g.
``--server.port 8501`` or ``--server.address 0.0.0.0 --server.sslCertFile cert.pem --server.sslKeyFile key.pem``.

- It listens on 127.0.0.1 unless told otherwise; beyond loopback it refuses to start, with one line
  and exit code 2, until an admin account exists and HTTPS is configured (``core.access.binding``).
- It serves ``app.py`` through ``st.App`` with the studio's own sign-in routes beside Streamlit's
  (``core.access.web``), so passwords go to a plain form, never through the app's websocket, and with
  the middleware that gates pages and uploads and caps request bodies.
- It tells ``core.access.binding`` the address it serves on: operator mode (no account yet) exists only
  for a studio started here on loopback, for the machine's own user (``streamlit run app.py`` has none).
- Streamlit treats an app that has a ``pages/`` folder as an old-style multipage app until some
  session has run ``app.py`` (whose ``st.navigation`` switches it over); a first visit straight to a
  bookmarked ``/train`` after a restart would get that page without ``app.py``'s sign-in and
  navigation. Saying before the server starts that this app navigates with ``st.navigation`` closes
  that gap.
- The job supervisor starts here, before the server, so that jobs queued before a restart run on
  although nobody has opened the studio yet; ``app.py`` finds the same thread and starts no other.
"""
import os
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
APP = REPO / "app.py"
DEFAULTS = {
    "server.headless": True,
    "browser.gatherUsageStats": False,
    "server.fileWatcherType": "none",   # a running studio does not reload code; workers write many files
    "server.address": "127.0.0.1",
    "client.toolbarMode": "minimal",    # no Streamlit "Deploy" button or developer menu for visitors
    # Streamlit's default is a full gc.collect() after every script run, fragment runs included: on this
    # process's heap (pandas, plotly, DuckDB, the tokenizers) ~50 ms of a core each time, which with eight
    # tabs' live views was nearly all of the server's CPU (docs/performance.md). Python's own collector
    # still runs as usual.
    "runner.postScriptGC": False,
}


def parse(argv: list[str]) -> dict:
    """``--section.option value`` and ``--section.option=value`` pairs, typed as Streamlit declares them."""
    from streamlit import config

    out, i = {}, 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise SystemExit(f"error: unexpected argument {arg!r} (give Streamlit options as --section.option VALUE)")
        key, _, value = arg[2:].partition("=")
        if not _:
            if i + 1 >= len(argv):
                raise SystemExit(f"error: {arg} needs a value")
            value, i = argv[i + 1], i + 1
        option = config._config_options_template.get(key)
        if option is None:
            raise SystemExit(f"error: unknown Streamlit option --{key}")
        kind = option.type
        if getattr(option, "multiple", False):   # e.g. --secrets.files A --secrets.files B
            out.setdefault(key, []).append(value)
        else:
            out[key] = (value.lower() in ("1", "true", "yes")) if kind is bool else kind(value) if kind in (int, float) \
                else value
        i += 1
    return out


def configured(key: str, overrides: dict):
    """An option as Streamlit will see it: the command line, STREAMLIT_* variables, then .streamlit/config.toml."""
    if key in overrides:
        return overrides[key]
    env = "STREAMLIT_" + key.upper().replace(".", "_")
    if os.environ.get(env):
        return os.environ[env]
    path = REPO / ".streamlit" / "config.toml"
    if path.exists():
        section, _, name = key.partition(".")
        return tomllib.loads(path.read_text(encoding="utf-8")).get(section, {}).get(name)
    return None


def oidc_configured(overrides: dict) -> bool:
    """Whether an [auth] section (st.login's OIDC provider) is in the secrets files Streamlit will read."""
    files = overrides.get("secrets.files") or [REPO / ".streamlit" / "secrets.toml", Path.home() / ".streamlit" / "secrets.toml"]
    for path in [files] if isinstance(files, str) else files:
        try:
            if "auth" in tomllib.loads(Path(path).read_text(encoding="utf-8")):
                return True
        except (OSError, tomllib.TOMLDecodeError):
            continue
    return False


def main(argv: list[str]) -> int:
    from streamlit.runtime.pages_manager import PagesManager

    sys.path.insert(0, str(REPO))
    from core import paths

    paths.private_files()   # the database, uploads, job folders: this user's alone (workers inherit it)
    from core.access import binding, web
    from core.jobs import supervisor

    overrides = parse(argv)
    for key, value in DEFAULTS.items():
        if configured(key, overrides) is None:
            overrides[key] = value
    address = str(configured("server.address", overrides))
    problem = binding.refusal(address, configured("server.sslCertFile", overrides),
                              configured("server.sslKeyFile", overrides))
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    PagesManager.uses_pages_directory = False
    binding.serving(address)
    supervisor.start_background(interval=2.0)

    import streamlit as st

    st.App(str(APP), routes=web.routes(oidc=oidc_configured(overrides)), middleware=web.middleware()).run(
        config=overrides)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
