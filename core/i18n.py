"""The interface's languages: Vietnamese (the default) and English, through gettext catalogues.

The pages are written in English; every string a page shows goes through ``_()`` (``pages.common``),
which looks it up in ``locale/<lang>/LC_MESSAGES/vitune.po``. The catalogues are plain gettext,
kept as ``.po`` in the repository and compiled to ``.mo`` with Babel (``python -m core i18n compile``;
a stale or missing ``.mo`` is compiled when the catalogue is first loaded). ``python -m core i18n
extract`` refreshes ``locale/vitune.pot`` from the pages and merges it into each ``.po`` (new strings
come in untranslated, and ``tests/test_i18n.py`` fails until they are translated).

Each signed-in person chooses a language (a setting of theirs, kept in the store); a demo link opens
in Vietnamese.

What ``core`` itself says to a person (a review's verdict, the gate's reason, a job's progress line, a
refusal) is written as ``M("template {value}", value=…)``: an ``M`` *is* its English text (the CLI, the
logs, JSON and the audit log see a plain string), and it keeps its template and values, so a page shows
it in the reader's language with ``render(message, _)``. ``M()`` templates are extracted into the same
catalogues as the pages' ``_()`` strings. A value a message names (a file, a field, an id) stays as it is.
"""
from __future__ import annotations

import gettext
from pathlib import Path

from core import paths

DOMAIN = "vitune"
LANGUAGES = {"vi": "Tiếng Việt", "en": "English"}
DEFAULT = "vi"          # a demo link's language, and everyone's until they choose (``VITUNE_LANGUAGE`` may say otherwise)
LOCALE_DIR = paths.REPO_ROOT / "locale"

_loaded: dict[str, gettext.NullTranslations] = {}


def po_path(lang: str) -> Path:
    return LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po"


def mo_path(lang: str) -> Path:
    return po_path(lang).with_suffix(".mo")


def compile_catalogue(lang: str) -> Path:
    """``.po`` → ``.mo`` with Babel (fuzzy entries left out, as msgfmt does)."""
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    with po_path(lang).open("rb") as fh:
        catalog = read_po(fh, locale=lang, domain=DOMAIN)
    tmp = mo_path(lang).with_suffix(".mo.tmp")
    with tmp.open("wb") as fh:
        write_mo(fh, catalog, use_fuzzy=False)
    tmp.replace(mo_path(lang))
    return mo_path(lang)


def translations(lang: str) -> gettext.NullTranslations:
    """The catalogue of ``lang`` (compiled first if its ``.mo`` is missing or older than its ``.po``)."""
    lang = lang if lang in LANGUAGES else DEFAULT
    if lang not in _loaded:
        po, mo = po_path(lang), mo_path(lang)
        if po.exists() and (not mo.exists() or mo.stat().st_mtime < po.stat().st_mtime):
            compile_catalogue(lang)
        _loaded[lang] = (gettext.translation(DOMAIN, str(LOCALE_DIR), languages=[lang])
                         if mo.exists() else gettext.NullTranslations())
    return _loaded[lang]


def translate(message: str, lang: str) -> str:
    return translations(lang).gettext(message)


class M(str):
    """A message from ``core``: reads as its English text, keeps ``template`` and ``params`` for ``render``."""

    template: str
    params: dict

    def __new__(cls, template: str, **params):
        obj = super().__new__(cls, template.format(**params) if params else template)
        obj.template, obj.params = template, params
        return obj

    def __getnewargs_ex__(self):   # a pickled M (st.cache_data keeps the pages' live views) comes back whole
        return (self.template,), self.params


def render(message, tr) -> str:
    """``message`` in the reader's language: an ``M``'s template through ``tr`` (a page's ``_``), filled
    with its values (those that are ``M`` themselves rendered too); anything else as its text."""
    if not isinstance(message, M):
        return "" if message is None else str(message)
    params = {k: render(v, tr) if isinstance(v, M) else v for k, v in message.params.items()}
    try:
        return tr(message.template).format(**params)
    except (KeyError, IndexError, ValueError):   # a catalogue entry that lost a placeholder: the English text
        return str(message)


# ── a person's choice ────────────────────────────────────────────────────────


def _key(principal) -> str:
    return f"language:{principal.kind}:{principal.name}"


def server_default() -> str:
    """The language of anyone who has not chosen one: ``VITUNE_LANGUAGE`` on the server, else Vietnamese."""
    import os

    got = os.environ.get("VITUNE_LANGUAGE", DEFAULT)
    return got if got in LANGUAGES else DEFAULT


