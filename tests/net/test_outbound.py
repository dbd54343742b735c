"""The outbound policy and its clients, against real local HTTP servers standing for outside hosts.

Loopback servers are "remote hosts" only when the policy allow-lists them by host:port; every
other loopback, private, link-local or metadata address, first hop or redirect, is refused."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterator

import httpx
import pytest

from swarmstation.net import outbound
from swarmstation.net.outbound import RefusedByPolicy, parse_host_list, policy_from_hosts
from swarmstation.net.policy import (
    Credential,
    HostRule,
    OutboundPolicy,
    OutboundRefused,
    address_problem,
    parse_host_rule,
    redact,
)
from tests.fakes.model_hubs import RecordingHost


@pytest.fixture
def host() -> Iterator[RecordingHost]:
    h = RecordingHost().start()
    yield h
    h.stop()


@pytest.fixture
def other() -> Iterator[RecordingHost]:
    h = RecordingHost().start()
    yield h
    h.stop()


def allowing(*hosts: RecordingHost, max_redirects: int = 5) -> OutboundPolicy:
    return OutboundPolicy(
        allow=tuple(parse_host_rule(h.hostport) for h in hosts), max_redirects=max_redirects
    )


# -- the pure policy -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "::1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "169.254.1.1",
        "fd00:ec2::254",
        "fe80::1",
        "100.64.0.1",
        "0.0.0.0",
        "::",
        "224.0.0.1",
        "ff02::1",
        "240.0.0.1",
        "255.255.255.255",
        "192.0.2.10",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "64:ff9b::a9fe:a9fe",
        "2002:7f00:1::",
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert address_problem(ipaddress.ip_address(address)) is not None
    with pytest.raises(OutboundRefused):
        OutboundPolicy().check_addresses("example.com", 443, [ipaddress.ip_address(address)])


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address: str) -> None:
    assert address_problem(ipaddress.ip_address(address)) is None


def test_one_private_address_among_public_ones_refuses_the_name() -> None:
    mixed = [ipaddress.ip_address("8.8.8.8"), ipaddress.ip_address("127.0.0.1")]
    with pytest.raises(OutboundRefused, match="loopback"):
        OutboundPolicy().check_addresses("rebind.example", 80, mixed)


def test_allow_list_entries_and_ports() -> None:
    assert parse_host_rule("Mirror.LAN.") == HostRule("mirror.lan", None)
    assert parse_host_rule("10.0.0.5:9000") == HostRule("10.0.0.5", 9000)
    assert parse_host_rule("[::1]:8080") == HostRule("::1", 8080)
    assert parse_host_rule("http://minio:9000") == HostRule("minio", 9000)
    with pytest.raises(OutboundRefused):
        parse_host_rule("http://minio:9000/bucket")
    policy = OutboundPolicy(allow=(HostRule("10.0.0.5", 9000),))
    ip = [ipaddress.ip_address("10.0.0.5")]
    assert policy.check_addresses("10.0.0.5", 9000, ip) == ip
    with pytest.raises(OutboundRefused):
        policy.check_addresses("10.0.0.5", 9001, ip)  # another port of the same host is not listed
    assert parse_host_list("a.example, 10.0.0.5:9000  b") == ["a.example", "10.0.0.5:9000", "b"]
    assert parse_host_list('["a.example", "c:1"]') == ["a.example", "c:1"]


def test_redact_drops_query_and_user_info() -> None:
    assert redact("https://u:p@cdn.example:8443/f.safetensors?X-Amz-Signature=s#x") == (
        "https://cdn.example:8443/f.safetensors"
    )


# -- the sync client -----------------------------------------------------------------------------
def test_loopback_is_refused_before_any_byte_is_sent(host: RecordingHost) -> None:
    url = host.file("/metrics", b"secret metrics")
    with outbound.sync_client(OutboundPolicy()) as http, pytest.raises(RefusedByPolicy, match="loopback"):
        http.get(url)
    assert host.requests == []


def test_a_name_is_checked_after_resolution(host: RecordingHost) -> None:
    # "localhost" is a name, not an address: it is refused for what it resolves to
    url = host.file("/f", b"x").replace("127.0.0.1", "localhost")
    with outbound.sync_client(OutboundPolicy()) as http, pytest.raises(RefusedByPolicy, match="loopback"):
        http.get(url)
    assert host.requests == []


def test_an_allow_listed_host_is_fetched(host: RecordingHost) -> None:
    url = host.file("/f", b"payload")
    with outbound.sync_client(allowing(host)) as http:
        assert http.get(url).content == b"payload"


@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://10.0.0.1/",
        "file:///etc/passwd",
    ],
)
def test_a_redirect_to_a_forbidden_place_is_refused(host: RecordingHost, target: str) -> None:
    url = host.redirect("/go", target)
    with outbound.sync_client(allowing(host)) as http, pytest.raises(httpx.HTTPError):
        http.get(url)
    assert host.paths() == ["/go"]


def test_a_redirect_to_an_unlisted_loopback_port_is_refused(
    host: RecordingHost, other: RecordingHost
) -> None:
    url = host.redirect("/go", other.file("/metrics", b"m"))
    with outbound.sync_client(allowing(host)) as http, pytest.raises(RefusedByPolicy, match="loopback"):
        http.get(url)
    assert other.requests == []


def test_redirect_loops_are_bounded(host: RecordingHost) -> None:
    host.redirect("/a", f"{host.url}/b")
    host.redirect("/b", f"{host.url}/a")
    with outbound.sync_client(allowing(host, max_redirects=3)) as http, pytest.raises(httpx.TooManyRedirects):
        http.get(f"{host.url}/a")
    assert len(host.requests) == 4  # the first request and three redirects


def test_a_credential_goes_only_to_its_own_hosts(host: RecordingHost, other: RecordingHost) -> None:
    other.refuse_authorization = True
    data = other.file("/storage/f.safetensors", b"weights")
    url = host.redirect("/api/download/1", f"{data}?sig=abc")
    cred = Credential.bearer("civitai-secret", [parse_host_rule(host.hostport)])
    with outbound.sync_client(allowing(host, other), credentials=[cred]) as http:
        # a caller's own Authorization header is not trusted either: it is replaced per hop
        resp = http.get(url, headers={"Authorization": "Bearer smuggled"})
    assert resp.content == b"weights"
    assert resp.url.path == "/storage/f.safetensors" and len(resp.history) == 1
    assert host.requests[0].headers["authorization"] == "Bearer civitai-secret"
    assert other.leaks == [] and "authorization" not in other.requests[0].headers


def test_a_third_party_first_hop_gets_no_credential(host: RecordingHost, other: RecordingHost) -> None:
    other.refuse_authorization = True
    url = other.file("/f", b"x")
    cred = Credential.bearer("civitai-secret", [parse_host_rule(host.hostport)])
    with outbound.sync_client(allowing(host, other), credentials=[cred]) as http:
        assert http.get(url).status_code == 200
    assert other.leaks == []


def test_policy_from_hosts_trusts_configured_origins(host: RecordingHost) -> None:
    policy = policy_from_hosts(["mirror.lan"], f"{host.url}/api", None)
    assert policy.is_allow_listed("mirror.lan", 443)
    assert policy.is_allow_listed("127.0.0.1", int(host.hostport.split(":")[1]))
    assert not policy.is_allow_listed("127.0.0.1", 1)


# -- the async client ----------------------------------------------------------------------------
def test_async_client_checks_every_hop_and_scopes_credentials(
    host: RecordingHost, other: RecordingHost
) -> None:
    other.refuse_authorization = True
    data = other.file("/cdn/f", b"weights")
    ok = host.redirect("/resolve/ok", data)
    bad = host.redirect("/resolve/bad", "http://169.254.169.254/latest/meta-data/iam")
    cred = Credential.bearer("hf-secret", [parse_host_rule(host.hostport)])

    async def go() -> None:
        async with outbound.async_client(allowing(host, other), credentials=[cred]) as http:
            assert (await http.get(ok)).content == b"weights"
            with pytest.raises(RefusedByPolicy, match="metadata"):
                await http.get(bad)
        async with outbound.async_client(OutboundPolicy()) as http:
            with pytest.raises(RefusedByPolicy, match="loopback"):
                await http.get(data)

    asyncio.run(go())
    assert other.leaks == [] and other.paths() == ["/cdn/f"]
    assert host.requests[0].headers["authorization"] == "Bearer hf-secret"


def test_origin_bound_client_keeps_its_token_on_its_origin(host: RecordingHost, other: RecordingHost) -> None:
    other.refuse_authorization = True
    host.redirect("/worker/v1/go", other.file("/x", b"x"))

    async def go() -> None:
        headers = {"Authorization": "Bearer worker-token"}
        async with outbound.origin_bound_async_client(host.url, headers=headers) as http:
            resp = await http.get("/worker/v1/go")
            assert resp.status_code == 302  # not followed
            with pytest.raises(RefusedByPolicy):
                await http.get(f"{other.url}/x")

    asyncio.run(go())
    assert other.requests == []
    assert host.requests[0].headers["authorization"] == "Bearer worker-token"


def test_clients_drop_idle_connections_before_the_server_does() -> None:
    """uvicorn closes an idle keep-alive connection after 5 s; a client that reused it at that
    moment got ReadError (presigned uploads in the full bench). Both worker clients expire theirs
    first."""
    import uvicorn

    server_keepalive = uvicorn.Config(app=None).timeout_keep_alive
    policy = policy_from_hosts([], "http://127.0.0.1:8000")
    guarded = outbound.async_client(policy)
    bound = outbound.origin_bound_async_client("http://127.0.0.1:8000", headers={})
    try:
        pools = [guarded._transport._pool, bound._transport.inner._pool]  # type: ignore[attr-defined]
        for pool in pools:
            assert pool._keepalive_expiry is not None
            assert pool._keepalive_expiry < server_keepalive
    finally:
        asyncio.run(guarded.aclose())
        asyncio.run(bound.aclose())
