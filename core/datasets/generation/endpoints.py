"""Generation endpoints, app side: the OpenAI-compatible endpoints pair generation may call, by name.

An endpoint is server-side configuration. It is defined either in the secrets file (``[endpoints.NAME]``
with ``base_url``, ``model`` and ``api_key`` or ``api_key_env``, optionally ``price_in_per_mtok``,
``price_out_per_mtok``, ``structured``, ``max_tokens``, ``temperature``) or by an admin in the studio
(Admin page, ``python -m core endpoints add``), where its base URL must be on a host the server allows
and its key, if any, is one of the server's named keys (``core.secrets``). The Generate page and the
CLI pick an endpoint by name; a request goes to no other address.
"""
from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass

from core import secrets, store
from core.access.principal import Principal, require
from core.datasets.generation.documents import GenerateError
from core.datasets.generation.endpoint import Backend

SETTING = "endpoints"
FROM_FILE, FROM_STUDIO = "secrets file", "studio"
NUMBERS = ("price_in_per_mtok", "price_out_per_mtok", "temperature")


@dataclass
class Endpoint:
    name: str
    base_url: str
    model: str
    source: str                       # FROM_FILE or FROM_STUDIO
    key: str | None = None            # a named key (studio), or where the file's key comes from
    price_in_per_mtok: float = 0.0
    price_out_per_mtok: float = 0.0
    structured: bool = False
    max_tokens: int = 1024
    temperature: float = 0.7

    def public(self) -> dict:
        """What a page or the CLI may show: everything but the key itself."""
        return {"name": self.name, "base_url": self.base_url, "model": self.model, "source": self.source,
                "key": self.key or "none", "price_in_per_mtok": self.price_in_per_mtok,
                "price_out_per_mtok": self.price_out_per_mtok, "structured": self.structured,
                "max_tokens": self.max_tokens}


def _wrap(exc: secrets.SecretsError) -> GenerateError:
    return GenerateError(str(exc))


def host_of(url: str) -> str:
    """``host`` or ``host:port`` of an http(s) URL, lower case; GenerateError for anything else."""
    parts = urllib.parse.urlsplit(url or "")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise GenerateError(f"the base URL '{url}' is not an http(s) address")
    if parts.username or parts.password:
        raise GenerateError("the base URL must not carry a user name or password; use a named key")
    try:
        port = parts.port
    except ValueError:
        raise GenerateError(f"the base URL '{url}' has an invalid port") from None
    return parts.hostname.lower() + (f":{port}" if port else "")


def host_allowed(url: str, allowed: list[str]) -> bool:
    host = host_of(url)
    return host in allowed or host.split(":")[0] in allowed


