"""HTTP clients for URLs that came from outside, sync (LoRA staging) and async (the worker).

Every request, the first and each redirect hop alike, passes two checks:

1. In the transport (:class:`GuardedTransport` / :class:`GuardedAsyncTransport`), before anything
   is sent: the URL's scheme must be http(s); then credentials are set per hop: any
   ``Authorization`` header is removed, and put back only when the hop's host belongs to a
   :class:`~swarmstation.net.policy.Credential` of the client. So a Civitai token never reaches
   the storage host Civitai redirects to, nor a ``downloadUrl`` that names someone else.
2. In the network backend (``_GuardedBackend``), when a connection is opened: the host name is
   resolved *here*, every address is checked with the policy, and the connection is made to the
   checked IP literal. TLS still verifies and sends SNI for the host name (httpcore starts TLS
   with the origin's host, not with what the backend connected to) and ``Host`` is the URL's.

Why resolve in the backend: checking a name and then letting the socket layer resolve it again
is open to DNS rebinding (the first answer public, the second 127.0.0.1). Here the address that
was checked is the one connected to; a pooled connection keeps the address it was checked with.

Redirects are followed by httpx, which sends each hop through the transport again (so both
checks run on every hop), at most ``policy.max_redirects`` times (then
``httpx.TooManyRedirects``). ``trust_env`` is off: an environment proxy would make the proxy's
address the one connected to, and the target's would go unchecked.

A refusal is :class:`RefusedByPolicy`, an ``httpx.RequestError`` (so code that handles
``httpx.HTTPError`` handles it), but not a ``TransportError``: retrying does not help.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Iterable, Mapping
from typing import Any

import anyio
import httpcore
import httpx

from swarmstation.domain.errors import InvalidInput
from swarmstation.net.policy import (
    Credential,
    HostRule,
    IPAddress,
    OutboundPolicy,
    OutboundRefused,
    origin_rule,
    parse_host_list,
    parse_host_rules,
    redact,
)

__all__ = [
    "Credential",
    "OutboundPolicy",
    "RefusedByPolicy",
    "async_client",
    "origin_bound_async_client",
    "parse_host_list",
    "sync_client",
]

DEFAULT_TIMEOUT = httpx.Timeout(30.0, read=60.0)
#: Idle connections are dropped after 3 s, before uvicorn's 5 s keep-alive closes them from the
#: server's side: a request sent on a connection the server is closing fails with ReadError (seen
#: on presigned uploads to the control plane's own object store).
KEEPALIVE_EXPIRY_SECONDS = 3.0
_LIMITS = httpx.Limits(
    max_connections=100, max_keepalive_connections=20, keepalive_expiry=KEEPALIVE_EXPIRY_SECONDS
)


class RefusedByPolicy(httpx.RequestError, InvalidInput):
    """The outbound policy refused a URL or an address; the message says which and why. An httpx
    RequestError, so that code around a client treats it as one, and in the error tree."""

    code = "outbound_refused"


def policy_from_hosts(hosts: Iterable[str], *trusted_urls: str | None) -> OutboundPolicy:
    """A policy allowing ``hosts`` (host or host:port entries) and the origins of ``trusted_urls``
    (the control plane, a configured object store or source API: the operator named them)."""
    rules = list(parse_host_rules(hosts))
    rules += [origin_rule(url) for url in trusted_urls if url]
    return OutboundPolicy(allow=tuple(rules))


def _port_of(url: httpx.URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


def _prepare(request: httpx.Request, policy: OutboundPolicy, credentials: tuple[Credential, ...]) -> None:
    try:
        policy.check_url(str(request.url))
    except OutboundRefused as exc:
        raise RefusedByPolicy(str(exc), request=request) from None
    request.headers.pop("authorization", None)
    host, port = request.url.host, _port_of(request.url)
    for credential in credentials:
        if credential.belongs_to(host, port):
            request.headers["Authorization"] = credential.authorization
            break


def _addresses(infos: Iterable[tuple[Any, ...]]) -> list[IPAddress]:
    out: list[IPAddress] = []
    for info in infos:
        sockaddr = info[4]
        out.append(ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0]))
    return out


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


class _GuardedAsyncBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, policy: OutboundPolicy) -> None:
        self.policy = policy
        self.inner = httpcore.AnyIOBackend()

    async def _resolve(self, host: str, port: int, timeout: float | None) -> list[IPAddress]:
        literal = _literal(host)
        if literal is not None:
            return [literal]
        try:
            with anyio.fail_after(timeout):
                infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from exc
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        return _addresses(infos)

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        allowed = self.policy.check_addresses(host, port, await self._resolve(host, port, timeout))
        last: Exception | None = None
        for ip in allowed:
            try:
                return await self.inner.connect_tcp(
                    str(ip), port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise OutboundRefused("unix sockets are not fetched")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class _GuardedSyncBackend(httpcore.NetworkBackend):
    def __init__(self, policy: OutboundPolicy) -> None:
        self.policy = policy
        self.inner = httpcore.SyncBackend()

    def _resolve(self, host: str, port: int) -> list[IPAddress]:
        literal = _literal(host)
        if literal is not None:
            return [literal]
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        return _addresses(infos)

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        allowed = self.policy.check_addresses(host, port, self._resolve(host, port))
        last: Exception | None = None
        for ip in allowed:
            try:
                return self.inner.connect_tcp(
                    str(ip), port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        raise OutboundRefused("unix sockets are not fetched")


def _ssl_context() -> ssl.SSLContext:
    # trust_env here only means SSL_CERT_FILE / SSL_CERT_DIR (an operator's CA bundle), not proxies
    return httpx.create_ssl_context(trust_env=True)


class GuardedAsyncTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport (request mapping, exception mapping) over a connection pool whose
    network backend checks addresses. Replacing ``_pool`` is the one private detail relied on:
    httpx offers no public way to pass a network backend (httpx 0.28)."""

    def __init__(self, policy: OutboundPolicy, credentials: Iterable[Credential] = ()) -> None:
        super().__init__(trust_env=False)
        self.policy = policy
        self.credentials = tuple(credentials)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=_ssl_context(),
            max_connections=_LIMITS.max_connections,
            max_keepalive_connections=_LIMITS.max_keepalive_connections,
            keepalive_expiry=_LIMITS.keepalive_expiry,
            network_backend=_GuardedAsyncBackend(policy),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        _prepare(request, self.policy, self.credentials)
        try:
            return await super().handle_async_request(request)
        except OutboundRefused as exc:
            raise RefusedByPolicy(f"{redact(str(request.url))}: {exc}", request=request) from None


