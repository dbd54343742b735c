"""S3-compatible storage (AWS S3, Cloudflare R2, moto in tests) behind the `ObjectStore` interface.

Everything goes through boto3 with SigV4. Large files go through boto3's managed transfer
(s3transfer): a multipart upload in parts of one size but the last (as R2 demands), sent by a few
threads, and aborted on any failure (s3transfer's failure cleanup), so no orphaned parts are left
behind to be billed. Smaller files are one PutObject. The SHA256 of every object we upload is
stored as user metadata (`x-amz-meta-sha256`), because multipart ETags are not content hashes.

Credentials are handed to botocore and never kept on this object, logged, or put in an error message.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from swarmstation.config import Settings, reveal
from swarmstation.objectstore.base import NotFound, ObjectStoreError, RedirectTo, UploadLease, normalise_key

log = logging.getLogger(__name__)

MiB = 1024 * 1024
MIN_PART_SIZE = 5 * MiB  # S3 and R2: every part but the last is at least 5 MiB
MAX_PART_SIZE = 5 * 1024 * MiB
MAX_PARTS = 10_000
MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # SigV4 (and R2) limit
SHA256_METADATA = "sha256"  # stored as x-amz-meta-sha256
_READ_CHUNK = 1 * MiB
_NOT_FOUND_CODES = {"404", "NoSuchKey", "NotFound"}

Progress = Callable[[int, int], None]
AddressingStyle = Literal["path", "virtual", "auto"]


def _default_region(endpoint_url: str | None) -> str:
    if endpoint_url and ".r2.cloudflarestorage.com" in endpoint_url:
        return "auto"
    return "us-east-1"


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class _ProgressAborted(Exception):
    """Raised inside the transfer when the caller's progress callback raised: an ordinary
    exception, so that s3transfer fails the transfer (and aborts the upload) even for a
    KeyboardInterrupt, which it would not catch in its threads."""


class _ProgressRelay:
    """An s3transfer subscriber that adds up the bytes sent and calls `progress(done, total)`."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress = progress
        self.total = total
        self.done = 0
        self.failure: BaseException = _ProgressAborted()
        self._lock = threading.Lock()

    def on_queued(self, future: Any, **kwargs: Any) -> None:
        pass

    def on_progress(self, future: Any, bytes_transferred: int, **kwargs: Any) -> None:
        with self._lock:
            self.done += bytes_transferred
            if self.progress is None:
                return
            try:
                self.progress(self.done, self.total)
            except BaseException as exc:
                self.failure = exc
                raise _ProgressAborted from None

    def on_done(self, future: Any, **kwargs: Any) -> None:
        pass


