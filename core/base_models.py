"""Which base models the studio loads for whoever asks (app side; ``core.models`` is what workers share).

A base model named in the studio (a run's, an evaluation's without adapter, the playground's, the Datasets
page's tokenizer) is one of:

- a folder under the base-model folder: ``models/base/`` under the studio's home, or the repository's
  ``models/base/`` where the embedded default model lives (``paths.default_base_model_dir()``);
- an entry an admin has allowed (a model hub name such as ``unsloth/gemma-4-E4B-it``, or a folder, which
  allows what lies inside it too), kept in the settings (``base_models.allowed``) and audited:
  ``python -m core models allow NAME`` / ``disallow NAME`` / ``allowed``, or the Admin page.

Anything else is refused before the name is looked at on disk, in the same words whether such a folder
exists or not: the studio is no file-system oracle, another project's merged export (whose path may be
known) is no base model, and no page loads a tokenizer from a folder a browser names.
"""
from __future__ import annotations

import os
from pathlib import Path

from core import models, paths, store
from core.access.principal import Principal, require

SETTING = "base_models.allowed"


class BaseModelNotAllowed(ValueError):
    """A base model that is neither under the base-model folder nor allowed by an admin, in one line."""


def folders() -> list[Path]:
    """The base-model folders: the home's ``models/base``, the repository's (the default model's), and the default
    model's own folder (``VITUNE_DEFAULT_MODEL_DIR`` may put it elsewhere)."""
    return [_plain(paths.base_models_dir()), _plain(paths.REPO_ROOT / "models" / "base"),
            _plain(paths.default_base_model_dir())]


def allowed() -> list[str]:
    """What an admin has allowed, in the order it was allowed."""
    return list(store.get_setting(SETTING, []) or [])


def _plain(name: str | Path) -> Path:
    """The path as named, made absolute (relative to the working folder, as the loaders take it) and without
    ``..`` (links are not followed: a link an admin put under models/base is the admin's choice)."""
    return Path(os.path.normpath(Path(name).expanduser().absolute()))


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or path.is_relative_to(folder)


def is_allowed(name: str) -> bool:
    """Whether ``name`` may be loaded (``""``: the embedded default)."""
    if not name:
        return True
    entries = allowed()
    if name in entries:
        return True
    if "\x00" in name:
        return False
    path = _plain(name)
    if any(_inside(path, folder) for folder in folders()):
        return True
    return any(_inside(path, _plain(entry)) for entry in entries if entry.startswith(("/", "~", ".")))


def require_allowed(name: str | None) -> str:
    """``name`` when it may be loaded; BaseModelNotAllowed (a ValueError) naming the ways to a model otherwise,
    before anything of it is looked at on disk."""
    name = (name or "").strip()
    if not is_allowed(name):
        raise BaseModelNotAllowed(
            f"{name}: not an allowed base model (a model folder under {paths.base_models_dir()}, the default model, "
            "or a model an admin has allowed: `python -m core models allow NAME`)")
    return name


def check(name: str | None) -> str:
    """``require_allowed``, then ``core.models.check_base_model``: a model folder (with config.json) or a hub name."""
    return models.check_base_model(require_allowed(name))


def allow(name: str, *, actor: Principal) -> list[str]:
    """Allow a model hub name or a folder as a base model (admins; audited). Returns what is allowed."""
    require(actor, "settings.models")
    name = (name or "").strip()
    if not name or "\x00" in name:
        raise ValueError("give a model hub name (org/name) or a folder")
    if name.startswith(("/", "~", ".")):
        name = str(_plain(name))
    elif not models._HUB_ID.match(name):
        raise ValueError(f"{name}: neither a model hub name (org/name) nor a folder (give it as an absolute path)")
    now = allowed()
    if name not in now:
        store.set_setting(SETTING, now + [name], actor, added=name)
    return allowed()


def disallow(name: str, *, actor: Principal) -> list[str]:
    """Take a name back off the allowed list (admins; audited). Runs made from it keep their record."""
    require(actor, "settings.models")
    name = (name or "").strip()
    now = allowed()
    if name.startswith(("/", "~", ".")) and name not in now:
        name = str(_plain(name))
    if name not in now:
        raise ValueError(f"{name}: not on the allowed list ({', '.join(now) or 'empty'})")
    store.set_setting(SETTING, [n for n in now if n != name], actor, removed=name)
    return allowed()
