"""The LoRA registry against the database: who may use what, the trigger matcher per version of
the map, imports, moderation and grants.

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

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from swarmstation.config import Settings
from swarmstation.domain.loras import Access, LoraInfo, TriggerMatcher
from swarmstation.loras.sources import ImportedLora, source_credential
from swarmstation.net.outbound import policy_from_hosts
from swarmstation.net.policy import Credential, OutboundPolicy
from swarmstation.store.models import Lora, LoraGrant, Meta, User

PENDING = "pending_review"
APPROVED = "approved"
REJECTED = "rejected"
DEPLOYMENT_FAILED = "deployment_failed"
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


def granted_ids(s: Session, user_id: str, now: datetime) -> set[str]:
    return set(
        s.scalars(
            select(LoraGrant.lora_id).where(
                LoraGrant.user_id == user_id,
                LoraGrant.revoked_at.is_(None),
                or_(LoraGrant.expires_at.is_(None), LoraGrant.expires_at > now),
            )
        )
    )


def can_use(s: Session, lora: Lora, user: User, now: datetime) -> bool:
    """Usable in a job: approved and staged, and public, or the user's own, or granted."""
    if lora.moderation_status != APPROVED or lora.object_key is None:
        return False
    return lora.visibility == "public" or lora.owner_id == user.id or lora.id in granted_ids(s, user.id, now)


def can_see(s: Session, lora: Lora, user: User, now: datetime) -> bool:
    """Visible in the registry: admins see all; others see approved public ones, their own
    (in any moderation state) and those granted to them."""
    if user.role == "admin" or lora.owner_id == user.id:
        return True
    if lora.moderation_status != APPROVED:
        return False
    return lora.visibility == "public" or lora.id in granted_ids(s, user.id, now)


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
            rows = s.scalars(
                select(Lora).where(
                    Lora.visibility == "public",
                    Lora.moderation_status == APPROVED,
                    Lora.object_key.is_not(None),
                )
            )
            public = TriggerMatcher(to_info(r, "public") for r in rows)
            with self._lock:
                self._public = (version, public)
                self.builds += 1
        grants = granted_ids(s, user.id, now)
        personal = [
            to_info(r, "own" if r.owner_id == user.id else "shared")
            for r in s.scalars(
                select(Lora).where(
                    Lora.moderation_status == APPROVED,
                    Lora.object_key.is_not(None),
                    or_(Lora.owner_id == user.id, Lora.id.in_(grants)),
                )
            )
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
        credential = source_credential("civitai", settings.civitai_token, settings.civitai_base_url)
    elif source_kind == "huggingface":
        credential = source_credential(
            "huggingface", settings.huggingface_token, settings.huggingface_base_url
        )
    else:
        credential = None
    return [credential] if credential else []


def create_imported(s: Session, meta: ImportedLora, *, owner: User, visibility: str, now: datetime) -> Lora:
    slug = make_slug(meta.name, meta.external_id)
    existing = s.scalar(select(Lora).where(Lora.slug == slug))
    if existing is not None:
        raise ValueError(f"already imported as '{slug}'")
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
        moderation_status=PENDING,
        moderation_reason="",
        usage_count=0,
        created_at=now,
        updated_at=now,
    )
    s.add(lora)
    bump_version(s)
    return lora