class S3ObjectStore:
    """An S3 bucket (optionally a prefix within it) as the object store."""

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        prefix: str = "",
        addressing_style: AddressingStyle = "path",
        multipart_threshold: int = 64 * MiB,
        multipart_chunk: int = 16 * MiB,
        max_concurrency: int = 4,
        client: Any = None,
    ) -> None:
        if not bucket:
            raise ObjectStoreError("an S3 bucket name is required")
        if not MIN_PART_SIZE <= multipart_chunk <= MAX_PART_SIZE:
            raise ObjectStoreError(f"multipart_chunk must be between 5 MiB and 5 GiB, got {multipart_chunk}")
        if multipart_threshold < 0:
            raise ObjectStoreError("multipart_threshold must not be negative")
        if max_concurrency < 1:
            raise ObjectStoreError("max_concurrency must be at least 1")
        if addressing_style not in ("path", "virtual", "auto"):
            raise ObjectStoreError(
                f"addressing_style must be path, virtual or auto, not {addressing_style!r}"
            )
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.region = region or _default_region(endpoint_url)
        self.prefix = normalise_key(prefix.strip("/")) if prefix.strip("/") else ""
        self.multipart_threshold = multipart_threshold
        self.multipart_chunk = multipart_chunk
        self.max_concurrency = max_concurrency
        # Kept only so that error messages can be scrubbed of it should a library ever echo it.
        self._scrub = [s for s in (secret_access_key,) if s]
        if client is None:
            import boto3
            from botocore.config import Config

            config = Config(
                signature_version="s3v4",
                s3={"addressing_style": addressing_style},
                # boto3 >= 1.36 adds CRC32/CRC64NVME checksums (aws-chunked trailers) to every upload
                # by default ("when_supported"). R2 supports only some algorithm/type combinations
                # (CRC32, SHA* composite-only, CRC64NVME full-object-only) and R2 users report rejected
                # uploads with the new defaults. Integrity is covered by our own SHA256 (metadata,
                # verified after download), so only send checksums where an operation requires them.
                # moto accepts both settings.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                retries={"max_attempts": 5, "mode": "standard"},
            )
            client = boto3.client(
                "s3",
                endpoint_url=endpoint_url,
                region_name=self.region,
                aws_access_key_id=access_key_id,
                aws_secret_access_key=secret_access_key,
                config=config,
            )
        self.client = client

    def __repr__(self) -> str:
        return (
            f"S3ObjectStore(bucket={self.bucket!r}, endpoint_url={self.endpoint_url!r}, "
            f"prefix={self.prefix!r})"
        )

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> S3ObjectStore:
        """The bucket the settings name (`s3_*`, from SWARMSTATION_S3_* variables)."""
        if not settings.s3_bucket:
            raise ObjectStoreError("no S3 bucket is configured (SWARMSTATION_S3_BUCKET)")
        kwargs: dict[str, Any] = {
            "endpoint_url": settings.s3_endpoint_url,
            "region": settings.s3_region,
            "access_key_id": settings.s3_access_key_id,
            "secret_access_key": reveal(settings.s3_secret_access_key),
            "prefix": settings.s3_prefix,
            "addressing_style": settings.s3_addressing_style,
        }
        kwargs.update(overrides)
        return cls(settings.s3_bucket, **kwargs)

    # -- keys and errors ------------------------------------------------------------------------
    def object_key(self, key: str) -> str:
        """The full key in the bucket: the normalised key under the prefix."""
        key = normalise_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _clean(self, text: str) -> str:
        for secret in self._scrub:
            text = text.replace(secret, "***")
        return text

    def _error(self, exc: Exception, action: str, key: str | None) -> ObjectStoreError | NotFound:
        from botocore.exceptions import ClientError

        where = f"s3://{self.bucket}/{key}" if key is not None else f"s3://{self.bucket}"
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", "")) or "unknown"
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in _NOT_FOUND_CODES and key is not None:
                return NotFound(key)
            message = str(err.get("Message", "")) or "no message"
            text = f"S3 {action} of {where} failed: {code} (HTTP {status}): {message}"
        else:
            text = f"S3 {action} of {where} failed: {type(exc).__name__}: {exc}"
        return ObjectStoreError(self._clean(text))

    def _call(self, action: str, key: str | None, fn: Callable[..., Any], **params: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(Bucket=self.bucket, **params)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, action, key) from None

    # -- the ObjectStore interface --------------------------------------------------------------
    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        full = self.object_key(key)
        log.debug("s3 put %s (%d bytes)", full, len(data))
        self._call(
            "upload",
            key,
            self.client.put_object,
            Key=full,
            Body=data,
            ContentType=content_type,
            Metadata={SHA256_METADATA: hashlib.sha256(data).hexdigest()},
        )

    def put_file(
        self,
        key: str,
        source: Path,
        *,
        content_type: str = "application/octet-stream",
        progress: Progress | None = None,
        sha256: str | None = None,
    ) -> None:
        """Upload a local file (left in place); multipart above `multipart_threshold` bytes.

        `progress(done, total)` is called as bytes are sent: once for a single PUT, as each piece
        is read for a multipart upload (from the transfer's threads, one call at a time; `done` goes
        back down if a part is retried). An exception raised by `progress` aborts the upload and is
        raised here. `sha256`, when the
        caller already knows it, saves a read of the file; it is stored as object metadata.
        """
        full = self.object_key(key)
        source = Path(source)
        total = source.stat().st_size
        digest = sha256 or _sha256_file(source)
        metadata = {SHA256_METADATA: digest}
        if total <= self.multipart_threshold:
            log.debug("s3 put %s from %s (%d bytes)", full, source, total)
            with source.open("rb") as fh:
                self._call(
                    "upload",
                    key,
                    self.client.put_object,
                    Key=full,
                    Body=fh,
                    ContentLength=total,
                    ContentType=content_type,
                    Metadata=metadata,
                )
            if progress is not None:
                progress(total, total)
            return
        self._multipart_upload(key, full, source, total, content_type, metadata, progress)

    def part_size_for(self, total: int) -> int:
        """Equal-sized parts (R2's rule), grown in whole MiB when 10,000 would not be enough."""
        size = self.multipart_chunk
        if math.ceil(total / size) > MAX_PARTS:
            size = math.ceil(total / MAX_PARTS / MiB) * MiB
        return size

    def _multipart_upload(
        self,
        key: str,
        full: str,
        source: Path,
        total: int,
        content_type: str,
        metadata: dict[str, str],
        progress: Progress | None,
    ) -> None:
        from boto3.s3.transfer import TransferConfig, create_transfer_manager
        from botocore.exceptions import BotoCoreError, ClientError

        part_size = self.part_size_for(total)
        config = TransferConfig(
            multipart_threshold=1,  # the size decision is ours (put_file)
            multipart_chunksize=part_size,
            max_concurrency=self.max_concurrency,
            # "classic" is s3transfer: the CRT client (when awscrt is installed) would make its own
            # part sizes and retries.
            preferred_transfer_client="classic",
        )
        sent = _ProgressRelay(progress, total)
        log.info("s3 multipart upload of %s: %d bytes in parts of %d", full, total, part_size)
        try:
            with create_transfer_manager(self.client, config) as manager:
                future = manager.upload(
                    str(source),
                    self.bucket,
                    full,
                    extra_args={"ContentType": content_type, "Metadata": metadata},
                    subscribers=[sent] if progress is not None else None,
                )
                future.result()
        except _ProgressAborted:
            raise sent.failure from None  # what the progress callback raised (e.g. KeyboardInterrupt)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "multipart upload", key) from None
        except OSError as exc:  # the source could not be read
            raise ObjectStoreError(f"upload of {source} failed: {exc}") from exc
        log.info("s3 multipart upload of %s complete", full)

    def get_bytes(self, key: str) -> bytes:
        full = self.object_key(key)
        resp = self._call("download", key, self.client.get_object, Key=full)
        try:
            body: bytes = resp["Body"].read()
        finally:
            resp["Body"].close()
        return body

    def download_file(self, key: str, path: Path, progress: Progress | None = None) -> int:
        """Stream an object to `path` through a temporary name in the same folder; returns its size."""
        from botocore.exceptions import BotoCoreError

        full = self.object_key(key)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        resp = self._call("download", key, self.client.get_object, Key=full)
        total = int(resp.get("ContentLength") or 0)
        body = resp["Body"]
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        done = 0
        try:
            with os.fdopen(fd, "wb") as fh:
                try:
                    for chunk in body.iter_chunks(_READ_CHUNK):
                        fh.write(chunk)
                        done += len(chunk)
                        if progress is not None:
                            progress(done, total)
                except BotoCoreError as exc:
                    raise self._error(exc, "download", key) from None
            if total and done != total:
                raise ObjectStoreError(
                    f"download of s3://{self.bucket}/{key} stopped at {done}/{total} bytes"
                )
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        finally:
            body.close()
        return done

    def _head(self, key: str) -> dict[str, Any]:
        head: dict[str, Any] = self._call("lookup", key, self.client.head_object, Key=self.object_key(key))
        return head

    def exists(self, key: str) -> bool:
        try:
            self._head(key)
        except NotFound:
            return False
        return True

    def size(self, key: str) -> int:
        return int(self._head(key)["ContentLength"])

    def sha256_of(self, key: str, *, compute: bool = True) -> str | None:
        """The stored SHA256 (x-amz-meta-sha256); without one, hash the object by streaming it
        (unless `compute` is false, then None)."""
        head = self._head(key)
        stored = (head.get("Metadata") or {}).get(SHA256_METADATA)
        if stored:
            return str(stored)
        if not compute:
            return None
        resp = self._call("download", key, self.client.get_object, Key=self.object_key(key))
        digest = hashlib.sha256()
        try:
            for chunk in resp["Body"].iter_chunks(_READ_CHUNK):
                digest.update(chunk)
        finally:
            resp["Body"].close()
        return digest.hexdigest()

    def delete(self, key: str) -> None:
        """Idempotent, like the local store: deleting a missing key is not an error."""
        full = self.object_key(key)
        log.debug("s3 delete %s", full)
        self._call("delete", key, self.client.delete_object, Key=full)

    # -- presigned URLs -------------------------------------------------------------------------
    def _presign(self, method: str, key: str, expires_seconds: int) -> str:
        if not 1 <= expires_seconds <= MAX_PRESIGN_SECONDS:
            raise ObjectStoreError(
                f"presigned URL expiry must be 1..{MAX_PRESIGN_SECONDS} seconds, got {expires_seconds}"
            )
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            url: str = self.client.generate_presigned_url(
                method,
                Params={"Bucket": self.bucket, "Key": self.object_key(key)},
                ExpiresIn=expires_seconds,
                HttpMethod="GET" if method == "get_object" else "PUT",
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "presign", key) from None
        return url

    def presign_get(self, key: str, expires_seconds: int) -> str:
        return self._presign("get_object", key, expires_seconds)

    def download(self, key: str, expires_seconds: int) -> RedirectTo:
        """The client fetches the object from the bucket itself, with a presigned URL."""
        return RedirectTo(self.presign_get(key, expires_seconds))

    def presign_put(self, key: str, expires_seconds: int, lease: UploadLease | None = None) -> str:
        """A URL for a plain HTTP PUT of the object's bytes (no Content-Type is signed, so any is accepted).

        The bucket cannot ask us whether `lease` still holds: the URL's expiry is the only limit,
        so callers give it no more than the lease's remaining time (X-Amz-Expires).
        An object uploaded this way has no stored SHA256: `sha256_of` computes it."""
        return self._presign("put_object", key, expires_seconds)
