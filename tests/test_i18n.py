"""The Vietnamese interface: every string a page shows has a Vietnamese catalogue entry, no page string
bypasses the catalogue, the six pages render in Vietnamese with no English label left, and the language
is each person's setting (Vietnamese by default; always on a demo link)."""
from __future__ import annotations

import ast
import re
import string
import subprocess
import sys

import pytest
from streamlit.testing.v1 import AppTest

from core import i18n
from core.access import principal as access
from tests.conftest import OPERATOR, REPO, person, tiny_pairs, write_jsonl

# st.* calls (and the same on columns, forms, tabs, sidebars) whose first argument or these keywords are
# words a person reads
SHOWS = {"title", "header", "subheader", "caption", "markdown", "write", "info", "warning", "error", "success",
         "toast", "button", "form_submit_button", "download_button", "link_button", "selectbox", "multiselect",
         "radio", "checkbox", "toggle", "text_input", "text_area", "number_input", "slider", "select_slider",
         "file_uploader", "chat_input", "expander", "popover", "metric", "spinner", "status", "segmented_control",
         "pills", "date_input", "color_picker", "page_link"}
WORDS_KW = {"label", "help", "placeholder", "text", "caption"}


TECH = {"Modelfile", "Top-p", "ROUGE-L", "GGUF", "Ollama", "LoRA", "QLoRA", "JSONL", "CSV"}   # names, not words


def _has_words(text: str) -> bool:
    """Whether a literal holds English words a person reads: not a name (BLEU, Top-p, max_seq_length), not
    a URL, and not Vietnamese already (an example written in Vietnamese is data, in either language)."""
    if any(ord(c) > 127 and c.isalpha() for c in text):
        return False
    text = re.sub(r"\w+://\S+", " ", text)
    words = [t for t in re.findall(r"[A-Za-z][A-Za-z0-9_'-]*", text)
             if not (t.isupper() or "_" in t or any(c.isdigit() for c in t) or t in TECH or t.upper().startswith("ROUGE"))]
    return any(len(w) >= 2 for w in words)


def _bare(node: ast.AST) -> str | None:
    """The words of a literal that does not go through ``_()``: a string constant, or an f-string whose
    own text has words (an f-string of data alone, ``f"{name}"``, shows no words of the page's)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and _has_words(node.value):
        return node.value
    if isinstance(node, ast.JoinedStr):
        own = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
        return own if _has_words(own) else None
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mod)):
        return _bare(node.left) or _bare(node.right)
    return None


def _bare_page_strings() -> list[str]:
    found = []
    for path in i18n.page_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SHOWS):
                continue
            shown = list(node.args[:1]) + [k.value for k in node.keywords if k.arg in WORDS_KW - {"placeholder"}]
            # a placeholder of one token is an example value (a name, an id, a column), not a sentence
            shown += [k.value for k in node.keywords if k.arg == "placeholder"
                      and not (isinstance(k.value, ast.Constant) and isinstance(k.value.value, str)
                               and not re.search(r"\s", k.value.value))]
            if node.func.attr == "tabs" and node.args and isinstance(node.args[0], (ast.List, ast.Tuple)):
                shown += list(node.args[0].elts)
            for arg in shown:
                words = _bare(arg)
                if words:
                    found.append(f"{path.relative_to(REPO)}:{arg.lineno}: {words[:70]!r}")
    return found


BILINGUAL = {"Ngôn ngữ / Language"}   # the language switch is labelled in both, for whoever cannot read the other


def test_no_page_string_bypasses_the_catalogue():
    assert [s for s in _bare_page_strings() if not any(repr(b) in s for b in BILINGUAL)] == []


def test_every_page_string_has_a_vietnamese_translation_with_the_same_placeholders():
    assert i18n.untranslated("vi") == []
    formatter = string.Formatter()
    fields = lambda text: sorted(f for _, f, _, _ in formatter.parse(text) if f is not None)
    vi = i18n.translations("vi")
    for message in i18n.extract():
        if message.id:
            assert fields(vi.gettext(message.id)) == fields(message.id), message.id


def test_the_catalogue_is_up_to_date_and_compiles(tmp_path):
    """What `python -m core i18n check` says, and the .mo Babel writes is the one gettext reads."""
    proc = subprocess.run([sys.executable, "-m", "core", "i18n", "check"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    mo = i18n.compile_catalogue("vi")
    assert mo.stat().st_size > 1000
    assert i18n.translate("Train", "vi") != "Train" and i18n.translate("Train", "en") == "Train"


# ── the six pages, rendered in Vietnamese ────────────────────────────────────

SIX = ["datasets", "generate", "train", "evaluate", "playground", "deploy"]


def _english_labels() -> set[str]:
    """The catalogue's English strings that Vietnamese writes differently (a page showing one is untranslated)."""
    vi = i18n.translations("vi")
    out = set()
    for message in i18n.extract():
        if message.id and "{" not in message.id and vi.gettext(message.id) != message.id:
            out.add(message.id)
    return out


