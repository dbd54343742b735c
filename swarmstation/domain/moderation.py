"""LoRA moderation as a lifecycle: its states, the triggers that move a LoRA, and the table.

Everything that decides whether a moderation change is legal lives here, in one table keyed by
(state, trigger) (see domain/states.py for the machinery). A missing key *is* the illegal change:
`MODERATION.apply(lora, trigger)` raises `IllegalTransition` naming the state and the trigger,
and leaves the LoRA as it was.

```
                 APPROVE                     STAGED
 pending_review ─────────► staging ────────────────► approved
        │                   │  ▲                        │
        │    STAGING_FAILED │  │ APPROVE (retry)        │
        │                   ▼  │                        │
        │            deployment_failed                  │
        │                   │                           │
        └───────── REJECT ──┴─────── REJECT ────────────┴──► rejected
```

Approval only moves a LoRA to `staging`; the file is downloaded, checked and stored by
background work (control/moderation.py), which then reports `STAGED` or `STAGING_FAILED`.
"""

from __future__ import annotations

from enum import StrEnum

from swarmstation.domain.states import Lifecycle, Rule, register

__all__ = ["MODERATION", "ModerationState", "ModerationTrigger"]


class ModerationState(StrEnum):
    PENDING_REVIEW = "pending_review"  # imported, waiting for an admin
    STAGING = "staging"  # approved by an admin; the file is being downloaded and stored
    APPROVED = "approved"  # staged: usable in jobs by whoever may see it
    DEPLOYMENT_FAILED = "deployment_failed"  # staging failed; the reason is on the LoRA
    REJECTED = "rejected"  # an admin said no


class ModerationTrigger(StrEnum):
    APPROVE = "APPROVE"  # an admin approves
    STAGED = "STAGED"  # the background staging stored the file
    STAGING_FAILED = "STAGING_FAILED"  # the background staging gave up, with a reason
    REJECT = "REJECT"  # an admin rejects


_PENDING, _STAGING, _APPROVED, _FAILED, _REJECTED = (
    ModerationState.PENDING_REVIEW,
    ModerationState.STAGING,
    ModerationState.APPROVED,
    ModerationState.DEPLOYMENT_FAILED,
    ModerationState.REJECTED,
)
_T = ModerationTrigger

MODERATION: Lifecycle[ModerationState, ModerationTrigger] = register(
    Lifecycle(
        "lora",
        ModerationState,
        ModerationTrigger,
        initial=_PENDING,
        about="Approval answers at once; the file is staged in the background (content-addressed, "
        "so a staging cut short by a restart is simply done again).",
        rules=[
            Rule((_PENDING, _FAILED), _T.APPROVE, _STAGING, "an admin approves (again: a retry)"),
            # A second approval while staging, or of an approved LoRA, changes nothing (a double
            # click, a retried request): staging is not started twice, an approved LoRA stays usable.
            Rule((_STAGING,), _T.APPROVE, _STAGING, "approved again while staging: nothing to do"),
            Rule((_APPROVED,), _T.APPROVE, _APPROVED, "approved again: nothing to stage"),
            Rule((_STAGING,), _T.STAGED, _APPROVED, "downloaded, sha256 checked, stored"),
            Rule((_STAGING,), _T.STAGING_FAILED, _FAILED, "refused, unreachable, too large or altered"),
            # Rejecting while staging abandons the staging; rejecting again records the new reason.
            Rule(
                (_PENDING, _STAGING, _APPROVED, _FAILED, _REJECTED),
                _T.REJECT,
                _REJECTED,
                "an admin rejects",
            ),
        ],
    )
)
