"""Browser sessions (issue 13): the cookies' flags, CSRF on unsafe methods for cookie requests (and
not for API keys), sign-out, expiry on the control plane's clock, and sessions that outlive a
restart of the control plane because they live in the database."""

from __future__ import annotations

from http.cookies import SimpleCookie
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from swarmstation.api.app import ControlPlane, build
from swarmstation.config import Settings
from swarmstation.store.db import transaction
from swarmstation.store.models import ApiKey, BrowserSession
from tests.conftest import FakeClock
from tests.siwe_helpers import ALICE, sign_in

PLANE_SETTINGS = {"open_signup": True, "session_hours": 2}


def _set_cookies(resp: object) -> dict[str, SimpleCookie]:
    jar: dict[str, SimpleCookie] = {}
    for header in resp.headers.get_list("set-cookie"):  # type: ignore[attr-defined]
        cookie: SimpleCookie = SimpleCookie()
        cookie.load(header)
        for name in cookie:
            jar[name] = cookie
    return jar


def _keys(plane: ControlPlane) -> int:
    with transaction(plane.state.sessions) as s:
        return s.scalar(select(func.count()).select_from(ApiKey)) or 0


def test_the_cookies_flags(plane: ControlPlane, api: TestClient, clock: FakeClock) -> None:
    cookies = _set_cookies(sign_in(api, ALICE, clock.now))
    session = cookies["swarm_session"]["swarm_session"]
    csrf = cookies["swarm_csrf"]["swarm_csrf"]
    assert session["httponly"] is True and session["samesite"].lower() == "lax" and session["path"] == "/"
    assert session["max-age"] == str(2 * 3600)
    assert not session["secure"]  # plain http here: a Secure cookie would never come back
    assert not csrf["httponly"] and csrf["samesite"].lower() == "lax"  # the page's script reads it
    with transaction(plane.state.sessions) as s:
        row = s.scalars(select(BrowserSession)).one()
        assert row.token_hash != session.value and len(row.token_hash) == 64  # stored hashed


def test_cookies_are_secure_behind_https(tmp_path: Path, clock: FakeClock) -> None:
    cp = build(
        Settings(
            data_dir=tmp_path / "d",
            provider="none",
            public_url="https://studio.example",
            open_signup=True,
        ),
        provider=None,
        clock=clock,
    )
    try:
        with TestClient(cp.app, base_url="https://studio.example") as api:
            from tests.siwe_helpers import signed

            body = signed(api, ALICE, clock.now, domain="studio.example", uri="https://studio.example/")
            resp = api.post("/v1/auth/siwe", json=body)
            assert resp.status_code == 200, resp.text
            cookies = _set_cookies(resp)
            assert cookies["swarm_session"]["swarm_session"]["secure"] is True
            assert cookies["swarm_csrf"]["swarm_csrf"]["secure"] is True
    finally:
        cp.state.engine.dispose()


def test_unsafe_cookie_requests_need_the_csrf_token(
    plane: ControlPlane, api: TestClient, clock: FakeClock
) -> None:
    sign_in(api, ALICE, clock.now)
    token = api.cookies["swarm_csrf"]
    assert api.get("/v1/account/keys").status_code == 200  # safe methods need none

    missing = api.post("/v1/account/keys", json={"name": "laptop"})
    assert missing.status_code == 403 and missing.json()["code"] == "csrf_failed"
    wrong = api.post("/v1/account/keys", json={"name": "laptop"}, headers={"X-CSRF-Token": "guess"})
    assert wrong.status_code == 403
    # A cookie planted by a sibling domain, echoed in the header: not this session's token.
    api.cookies.set("swarm_csrf", "planted")
    planted = api.post("/v1/account/keys", json={"name": "laptop"}, headers={"X-CSRF-Token": "planted"})
    assert planted.status_code == 403
    api.cookies.set("swarm_csrf", token)
    assert _keys(plane) == 1  # the admin's only

    ok = api.post("/v1/account/keys", json={"name": "laptop"}, headers={"X-CSRF-Token": token})
    assert ok.status_code == 201, ok.text
    key = ok.json()
    assert api.delete(f"/v1/account/keys/{key['id']}").status_code == 403
    assert api.delete(f"/v1/account/keys/{key['id']}", headers={"X-CSRF-Token": token}).status_code == 204


def test_api_key_requests_need_no_csrf_token(plane: ControlPlane, api: TestClient, clock: FakeClock) -> None:
    sign_in(api, ALICE, clock.now)  # the client now carries a session cookie too
    created = api.post(
        "/v1/account/keys", json={"name": "ci"}, headers={"X-CSRF-Token": api.cookies["swarm_csrf"]}
    ).json()
    resp = api.post(
        "/v1/account/keys", json={"name": "script"}, headers={"Authorization": f"Bearer {created['api_key']}"}
    )
    assert resp.status_code == 201, resp.text
    api.cookies.clear()
    resp = api.post(
        "/v1/account/keys", json={"name": "cron"}, headers={"Authorization": f"Bearer {created['api_key']}"}
    )
    assert resp.status_code == 201


