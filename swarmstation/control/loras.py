"""The LoRA registry against the database: who may see and use what, the trigger matcher per
version of the map, and grants. Moderation (import, approve, reject, staging) is in moderation.py.

Every change to a LoRA or a grant bumps `lora_map_version` in the meta table; matchers are built
once per (version, user) and kept in process, so resolution per job costs one dictionary lookup
plus the match itself.
"""

from __future__ import annotations

import hashlib
import re
import threading
import uuid
from collections import OrderedDict
from datetime import datetime

from sqlalchemy.orm import Session

from swarmstation.config import Settings, reveal
from swarmstation.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from swarmstation.domain.loras import Access, LoraInfo, TriggerMatcher
from swarmstation.domain.moderation import MODERATION, ModerationState
from swarmstation.loras.sources import ImportedLora, source_credential
from swarmstation.net.outbound import policy_from_hosts
from swarmstation.net.policy import Credential, OutboundPolicy
from swarmstation.store import lora_queries, queries
from swarmstation.store.models import Lora, LoraGrant, Meta, User

VISIBILITIES = ("public", "private", "unlisted")
_VERSION_KEY = "lora_map_version"


def map_version(s: Session) -> int:
    row = s.get(Meta, _VERSION_KEY)
    return int(row.value) if row is not None else 0


def bump_version(s: Session) -> None:
    row = s.get(Meta, _VERSION_KEY)
    if row is None:
        s.add(Meta(key=_VERSION_KEY, value="1"))
    else:
        row.value = str(int(row.value) + 1)


def make_slug(name: str, external_id: str) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:60].strip("-") or "lora"
    return f"{base}-{hashlib.sha1(external_id.encode()).hexdigest()[:6]}"


def _rank(lora: Lora) -> int:
    return int(lora.created_at.timestamp() * 1000)


def to_info(lora: Lora, access: Access) -> LoraInfo:
    return LoraInfo(
        slug=lora.slug,
        name=lora.name,
        triggers=tuple(str(t) for t in lora.triggers),
        aliases=tuple(str(a) for a in lora.aliases),
        default_weight=lora.default_weight,
        base_model=lora.base_model,
        file_name=lora.file_name,
        owner_id=lora.owner_id,
        visibility=lora.visibility,  # type: ignore[arg-type]
        access=access,
        created_at_rank=_rank(lora),
    )


def can_use(s: Session, lora: Lora, user: User, now: datetime) -> bool:
    """Usable in a job: approved and staged, and public, or the user's own, or granted."""
    if lora.state != ModerationState.APPROVED or lora.object_key is None:
        return False
    return (
        lora.visibility == "public"
        or lora.owner_id == user.id
        or lora.id in lora_queries.granted_lora_ids(s, user.id, now)
    )


def can_see(s: Session, lora: Lora, user: User, now: datetime) -> bool:
    """Visible in the registry: admins see all; others see approved public ones, their own
    (in any moderation state) and those granted to them."""
    if user.role == "admin" or lora.owner_id == user.id:
        return True
    if lora.state != ModerationState.APPROVED:
        return False
    return lora.visibility == "public" or lora.id in lora_queries.granted_lora_ids(s, user.id, now)


def visible_lora(s: Session, slug: str, user: User, now: datetime) -> Lora:
    """The LoRA `slug` if `user` may see it; NotFound otherwise (never telling that it exists)."""
    lora = lora_queries.lora_by_slug(s, slug)
    if lora is None or not can_see(s, lora, user, now):
        raise NotFound(f"unknown LoRA '{slug}'")
    return lora


def trigger_map(s: Session, user: User, now: datetime) -> dict[str, list[str]]:
    """Trigger word or phrase (lowercased, spaces collapsed) → the slugs it may select for `user`."""
    rows = lora_queries.usable_loras(
        s, public=True, owner_id=user.id, lora_ids=lora_queries.granted_lora_ids(s, user.id, now)
    )
    out: dict[str, list[str]] = {}
    for r in rows:
        for t in r.triggers:
            out.setdefault(" ".join(str(t).lower().split()), []).append(r.slug)
    return {k: sorted(v) for k, v in sorted(out.items())}


