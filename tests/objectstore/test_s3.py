"""S3ObjectStore against a real S3-compatible server: moto in server mode, started by this module.

moto 5.x does not check query-string (presigned) signatures or expiry at all, and refuses CreateBucket
from a client whose region is "auto". So buckets are created with a us-east-1 client, the store under
test uses region "auto" as on R2, and presigned URLs are checked with an independent SigV4 verifier
below, not by relying on moto to refuse them.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

import boto3
import httpx
import pytest
from botocore.exceptions import ClientError

from swarmstation.config import Settings, reveal
from swarmstation.objectstore.base import BadKey, NotFound, ObjectStoreError
from swarmstation.objectstore.s3 import MiB, S3ObjectStore

ACCESS_KEY = "AKIDTESTSWARMSTATION"
SECRET_KEY = "s3cr3t-Never-Show-This-0123456789abcdef"


@pytest.fixture(scope="module")
def endpoint(s3_endpoint: str) -> str:
    return s3_endpoint


@pytest.fixture(scope="module")
def admin(endpoint: str) -> Any:
    """A plain boto3 client for setting up and inspecting the server (us-east-1: moto refuses "auto")."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )


@pytest.fixture
def bucket(admin: Any) -> str:
    name = f"test-{uuid.uuid4().hex[:16]}"
    admin.create_bucket(Bucket=name)
    return name


def make_store(endpoint: str, bucket: str, **kwargs: Any) -> S3ObjectStore:
    params: dict[str, Any] = {
        "endpoint_url": endpoint,
        "region": "auto",
        "access_key_id": ACCESS_KEY,
        "secret_access_key": SECRET_KEY,
    }
    params.update(kwargs)
    return S3ObjectStore(bucket, **params)


@pytest.fixture
def store(endpoint: str, bucket: str) -> S3ObjectStore:
    return make_store(endpoint, bucket)


def keys_in(admin: Any, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in admin.list_objects_v2(Bucket=bucket).get("Contents", []))


def write_file(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


def multipart_etag(data: bytes, part_size: int) -> str:
    """The ETag S3 gives a multipart object: MD5 of the concatenated part MD5s, then -<parts>."""
    parts = [data[i : i + part_size] for i in range(0, len(data), part_size)]
    md5s = b"".join(hashlib.md5(p).digest() for p in parts)
    return f'"{hashlib.md5(md5s).hexdigest()}-{len(parts)}"'


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def sigv4_query_valid(url: str, method: str, secret: str) -> bool:
    """Check a presigned URL's SigV4 query signature the way S3/R2 do (expiry is not checked here)."""
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    params = dict(pairs)
    if params.get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256" or params.get("X-Amz-SignedHeaders") != "host":
        return False
    _akid, date, region, service, terminator = params["X-Amz-Credential"].split("/")
    canonical_query = "&".join(
        f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(pairs) if k != "X-Amz-Signature"
    )
    canonical_request = "\n".join(
        [method, parts.path, canonical_query, f"host:{parts.netloc}\n", "host", "UNSIGNED-PAYLOAD"]
    )
    scope = f"{date}/{region}/{service}/{terminator}"
    to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            params["X-Amz-Date"],
            scope,
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    key = _hmac(_hmac(_hmac(_hmac(f"AWS4{secret}".encode(), date), region), service), terminator)
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, params.get("X-Amz-Signature", ""))


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    pairs = [(k, changes.get(k, v)) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in pairs)
    return urlunsplit(parts._replace(query=query))


# -- basic operations ----------------------------------------------------------------------------


