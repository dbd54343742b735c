"""The object store interface: models, uploads and outputs, addressed by key."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from swarmstation.domain import errors
from swarmstation.domain.names import BadName, normalise_path


class ObjectStoreError(errors.ObjectStoreUnavailable):
    """The store could not do what was asked (unreachable, refused, misconfigured): a 503."""


class NotFound(errors.NotFound):
    """No object under this key."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key

    @property
    def detail(self) -> str:
        return f"object {self.key} not found in the object store"


class BadKey(errors.BadRequest, ValueError):
    """A key that cannot name an object (see `normalise_key`)."""

    code = "bad_object_key"


def normalise_key(key: str) -> str:
    """Keys become file paths in the local store and keys in a bucket: one spelling (NFC, no
    empty, `.` or `..` segments), relative, Unicode allowed (the rule of
    `swarmstation.domain.names`, shared with output and model names)."""
    try:
        return normalise_path(key, what="object key")
    except BadName as exc:
        raise BadKey(f"invalid {exc}") from None


@dataclass(frozen=True)
class UploadLease:
    """The job lease an upload URL belongs to: the URL is good only while that lease holds."""

    job_id: str
    lease_token: int


@dataclass(frozen=True)
class RedirectTo:
    """Download the object from this URL (presigned: it needs no credentials, and gets none)."""

    url: str


@dataclass(frozen=True)
class LocalFile:
    """The object is this file on the control plane's disk: serve it from there."""

    path: Path


ObjectDownload = RedirectTo | LocalFile


class ObjectStore(Protocol):
    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None: ...

    def put_file(self, key: str, source: Path) -> None: ...

    def get_bytes(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int: ...

    def delete(self, key: str) -> None: ...

    def presign_get(self, key: str, expires_seconds: int) -> str: ...

    def presign_put(self, key: str, expires_seconds: int, lease: UploadLease | None = None) -> str:
        """An upload URL. With `lease`, a store that serves its own URLs refuses it once the lease
        has ended; every store refuses it after `expires_seconds`."""
        ...

    def download(self, key: str, expires_seconds: int) -> ObjectDownload:
        """How a client downloads the object (NotFound when it is not there)."""
        ...


def scratch_dir(store: ObjectStore) -> Path | None:
    """Where to put temporary files that will be moved into `store` (same filesystem for the
    local store, so the move is a rename); None → the system's temporary folder."""
    root = getattr(store, "root", None)
    return root if isinstance(root, Path) else None