def test_sign_out_ends_the_session(plane: ControlPlane, api: TestClient, clock: FakeClock) -> None:
    sign_in(api, ALICE, clock.now)
    cookie = api.cookies["swarm_session"]
    csrf = api.cookies["swarm_csrf"]
    assert api.get("/v1/auth/session").status_code == 200
    assert api.post("/v1/auth/signout").status_code == 403  # a cross-site form cannot sign you out
    resp = api.post("/v1/auth/signout", headers={"X-CSRF-Token": csrf})
    assert resp.status_code == 204
    assert "swarm_session" not in api.cookies  # told to forget it
    with TestClient(plane.app, cookies={"swarm_session": cookie}) as old:
        after = old.get("/v1/auth/session")
        assert after.status_code == 401 and "sign in again" in after.json()["detail"]


def test_a_session_expires_on_the_clock(plane: ControlPlane, api: TestClient, clock: FakeClock) -> None:
    sign_in(api, ALICE, clock.now)
    assert api.get("/v1/auth/session").status_code == 200  # cached now
    clock.advance(2 * 3600 - 1)
    assert api.get("/v1/auth/session").json()["via"] == "session"
    clock.advance(1)
    assert api.get("/v1/auth/session").status_code == 401  # the cache does not outlive the expiry


def test_a_session_survives_a_restart(tmp_path: Path, database_url: str, clock: FakeClock) -> None:
    def plane() -> ControlPlane:
        return build(
            Settings(
                data_dir=tmp_path / "data", database_url=database_url, provider="none", open_signup=True
            ),
            provider=None,
            clock=clock,
        )

    first = plane()
    with TestClient(first.app) as api:
        user = sign_in(api, ALICE, clock.now).json()["user"]
        cookies = dict(api.cookies)
    first.state.engine.dispose()

    second = plane()
    try:
        with TestClient(second.app, cookies=cookies) as api:
            who = api.get("/v1/auth/session")
            assert who.status_code == 200 and who.json()["user"]["id"] == user["id"]
            headers = {"X-CSRF-Token": cookies["swarm_csrf"]}
            assert (
                api.post("/v1/account/keys", json={"name": "after restart"}, headers=headers).status_code
                == 201
            )
    finally:
        second.state.engine.dispose()


def test_a_made_up_session_cookie_is_refused(plane: ControlPlane, api: TestClient) -> None:
    api.cookies.set("swarm_session", "not-a-session")
    resp = api.get("/v1/auth/session")
    assert resp.status_code == 401 and resp.headers["www-authenticate"] == "Bearer"
    assert api.get("/v1/auth/session", headers={"Authorization": f"Bearer {plane.admin_key}"}).json()[
        "via"
    ] == ("api_key")


def test_a_cookie_request_is_checked_before_its_body_is_read(tmp_path: Path) -> None:
    import socket
    from datetime import UTC, datetime

    import httpx

    from tests.served import served
    from tests.siwe_helpers import sign, siwe_message

    with served(tmp_path, "serve", env={"SWARMSTATION_OPEN_SIGNUP": "true"}) as plane:
        with httpx.Client(base_url=plane.url, timeout=30) as http:
            issued = http.get("/v1/auth/nonce").json()
            text = siwe_message(
                ALICE, issued["nonce"], datetime.now(UTC), domain=issued["domain"], uri=issued["uri"]
            )
            resp = http.post("/v1/auth/siwe", json={"message": text, "signature": sign(ALICE, text)})
            assert resp.status_code == 200, resp.text
            session = resp.cookies["swarm_session"]
        port = int(plane.url.rsplit(":", 1)[1])
        for cookie, expected in [(f"swarm_session={session}", 403), ("swarm_session=made-up", 401)]:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                head = [
                    "POST /v1/account/keys HTTP/1.1",
                    f"Host: 127.0.0.1:{port}",
                    "Content-Type: application/json",
                    "Transfer-Encoding: chunked",
                    f"Cookie: {cookie}",  # and no X-CSRF-Token
                ]
                sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
                # One chunk of a body that never ends: an answer can only come from not reading it.
                sock.sendall(b"10000\r\n" + b"\x00" * 0x10000 + b"\r\n")
                sock.settimeout(5)
                answer = sock.recv(65536)
            assert int(answer.split(b" ", 2)[1]) == expected, answer
