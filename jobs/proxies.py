"""Which peers may name the public URL (X-Forwarded-Proto, -Host, -Port): FORWARDED_ALLOW_IPS.

Behind the platform's reverse proxy the WSDL must give the URL clients use,
which only the proxy knows; any other peer could send the same headers to
point clients elsewhere, so they are believed from the configured proxies
only. Each header's last value is taken: it is the one our proxy set.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Iterable

_PORT = re.compile(r"[0-9]{1,5}")


class TrustedProxies:
    """FORWARDED_ALLOW_IPS: addresses or networks (CIDR), or `*` for any peer."""

    def __init__(self, entries: Iterable[str]):
        entries = tuple(entries)
        self.any = "*" in entries
        self.networks = tuple(ipaddress.ip_network(e, strict=False) for e in entries if e != "*")

    def trusts(self, peer: str | None) -> bool:
        if self.any:
            return True
        try:
            ip = ipaddress.ip_address((peer or "").strip("[]").split("%")[0])
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in n for n in self.networks)


def last_value(header: str | None) -> str:
    """The value the nearest proxy added to a comma-separated header."""
    return (header or "").rpartition(",")[2].strip()


def forwarded_scheme(header: str | None) -> str | None:
    value = last_value(header).lower()
    return value if value in ("http", "https") else None


def forwarded_port(header: str | None) -> int | None:
    value = last_value(header)
    return int(value) if _PORT.fullmatch(value) and 0 < int(value) < 65536 else None
