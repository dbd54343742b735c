"""Which address a replica gives the workers it launches.

A worker keeps the control-plane URL it was launched with for its whole life. A replica's own
address dies with that replica, so when several replicas share one database, the workers must be
given an address that outlives any one of them (`SWARMSTATION_PUBLIC_URL`: a load balancer or a
DNS name in front of every replica). One shared address, rather than a list of replicas that
workers fail over between, also serves the other URLs a replica hands out (the local object
store's signed links, webhook URLs), which would otherwise die with the replica that signed them.
"""

from __future__ import annotations

from swarmstation.domain.errors import SwarmError


class NoSharedAddress(SwarmError):
    """Several replicas, and no address that survives one of them (a misconfiguration)."""

    code = "no_shared_address"


NO_SHARED_ADDRESS = (
    "another control-plane replica is running on this database: set SWARMSTATION_PUBLIC_URL on "
    "every replica to one address in front of all of them (a load balancer), so that workers "
    "reach the control plane whichever replica is lost"
)


def worker_address(public_url: str | None, own_url: str, other_replicas: int) -> str:
    """The URL for a new worker: the shared public URL when configured; this replica's own
    address only while it is the only replica."""
    if public_url:
        return public_url
    if other_replicas > 0:
        raise NoSharedAddress(NO_SHARED_ADDRESS)
    return own_url


def may_join(public_url: str | None, other_replicas: int) -> bool:
    """Whether a replica may start beside `other_replicas` others: with a shared address only."""
    return bool(public_url) or other_replicas == 0
