"""ViTune Studio: QLoRA fine-tuning of Gemma for a Vietnamese domain, from dataset to Ollama.

Start it with ``python scripts/serve.py`` (``bash scripts/studio.sh`` does). Every page needs a
sign-in once an account exists; a client's demo link (``?demo=TOKEN``) opens the playground for the
link's models alone. The pages a role may not use are not registered, so no address reaches them;
``core`` checks the role again for every action.
"""
from pathlib import Path

import streamlit as st

from core import paths
from core.access import projects
from core.jobs import supervisor
from pages import common
from pages.common import _

# the tab's icon is a file of ours, sent inline: a Material icon (":material/…:") makes every browser (a
# client's at a demo too) fetch it from Google's font CDN, which the team's network may not reach
ICON = Path(__file__).resolve().parent / "assets" / "vitune.svg"
st.set_page_config(page_title="ViTune Studio", page_icon=str(ICON), layout="wide")


@st.cache_resource
def _supervisor():
    # files private to this user, as scripts/serve.py makes them, for `streamlit run app.py` too; then one
    # supervisor thread per app process: it ingests worker output and starts queued jobs
    paths.private_files()
    return supervisor.start_background(interval=2.0)


_supervisor()

PAGES = [  # (file, title, icon, what it takes to see the page); titles go through the catalogue below
    ("pages/datasets.py", "Datasets", ":material/table_chart:", "read"),
    ("pages/generate.py", "Generate pairs", ":material/auto_awesome:", "dataset.generate"),
    ("pages/train.py", "Train", ":material/model_training:", "train.submit"),
    ("pages/evaluate.py", "Evaluate", ":material/analytics:", "read"),
    ("pages/playground.py", "Playground", ":material/chat:", "playground.ask"),
    ("pages/deploy.py", "Deploy", ":material/rocket_launch:", "deploy.release"),
    ("pages/admin.py", "Admin", ":material/admin_panel_settings:", "users.manage"),
]
# the navigation's titles, for the catalogue's extraction (gettext finds only literal strings)
TITLES = {"Datasets": _("Datasets"), "Generate pairs": _("Generate pairs"), "Train": _("Train"),
          "Evaluate": _("Evaluate"), "Playground": _("Playground"), "Deploy": _("Deploy"), "Admin": _("Admin")}

if st.query_params.get("signin") == "oidc" and common.auth_configured() and not st.user.is_logged_in:
    st.login()  # the sign-in form's "company account" link: off to the OIDC provider
who, why = common.resolve()
common.remember(who)   # the web server's upload gate lets in what this identity may upload, and nothing else
if who is None:  # every page address shows the sign-in, and nothing else
    st.session_state.pop("principal", None)
    show = lambda: common.sign_in_page(why)  # noqa: E731
    st.navigation([st.Page(show, title=_("Sign in"), url_path="signin", default=True)]
                  + [st.Page(show, title=_("Sign in"), url_path=f.split("/")[1][:-3]) for f, *__ in PAGES[1:]],
                  position="hidden").run()
    st.stop()
st.session_state["principal"] = who
if who.kind == "demo":   # a client's link: the playground alone, in Vietnamese
    pages = [st.Page("pages/playground.py", title=_("Playground"), icon=":material/chat:", default=True)]
else:
    pages = [st.Page(f, title=TITLES[t], icon=i, default=(n == 0))
             for n, (f, t, i, need) in enumerate(PAGES) if who.may(need)]
    with st.sidebar:
        common.choose_language()
        choices = [p["name"] for p in projects.list_projects(who)]
        if choices:
            current = st.session_state.get("project")
            st.selectbox(_("Project"), choices, index=choices.index(current) if current in choices else 0, key="project",
                         help=_("One project per client: every list shows this project's work, and new work goes here."))
        st.caption(_("Signed in as **{name}** ({role})").format(name=common.md(who.name), role=who.role))
        if who.kind == "local":
            st.html(f'<a href="/auth/signout" target="_self" id="signout-link">{_("Sign out")}</a>')
        elif who.kind == "oidc":
            st.button(_("Sign out"), on_click=st.logout)
        if supervisor.supervisor_error():
            st.warning(_("Job supervisor: {error}").format(error=supervisor.supervisor_error()))
    if who.kind == "operator":
        st.info(_("Operator mode: no account exists yet, so this browser acts as the machine's operator "
                  "**{name}** (admin) on loopback. Create the first admin with "
                  "`python -m core users add NAME --role admin`; from then on every page needs a sign-in.")
                .format(name=who.name), icon=":material/admin_panel_settings:")

page = st.navigation(pages)
try:
    page.run()
except Exception as exc:  # the edge of every page: one line for the user, the trace in the error log
    common.unexpected(exc, f"the {page.title} page")