class GuardedTransport(httpx.HTTPTransport):
    """The sync twin of :class:`GuardedAsyncTransport`."""

    def __init__(self, policy: OutboundPolicy, credentials: Iterable[Credential] = ()) -> None:
        super().__init__(trust_env=False)
        self.policy = policy
        self.credentials = tuple(credentials)
        self._pool = httpcore.ConnectionPool(
            ssl_context=_ssl_context(),
            max_connections=_LIMITS.max_connections,
            max_keepalive_connections=_LIMITS.max_keepalive_connections,
            keepalive_expiry=_LIMITS.keepalive_expiry,
            network_backend=_GuardedSyncBackend(policy),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        _prepare(request, self.policy, self.credentials)
        try:
            return super().handle_request(request)
        except OutboundRefused as exc:
            raise RefusedByPolicy(f"{redact(str(request.url))}: {exc}", request=request) from None


def async_client(
    policy: OutboundPolicy,
    *,
    credentials: Iterable[Credential] = (),
    headers: Mapping[str, str] | None = None,
    timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
) -> httpx.AsyncClient:
    """A client for outside URLs: checked on every hop, redirects bounded, credentials scoped."""
    return httpx.AsyncClient(
        transport=GuardedAsyncTransport(policy, credentials),
        follow_redirects=True,
        max_redirects=policy.max_redirects,
        trust_env=False,
        headers=dict(headers or {}),
        timeout=timeout,
    )


def sync_client(
    policy: OutboundPolicy,
    *,
    credentials: Iterable[Credential] = (),
    headers: Mapping[str, str] | None = None,
    timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
) -> httpx.Client:
    """The sync twin of :func:`async_client`."""
    return httpx.Client(
        transport=GuardedTransport(policy, credentials),
        follow_redirects=True,
        max_redirects=policy.max_redirects,
        trust_env=False,
        headers=dict(headers or {}),
        timeout=timeout,
    )


class _OriginBoundTransport(httpx.AsyncBaseTransport):
    """Refuses every request that is not for one origin (scheme, host, port)."""

    def __init__(self, base_url: str) -> None:
        self.scheme = httpx.URL(base_url).scheme
        self.rule: HostRule = origin_rule(base_url)
        self.inner = httpx.AsyncHTTPTransport(limits=_LIMITS)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != self.scheme or not self.rule.matches(url.host, _port_of(url)):
            raise RefusedByPolicy(
                f"{redact(str(url))}: this client only talks to {self.scheme}://{self.rule}", request=request
            )
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def origin_bound_async_client(
    base_url: str, *, headers: Mapping[str, str], timeout: httpx.Timeout | float = DEFAULT_TIMEOUT
) -> httpx.AsyncClient:
    """A client whose default headers (a token) can only ever go to ``base_url``'s origin: other
    origins are refused and redirects are not followed."""
    return httpx.AsyncClient(
        base_url=base_url,
        headers=dict(headers),
        timeout=timeout,
        transport=_OriginBoundTransport(base_url),
        follow_redirects=False,
        trust_env=False,  # proxies from the environment would bypass the transport's check
    )
