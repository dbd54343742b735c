"""A local folder as the object store; presigned URLs are HMAC-signed links to the control plane."""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, urlencode

from swarmstation.objectstore.base import LocalFile, NotFound, UploadLease, normalise_key


class LocalObjectStore:
    def __init__(
        self, root: Path, *, base_url: str, secret: bytes, clock: Callable[[], float] = time.time
    ) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.base_url = base_url.rstrip("/")
        self._secret = secret
        self._clock = clock

    def path(self, key: str) -> Path:
        return self.root / normalise_key(key)

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Write to a temporary name and rename, so a reader never sees half a file.
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_file(self, key: str, source: Path) -> None:
        """Move a finished local file into the store (same filesystem: a rename)."""
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(source), target)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError as exc:
            raise NotFound(key) from exc

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def size(self, key: str) -> int:
        try:
            return self.path(key).stat().st_size
        except FileNotFoundError as exc:
            raise NotFound(key) from exc

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def download(self, key: str, expires_seconds: int) -> LocalFile:
        path = self.path(key)
        if not path.is_file():
            raise NotFound(key)
        return LocalFile(path)

    # -- presigned URLs -------------------------------------------------------------------------
    def _signature(self, method: str, key: str, expires: int, lease: UploadLease | None) -> str:
        msg = f"{method}\n{key}\n{expires}"
        if lease is not None:  # signed too, so that a URL cannot be moved to another lease
            msg += f"\n{lease.job_id}\n{lease.lease_token}"
        return hmac.new(self._secret, msg.encode(), hashlib.sha256).hexdigest()

    def _presign(self, method: str, key: str, expires_seconds: int, lease: UploadLease | None = None) -> str:
        key = normalise_key(key)
        expires = int(self._clock()) + expires_seconds
        params: dict[str, str | int] = {"expires": expires}
        if lease is not None:
            params.update(job=lease.job_id, lease=lease.lease_token)
        params["signature"] = self._signature(method, key, expires, lease)
        return f"{self.base_url}/objects/{quote(key)}?{urlencode(params)}"

    def presign_get(self, key: str, expires_seconds: int) -> str:
        return self._presign("GET", key, expires_seconds)

    def presign_put(self, key: str, expires_seconds: int, lease: UploadLease | None = None) -> str:
        """The URL names the lease; the PUT handler (api/objects.py) checks it still holds."""
        return self._presign("PUT", key, expires_seconds, lease)

    def verify(
        self, method: str, key: str, expires: int, signature: str, lease: UploadLease | None = None
    ) -> bool:
        if expires < int(self._clock()):
            return False
        expected = self._signature(method, normalise_key(key), expires, lease)
        return hmac.compare_digest(expected, signature)
