"""Stage an approved LoRA's file into the object store: download, verify SHA-256, store.

Instances fetch models from the object store, never from Civitai or Hugging Face directly, so a
file is checked once, here, and a source that changes or disappears later cannot break jobs.

The ``downloadUrl`` comes from the source's API, i.e. from outside: it is fetched through
:mod:`swarmstation.net.outbound`, so every hop (the first included) is checked (http/https, an
allow-listed host or only public addresses), redirects are bounded, and the source's token goes
only to that source's own hosts, never to the storage or CDN it redirects to.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx

from swarmstation.domain.errors import UpstreamError
from swarmstation.net import outbound
from swarmstation.net.policy import Credential, OutboundPolicy, OutboundRefused, redact
from swarmstation.objectstore.base import ObjectStore, scratch_dir

CHUNK = 1024 * 1024


class StagingError(UpstreamError):
    """The source's file could not be staged (refused, unreachable, too large, not what the source
    declared); the message says why and is recorded on the LoRA as its failure reason."""


@dataclass(frozen=True)
class StagedFile:
    key: str
    sha256: str
    size: int
    final_url: str  # where the bytes came from after redirects, without its (signed) query


def object_key_for(sha256: str) -> str:
    # Content-addressed: the same file imported twice is stored once.
    return f"models/loras/{sha256}.safetensors"


def stage_file(
    url: str,
    store: ObjectStore,
    *,
    expected_sha256: str | None,
    max_bytes: int,
    policy: OutboundPolicy,
    credentials: Iterable[Credential] = (),
    progress: Callable[[int, int | None], None] | None = None,
    timeout: float = 60.0,
) -> StagedFile:
    try:
        policy.check_url(url)
    except OutboundRefused as exc:
        raise StagingError(f"download refused: {exc}") from exc
    digest = hashlib.sha256()
    size = 0
    fd, tmp_name = tempfile.mkstemp(dir=scratch_dir(store), prefix=".staging-")
    tmp = Path(tmp_name)
    try:
        with (
            os.fdopen(fd, "wb") as out,
            outbound.sync_client(policy, credentials=credentials, timeout=timeout) as http,
            http.stream("GET", url) as resp,
        ):
            if resp.status_code >= 400:
                raise StagingError(f"download failed: HTTP {resp.status_code} from {resp.url.host}")
            total = (
                int(resp.headers["content-length"])
                if resp.headers.get("content-length", "").isdigit()
                else None
            )
            if total is not None and total > max_bytes:
                raise StagingError(f"file is {total} bytes, over the limit of {max_bytes}")
            for chunk in resp.iter_bytes(CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise StagingError(f"file is over the limit of {max_bytes} bytes")
                digest.update(chunk)
                out.write(chunk)
                if progress is not None:
                    progress(size, total)
            final_url = redact(str(resp.url))
        sha = digest.hexdigest()
        if size == 0:
            raise StagingError("download was empty")
        if expected_sha256 and sha != expected_sha256.lower():
            raise StagingError(f"sha256 mismatch: expected {expected_sha256.lower()}, got {sha}")
        key = object_key_for(sha)
        store.put_file(key, tmp)
        return StagedFile(key=key, sha256=sha, size=size, final_url=final_url)
    except (outbound.RefusedByPolicy, httpx.InvalidURL) as exc:
        raise StagingError(f"download refused: {exc}") from exc
    except httpx.TooManyRedirects as exc:
        raise StagingError(
            f"download refused: more than {policy.max_redirects} redirects from {redact(url)}"
        ) from exc
    except httpx.HTTPError as exc:
        raise StagingError(f"download failed: {type(exc).__name__}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
