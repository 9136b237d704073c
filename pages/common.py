"""Small helpers shared by the pages: who is signed in, the chosen project, messages (widgets only;
the work, the access checks included, is in core/)."""
from __future__ import annotations

import functools
import logging
import re
from urllib.parse import quote, urlsplit

import streamlit as st

from core import i18n, labels, paths
from core.access import accounts, binding, demo_links, projects
from core.access import principal as access
from core.access.principal import DEFAULT_PROJECT, Principal
from core.access import web
from core.access.web import COOKIE
from core.jobs import queue
from core.training import runs as train_runs

log = logging.getLogger("vitune.pages")


def auth_configured() -> bool:
    """Whether ``[auth]`` (OIDC for ``st.login``) is in .streamlit/secrets.toml."""
    try:
        return "auth" in st.secrets
    except Exception:  # no secrets file
        return False


def _headers() -> dict[str, str]:
    """The headers of this session's connection (its websocket's handshake), names in lower case."""
    try:
        return {str(k).lower(): v for k, v in st.context.headers.items()}
    except Exception:   # no connection (a script run without a browser)
        return {}


def _provider_config() -> dict:
    """The section of [auth] of the provider this st.login identity came through (its issuer, tenant…)."""
    auth = st.secrets["auth"].to_dict()
    provider = st.user.get("provider") or "default"
    section = auth.get(provider) if provider != "default" else None
    return section if isinstance(section, dict) else auth


def resolve() -> tuple[Principal | None, str | None]:
    """Who this browser session is, and why nobody when nobody: a demo link, an OIDC identity with an
    account, a signed-in local account, or — while no account exists — the machine's operator, for the
    request that the web server marked as the operator's own (``core.access.binding``)."""
    token = st.query_params.get("demo")
    if token is None:   # the address lost its ?demo= (Streamlit drops it on its way to the default page)
        token = st.session_state.get("demo_token")
    if token is not None:
        st.session_state["demo_token"] = token
        who = demo_links.resolve(token)   # checked on every run: a revoked or expired link stops at once
        return who, None if who else "demo"
    if auth_configured() and st.user.is_logged_in:
        try:
            return accounts.from_oidc(st.user.to_dict(), _provider_config()), None
        except accounts.OidcRefused as exc:
            st.session_state["oidc_refusal"] = (exc.email or st.user.get("email"), exc.reason)
            return None, "oidc"
    who = accounts.from_session(st.context.cookies.get(COOKIE))
    if who:
        return who, None
    if binding.operator_mode(_headers()):   # the operator's own connection, and no account yet
        return access.web_operator(), None
    if not accounts.any_account():
        return None, "no-account"
    return None, "signed-out"


def remember(who: Principal | None) -> None:
    """Tell the web server who this session is (what its upload gate lets in: ``core.access.web``)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    if ctx is not None:
        web.remember_session(ctx.session_id, who)


def still_signed_in() -> None:
    """A live view's own refresh runs without app.py: it asks again who this browser is (its cookie, its link,
    its company identity, operator mode), and when that is nobody now, or someone else (a role taken away),
    the whole page runs again, which shows the sign-in or what the identity may see, and nothing of the
    refresh runs (no Cancel, no Stop)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    if ctx is None or not ctx.fragment_ids_this_run:   # a run of the whole page: app.py has just resolved it
        return
    who, _why = resolve()
    if who != st.session_state.get("principal"):
        remember(who)
        st.session_state.pop("principal", None)
        st.rerun(scope="app")


def sign_in_page(why: str) -> None:
    """What a browser without an identity sees, on every page address."""
    st.title(_("ViTune Studio"))
    if why == "demo":
        st.error(_("This demo link is not valid: it has expired or been revoked. Ask the team for a new one."))
        st.stop()
    if why == "oidc":
        email, reason = st.session_state.get("oidc_refusal") or (st.user.get("email"), "")
        st.error(_("{email} has no access to this studio: {reason}.").format(email=email, reason=say(reason)))
        st.caption(_("An admin gives a company email a role (python -m core users add EMAIL --oidc --role viewer), "
                     "and releases an account bound to another identity (python -m core users unbind EMAIL)."))
        st.button(_("Sign out"), on_click=st.logout)
        st.stop()
    if why == "no-account":
        st.error(_("No account exists yet, and this browser is not the machine's operator (operator mode is for the "
                   "browser of the user who started the studio with scripts/serve.py on loopback): create the "
                   "first admin on the server with `python -m core users add NAME --role admin`."))
        st.stop()
    st.write(_("Sign in to continue."))
    here = urlsplit(getattr(st.context, "url", None) or "/").path or "/"
    label = _("Sign in with a studio account")   # outside the f-string, where the catalogue's extraction finds it
    st.html(f'<a href="/auth/signin?next={quote(here)}" target="_self" id="signin-link">{label}</a>')
    if auth_configured():
        st.button(_("Sign in with your company account"), on_click=st.login)
    st.stop()


