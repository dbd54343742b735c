"""Which outbound requests are allowed, as pure functions over plain data (no sockets, no DNS).

A URL that came from outside (a model host, a LoRA source's ``downloadUrl``, any redirect) may be
fetched when every hop passes :class:`OutboundPolicy`:

- its scheme is ``http`` or ``https``;
- its host is on the operator's allow-list (which may name a private mirror on purpose), or else
  every address its name resolves to is *public*: never loopback, private, link-local, CGNAT
  (100.64/10), multicast, unspecified, reserved, documentation/benchmark ranges, or a cloud
  metadata address (169.254.169.254, fd00:ec2::254). IPv6 addresses that embed an IPv4 one
  (mapped, 6to4, Teredo, NAT64) are judged by the IPv4 address they lead to.

A :class:`Credential` (an ``Authorization`` value) goes only to the hosts of its own service.
The I/O half that applies this on the address actually connected to is ``outbound.py``.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from swarmstation.domain.errors import InvalidInput

ALLOWED_SCHEMES = frozenset({"http", "https"})
MAX_REDIRECTS = 5

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Named even though the ranges below already cover them: these are what an attacker aims at.
METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


class OutboundRefused(InvalidInput):
    """A URL or an address that the policy does not allow; the message says which and why."""

    code = "outbound_refused"


@dataclass(frozen=True)
class HostRule:
    """A host name or IP literal, and optionally one port (``None``: any port)."""

    host: str
    port: int | None = None

    def matches(self, host: str, port: int | None) -> bool:
        return normalise_host(host) == self.host and (self.port is None or self.port == port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"


def normalise_host(host: str) -> str:
    """Lower case, no trailing dot, no IPv6 brackets: the form hosts are compared in."""
    return host.strip().strip("[]").rstrip(".").lower()


def parse_host_rule(entry: str) -> HostRule:
    """``example.com``, ``mirror.lan:9000``, ``127.0.0.1:8000``, ``[::1]:80`` or a URL
    (``http://minio:9000``, whose host and explicit port are taken)."""
    text = entry.strip()
    if not text:
        raise OutboundRefused("an empty host is not a host")
    if "://" not in text:
        text = f"//{text}"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise OutboundRefused(f"{entry!r} is not a host or host:port") from exc
    host = normalise_host(parts.hostname or "")
    if not host or parts.path not in ("", "/") or parts.query or parts.username:
        raise OutboundRefused(f"{entry!r} is not a host or host:port")
    return HostRule(host, port)


def parse_host_rules(entries: Iterable[str]) -> tuple[HostRule, ...]:
    return tuple(parse_host_rule(e) for e in entries if e.strip())


def parse_host_list(value: str | Iterable[str] | None) -> list[str]:
    """Hosts from a setting: a JSON list, or comma/space separated (``a.example,10.0.0.5:9000``)."""
    if value is None:
        return []
    if not isinstance(value, str):
        return [str(v).strip() for v in value if str(v).strip()]
    text = value.strip()
    if text.startswith("["):
        loaded = json.loads(text)
        if not isinstance(loaded, list):
            raise ValueError("expected a list of hosts")
        return [str(v).strip() for v in loaded if str(v).strip()]
    return [part for part in text.replace(",", " ").split() if part]


def origin_rule(url: str) -> HostRule:
    """The rule for exactly one origin's host and port (the default port when none is written)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = normalise_host(parts.hostname or "")
    if scheme not in ALLOWED_SCHEMES or not host:
        raise OutboundRefused(f"{redact(url)}: not an http(s) URL")
    return HostRule(host, parts.port or (443 if scheme == "https" else 80))


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if any(ip in net for net in _NAT64):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_problem(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public address (``None`` when it is)."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:
            problem = address_problem(inner)
            return f"an address that leads to {inner}, {problem}" if problem else None
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    for test, what in (
        (ip.is_loopback, "a loopback address"),
        (ip.is_unspecified, "an unspecified address"),
        (ip.is_link_local, "a link-local address"),
        (ip.is_multicast, "a multicast address"),
        (ip.is_private, "a private address"),
        (ip.is_reserved, "a reserved address"),
    ):
        if test:
            return what
    if not ip.is_global:  # CGNAT 100.64/10 and the other special-purpose ranges
        return "not a public address"
    return None


def redact(url: str) -> str:
    """A URL without its query, fragment and user info, for messages and records: signed URLs
    carry their credential in the query string."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparseable URL>"
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    return f"{parts.scheme}://{netloc}{parts.path}"


@dataclass(frozen=True)
class Credential:
    """An ``Authorization`` header value and the hosts it belongs to; sent to no other host."""

    authorization: str = field(repr=False)
    hosts: tuple[HostRule, ...]

    @classmethod
    def bearer(cls, token: str, hosts: Iterable[HostRule]) -> Credential:
        return cls(f"Bearer {token}", tuple(hosts))

    def belongs_to(self, host: str, port: int | None) -> bool:
        return any(rule.matches(host, port) for rule in self.hosts)


@dataclass(frozen=True)
class OutboundPolicy:
    """Where outbound requests may go. ``allow`` names hosts (or host:port) trusted on purpose:
    they skip the public-address check, so a private mirror or a local object store works."""

    allow: tuple[HostRule, ...] = ()
    max_redirects: int = MAX_REDIRECTS

    def with_allowed(self, *rules: HostRule) -> OutboundPolicy:
        return OutboundPolicy(allow=(*self.allow, *rules), max_redirects=self.max_redirects)

    def is_allow_listed(self, host: str, port: int | None) -> bool:
        return any(rule.matches(host, port) for rule in self.allow)

    def check_url(self, url: str) -> None:
        """Refuse a URL whose scheme is not http(s) or that names no host."""
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            raise OutboundRefused(f"{redact(url)}: not a valid URL") from exc
        if parts.scheme.lower() not in ALLOWED_SCHEMES:
            raise OutboundRefused(f"{redact(url)}: refused, only http and https URLs are fetched")
        if not parts.hostname:
            raise OutboundRefused(f"{redact(url)}: refused, the URL names no host")

    def check_addresses(self, host: str, port: int, addresses: Iterable[IPAddress]) -> list[IPAddress]:
        """The addresses of ``host`` that may be connected to, in order; every one must be public
        unless the host is allow-listed (a name with one private address among public ones is
        refused whole: that is how DNS rebinding looks)."""
        found = list(dict.fromkeys(addresses))
        if not found:
            raise OutboundRefused(f"{host}: refused, the name has no address")
        if self.is_allow_listed(host, port):
            return found
        for ip in found:
            problem = address_problem(ip)
            if problem is not None:
                shown = host if normalise_host(host) == str(ip) else f"{host} ({ip})"
                raise OutboundRefused(
                    f"{shown} is {problem}: refused (only public addresses are fetched unless the "
                    "operator lists the host in SWARMSTATION_OUTBOUND_ALLOW_HOSTS)"
                )
        return found