def language_of(principal) -> str:
    """The language ``principal`` chose, else the server's default; a demo link is always in Vietnamese."""
    if principal is not None and getattr(principal, "kind", None) == "demo":
        return DEFAULT
    if principal is None:
        return server_default()
    from core import store

    got = store.get_setting(_key(principal), None)
    return got if got in LANGUAGES else server_default()


def set_language(principal, lang: str) -> str:
    """Keep ``principal``'s choice of language (anyone signed in may choose their own; audited)."""
    if lang not in LANGUAGES:
        raise ValueError(f"unknown language '{lang}' (one of: {', '.join(LANGUAGES)})")
    if principal is None or principal.kind == "demo":
        raise ValueError("a demo link's language is Vietnamese; it keeps no setting")
    from core import store

    store.set_setting(_key(principal), lang, principal)
    return lang


# ── the catalogues' upkeep (``python -m core i18n …``) ───────────────────────

# where the interface's strings are written: _() in the pages, T() in the charts, M() anywhere in core
PAGE_SOURCES = ("app.py", "pages", "core/charts.py")
KEYWORDS = {"_": None, "T": None, "M": None}


def page_files() -> list[Path]:
    """The files that draw the interface (what the catalogue test reads for strings that bypass ``_()``)."""
    files = []
    for name in PAGE_SOURCES:
        path = paths.REPO_ROOT / name
        files += sorted(path.glob("*.py")) if path.is_dir() else [path]
    return files


def source_files() -> list[Path]:
    """Every file whose strings go into the catalogues: the pages, and all of core (its ``M()`` messages)."""
    pages = page_files()
    return pages + [f for f in sorted((paths.REPO_ROOT / "core").rglob("*.py")) if f not in pages]


def extract():
    """Every ``_()``, ``T()`` and ``M()`` string of the pages and core, as a Babel catalogue (with the files
    and lines it is on)."""
    from babel.messages.catalog import Catalog
    from babel.messages.extract import extract_from_file

    catalog = Catalog(project="ViTune Studio", domain=DOMAIN, charset="utf-8")
    for path in source_files():
        rel = path.relative_to(paths.REPO_ROOT).as_posix()
        for lineno, message, comments, context in extract_from_file("python", str(path), keywords=KEYWORDS):
            flags = ("python-brace-format",) if "{" in message else ()
            catalog.add(message, locations=[(rel, lineno)], flags=flags, auto_comments=comments, context=context)
    return catalog


def update() -> dict[str, int]:
    """Write ``locale/vitune.pot`` and merge it into every language's ``.po`` (new strings untranslated,
    vanished ones dropped); returns how many strings each catalogue lacks a translation for."""
    from babel.messages.pofile import read_po, write_po

    template = extract()
    pot = LOCALE_DIR / f"{DOMAIN}.pot"
    pot.parent.mkdir(parents=True, exist_ok=True)
    with pot.open("wb") as fh:
        write_po(fh, template, width=110)
    missing = {}
    for lang in LANGUAGES:
        po = po_path(lang)
        po.parent.mkdir(parents=True, exist_ok=True)
        if po.exists():
            with po.open("rb") as fh:
                catalog = read_po(fh, locale=lang, domain=DOMAIN)
        else:
            from babel.messages.catalog import Catalog

            catalog = Catalog(locale=lang, domain=DOMAIN, project="ViTune Studio", charset="utf-8")
        catalog.update(template, no_fuzzy_matching=True)
        catalog.obsolete.clear()
        with po.open("wb") as fh:
            write_po(fh, catalog, width=110, omit_header=False)
        _loaded.pop(lang, None)
        missing[lang] = len(untranslated(lang)) if lang != "en" else 0
    return missing


def untranslated(lang: str = "vi") -> list[str]:
    """The pages' strings that ``lang``'s catalogue lacks, leaves empty or marks fuzzy (English is the
    source language: its catalogue may leave every string as written)."""
    from babel.messages.pofile import read_po

    if not po_path(lang).exists():
        return [m.id for m in extract() if m.id]
    with po_path(lang).open("rb") as fh:
        catalog = read_po(fh, locale=lang, domain=DOMAIN)
    out = []
    for message in extract():
        if not message.id:
            continue
        got = catalog.get(message.id)
        if got is None or (lang != "en" and (not got.string or got.fuzzy)):
            out.append(message.id)
    return out
