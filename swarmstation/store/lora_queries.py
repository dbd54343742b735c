"""Named queries over the LoRA registry, for the lookups that several modules make.

Policies (who may see or use a LoRA) stay in control/loras.py; these only fetch rows. Lookups
shared with the rest of the API (users, tools) are in store/queries.py.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from swarmstation.domain.moderation import ModerationState
from swarmstation.store.models import Lora, LoraGrant


def lora_by_slug(s: Session, slug: str) -> Lora | None:
    return s.scalar(select(Lora).where(Lora.slug == slug))


def loras_in_state(s: Session, state: ModerationState) -> list[Lora]:
    """Oldest first: the moderation queue, and the LoRAs waiting for their staging."""
    return list(s.scalars(select(Lora).where(Lora.state == state).order_by(Lora.created_at)))


def granted_lora_ids(s: Session, user_id: str, now: datetime) -> set[str]:
    """The LoRAs shared with `user_id` by a grant that is neither revoked nor expired at `now`."""
    return set(
        s.scalars(
            select(LoraGrant.lora_id).where(
                LoraGrant.user_id == user_id,
                LoraGrant.revoked_at.is_(None),
                or_(LoraGrant.expires_at.is_(None), LoraGrant.expires_at > now),
            )
        )
    )


def open_grants(s: Session, lora_id: str, user_id: str) -> list[LoraGrant]:
    """The grants of `lora_id` to `user_id` that are not revoked (expired ones included)."""
    return list(
        s.scalars(
            select(LoraGrant).where(
                LoraGrant.lora_id == lora_id, LoraGrant.user_id == user_id, LoraGrant.revoked_at.is_(None)
            )
        )
    )


def usable_loras(
    s: Session, *, public: bool = False, owner_id: str | None = None, lora_ids: Collection[str] = ()
) -> list[Lora]:
    """Approved and staged LoRAs that are public (when `public`), owned by `owner_id`, or among
    `lora_ids` (granted ones): what the trigger map and the matchers are built from."""
    scopes = []
    if public:
        scopes.append(Lora.visibility == "public")
    if owner_id is not None:
        scopes.append(Lora.owner_id == owner_id)
    if lora_ids:
        scopes.append(Lora.id.in_(lora_ids))
    if not scopes:
        return []
    return list(
        s.scalars(
            select(Lora).where(
                Lora.state == ModerationState.APPROVED,
                Lora.object_key.is_not(None),
                or_(*scopes),
            )
        )
    )