def lang() -> str:
    """This session's interface language: the signed-in person's choice, read once per session and
    person (Vietnamese unless they chose English; always Vietnamese on a demo link)."""
    who = st.session_state.get("principal")
    name = (getattr(who, "kind", None), getattr(who, "name", None))
    if st.session_state.get("lang_for") != name or "lang" not in st.session_state:
        st.session_state["lang"] = i18n.language_of(who if isinstance(who, Principal) else None)
        st.session_state["lang_for"] = name
    return st.session_state["lang"]


def _(message: str) -> str:
    """``message`` (English, as written in the page) in this session's language, from the gettext catalogue."""
    return i18n.translate(message, lang())


def choose_language() -> None:
    """The sidebar's language choice, kept as the signed-in person's setting."""
    who = actor()
    current = lang()
    codes = list(i18n.LANGUAGES)
    picked = st.selectbox("Ngôn ngữ / Language", codes, index=codes.index(current), format_func=i18n.LANGUAGES.get,
                          key="language-choice")
    if picked != current:
        i18n.set_language(who, picked)
        st.session_state["lang"] = picked
        st.rerun()


def actor() -> Principal:
    who = st.session_state.get("principal")
    if not isinstance(who, Principal):
        st.error(_("Nobody is signed in."))
        st.stop()
    return who


def can(action: str) -> bool:
    return actor().may(action)


def project() -> str:
    """The project chosen in the sidebar (every listing shows its rows; new work goes into it)."""
    who = actor()
    if who.kind == "demo":
        return who.grant["project"]
    return st.session_state.get("project") or (DEFAULT_PROJECT if who.sees(DEFAULT_PROJECT)
                                                 else sorted(who.projects or [DEFAULT_PROJECT])[0])


_MARKDOWN = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~$:])")


def md(text) -> str:
    """Text from data (a dataset's name or rows, a model's answer) for a widget that renders markdown: every
    markdown character escaped, so a link or an image in the data shows as the text it is."""
    return _MARKDOWN.sub(r"\\\1", str(text))


def say(message) -> str:
    """A message from core (``core.i18n.M``: a verdict, a reason, a label) in the reader's language."""
    return i18n.render(message, _)


def label(table: dict, value) -> str:
    """A stored value (a job's state, a decision, a split: ``core.labels``) in the reader's language."""
    return labels.label(table, value, _)


def columns(rows: list[dict], **values: dict) -> list[dict]:
    """A table that core built, its columns (and the values of the keys in ``values``) named for the reader."""
    return labels.columns(rows, _, values)


def fail(exc: Exception) -> None:
    """A clear message instead of a traceback, for an error the studio foresees (its text is the message)."""
    # the log stays in English; log.log, not log.info: the i18n check reads any .info()/.error() call as page text
    log.log(logging.INFO, "shown to the user: %s: %s", type(exc).__name__, exc)
    if hasattr(exc, "for_page"):
        text = exc.for_page()
    else:   # a refusal core wrote as an M reads in the reader's language
        text = say(exc.args[0]) if len(exc.args) == 1 and isinstance(exc.args[0], i18n.M) else str(exc)
    st.error(text)


def unexpected(exc: Exception, where: str) -> None:
    """The page's edge: an error nobody foresaw shows one line; its trace goes to the error log."""
    from core import errors

    line = errors.report(exc, where)
    log.log(logging.ERROR, "unexpected error on %s: %s", where, line)   # the log, in English
    who = st.session_state.get("principal")
    if getattr(who, "kind", None) == "demo":   # a client: not the studio's error log, nor its path
        st.error(_("Something went wrong on our side; please try again in a moment."))
        return
    st.error(line)


