"""Named queries: the lookups that several routers and use cases make, written once.

Only queries that repeat live here (a one-off select stays beside its caller). A `*_by_*` lookup
raises `NotFound` with the message the API has always answered; `find_*` returns None.
"""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from swarmstation.domain.errors import NotFound
from swarmstation.store.models import Instance, Job, Pool, Tool, User, Wallet


def tool_by_slug(s: Session, slug: str, *, hint: str = "") -> Tool:
    """The tool `slug`; `hint` is appended to the not-found message (e.g. where to look)."""
    tool = s.get(Tool, slug)
    if tool is None:
        raise NotFound(f"unknown tool '{slug}'{hint}")
    return tool


def pool_by_name(s: Session, name: str) -> Pool:
    pool = s.get(Pool, name)
    if pool is None:
        raise NotFound(f"unknown pool '{name}'")
    return pool


def job_for_user(s: Session, job_id: str, user: User) -> Job:
    """A job its owner (or an admin) may see. Another user's job answers exactly like a missing
    one: ids are not an oracle."""
    job = s.get(Job, job_id)
    if job is None or (job.user_id != user.id and user.role != "admin"):
        raise NotFound(f"job {job_id} not found")
    return job


def instance_by_id(s: Session, instance_id: str) -> Instance:
    inst = s.get(Instance, instance_id)
    if inst is None:
        raise NotFound(f"instance {instance_id} not found")
    return inst


def find_user_by_id_or_name(s: Session, ident: str) -> User | None:
    """A user named by id or by name, as the API's paths and bodies allow."""
    return s.scalar(select(User).where(or_(User.name == ident, User.id == ident)))


def user_for_address(s: Session, address: str) -> User | None:
    """The user who proved `address` with a SIWE signature (its linked wallet), or None. Any
    case of the hex is accepted; wallets are stored lowercase."""
    return s.scalar(
        select(User).join(Wallet, Wallet.user_id == User.id).where(Wallet.address == address.lower())
    )
