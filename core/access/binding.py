"""Where the studio may listen. On loopback (the default) it serves whoever sits at the machine;
beyond it, only with an admin account (so that every page needs a sign-in) and over HTTPS (so that
passwords and session cookies never cross the network in clear)."""
from __future__ import annotations

import ipaddress
from pathlib import Path

from core.access import accounts


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