def live_view(where: str, every: str = "2s"):
    """A fragment refreshed every ``every``, with an edge of its own: a refresh runs the function alone,
    outside app.py's, so an error nobody foresaw shows one line there too (``where`` names it in the log),
    and it asks again who the browser is before anything else (``still_signed_in``)."""
    def wrap(fn):
        @functools.wraps(fn)   # the fragment's identity is the function's name, so each keeps its own
        def guarded(*args, **kwargs):
            still_signed_in()   # outside the edge below: its rerun is how the page changes
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                unexpected(exc, where)
        return st.fragment(guarded, run_every=every)
    return wrap


def upload_limit_mb() -> int:
    """The largest upload the server takes, in MB (``server.maxUploadSize`` in .streamlit/config.toml)."""
    return int(st.get_option("server.maxUploadSize"))


# ── live views ───────────────────────────────────────────────────────────────
# What the pages' live fragments poll is read once per LIVE_TTL_S for every browser session of this
# server (st.cache_data is shared by all sessions), not once per open tab: eight tabs on the Train
# page cost the studio database what one costs. The key is what a listing's rows depend on: the
# studio home, and the projects the signed-in principal may see (projects.where), not who it is.

LIVE_TTL_S = 2.0


def _scope(who: Principal, here: str | None) -> str:
    return repr(projects.where(who, here))


@st.cache_data(ttl=LIVE_TTL_S, show_spinner=False, max_entries=500)
def _live_jobs(home: str, scope: str, limit: int, kind: str | None, _who: Principal, here: str | None) -> list[dict]:
    rows = queue.list_jobs(limit, kind, actor=_who, project=here)
    for job in rows:
        if job["state"] in ("queued", "running"):
            job["status"] = queue.status(job)
    return rows


@st.cache_data(ttl=LIVE_TTL_S, show_spinner=False, max_entries=500)
def _live_runs(home: str, scope: str, limit: int, _who: Principal, here: str | None) -> list[dict]:
    return train_runs.list_runs(_who, here, limit=limit)


@st.cache_data(ttl=LIVE_TTL_S, show_spinner=False, max_entries=500)
def _live_run(home: str, run_id: str, job_id: int) -> dict:
    return {"metrics": train_runs.run_metrics(run_id), "job": queue.get_job(job_id)}


def live_jobs(limit: int = 20, kind: str | None = None) -> list[dict]:
    """The newest jobs of the chosen project (of ``kind``), each queued or running one with its progress."""
    who, here = actor(), project()
    return _live_jobs(str(paths.home()), _scope(who, here), limit, kind, who, here)


def live_runs(limit: int) -> list[dict]:
    """The ``limit`` newest runs of the chosen project, with their job's state."""
    who, here = actor(), project()
    return _live_runs(str(paths.home()), _scope(who, here), limit, who, here)


def live_run(run: dict) -> dict:
    """A run's metrics (a DataFrame) and its job (a run from ``live_runs``)."""
    return _live_run(str(paths.home()), run["id"], int(run["job_id"]))


def refresh_live() -> None:
    """After an action that changes jobs or runs: the next read of the live views goes to the database."""
    for cached in (_live_jobs, _live_runs, _live_run):
        cached.clear()


def job_progress(job: dict) -> None:
    known = job["status"] if "status" in job else queue.status(job)
    p = known.get("progress") or {}
    total, done = p.get("total") or 0, p.get("done") or 0
    st.progress(min(done / total, 1.0) if total else 0.0, text=queue.describe(job, known, tr=_))


def jobs_table(kind: str | None = None, limit: int = 20):
    rows = live_jobs(limit, kind)
    if not rows:
        st.caption(_("No jobs yet."))
        return rows
    # a plain table, not a data grid: it is redrawn every 2 s in every open tab, and 15 rows need no sorting
    st.table(
        [{_("job"): j["id"], _("kind"): label(labels.JOB_KINDS, j["kind"]), _("state"): label(labels.JOB_STATES, j["state"]),
          _("run"): j["run_id"],
          _("owner"): j["owner"], _("slot"): j["slot"], _("queued at"): j["created_at"],
          _("finished"): j["finished_at"], _("error"): j["error"]}
         for j in rows],
        hide_index=True, border="horizontal",
    )
    return rows


def flash(message: str | None = None) -> None:
    """Show a message once, across a rerun: call with text before st.rerun(), without to show it."""
    if message is not None:
        st.session_state["_flash"] = message
    elif "_flash" in st.session_state:
        st.success(st.session_state.pop("_flash"))
