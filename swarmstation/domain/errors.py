"""The error tree: every error swarmstation raises on purpose is a `SwarmError`.

Each class carries a stable machine-readable `code` and a suggested HTTP status (`status_hint`);
the API renders any of them as `{"detail", "code", "errors"?}` with that status, looking the
class up along its MRO (`api/errors.py`), so a new error needs no new handler. Module-specific
errors subclass the family they belong to (`class ToolInputError(InvalidInput)`), and foreign
exceptions are translated where they enter (`raise ObjectStoreUnavailable(...) from exc`).
Family members that belong to one module live there (`control.jobs.JobNotFound(NotFound)`,
`objectstore.base.ObjectStoreError(ObjectStoreUnavailable)`, `comfy.client.ComfyUnavailable`).

```
SwarmError                      500 internal_error
├── BadRequest                  400 bad_request        (a request that cannot be read at all)
├── InvalidInput (ValueError)   422 invalid_request    (optional field/errors)
├── Unauthorized                401 unauthorized
├── PaymentRequired             402 payment_required
├── Forbidden                   403 forbidden
├── NotFound                    404 not_found
├── Conflict                    409 conflict
│   ├── StaleLease              409 stale_lease
│   └── IllegalTransition       409 illegal_transition
├── Gone                        410 gone
├── TooLarge                    413 payload_too_large
├── RateLimited                 429 rate_limited       (optional retry_after_seconds)
├── CapacityExceeded            503 capacity_exceeded  (e.g. a pool's spend cap)
├── UpstreamError               502 bad_gateway        (a dependency answered, with an error)
└── Unavailable                 503 unavailable        (retry after retry_after_seconds)
    ├── DatabaseUnavailable     503 database_unavailable
    ├── ObjectStoreUnavailable  503 object_store_unavailable
    ├── ProviderUnavailable     503 provider_unavailable
    └── ComfyUnavailable        503 comfy_unavailable  (in swarmstation.comfy.client)
```

`InvalidInput` is also a `ValueError`, so that pydantic validators may raise it and code that
catches `ValueError` around parsing keeps working. Nothing here knows about HTTP beyond the hint:
the statuses are suggestions that the API follows, and the worker and CLI may ignore.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

__all__ = [
    "BadRequest",
    "CapacityExceeded",
    "Conflict",
    "DatabaseUnavailable",
    "FieldError",
    "Forbidden",
    "Gone",
    "IllegalTransition",
    "InvalidInput",
    "NotFound",
    "ObjectStoreUnavailable",
    "PaymentRequired",
    "ProviderUnavailable",
    "RateLimited",
    "StaleLease",
    "SwarmError",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "UpstreamError",
]

# How long a client should wait before retrying a 503: a database that restarts or fails over is
# usually back within seconds.
DEFAULT_RETRY_AFTER_SECONDS = 5


@dataclass(frozen=True)
class FieldError:
    """One field at fault in an invalid input: `field` is a dotted path (`inputs.seed`)."""

    field: str
    reason: str


class SwarmError(Exception):
    """The root. `detail` is the message for people; `code` and `status_hint` come from the
    class (a subclass per distinct code keeps the codes greppable and documented here)."""

    code: ClassVar[str] = "internal_error"
    status_hint: ClassVar[int] = 500

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail)

    @property
    def detail(self) -> str:
        return str(self)


class BadRequest(SwarmError):
    code = "bad_request"
    status_hint = 400


class InvalidInput(SwarmError, ValueError):
    """Input that was read but is not acceptable. `errors` names the fields at fault, if known."""

    code = "invalid_request"
    status_hint = 422

    def __init__(self, detail: str = "", *, errors: Sequence[FieldError] = ()) -> None:
        super().__init__(detail)
        self.errors: tuple[FieldError, ...] = tuple(errors)

    @classmethod
    def at(cls, field: str, reason: str) -> InvalidInput:
        """`field: reason`, with the field named in `errors`."""
        return cls(f"{field}: {reason}", errors=[FieldError(field, reason)])


class Unauthorized(SwarmError):
    code = "unauthorized"
    status_hint = 401


class PaymentRequired(SwarmError):
    code = "payment_required"
    status_hint = 402


class Forbidden(SwarmError):
    code = "forbidden"
    status_hint = 403


class NotFound(SwarmError):
    code = "not_found"
    status_hint = 404


class Conflict(SwarmError):
    code = "conflict"
    status_hint = 409


class StaleLease(Conflict):
    """A report carried a lease token that is no longer the job's (the fencing token)."""

    code = "stale_lease"


class IllegalTransition(Conflict, ValueError):
    """A state change the transition table does not allow. Also a ValueError, as it always was."""

    code = "illegal_transition"

    def __init__(self, kind: str, current: str, target: str) -> None:
        super().__init__(f"{kind} cannot go from {current} to {target}")
        self.kind = kind
        self.current = current
        self.target = target


class Gone(SwarmError):
    code = "gone"
    status_hint = 410


class TooLarge(SwarmError):
    code = "payload_too_large"
    status_hint = 413


class RateLimited(SwarmError):
    code = "rate_limited"
    status_hint = 429

    def __init__(self, detail: str = "", *, retry_after_seconds: int | None = None) -> None:
        super().__init__(detail)
        self.retry_after_seconds = retry_after_seconds


class CapacityExceeded(SwarmError):
    """A limit of the platform itself (a pool's spend cap, its maximum size) is reached."""

    code = "capacity_exceeded"
    status_hint = 503


class UpstreamError(SwarmError):
    """A dependency answered, but with an error we cannot turn into anything better."""

    code = "bad_gateway"
    status_hint = 502


class Unavailable(SwarmError):
    """A dependency cannot be reached now; the same request may succeed later."""

    code = "unavailable"
    status_hint = 503
    retry_after_seconds: ClassVar[int] = DEFAULT_RETRY_AFTER_SECONDS
    # What is unavailable, for the message clients get ("the database is unavailable; ..."): the
    # exception's own text may name internal hosts, so it goes to the log only.
    what: ClassVar[str] = "service"


class DatabaseUnavailable(Unavailable):
    code = "database_unavailable"
    what = "database"


class ObjectStoreUnavailable(Unavailable):
    code = "object_store_unavailable"
    what = "object store"


class ProviderUnavailable(Unavailable):
    code = "provider_unavailable"
    what = "compute provider"
