"""Secrets the server holds and the browser never names: the API keys of generation endpoints, the
hosts an endpoint may point at.

They come from two server-side places only, both set by whoever runs the studio's machine:

- the secrets file, ``.streamlit/secrets.toml`` under the studio's home (``$VITUNE_SECRETS`` to put it
  elsewhere; the same TOML Streamlit reads): ``[endpoints.NAME]`` tables (an endpoint and its key
  together), ``[endpoint_keys]`` (named keys an admin may attach to an endpoint added in the studio) and
  ``[endpoint_policy] allowed_hosts``;
- environment variables: ``VITUNE_ENDPOINT_KEY_<NAME>`` (a named key), ``VITUNE_ENDPOINT_HOSTS``
  (comma-separated allowed hosts).

Nothing here copies a key into ``os.environ``. ``worker_env`` removes every key from the environment a
worker inherits; the generation job that needs one gets it alone (``JOB_KEY_VAR``).
"""
from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

from core import paths

KEY_PREFIX = "VITUNE_ENDPOINT_KEY_"
HOSTS_VAR = "VITUNE_ENDPOINT_HOSTS"
JOB_KEY_VAR = "VITUNE_ENDPOINT_KEY"        # the one key a generation worker is given, for its job
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


class SecretsError(ValueError):
    pass


def secrets_path() -> Path:
    env = os.environ.get("VITUNE_SECRETS")
    return Path(env).expanduser() if env else paths.home() / ".streamlit" / "secrets.toml"


def load() -> dict:
    """The secrets file as a dict ({} when there is none). A broken file is named with its line."""
    path = secrets_path()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise SecretsError(f"{path}: cannot read the secrets file ({exc.strerror or exc})") from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise SecretsError(f"{path}: the secrets file is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise SecretsError(f"{path}: not valid TOML ({exc})") from None


def check_key(value: object, where: str) -> str:
    """A key as it may go into an Authorization header: one line of printable ASCII. The message names
    where the key was set, never the key."""
    if not isinstance(value, str) or not value.strip():
        raise SecretsError(f"{where}: the API key is empty or not a string")
    if not re.fullmatch(r"[\x21-\x7e]+", value):
        raise SecretsError(f"{where}: the API key contains a space, a line break or a non-ASCII character; "
                           "paste it again as one line")
    return value


def key_names() -> list[str]:
    """The named keys an admin may attach to an endpoint (names only)."""
    names = {k[len(KEY_PREFIX):].lower() for k in os.environ if k.startswith(KEY_PREFIX) and len(k) > len(KEY_PREFIX)}
    names |= {str(k).lower() for k in (load().get("endpoint_keys") or {})}
    return sorted(n for n in names if NAME_RE.match(n))


def named_key(name: str) -> str:
    """The value of a named key (for the worker that needs it, never for display)."""
    table = load().get("endpoint_keys") or {}
    for k, v in table.items():
        if str(k).lower() == name:
            return check_key(v, f"{secrets_path()} [endpoint_keys] {k}")
    var = KEY_PREFIX + name.upper()
    if var in os.environ:
        return check_key(os.environ[var], f"the environment variable {var}")
    raise SecretsError(f"no key named '{name}' on the server (set {var} or [endpoint_keys] {name} in "
                       f"{secrets_path()})")


def allowed_hosts() -> list[str]:
    """Hosts (``host`` or ``host:port``, lower case) that an endpoint added in the studio may point at."""
    hosts = [h.strip().lower() for h in os.environ.get(HOSTS_VAR, "").split(",") if h.strip()]
    policy = load().get("endpoint_policy") or {}
    extra = policy.get("allowed_hosts") or []
    if not isinstance(extra, list):
        raise SecretsError(f"{secrets_path()}: [endpoint_policy] allowed_hosts must be a list of host names")
    hosts += [str(h).strip().lower() for h in extra if str(h).strip()]
    return sorted(set(hosts))


def key_variables() -> set[str]:
    """Every environment variable that holds an endpoint key: the named ones and those the secrets
    file's endpoints read (``api_key_env``)."""
    out = {k for k in os.environ if k.startswith(KEY_PREFIX)} | {JOB_KEY_VAR}
    try:
        for table in (load().get("endpoints") or {}).values():
            if isinstance(table, dict) and isinstance(table.get("api_key_env"), str):
                out.add(table["api_key_env"])
    except SecretsError:
        pass
    return out


def worker_env(env: dict[str, str]) -> dict[str, str]:
    """The environment a worker starts with: the server's, without any endpoint key."""
    drop = key_variables()
    return {k: v for k, v in env.items() if k not in drop}


def scrub(text: str, secret: str | None) -> str:
    """``text`` without ``secret`` in any form it can take in a message: as is, escaped (a repr of a header
    that held it), or a piece of it on one line."""
    if not secret or len(secret) < 4:
        return text
    forms = {secret, secret.encode("unicode_escape").decode("ascii"), repr(secret)[1:-1],
             repr(secret.encode("utf-8", "replace"))[2:-1]}
    forms |= {part for part in re.split(r"\s+", secret) if len(part) >= 4}
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, "***")
    return text