def _number(table: dict, field: str, where: str, kind=float, default=0.0):
    value = table.get(field, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise GenerateError(f"{where}: {field} must be a number")
    return kind(value)


def _from_file() -> list[Endpoint]:
    try:
        tables = secrets.load().get("endpoints") or {}
    except secrets.SecretsError as exc:
        raise _wrap(exc) from None
    path = secrets.secrets_path()
    out = []
    for name, table in tables.items():
        where = f"{path} [endpoints.{name}]"
        if not isinstance(table, dict):
            raise GenerateError(f"{where}: must be a table with base_url and model")
        if not secrets.NAME_RE.match(str(name)):
            raise GenerateError(f"{where}: an endpoint name is lower-case letters, digits, '-' and '_'")
        for field in ("base_url", "model"):
            if not isinstance(table.get(field), str) or not table[field].strip():
                raise GenerateError(f"{where}: {field} is missing")
        host_of(table["base_url"])
        if "api_key" in table:
            key = "api_key in the secrets file"
        elif isinstance(table.get("api_key_env"), str):
            key = f"environment variable {table['api_key_env']}"
        else:
            key = None
        out.append(Endpoint(
            name=str(name), base_url=table["base_url"].strip(), model=table["model"].strip(), source=FROM_FILE,
            key=key, structured=bool(table.get("structured", False)),
            max_tokens=_number(table, "max_tokens", where, int, 1024),
            **{f: _number(table, f, where, default=0.7 if f == "temperature" else 0.0) for f in NUMBERS}))
    return out


def _from_studio() -> list[Endpoint]:
    return [Endpoint(**{**e, "source": FROM_STUDIO}) for e in store.get_setting(SETTING, []) or []]


def configured() -> list[Endpoint]:
    """Every endpoint, the secrets file's first (a name defined there cannot be redefined in the studio)."""
    found = _from_file()
    names = {e.name for e in found}
    return found + [e for e in _from_studio() if e.name not in names]


def get(name: str) -> Endpoint:
    for e in configured():
        if e.name == name:
            return e
    names = ", ".join(e.name for e in configured()) or "none is configured yet (docs/datasets.md: endpoints)"
    raise GenerateError(f"no generation endpoint named '{name}' (configured: {names})")


def key_of(e: Endpoint) -> str | None:
    """The endpoint's API key, for the one worker that calls it."""
    try:
        if e.source == FROM_FILE:
            table = secrets.load()["endpoints"][e.name]
            where = f"{secrets.secrets_path()} [endpoints.{e.name}]"
            if "api_key" in table:
                return secrets.check_key(table["api_key"], where)
            var = table.get("api_key_env")
            if var:
                if not os.environ.get(var):
                    raise GenerateError(f"endpoint '{e.name}': the environment variable {var} (its API key) is not "
                                        "set where the studio runs")
                return secrets.check_key(os.environ[var], f"the environment variable {var}")
            return None
        if e.key:
            return secrets.named_key(e.key)
        return None
    except secrets.SecretsError as exc:
        raise _wrap(exc) from None


def backend_of(e: Endpoint, *, max_tokens: int | None = None, temperature: float | None = None) -> Backend:
    """What the worker is told: the endpoint without its key (``JOB_KEY_VAR`` carries that, for the job)."""
    if e.source == FROM_STUDIO and not host_allowed(e.base_url, _allowed()):
        raise GenerateError(f"endpoint '{e.name}': {host_of(e.base_url)} is no longer an allowed host on this server")
    return Backend(base_url=e.base_url, model=e.model, api_key_env=secrets.JOB_KEY_VAR if e.key else "",
                   temperature=e.temperature if temperature is None else temperature,
                   max_tokens=max_tokens or e.max_tokens, structured=e.structured,
                   price_in_per_mtok=e.price_in_per_mtok, price_out_per_mtok=e.price_out_per_mtok).check()


def _allowed() -> list[str]:
    try:
        return secrets.allowed_hosts()
    except secrets.SecretsError as exc:
        raise _wrap(exc) from None


def add(name: str, base_url: str, model: str, *, key: str | None = None, price_in_per_mtok: float = 0.0,
        price_out_per_mtok: float = 0.0, structured: bool = False, max_tokens: int = 1024,
        temperature: float = 0.7, actor: Principal) -> Endpoint:
    """Add (or change) an endpoint in the studio (admins). Its host must be one the server allows and its
    key one of the server's named keys: what an admin types here never reaches another host or secret."""
    require(actor, "endpoint.manage")
    name = (name or "").strip().lower()
    if not secrets.NAME_RE.match(name):
        raise GenerateError(f"'{name}' is not an endpoint name: lower-case letters, digits, '-' and '_', up to 40")
    if name in {e.name for e in _from_file()}:
        raise GenerateError(f"endpoint '{name}' is defined in {secrets.secrets_path()}; change it there")
    allowed = _allowed()
    if not host_allowed(base_url, allowed):
        raise GenerateError(
            f"{host_of(base_url)} is not an allowed endpoint host on this server (allowed: "
            f"{', '.join(allowed) or 'none'}); whoever runs the server adds it to {secrets.HOSTS_VAR} or to "
            f"[endpoint_policy] allowed_hosts in {secrets.secrets_path()}")
    key = (key or "").strip().lower() or None
    if key is not None and key not in secrets.key_names():
        raise GenerateError(f"no key named '{key}' on the server (named keys: {', '.join(secrets.key_names()) or 'none'}); "
                            f"keys are set as {secrets.KEY_PREFIX}<NAME> or in [endpoint_keys] of the secrets file")
    e = Endpoint(name=name, base_url=base_url.strip(), model=(model or "").strip(), source=FROM_STUDIO, key=key,
                 price_in_per_mtok=float(price_in_per_mtok), price_out_per_mtok=float(price_out_per_mtok),
                 structured=bool(structured), max_tokens=int(max_tokens), temperature=float(temperature))
    backend_of(e)   # the remaining checks (model named, max_tokens)
    kept = [x for x in store.get_setting(SETTING, []) or [] if x["name"] != name]
    record = {k: v for k, v in e.__dict__.items() if k != "source"}
    store.set_setting(SETTING, sorted(kept + [record], key=lambda x: x["name"]), actor)
    return e


def remove(name: str, *, actor: Principal) -> None:
    require(actor, "endpoint.manage")
    kept = store.get_setting(SETTING, []) or []
    if name not in {x["name"] for x in kept}:
        if name in {e.name for e in _from_file()}:
            raise GenerateError(f"endpoint '{name}' is defined in {secrets.secrets_path()}; remove it there")
        raise GenerateError(f"no endpoint named '{name}' was added in the studio")
    store.set_setting(SETTING, [x for x in kept if x["name"] != name], actor)
