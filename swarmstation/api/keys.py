"""A user's own API keys under /v1/account/keys: create (the key is shown once), list, revoke.

A revoked key stops working at once on this replica (its cached identity is dropped) and on
the others within their identity cache's few seconds (api/deps.py).
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field, field_validator

from swarmstation.api.deps import DB, CurrentUser, State
from swarmstation.control import auth as auth_ops
from swarmstation.store.db import transaction
from swarmstation.store.models import ApiKey

router = APIRouter(prefix="/v1/account/keys", tags=["account"])


class KeyIn(BaseModel):
    name: str = Field(min_length=1, max_length=100, description="A label to tell keys apart")

    @field_validator("name")
    @classmethod
    def _printable(cls, v: str) -> str:
        v = v.strip()
        if not v or not v.isprintable():
            raise ValueError("must be printable text, not blank")
        return v


class KeyOut(BaseModel):
    id: str
    name: str
    prefix: str = Field(description="The key's first characters, to recognise it")
    created_at: datetime
    revoked_at: datetime | None


class KeyCreatedOut(KeyOut):
    api_key: str = Field(description="Shown once; stored only as a hash")


def key_out(key: ApiKey) -> KeyOut:
    return KeyOut(
        id=key.id, name=key.name, prefix=key.prefix, created_at=key.created_at, revoked_at=key.revoked_at
    )


@router.post("", response_model=KeyCreatedOut, status_code=201)
def create_key(body: KeyIn, user: CurrentUser, s: DB, state: State) -> KeyCreatedOut:
    key, secret = auth_ops.create_api_key(s, user, body.name, state.clock())
    return KeyCreatedOut(**key_out(key).model_dump(), api_key=secret)


@router.get("", response_model=list[KeyOut])
def list_keys(user: CurrentUser, s: DB) -> list[KeyOut]:
    return [key_out(k) for k in auth_ops.api_keys_of(s, user)]


@router.delete("/{key_id}", status_code=204)
def revoke_key(key_id: str, user: CurrentUser, state: State) -> None:
    # A transaction of its own, so that the cached identity is dropped after the commit: dropped
    # before it, a request in between could cache the key as live again.
    with transaction(state.sessions) as s:
        key = auth_ops.revoke_api_key(s, user, key_id, state.clock())
    state.user_cache.discard(key.key_hash)