def _shown(at: AppTest) -> list[str]:
    texts = []
    for kind in ("title", "header", "subheader", "caption", "markdown", "info", "warning", "error", "success"):
        texts += [str(x.value) for x in getattr(at, kind)]
    for kind in ("button", "selectbox", "text_input", "text_area", "number_input", "checkbox", "radio", "toggle",
                 "multiselect", "expander", "tabs", "metric"):
        texts += [str(x.label) for x in getattr(at, kind) if getattr(x, "label", None)]
    return texts


# pages whose tabs run lazily (only the open tab's content runs): their tab key and every tab's label
LAZY_TABS = {"evaluate": ("evaluate-tab", ["Leaderboard", "Compare", "Examples", "Preference votes", "LLM judge",
                                           "Gate thresholds"])}


def _every_tab(page: str):
    """The page, run afresh for the operator with each of its lazy tabs open in turn (once where it has
    none). Afresh, because AppTest formats a select's value outside the page's session when it runs a page
    again, in English, and then cannot find it among the Vietnamese options."""
    key, tabs = LAZY_TABS.get(page, (None, [None]))
    for tab in tabs:
        at = AppTest.from_file(str(REPO / "pages" / f"{page}.py"), default_timeout=120)
        at.session_state["principal"] = OPERATOR
        if tab is not None:
            at.session_state[key] = i18n.translate(tab, "vi")
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        yield at


@pytest.fixture
def vietnamese(monkeypatch):
    monkeypatch.delenv("VITUNE_LANGUAGE", raising=False)   # the server's default: Vietnamese


@pytest.mark.parametrize("page", SIX)
def test_the_six_pages_show_no_english_label_in_vietnamese(home, vietnamese, page):
    from core.datasets import importer

    importer.import_files([write_jsonl(home / "d.jsonl", tiny_pairs(24))], "tiny", actor=OPERATOR)
    runs = list(_every_tab(page))
    shown = [t for ran in runs for t in _shown(ran)]
    assert shown, "the page showed nothing"
    english = _english_labels()
    left = [t for t in shown if t in english]
    assert left == [], left
    title = runs[0].title[0].value
    assert title == i18n.translate(title, "vi")   # the heading is a catalogue translation


# ── what core says, on the six pages in Vietnamese ───────────────────────────
# Core builds some of what a page shows: a review's verdict, the gate's reason, a job's state and progress
# line, the columns of the tables it returns, the playground's model names. These are ``core.i18n.M``
# messages and ``core.labels`` values; in Vietnamese none of them may be left in English.

ID = re.compile(r"\b(?:ds|rv|run|eval|job|rel|exp|gen|conv|demo|prf)-[0-9a-f][0-9a-f-]*\b")


def _everything_shown(at: AppTest) -> list[str]:
    """Every text on the page: elements, labels, a select's options, and a table's or data grid's columns
    and text cells."""
    texts = _shown(at) + [str(x.value) for x in at.code]
    for kind in ("selectbox", "radio", "multiselect"):
        for x in getattr(at, kind):
            texts += [str(o) for o in x.options]   # AppTest lists the options as the page formats them
    for df in [*at.dataframe, *at.table]:
        texts += [str(c) for c in df.value.columns]
        texts += [c for col in df.value.columns for c in df.value[col].head(20).tolist() if isinstance(c, str)]
    return texts


def _english_left(texts: list[str], data: set[str]) -> list[str]:
    """The texts that still hold English words, once ids and the studio's own data (names of versions,
    people, prompt formats, models) are taken out; a text the Vietnamese catalogue writes that way is fine
    (``khe``, ``preflight``)."""
    vi = i18n.translations("vi")
    written = {vi.gettext(m.id) for m in i18n.extract() if m.id}
    left = []
    for text in dict.fromkeys(texts):
        rest = ID.sub(" ", text)
        for word in data:
            rest = rest.replace(word, " ")
        if text not in written and _has_words(rest):
            left.append(text)
    return left


@pytest.fixture
def busy_studio(home, vietnamese):
    """A studio with something of each kind: versions in every review state, runs with evaluations that
    pass and fail the gate, a queued training job."""
    from core.training import presets, runs
    from tests.conftest import approve_review, grow_studio

    grow_studio(home, 1, runs_each=2)
    from core.datasets import importer

    v, _ = importer.import_files([write_jsonl(home / "hop-dong.jsonl", tiny_pairs(24))], "hop-dong", actor=OPERATOR)
    approve_review(v["id"])
    runs.submit_train(v["id"], presets.preset(presets.DEMO_PRESET), actor=OPERATOR)
    return home


@pytest.mark.parametrize("page", SIX)
def test_what_core_says_shows_in_vietnamese_on_the_six_pages(busy_studio, page):
    import getpass

    from core import models

    texts = [t for ran in _every_tab(page) for t in _everything_shown(ran)]
    data = {"hop-dong", "base", "tester", OPERATOR.name, getpass.getuser(), "alpaca-vi", "chat", "LoRA alpha",
            models.display_name(str(paths_default())), "ViTune team (bundled samples)"}
    assert _english_left(texts, data) == []


