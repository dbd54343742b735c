"""End to end on S3: `swarmstation up` with its objects in a bucket (a real moto server behind a
recording proxy) and a local worker + emulator; `swarmstation generate` follows the output's
redirect to the bucket, writes the real PNG, and its API key never reaches the bucket. A download
that fails writes no file at all."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import boto3
import pytest
from PIL import Image

from swarmstation.client import Client, ClientError
from tests.e2e.conftest import Up
from tests.s3_server import ACCESS_KEY, SECRET_KEY, create_bucket, moto_endpoint, recording_proxy

pytestmark = pytest.mark.slow


def test_generate_on_s3_writes_the_image_and_the_bucket_never_sees_the_api_key(up_factory) -> None:  # type: ignore[no-untyped-def]
    with moto_endpoint() as moto, recording_proxy(moto) as bucket_side:
        bucket = f"ss-{uuid.uuid4().hex[:12]}"
        create_bucket(moto, bucket)
        up: Up = up_factory(
            s3_bucket=bucket,
            s3_endpoint_url=bucket_side.url,
            s3_region="us-east-1",
            s3_access_key_id=ACCESS_KEY,
            s3_secret_access_key=SECRET_KEY,
            s3_prefix="swarm",
            emulator_step_seconds=0.02,
        )
        up.start()
        made = up.cli(
            "generate",
            "a red fox in the snow",
            "--tool",
            "sd15-txt2img",
            *("-i", "steps=3", "-i", "width=96", "-i", "height=64"),
            "--out",
            "fox.png",
            "--json",
        )
        assert made.returncode == 0, made.stderr
        job = json.loads(made.stdout)
        out = up.folder / "fox.png"
        assert out.stat().st_size > 0
        with Image.open(out) as img:
            assert img.format == "PNG" and img.size == (96, 64)

        # The CLI fetched the output from the bucket through the presigned URL, and the
        # bucket saw no Authorization header (httpx drops it on the cross-origin redirect).
        fetched = bucket_side.requests("GET", "/outputs/")
        assert fetched, [(r.method, r.path) for r in bucket_side.seen]
        assert all("X-Amz-Signature=" in r.path for r in fetched)
        assert all("authorization" not in r.headers for r in fetched), [r.headers for r in fetched]
        assert not any(up.admin_key in json.dumps(r.headers) + r.path for r in bucket_side.seen)

        # The output vanishes from the bucket: the download fails with the bucket's status
        # and leaves no file behind, not an empty or partial one.
        s3 = boto3.client(
            "s3",
            endpoint_url=moto,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )
        for obj in s3.list_objects_v2(Bucket=bucket, Prefix="swarm/outputs/")["Contents"]:
            s3.delete_object(Bucket=bucket, Key=obj["Key"])
        target = up.folder / "again.png"
        with Client(up.url, up.admin_key) as client, pytest.raises(ClientError, match="HTTP 404"):
            client.download(job["outputs"][0]["url"], target)
        assert not target.exists()
        assert [p.name for p in Path(up.folder).glob(".again.png*")] == []
