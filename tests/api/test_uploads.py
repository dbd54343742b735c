"""`POST /v1/uploads` decodes the whole image within a pixel limit: 413 for too many pixels, 422
for anything that does not decode, and messages without Python reprs (issue 11, item 9)."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from swarmstation.api.app import ControlPlane
from swarmstation.store.db import transaction
from tests.conftest import FakeClock
from tests.helpers import add_user

PLANE_SETTINGS = {"max_image_pixels": 1_000_000}


@pytest.fixture
def user(plane: ControlPlane, clock: FakeClock) -> dict[str, str]:
    with transaction(plane.state.sessions) as s:
        _, key = add_user(s, clock(), "ivy")
    return {"Authorization": f"Bearer {key}"}


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims `width` x `height`: a decompression bomb's calling card."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + _chunk(b"IEND", b"")
    )


def png(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise(size, 64).convert("RGB").save(buf, "PNG")  # noise: does not compress away
    return buf.getvalue()


def upload(api: TestClient, user: dict[str, str], data: bytes, name: str = "x.png") -> tuple[int, dict]:
    r = api.post("/v1/uploads", headers=user, files={"file": (name, data, "image/png")})
    return r.status_code, r.json()


def test_a_header_that_claims_ten_billion_pixels_is_413(api: TestClient, user: dict[str, str]) -> None:
    bomb = png_header_only(100_000, 100_000)
    assert len(bomb) < 100
    status, body = upload(api, user, bomb)
    assert status == 413, body
    assert "1000000" in body["detail"]


def test_more_pixels_than_the_setting_is_413(api: TestClient, user: dict[str, str]) -> None:
    # 1200 x 1000 = 1.2 MP, within Pillow's own ceiling but above PLANE_SETTINGS' 1 MP
    status, body = upload(api, user, png_header_only(1200, 1000))
    assert status == 413, body
    assert "1200x1000" in body["detail"] and "1000000" in body["detail"]


def test_a_truncated_png_is_422(api: TestClient, user: dict[str, str]) -> None:
    whole = png((300, 300))
    status, body = upload(api, user, whole[: len(whole) // 2])
    assert status == 422, body
    assert "not a readable image" in body["detail"]


def test_a_header_without_its_pixels_is_422(api: TestClient, user: dict[str, str]) -> None:
    # Within the limit, checksums right, but the image data is far too short for 500x500.
    status, body = upload(api, user, png_header_only(500, 500))
    assert status == 422, body


@pytest.mark.parametrize(
    "data", [b"not an image", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, b"GIF89a" + b"\x00" * 30, b"\xff\xd8\xff"]
)
def test_no_python_reprs_in_the_message(api: TestClient, user: dict[str, str], data: bytes) -> None:
    status, body = upload(api, user, data)
    assert status == 422, body
    assert "<" not in body["detail"] and "0x" not in body["detail"] and "object at" not in body["detail"]


def test_a_whole_image_within_the_limit_is_accepted(api: TestClient, user: dict[str, str]) -> None:
    status, body = upload(api, user, png((1000, 1000)))  # exactly the limit
    assert status == 201, body
    assert (body["width"], body["height"]) == (1000, 1000)
