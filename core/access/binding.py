"""Where the studio may listen, and who is the machine's operator.

On loopback (the default) it serves the machine; beyond it, only with an admin account (so that every
page needs a sign-in) and over HTTPS (so that passwords and session cookies never cross the network in
clear).

**Operator mode**: while no account exists, the studio acts as the machine's operator (an admin) for the
operator's own browser, and for nobody else. A request is the operator's when all of these hold:

- the studio was started by ``scripts/serve.py`` (``serving``), explicitly on a loopback address;
  ``streamlit run app.py`` never is;
- the connection's peer is a loopback address and it carries no forwarding header (a reverse proxy on
  the same machine says whom it forwards for: ``X-Forwarded-For``, ``Forwarded``, ``Via``…);
- its ``Host`` is a loopback name (``localhost``, ``127.0.0.1``, ``[::1]``): a page of another site
  that got its name to resolve to 127.0.0.1 (DNS rebinding) is not the operator;
- on Linux, the socket that connected belongs to the OS user the studio runs as (``/proc/net/tcp``):
  another user of the box opening 127.0.0.1, or a proxy running as its own user, is not the operator.

The web server's middleware (``core.access.web``) checks the connection when the app's websocket
opens and, when it qualifies, marks the handshake with a header whose value is a secret of this
process (``OPERATOR_HEADER``, removed from whatever a client sends); the page passes the headers it
received to ``operator_mode``, which also checks that no account exists.
"""
from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from pathlib import Path
from typing import Mapping

from core.access import accounts

OPERATOR_HEADER = "x-vitune-operator"
FORWARDING_HEADERS = frozenset({
    "forwarded", "via", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-forwarded-port",
    "x-forwarded-server", "x-forwarded-prefix", "x-real-ip", "x-client-ip", "true-client-ip", "cf-connecting-ip",
    "x-cluster-client-ip", "fastly-client-ip", "x-original-forwarded-for", "x-forwarded"})
_served: dict[str, str] = {}


def is_loopback(address: str | None) -> bool:
    if not address or address == "localhost":
        return address == "localhost"
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def refusal(address: str, cert_file: str | None = None, key_file: str | None = None) -> str | None:
    """Why the studio must not listen on ``address`` (one line), or None when it may."""
    if is_loopback(address):
        return None
    if not accounts.any_admin():
        return (f"refusing to serve on {address}: beyond loopback every page needs a sign-in, and no admin "
                "account exists; create one first: python -m core users add NAME --role admin")
    if not (cert_file and key_file):
        return (f"refusing to serve on {address} without HTTPS: give --server.sslCertFile and --server.sslKeyFile, "
                "or keep the studio on 127.0.0.1 behind a reverse proxy that terminates TLS (docs/access.md)")
    for what, path in (("certificate", cert_file), ("key", key_file)):
        if not Path(path).is_file():
            return f"refusing to serve on {address}: the TLS {what} {path} does not exist"
    return None


# ── operator mode ────────────────────────────────────────────────────────────


def serving(address: str) -> None:
    """``scripts/serve.py`` serves the studio on ``address`` in this process (operator mode needs it)."""
    _served["address"] = str(address)
    _served["stamp"] = secrets.token_urlsafe(32)


def served_on_loopback() -> bool:
    return bool(_served) and is_loopback(_served.get("address"))


def stamp() -> str | None:
    """The value the middleware gives ``OPERATOR_HEADER`` on the operator's connections (this process's secret)."""
    return _served.get("stamp") if served_on_loopback() else None


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {str(k).lower(): v for k, v in headers.items()}


def forwarded(headers: Mapping[str, str]) -> bool:
    """Whether a request says it was forwarded for someone (a reverse proxy's headers)."""
    return any(k in FORWARDING_HEADERS for k in _lower(headers))


def loopback_host(host: str | None) -> bool:
    """Whether a ``Host`` header names this machine by a loopback name (any port)."""
    if not host:
        return False
    host = host.strip().lower()
    if host.startswith("["):
        name = host[1:host.find("]")] if "]" in host else ""
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name in ("localhost", "localhost.") or is_loopback(name)


def _proc_address(hexaddr: str) -> tuple[str, int]:
    """``0100007F:1F90`` (``/proc/net/tcp``'s little-endian words) as ``("127.0.0.1", 8080)``."""
    ip_hex, port_hex = hexaddr.split(":")
    raw = bytes.fromhex(ip_hex)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    ip = ipaddress.ip_address(words)
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return str(ip), int(port_hex, 16)


def _same(a: tuple[str, int], b) -> bool:
    try:
        ip = ipaddress.ip_address(str(b[0]).strip("[]"))
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return a == (str(ip), int(b[1]))


def socket_owner(client, server, proc: Path = Path("/proc/net")) -> int | None:
    """The OS user id of the process that opened the connection from ``client`` to ``server`` (both on this
    machine), from the kernel's table of TCP sockets; None when it cannot say."""
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 8 or fields[3] != "01":   # established connections only
                continue
            try:
                local, remote = _proc_address(fields[1]), _proc_address(fields[2])
            except ValueError:
                continue
            if _same(local, client) and _same(remote, server):
                return int(fields[7])
    return None


def operator_peer(client, server, headers: Mapping[str, str]) -> bool:
    """Whether a connection (its peer and its own address, as the web server has them, and its headers) comes
    from the machine's operator: see the module's docstring. The account check is ``operator_mode``'s."""
    if not served_on_loopback() or not client or not is_loopback(str(client[0])):
        return False
    low = _lower(headers)
    if forwarded(low) or not loopback_host(low.get("host")):
        return False
    if not Path("/proc/net/tcp").exists():   # not Linux: the OS is not asked (docs/access.md)
        return True
    return server is not None and socket_owner(client, server) == os.geteuid()


def operator_mode(headers: Mapping[str, str]) -> bool:
    """Whether the request whose headers a page received acts as the machine's operator: no account exists
    and the web server marked its connection as the operator's (``operator_peer``)."""
    low = _lower(headers)
    mark, expected = low.get(OPERATOR_HEADER), stamp()
    if not (mark and expected and hmac.compare_digest(str(mark), expected)):
        return False
    if forwarded(low) or not loopback_host(low.get("host")):
        return False
    return not accounts.any_account()