def test_put_get_exists_size_delete(store: S3ObjectStore, admin: Any, bucket: str) -> None:
    data = b"checkpoint bytes \x00\x01\x02"
    assert not store.exists("models/a.safetensors")
    store.put_bytes("models/a.safetensors", data, content_type="application/x-safetensors")

    assert store.exists("models/a.safetensors")
    assert store.get_bytes("models/a.safetensors") == data
    assert store.size("models/a.safetensors") == len(data)
    head = admin.head_object(Bucket=bucket, Key="models/a.safetensors")
    assert head["ContentType"] == "application/x-safetensors"
    assert head["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert store.sha256_of("models/a.safetensors", compute=False) == hashlib.sha256(data).hexdigest()

    store.put_bytes("models/a.safetensors", b"new")  # overwrite
    assert store.get_bytes("models/a.safetensors") == b"new"

    store.delete("models/a.safetensors")
    assert not store.exists("models/a.safetensors")
    assert keys_in(admin, bucket) == []
    store.delete("models/a.safetensors")  # deleting again is not an error


def test_missing_key_raises_not_found(store: S3ObjectStore, tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        store.get_bytes("nope.bin")
    with pytest.raises(NotFound):
        store.size("nope.bin")
    with pytest.raises(NotFound):
        store.sha256_of("nope.bin")
    with pytest.raises(NotFound):
        store.download_file("nope.bin", tmp_path / "out" / "nope.bin")
    assert not store.exists("nope.bin")
    assert not (tmp_path / "out" / "nope.bin").exists()
    assert list((tmp_path / "out").iterdir()) == []


def test_prefix_keeps_stores_apart(endpoint: str, bucket: str, admin: Any) -> None:
    one = make_store(endpoint, bucket, prefix="/tenant-1/models/")
    two = make_store(endpoint, bucket, prefix="tenant-2")
    one.put_bytes("lora/x.safetensors", b"one")
    two.put_bytes("lora/x.safetensors", b"two")
    assert keys_in(admin, bucket) == ["tenant-1/models/lora/x.safetensors", "tenant-2/lora/x.safetensors"]
    assert one.get_bytes("lora/x.safetensors") == b"one"
    assert two.get_bytes("lora/x.safetensors") == b"two"
    assert "/tenant-1/models/lora/x.safetensors?" in one.presign_get("lora/x.safetensors", 60)
    with pytest.raises(BadKey):
        make_store(endpoint, bucket, prefix="../escape")


@pytest.mark.parametrize("key", ["../x", "a/../../x", "/etc/passwd", "", "a\nb", "a/./b", "..", "x\\..\\y"])
def test_bad_keys_are_refused_before_any_request(
    store: S3ObjectStore, admin: Any, bucket: str, key: str
) -> None:
    with pytest.raises(BadKey):
        store.put_bytes(key, b"x")
    with pytest.raises(BadKey):
        store.get_bytes(key)
    with pytest.raises(BadKey):
        store.exists(key)
    with pytest.raises(BadKey):
        store.presign_put(key, 60)
    with pytest.raises(BadKey):
        store.presign_get(key, 60)
    assert keys_in(admin, bucket) == []


# -- uploads and downloads -----------------------------------------------------------------------


def test_small_file_is_one_put_with_progress(
    store: S3ObjectStore, admin: Any, bucket: str, tmp_path: Path
) -> None:
    src = tmp_path / "small.bin"
    data = write_file(src, 300_000)
    calls: list[tuple[int, int]] = []
    store.put_file("small.bin", src, progress=lambda done, total: calls.append((done, total)))

    assert store.get_bytes("small.bin") == data
    head = admin.head_object(Bucket=bucket, Key="small.bin")
    assert head["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'  # a single PutObject, not multipart
    assert head["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert calls == [(len(data), len(data))]
    assert src.read_bytes() == data  # the source is left in place


def test_multipart_upload_above_threshold_with_progress(
    endpoint: str, bucket: str, admin: Any, tmp_path: Path
) -> None:
    store = make_store(endpoint, bucket, multipart_threshold=5 * MiB, multipart_chunk=5 * MiB)
    src = tmp_path / "big.safetensors"
    data = write_file(src, 11 * MiB)
    calls: list[tuple[int, int]] = []
    store.put_file("ckpt/big.safetensors", src, progress=lambda done, total: calls.append((done, total)))

    total = 11 * MiB
    # boto3's managed transfer reports bytes as it reads them, in pieces smaller than a part
    assert len(calls) > 3 and calls[-1] == (total, total)
    assert all(t == total for _, t in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)  # no part was retried
    head = admin.head_object(Bucket=bucket, Key="ckpt/big.safetensors")
    # Three parts of 5, 5 and 1 MiB: equal-sized parts but the last (R2's rule).
    assert head["ETag"] == multipart_etag(data, 5 * MiB)
    assert head["ContentLength"] == total
    assert head["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert store.get_bytes("ckpt/big.safetensors") == data
    assert admin.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_multipart_failure_in_callback_aborts_the_upload(
    endpoint: str, bucket: str, admin: Any, tmp_path: Path
) -> None:
    store = make_store(endpoint, bucket, multipart_threshold=5 * MiB, multipart_chunk=5 * MiB)
    src = tmp_path / "big.bin"
    write_file(src, 11 * MiB)

    def cancel(done: int, total: int) -> None:
        raise KeyboardInterrupt  # e.g. the user pressed Ctrl-C during the progress bar

    with pytest.raises(KeyboardInterrupt):
        store.put_file("big.bin", src, progress=cancel)
    assert admin.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert not store.exists("big.bin")


class FailingPartClient:
    """A real boto3 client whose second upload_part fails as the server would."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.parts = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def upload_part(self, **kwargs: Any) -> Any:
        self.parts += 1
        if self.parts == 2:
            raise ClientError(
                {"Error": {"Code": "InternalError", "Message": "part went missing"}}, "UploadPart"
            )
        return self._inner.upload_part(**kwargs)


def test_multipart_server_error_aborts_and_maps_error(
    endpoint: str, bucket: str, admin: Any, tmp_path: Path
) -> None:
    real = make_store(endpoint, bucket)
    client = FailingPartClient(real.client)
    store = S3ObjectStore(bucket, client=client, multipart_threshold=5 * MiB, multipart_chunk=5 * MiB)
    src = tmp_path / "big.bin"
    write_file(src, 11 * MiB)
    with pytest.raises(ObjectStoreError) as info:
        store.put_file("big.bin", src)
    assert not isinstance(info.value, NotFound)
    assert "InternalError" in str(info.value) and "big.bin" in str(info.value)
    assert client.parts >= 2  # parts go up in parallel: the third may have been sent too
    assert admin.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert keys_in(admin, bucket) == []


def test_part_size_keeps_equal_parts_within_the_part_limit() -> None:
    store = S3ObjectStore("b", client=object(), multipart_chunk=16 * MiB)
    assert store.part_size_for(20 * 1024 * MiB) == 16 * MiB  # 1280 parts
    big = 200 * 1024 * MiB  # 200 GiB would need 12,800 parts of 16 MiB
    size = store.part_size_for(big)
    assert size % MiB == 0 and size > 16 * MiB
    assert -(-big // size) <= 10_000
    with pytest.raises(ObjectStoreError):
        S3ObjectStore("b", client=object(), multipart_chunk=4 * MiB)  # under S3's 5 MiB minimum


def test_download_file_streams_to_place(endpoint: str, bucket: str, tmp_path: Path) -> None:
    store = make_store(endpoint, bucket, multipart_threshold=5 * MiB, multipart_chunk=5 * MiB)
    src = tmp_path / "src.bin"
    data = write_file(src, 11 * MiB)
    store.put_file("m/model.bin", src)

    dest = tmp_path / "cache" / "checkpoints" / "model.bin"
    calls: list[tuple[int, int]] = []
    n = store.download_file("m/model.bin", dest, progress=lambda done, total: calls.append((done, total)))
    assert n == len(data)
    assert dest.read_bytes() == data
    assert calls[-1] == (len(data), len(data))
    assert len(calls) > 1  # streamed in pieces, not read whole
    assert [p.name for p in dest.parent.iterdir()] == ["model.bin"]  # no temporary file left
    assert store.sha256_of("m/model.bin") == hashlib.sha256(data).hexdigest()


# -- presigned URLs ------------------------------------------------------------------------------


def test_presigned_put_then_get_bytes(store: S3ObjectStore) -> None:
    url = store.presign_put("uploads/in.png", 300)
    resp = httpx.put(url, content=b"\x89PNG fake image")
    assert resp.status_code == 200, resp.text
    assert store.get_bytes("uploads/in.png") == b"\x89PNG fake image"
    # Uploaded without our metadata: the hash is computed by streaming the object.
    assert store.sha256_of("uploads/in.png", compute=False) is None
    assert store.sha256_of("uploads/in.png") == hashlib.sha256(b"\x89PNG fake image").hexdigest()


def test_presigned_get_with_plain_http(store: S3ObjectStore, bucket: str, endpoint: str) -> None:
    store.put_bytes("models/lora.safetensors", b"lora weights")
    url = store.presign_get("models/lora.safetensors", 3600)
    assert url.startswith(f"{endpoint}/{bucket}/models/lora.safetensors?")  # path-style
    params = dict(parse_qsl(urlsplit(url).query))
    assert params["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert params["X-Amz-Expires"] == "3600"
    assert (
        params["X-Amz-Credential"].startswith(f"{ACCESS_KEY}/") and "/auto/s3/" in params["X-Amz-Credential"]
    )
    assert SECRET_KEY not in url

    resp = httpx.get(url)
    assert resp.status_code == 200
    assert resp.content == b"lora weights"
    ranged = httpx.get(url, headers={"Range": "bytes=0-3"})  # the worker cache resumes with Range
    assert ranged.status_code == 206 and ranged.content == b"lora"


def test_presigned_signatures_bind_method_key_and_secret(store: S3ObjectStore) -> None:
    # moto does not verify query signatures, so check them as S3/R2 would, independently of botocore.
    get_url = store.presign_get("models/a.bin", 600)
    put_url = store.presign_put("models/a.bin", 600)
    assert sigv4_query_valid(get_url, "GET", SECRET_KEY)
    assert sigv4_query_valid(put_url, "PUT", SECRET_KEY)

    sig = dict(parse_qsl(urlsplit(get_url).query))["X-Amz-Signature"]
    tampered = with_query(get_url, **{"X-Amz-Signature": ("0" if sig[0] != "0" else "1") + sig[1:]})
    assert not sigv4_query_valid(tampered, "GET", SECRET_KEY)
    assert not sigv4_query_valid(get_url.replace("/models/a.bin?", "/models/b.bin?"), "GET", SECRET_KEY)
    assert not sigv4_query_valid(with_query(get_url, **{"X-Amz-Expires": "604800"}), "GET", SECRET_KEY)
    assert not sigv4_query_valid(get_url, "PUT", SECRET_KEY)  # a GET URL cannot be used to upload
    assert not sigv4_query_valid(get_url, "GET", "another-secret")


@pytest.mark.parametrize("seconds", [0, -5, 7 * 24 * 3600 + 1])
def test_presign_expiry_out_of_range_is_refused(store: S3ObjectStore, seconds: int) -> None:
    with pytest.raises(ObjectStoreError):
        store.presign_get("a.bin", seconds)
    with pytest.raises(ObjectStoreError):
        store.presign_put("a.bin", seconds)


def test_presign_for_r2_is_offline_with_region_auto() -> None:
    endpoint = "https://0123abcd.r2.cloudflarestorage.com"
    path_style = S3ObjectStore("models", endpoint_url=endpoint, access_key_id="AKR2", secret_access_key="sk")
    assert path_style.region == "auto"
    url = path_style.presign_get("sdxl/base.safetensors", 86_400)
    assert url.startswith(f"{endpoint}/models/sdxl/base.safetensors?")
    assert "%2Fauto%2Fs3%2Faws4_request" in url
    assert sigv4_query_valid(url, "GET", "sk")

    virtual = S3ObjectStore(
        "models",
        endpoint_url=endpoint,
        access_key_id="AKR2",
        secret_access_key="sk",
        addressing_style="virtual",
    )
    assert virtual.presign_get("sdxl/base.safetensors", 60).startswith(
        "https://models.0123abcd.r2.cloudflarestorage.com/sdxl/base.safetensors?"
    )
    assert S3ObjectStore("b", client=object()).region == "us-east-1"  # AWS default without an R2 endpoint


# -- credentials stay secret ---------------------------------------------------------------------


def test_secret_key_never_in_errors_or_logs(endpoint: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # botocore's debug logging included
    store = make_store(endpoint, "no-such-bucket-here")
    messages: list[str] = [repr(store)]
    for action in (
        lambda: store.put_bytes("a.bin", b"x"),
        lambda: store.get_bytes("a.bin"),
        lambda: store.delete("a.bin"),
    ):
        with pytest.raises(ObjectStoreError) as info:
            action()
        messages.append(str(info.value))
    assert "NoSuchBucket" in messages[1]
    assert caplog.records, "expected debug logging to be captured"
    logged = [r.getMessage() for r in caplog.records] + [str(r.args) for r in caplog.records]
    for text in messages + logged:
        assert SECRET_KEY not in text


class EchoingClient:
    """A client whose error message echoes the secret, as a misbehaving server or proxy might."""

    def head_object(self, **kwargs: Any) -> Any:
        raise ClientError(
            {"Error": {"Code": "AccessDenied", "Message": f"bad key {SECRET_KEY}"}}, "HeadObject"
        )


def test_error_messages_are_scrubbed_of_the_secret() -> None:
    store = S3ObjectStore("b", client=EchoingClient(), secret_access_key=SECRET_KEY)
    with pytest.raises(ObjectStoreError) as info:
        store.exists("a.bin")
    assert "AccessDenied" in str(info.value)
    assert SECRET_KEY not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


# -- configuration -------------------------------------------------------------------------------


def test_from_settings(endpoint: str, bucket: str, admin: Any, tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        s3_bucket=bucket,
        s3_endpoint_url=endpoint,
        s3_region="auto",
        s3_access_key_id="AKFROMSETTINGS",
        s3_secret_access_key="secret-from-settings",
        s3_prefix="swarm/",
    )
    assert "secret-from-settings" not in repr(settings)
    store = S3ObjectStore.from_settings(settings)
    assert (store.bucket, store.endpoint_url, store.region, store.prefix) == (
        bucket,
        endpoint,
        "auto",
        "swarm",
    )
    store.put_bytes("k.bin", b"via settings")
    assert keys_in(admin, bucket) == ["swarm/k.bin"]
    url = store.presign_get("k.bin", 60)
    assert "X-Amz-Credential=AKFROMSETTINGS%2F" in url
    assert sigv4_query_valid(url, "GET", "secret-from-settings")  # signed with the configured secret

    minimal = S3ObjectStore.from_settings(Settings(data_dir=tmp_path, s3_bucket="b", s3_region=""))
    assert (minimal.endpoint_url, minimal.region, minimal.prefix) == (None, "us-east-1", "")
    with pytest.raises(ObjectStoreError):
        S3ObjectStore.from_settings(Settings(data_dir=tmp_path, s3_bucket="  "))  # blank is unset
    with pytest.raises(ObjectStoreError):
        S3ObjectStore.from_settings(Settings(data_dir=tmp_path))


def test_s3_settings_come_from_swarmstation_s3_variables(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, value in {
        "BUCKET": "from-env",
        "ENDPOINT_URL": "http://127.0.0.1:9",
        "REGION": "auto",
        "ACCESS_KEY_ID": "AKENV",
        "SECRET_ACCESS_KEY": "secret-from-env",
        "PREFIX": "p",
        "ADDRESSING_STYLE": "virtual",
    }.items():
        monkeypatch.setenv(f"SWARMSTATION_S3_{name}", value)
    settings = Settings(data_dir=tmp_path)
    assert (settings.s3_bucket, settings.s3_region, settings.s3_addressing_style) == (
        "from-env",
        "auto",
        "virtual",
    )
    assert reveal(settings.s3_secret_access_key) == "secret-from-env"
    assert "secret-from-env" not in repr(settings) and "secret-from-env" not in str(settings)