class MatcherCache:
    """Trigger matchers per version of the map: the public one, and per user an overlay of the
    user's own and shared LoRAs on top of it."""

    def __init__(self, max_users: int = 512) -> None:
        self._lock = threading.Lock()
        self._public: tuple[int, TriggerMatcher] | None = None
        self._users: OrderedDict[tuple[int, str], TriggerMatcher] = OrderedDict()
        self.max_users = max_users
        self.builds = 0

    def matcher_for(self, s: Session, user: User, now: datetime) -> TriggerMatcher:
        version = map_version(s)
        with self._lock:
            public = self._public[1] if self._public and self._public[0] == version else None
            cached = self._users.get((version, user.id))
        if cached is not None:
            return cached
        if public is None:
            rows = lora_queries.usable_loras(s, public=True)
            public = TriggerMatcher(to_info(r, "public") for r in rows)
            with self._lock:
                self._public = (version, public)
                self.builds += 1
        grants = lora_queries.granted_lora_ids(s, user.id, now)
        personal = [
            to_info(r, "own" if r.owner_id == user.id else "shared")
            for r in lora_queries.usable_loras(s, owner_id=user.id, lora_ids=grants)
        ]
        matcher = public.overlay(personal) if personal else public
        with self._lock:
            self._users[(version, user.id)] = matcher
            while len(self._users) > self.max_users:
                self._users.popitem(last=False)
        return matcher


def outbound_policy(settings: Settings) -> OutboundPolicy:
    """Where LoRA metadata and files may be fetched from: the operator's allow-list and the
    configured source API origins; anything else only at public addresses."""
    return policy_from_hosts(
        settings.outbound_allow_hosts, settings.civitai_base_url, settings.huggingface_base_url
    )


def staging_credentials(settings: Settings, source_kind: str) -> list[Credential]:
    """The token of the LoRA's own source, scoped to that source's hosts (none for other kinds)."""
    if source_kind == "civitai":
        credential = source_credential("civitai", reveal(settings.civitai_token), settings.civitai_base_url)
    elif source_kind == "huggingface":
        credential = source_credential(
            "huggingface", reveal(settings.huggingface_token), settings.huggingface_base_url
        )
    else:
        credential = None
    return [credential] if credential else []


def create_imported(s: Session, meta: ImportedLora, *, owner: User, visibility: str, now: datetime) -> Lora:
    slug = make_slug(meta.name, meta.external_id)
    if lora_queries.lora_by_slug(s, slug) is not None:
        raise Conflict(f"already imported as '{slug}'")
    lora = Lora(
        id=str(uuid.uuid4()),
        slug=slug,
        name=meta.name[:200],
        description=meta.description,
        triggers=list(meta.triggers),
        aliases=[],
        tags=list(meta.tags),
        preview_images=list(meta.preview_images),
        default_weight=1.0,
        base_model=meta.base_model,
        source_base_model=meta.source_base_model[:100],
        file_name=f"{slug}.safetensors",
        file_size=meta.file_size,
        file_sha256=meta.file_sha256,
        source_kind=meta.source_kind,
        source_url=meta.download_url,
        page_url=meta.page_url,
        original_author=meta.original_author,
        object_key=None,
        visibility=visibility,
        owner_id=owner.id,
        state=MODERATION.initial,
        moderation_reason="",
        staging_bytes_done=0,
        staging_bytes_total=None,
        failure_reason="",
        usage_count=0,
        created_at=now,
        updated_at=now,
    )
    s.add(lora)
    bump_version(s)
    return lora


def _grantable(s: Session, slug: str, user: User, now: datetime) -> Lora:
    lora = visible_lora(s, slug, user, now)
    if lora.owner_id != user.id and user.role != "admin":
        raise Forbidden("only the owner or an admin can grant access")
    return lora


def _target_user(s: Session, ident: str) -> User:
    target = queries.find_user_by_id_or_name(s, ident)
    if target is None:
        raise NotFound(f"unknown user '{ident}'")
    return target


def grant(
    s: Session, slug: str, *, by: User, to: str, expires_at: datetime | None, now: datetime
) -> tuple[Lora, LoraGrant]:
    """Share `slug` with the user named `to` (a name or an id), until `expires_at` if given."""
    lora = _grantable(s, slug, by, now)
    target = _target_user(s, to)
    if expires_at is not None and expires_at.tzinfo is None:
        raise InvalidInput.at("expires_at", "give a time zone, e.g. 2026-12-31T00:00:00Z")
    if expires_at is not None and expires_at <= now:
        raise InvalidInput.at("expires_at", "must be in the future")
    row = LoraGrant(
        id=str(uuid.uuid4()),
        lora_id=lora.id,
        user_id=target.id,
        granted_by=by.id,
        created_at=now,
        expires_at=expires_at,
        revoked_at=None,
    )
    s.add(row)
    bump_version(s)
    return lora, row


def revoke(s: Session, slug: str, *, by: User, user_ident: str, now: datetime) -> None:
    lora = _grantable(s, slug, by, now)
    target = _target_user(s, user_ident)
    rows = lora_queries.open_grants(s, lora.id, target.id)
    if not rows:
        raise NotFound(f"'{user_ident}' has no grant on '{slug}'")
    for row in rows:
        row.revoked_at = now
    bump_version(s)
