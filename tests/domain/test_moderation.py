"""Walk the LoRA moderation table: every legal path by story, every illegal pair raises and leaves
the LoRA as it was."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest

from swarmstation.domain.errors import Conflict, IllegalTransition
from swarmstation.domain.moderation import MODERATION, ModerationState, ModerationTrigger
from swarmstation.domain.states import ALL_TABLES

S, T = ModerationState, ModerationTrigger


@dataclass
class Row:
    state: ModerationState


def walk(*triggers: ModerationTrigger) -> list[ModerationState]:
    row = Row(MODERATION.initial)
    seen = [row.state]
    for trigger in triggers:
        MODERATION.apply(row, trigger)
        seen.append(row.state)
    return seen


def test_the_table_is_registered_for_the_diagrams() -> None:
    assert ALL_TABLES["lora"] is MODERATION
    assert MODERATION.initial == S.PENDING_REVIEW


@pytest.mark.parametrize(
    ("story", "triggers", "states"),
    [
        ("approved and staged", [T.APPROVE, T.STAGED], [S.PENDING_REVIEW, S.STAGING, S.APPROVED]),
        (
            "staging failed, approved again, staged",
            [T.APPROVE, T.STAGING_FAILED, T.APPROVE, T.STAGED],
            [S.PENDING_REVIEW, S.STAGING, S.DEPLOYMENT_FAILED, S.STAGING, S.APPROVED],
        ),
        ("rejected on review", [T.REJECT], [S.PENDING_REVIEW, S.REJECTED]),
        ("rejected while staging", [T.APPROVE, T.REJECT], [S.PENDING_REVIEW, S.STAGING, S.REJECTED]),
        (
            "approved twice while staging, once after",
            [T.APPROVE, T.APPROVE, T.STAGED, T.APPROVE],
            [S.PENDING_REVIEW, S.STAGING, S.STAGING, S.APPROVED, S.APPROVED],
        ),
        (
            "withdrawn after approval",
            [T.APPROVE, T.STAGED, T.REJECT],
            [S.PENDING_REVIEW, S.STAGING, S.APPROVED, S.REJECTED],
        ),
        (
            "failed, then rejected, then rejected again with a new reason",
            [T.APPROVE, T.STAGING_FAILED, T.REJECT, T.REJECT],
            [S.PENDING_REVIEW, S.STAGING, S.DEPLOYMENT_FAILED, S.REJECTED, S.REJECTED],
        ),
    ],
)
def test_legal_paths(story: str, triggers: list[ModerationTrigger], states: list[ModerationState]) -> None:
    assert walk(*triggers) == states, story


def test_every_pair_in_the_table_is_reached_by_a_story() -> None:
    # The stories above, as (state, trigger) pairs, cover the whole table: no rule goes untested.
    stories = [
        [T.APPROVE, T.STAGED],
        [T.APPROVE, T.STAGING_FAILED, T.APPROVE, T.STAGED],
        [T.REJECT],
        [T.APPROVE, T.REJECT],
        [T.APPROVE, T.APPROVE, T.STAGED, T.APPROVE],
        [T.APPROVE, T.STAGED, T.REJECT],
        [T.APPROVE, T.STAGING_FAILED, T.REJECT, T.REJECT],
    ]
    covered = set()
    for story in stories:
        row = Row(MODERATION.initial)
        for trigger in story:
            covered.add((row.state, trigger))
            MODERATION.apply(row, trigger)
    assert covered == set(MODERATION.table)


ILLEGAL = [
    (state, trigger)
    for state, trigger in itertools.product(ModerationState, ModerationTrigger)
    if not MODERATION.can(state, trigger)
]


def test_the_illegal_pairs_are_the_expected_ones() -> None:
    assert set(ILLEGAL) == {
        (S.PENDING_REVIEW, T.STAGED),
        (S.PENDING_REVIEW, T.STAGING_FAILED),
        (S.APPROVED, T.STAGED),
        (S.APPROVED, T.STAGING_FAILED),
        (S.DEPLOYMENT_FAILED, T.STAGED),
        (S.DEPLOYMENT_FAILED, T.STAGING_FAILED),
        (S.REJECTED, T.APPROVE),
        (S.REJECTED, T.STAGED),
        (S.REJECTED, T.STAGING_FAILED),
    }


@pytest.mark.parametrize(("state", "trigger"), ILLEGAL)
def test_an_illegal_pair_raises_and_leaves_the_row_unchanged(
    state: ModerationState, trigger: ModerationTrigger
) -> None:
    row = Row(state)
    with pytest.raises(IllegalTransition) as raised:
        MODERATION.apply(row, trigger)
    assert row.state == state
    assert isinstance(raised.value, Conflict) and raised.value.status_hint == 409
    message = str(raised.value)
    assert "lora" in message and state.value in message and trigger.value in message


def test_a_staging_result_for_a_lora_no_longer_staging_is_refused() -> None:
    # The stager checks the state before it reports; the table is the second line of defence.
    row = Row(S.REJECTED)
    with pytest.raises(IllegalTransition):
        MODERATION.apply(row, T.STAGED)
    assert row.state == S.REJECTED
