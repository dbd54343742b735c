import dataclasses

import pytest

from swarmstation.domain import estimates as E
from swarmstation.domain.routing import RoutableInstance


@pytest.mark.parametrize(
    ("runs", "expected"),
    [
        ([], E.DEFAULT_RUN_SECONDS),  # nothing completed yet: the default
        ([10.0], 10.0),
        ([4.0, 100.0, 6.0], 6.0),  # a median: one slow job does not move it
        ([0.0, 8.0], 8.0),  # a job that reported no run time is ignored
    ],
)
def test_expected_run_seconds(runs: list[float], expected: float) -> None:
    assert E.expected_run_seconds(runs) == expected


@pytest.mark.parametrize(
    ("previous", "nbytes", "seconds", "expected"),
    [
        (None, 0, 0, None),  # downloaded nothing: still unknown
        (None, 100e6, 2.0, 50e6),  # first measurement taken as it is
        (50e6, 100e6, 1.0, 0.7 * 50e6 + 0.3 * 100e6),  # then smoothed
        (80e6, 0, 3.0, 80e6),  # a job that downloaded nothing leaves it
    ],
)
def test_measured_rate(previous: float | None, nbytes: float, seconds: float, expected: float | None) -> None:
    assert E.measured_rate(previous, nbytes, seconds) == (
        pytest.approx(expected) if expected is not None else None
    )


def test_busy_end_is_reported_start_plus_estimate_not_the_truth() -> None:
    # a job started at 100 that will really run 300 s is expected to end at 100 + 30
    assert E.expected_end(100.0, 30.0) == 130.0
    assert E.busy_until([100.0, 90.0], 30.0) == 130.0
    assert E.busy_until([], 30.0) is None


def test_prefetch_demand_takes_the_most_recent() -> None:
    assert E.prefetch_demand(range(1000)) == list(range(E.PREFETCH_DEMAND_JOBS))
    assert E.prefetch_demand(iter([3, 2, 1]), limit=2) == [3, 2]


def test_routable_instance_from_observation() -> None:
    obs = E.InstanceObservation(
        "i1", "p", capacity=2, running_started_at=(10.0,), reported_models=frozenset({"a"}),
        loaded_checkpoint="a", download_bytes_per_second=0.0,
    )  # fmt: skip
    view = E.routable_instance(obs, expected_run_seconds=20.0, checkpoint_load_seconds=5.0)
    assert view == RoutableInstance("i1", "p", 1, 30.0, frozenset({"a"}), "a", 0.0, 5.0)


def test_an_observation_holds_only_what_the_control_plane_observes() -> None:
    # the fields a live instance row and its heartbeats give; a new one must be added here on purpose,
    # after checking that the live control plane has it too (control/routing.py fills each)
    assert {f.name for f in dataclasses.fields(E.InstanceObservation)} == {
        "instance_id", "pool", "capacity", "running_started_at", "reported_models",
        "loaded_checkpoint", "download_bytes_per_second",
    }  # fmt: skip