def paths_default():
    from core import paths

    return paths.default_base_model_dir()


def test_a_job_line_and_cores_tables_read_in_vietnamese():
    from core import labels
    from core.jobs import queue

    vi = i18n.translations("vi").gettext
    job = {"id": "job-1a2b3c4d", "kind": "train", "state": "running", "created_at": 0, "started_at": 0}
    compiling = {"phase": "compiling", "phase_started": 100.0}
    assert queue.describe(job, compiling, now=142.0) == \
        "train job job-1a2b3c4d: running — compiling (the first step), 42 s so far"   # the CLI's line
    line = queue.describe(job, compiling, now=142.0, tr=vi)
    assert line == "công việc huấn luyện job-1a2b3c4d: đang chạy — đang biên dịch (bước đầu tiên), đã 42 s"
    going = {"progress": {"done": 3, "total": 40, "label": "steps", "per_s": 0.5}, "compile_s": 61.0}
    assert queue.describe(job, going, tr=vi) == ("công việc huấn luyện job-1a2b3c4d: đang chạy — 3/40 bước (0.50/s), "
                                                 "còn khoảng 1 phút 14 giây; biên dịch 61 s")
    table = labels.columns([{"field": "output", "mean_chars": 12.5, "empty": 0}], vi, {"field": labels.COLUMNS})
    assert table == [{"trường": "đầu ra (output)", "số ký tự trung bình": 12.5, "số ô trống": 0}]
    assert labels.label(labels.JOB_STATES, "queued", vi) == "đang xếp hàng"
    assert labels.label(labels.JOB_STATES, "some-new-state", vi) == "some-new-state"   # a value no table names


def test_a_message_from_core_is_english_text_and_renders_in_vietnamese(tmp_path):
    import json
    import pickle

    from core.i18n import M, render

    inner = M("its version is gone")
    m = M("evaluation {evaluation} passed the gate, but the run's dataset version is not reviewed ({why})",
          evaluation="eval-1", why=inner)
    assert m == "evaluation eval-1 passed the gate, but the run's dataset version is not reviewed (its version is gone)"
    assert json.loads(json.dumps({"m": m})) == {"m": str(m)}           # the CLI, the logs and JSON see the English
    again = pickle.loads(pickle.dumps(m))                               # the pages' shared cache keeps it whole
    assert again == m and again.template == m.template and again.params["evaluation"] == "eval-1"
    vi = i18n.translations("vi").gettext
    assert render(m, vi) == ("lượt đánh giá eval-1 đã qua cổng, nhưng phiên bản dữ liệu của lượt huấn luyện chưa "
                             "được kiểm duyệt (phiên bản dữ liệu của nó không còn)")
    assert render("plain text", vi) == "plain text" and render(None, vi) == ""
    broken = M("{n} rows", n=3)
    assert render(broken, lambda t: "{count} dòng") == "3 rows"        # a catalogue entry that lost its placeholder


# ── a person's language ──────────────────────────────────────────────────────


def test_the_language_is_each_persons_setting_vietnamese_by_default(home, vietnamese):
    lan, nam = person("lan"), person("nam")
    assert i18n.language_of(lan) == "vi" and i18n.language_of(None) == "vi"
    assert i18n.set_language(nam, "en") == "en"
    assert i18n.language_of(nam) == "en" and i18n.language_of(lan) == "vi"   # one person's choice, not everyone's
    with pytest.raises(ValueError, match="unknown language 'fr'"):
        i18n.set_language(lan, "fr")
    demo = access.Principal(name="demo-1", role="viewer", kind="demo", grant={"project": "default"})
    assert i18n.language_of(demo) == "vi"
    with pytest.raises(ValueError, match="demo link"):
        i18n.set_language(demo, "en")
    at = AppTest.from_file(str(REPO / "pages" / "train.py"), default_timeout=120)
    at.session_state["principal"] = nam
    at.run()
    assert at.title[0].value == "Train"                                     # nam reads English
    at = AppTest.from_file(str(REPO / "pages" / "train.py"), default_timeout=120)
    at.session_state["principal"] = lan
    at.run()
    assert at.title[0].value == i18n.translate("Train", "vi") != "Train"   # lan, Vietnamese


def test_the_cli_sets_the_operators_language(home, vietnamese):
    from tests.conftest import cli

    assert cli("i18n", "language", home=home).stdout.strip().endswith(": vi (Tiếng Việt)")
    assert cli("i18n", "language", "en", home=home).stdout.strip().endswith(": en (English)")
    assert i18n.language_of(access.operator()) == "en"   # the CLI acts as the machine's operator
    bad = cli("i18n", "language", "fr", home=home, check=False)
    assert bad.returncode == 2 and "unknown language 'fr'" in bad.stderr
