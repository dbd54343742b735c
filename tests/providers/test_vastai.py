"""The `vastai` provider against the fake Vast.ai server (real HTTP on 127.0.0.1)."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from swarmstation.config import Settings, reveal
from swarmstation.domain.offers import OfferFilters, search_query
from swarmstation.providers.base import LaunchSpec, ProviderError
from swarmstation.providers.vastai.client import VastAIClient, VastAIError, VastAIQuotaError
from swarmstation.providers.vastai.instances import comfyui_url_of, instance_from_json
from swarmstation.providers.vastai.provider import VastAIProvider
from tests.fakes.vastai import FakeVastAI, make_offer

FILTERS = OfferFilters(
    gpu_names=("RTX 4090", "RTX 3090"),
    min_vram_gb=20,
    max_price_per_hour=1.0,
    min_reliability=0.95,
    excluded_regions=("CN",),
    disk_gb=50,
)


def market() -> list[dict[str, Any]]:
    return [
        make_offer(101, "RTX 4090", dph_total=0.40, dlperf=60.0, reliability=0.99),  # 144 per $ (times rel^4)
        make_offer(102, "RTX 4090", dph_total=0.35, dlperf=58.0, reliability=0.995),  # 162: the best
        make_offer(103, "RTX 3090", gpu_ram=24576, dph_total=0.25, dlperf=30.0, reliability=0.98),  # 111
        make_offer(104, "RTX 4090", dph_total=0.10, dlperf=60.0, verified=False),  # not verified
        make_offer(105, "A100 SXM4", gpu_ram=81920, dph_total=1.50, dlperf=150.0),  # too dear, wrong GPU
        make_offer(106, "RTX 4090", dph_total=0.20, dlperf=60.0, geolocation="Beijing, CN"),  # region
        make_offer(107, "RTX 3090", gpu_ram=12288, dph_total=0.15, dlperf=30.0),  # too little VRAM
        make_offer(108, "RTX 4090", dph_total=0.30, dlperf=60.0, reliability=0.90),  # unreliable
    ]


SPEC = LaunchSpec(
    instance_id="inst-1",
    pool="default",
    server_url="http://control.example:8000",
    worker_token="worker-secret-token-abc",
    env={"HF_HOME": "/workspace/hf"},
    image="nvidia/cuda:12.4.1-runtime-ubuntu22.04",
    onstart="echo starting",
    filters=FILTERS,
)


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def servers() -> Iterator[Callable[..., FakeVastAI]]:
    started: list[FakeVastAI] = []

    def make(**options: Any) -> FakeVastAI:
        options.setdefault("offers", market())
        fake = FakeVastAI(**options).start()
        started.append(fake)
        return fake

    yield make
    for fake in started:
        fake.stop()


@pytest.fixture
def fake(servers: Callable[..., FakeVastAI]) -> FakeVastAI:
    return servers()


Connect = Callable[..., tuple[VastAIProvider, list[float]]]


@pytest.fixture
def connect() -> Iterator[Connect]:
    """A provider for a fake, and the list its (never real) sleeps go to."""
    made: list[VastAIProvider] = []

    def make(server: FakeVastAI, **options: Any) -> tuple[VastAIProvider, list[float]]:
        sleeps: list[float] = []
        options.setdefault("api_key", server.api_key)
        options.setdefault("rng", random.Random(7))
        options.setdefault("label_lookup_attempts", 2)
        options.setdefault("sleep", sleeps.append)
        provider = VastAIProvider(base_url=server.url, **options)
        made.append(provider)
        return provider, sleeps

    yield make
    for provider in made:
        provider.close()


# -- search ------------------------------------------------------------------------------------------


def test_search_sends_the_query_and_ranks(fake: FakeVastAI, connect: Connect) -> None:
    provider, _ = connect(fake)
    offers = provider.search_offers(FILTERS)
    assert [o.id for o in offers] == [102, 101, 103]
    assert fake.search_queries == [search_query(FILTERS, limit=64)]
    assert fake.search_queries[0]["gpu_ram"] == {"gte": 20000}  # MB
    best = offers[0]
    assert best.gpu_name == "RTX 4090"  # the server's trailing whitespace is gone
    assert best.geolocation == "California, US" and best.region == "US"
    assert best.gpu_ram_gb == pytest.approx(24.564)


# -- launch ------------------------------------------------------------------------------------------


def test_launch_rents_the_best_offer_with_the_bootstrap(fake: FakeVastAI, connect: Connect) -> None:
    provider, sleeps = connect(fake)
    provider_id = provider.launch(SPEC)
    [instance] = fake.instances()
    assert provider_id == str(instance["id"])
    assert fake.count("create") == 1
    [body] = fake.create_bodies
    assert body == {
        "client_id": "me",
        "image": "nvidia/cuda:12.4.1-runtime-ubuntu22.04",
        "disk": 50,
        "label": "swarmstation-inst-1",
        "onstart": "echo starting",
        "runtype": "ssh_direct",
        "env": {
            "HF_HOME": "/workspace/hf",
            "SWARMSTATION_WORKER_TOKEN": "worker-secret-token-abc",
            "SWARMSTATION_SERVER_URL": "http://control.example:8000",
            "-p 8188:8188": "1",
        },
    }
    assert fake.calls[2].path == "/api/v0/asks/102/"
    [listed] = provider.list()
    assert (listed.provider_id, listed.instance_id, listed.running) == (provider_id, "inst-1", True)
    assert (listed.price_per_hour, listed.gpu_name, listed.status) == (0.35, "RTX 4090", "running")
    port = fake.host_port(int(provider_id))
    assert provider.comfyui_url(provider_id) == f"http://203.0.113.103:{port}"
    assert sleeps == []


def test_status_goes_from_null_to_loading_to_running(
    servers: Callable[..., FakeVastAI], connect: Connect
) -> None:
    clock = ManualClock()
    fake = servers(provision_seconds=30, load_seconds=60, clock=clock)
    provider, _ = connect(fake)
    provider_id = provider.launch(SPEC)
    seen = []
    for step in (0, 30, 60):
        clock.now += step
        got = provider.get(provider_id)
        assert got is not None and got.running and got.instance_id == "inst-1"
        seen.append((got.status, provider.comfyui_url(provider_id)))
    port = fake.host_port(int(provider_id))
    assert seen == [("provisioning", None), ("loading", None), ("running", f"http://203.0.113.103:{port}")]
    raw = fake.instance(int(provider_id))
    assert raw is not None and raw["ports"]["8188/tcp"][0]["HostPort"] == str(port)


def test_offer_taken_between_search_and_create_goes_to_the_next(fake: FakeVastAI, connect: Connect) -> None:
    provider, sleeps = connect(fake)
    fake.take_offer(102)
    provider_id = provider.launch(SPEC)
    assert [c.path for c in fake.calls if c.endpoint == "create"] == [
        "/api/v0/asks/102/",
        "/api/v0/asks/101/",
    ]
    assert fake.count("create", 404) == 1
    [instance] = fake.instances()
    assert str(instance["id"]) == provider_id and instance["machine_id"] == 50101
    assert sleeps == []  # 404 no_such_ask is not retried


def test_success_false_in_a_200_is_a_failure(fake: FakeVastAI, connect: Connect) -> None:
    provider, _ = connect(fake)
    fake.reject_create(102)
    provider_id = provider.launch(SPEC)
    assert fake.count("create", 200) == 2
    [instance] = fake.instances()
    assert str(instance["id"]) == provider_id and instance["machine_id"] == 50101


def test_no_matching_offer_is_a_clear_error(fake: FakeVastAI, connect: Connect) -> None:
    provider, _ = connect(fake)
    with pytest.raises(ProviderError, match=r"no Vast\.ai offer matches pool 'default'"):
        provider.launch(replace(SPEC, filters=OfferFilters(gpu_names=("H100 SXM",))))
    assert fake.count("create") == 0


def test_every_offer_taken_is_a_clear_error(fake: FakeVastAI, connect: Connect) -> None:
    provider, _ = connect(fake)
    for offer_id in (101, 102, 103):
        fake.take_offer(offer_id)
    with pytest.raises(ProviderError) as raised:
        provider.launch(SPEC)
    message = str(raised.value)
    assert "could not rent a Vast.ai machine for swarmstation-inst-1" in message
    assert all(f"offer {i}" in message for i in (101, 102, 103)) and "no_such_ask" in message
    assert fake.instances() == []


def test_storms_of_429_and_500_are_retried_with_backoff(fake: FakeVastAI, connect: Connect) -> None:
    provider, sleeps = connect(fake)
    fake.fail("list", 500, times=2, body="text")
    fake.fail("search", 429, times=2, body="json")
    fake.fail("create", 429, times=3, body="text")
    fake.fail("create", 429, times=1, body="detail")
    provider_id = provider.launch(SPEC)
    assert (fake.count("list"), fake.count("list", 500)) == (3, 2)
    assert (fake.count("search"), fake.count("search", 429)) == (3, 2)
    assert (fake.count("create"), fake.count("create", 429)) == (5, 4)
    assert len(fake.instances()) == 1 and str(fake.instances()[0]["id"]) == provider_id
    assert len(sleeps) == 2 + 2 + 4
    bounds = [1, 2, 1, 2, 1, 2, 4, 8]  # list, search, create; full jitter: uniform in [0, base * 2^attempt]
    assert all(0 <= slept <= bound for slept, bound in zip(sleeps, bounds, strict=True))
    assert len(set(sleeps)) == len(sleeps)  # jittered, not fixed


def test_a_500_from_create_looks_for_the_label_before_trying_again(
    fake: FakeVastAI, connect: Connect
) -> None:
    provider, sleeps = connect(fake, label_lookup_attempts=2, label_lookup_interval=5.0)
    fake.fail("create", 500, times=2, body="json")  # refused before anything was made
    provider_id = provider.launch(SPEC)
    assert fake.count("create") == 3
    assert fake.count("list") == 1 + 2 * 2  # the launch's own check, then two lookups per 500
    assert sleeps.count(5.0) == 2
    assert [str(i["id"]) for i in fake.instances()] == [provider_id]


def test_retries_give_up_with_an_error(fake: FakeVastAI, connect: Connect) -> None:
    provider, sleeps = connect(fake, max_retries=3)
    fake.fail("create", 429, times=50)
    with pytest.raises(ProviderError, match="429"):
        provider.launch(SPEC)
    assert fake.count("create") == 4  # one offer: the API is rate limiting, not the offer failing
    assert len(sleeps) == 3
    assert fake.instances() == []


def test_search_quota_exceeded_is_not_retried(fake: FakeVastAI, connect: Connect) -> None:
    provider, sleeps = connect(fake)
    fake.exceed_search_quota()
    with pytest.raises(VastAIQuotaError, match="search_quota_exceeded"):
        provider.search_offers(FILTERS)
    with pytest.raises(VastAIQuotaError):
        provider.launch(SPEC)
    assert fake.count("search") == 2
    assert sleeps == []
    assert fake.instances() == []


@pytest.mark.parametrize("mode", ["drop", "500", "no_contract", "hang"])
def test_a_lost_create_answer_is_found_by_label_not_rented_twice(
    fake: FakeVastAI, connect: Connect, mode: str
) -> None:
    provider, _ = connect(fake, timeout=0.3)
    fake.lose_create_answer(mode=mode, hang_seconds=0.6)
    provider_id = provider.launch(SPEC)
    assert fake.count("create") == 1
    [instance] = fake.instances()
    assert str(instance["id"]) == provider_id and instance["label"] == "swarmstation-inst-1"
    assert [p.instance_id for p in provider.list()] == ["inst-1"]


def test_a_lost_answer_while_the_listing_lags_is_not_rented_twice(
    servers: Callable[..., FakeVastAI], connect: Connect
) -> None:
    clock = ManualClock()
    fake = servers(clock=clock, listing_lag_seconds=8.0)
    slept: list[float] = []

    def sleep(seconds: float) -> None:  # time passes for the fake too
        slept.append(seconds)
        clock.now += seconds

    provider, _ = connect(fake, sleep=sleep, label_lookup_attempts=2, label_lookup_interval=5.0)
    fake.lose_create_answer(mode="drop")
    provider_id = provider.launch(SPEC)
    # Lookups at t=0 and t=5 miss it; the retried create finds the offer rented (by us: 404);
    # the lookups after that 404 find it once the listing catches up, instead of renting offer 101.
    assert [c.status for c in fake.calls if c.endpoint == "create"] == [None, 404]
    assert [str(i["id"]) for i in fake.instances()] == [provider_id]
    assert 10 <= sum(slept) < 14


def test_launch_adopts_a_live_machine_that_already_has_the_label(fake: FakeVastAI, connect: Connect) -> None:
    existing = fake.add_instance("swarmstation-inst-1", actual_status="loading")
    provider, _ = connect(fake)
    assert provider.launch(SPEC) == str(existing)
    assert fake.count("search") == 0 and fake.count("create") == 0


def test_launch_does_not_mistake_a_dead_machine_with_the_label_for_the_new_one(
    fake: FakeVastAI, connect: Connect
) -> None:
    dead = fake.add_instance("swarmstation-inst-1", actual_status="exited")
    provider, _ = connect(fake)
    fake.lose_create_answer(mode="no_contract")
    provider_id = provider.launch(SPEC)
    assert provider_id != str(dead)
    assert sorted(i["id"] for i in fake.instances()) == [dead, int(provider_id)]


# -- auth and secrets --------------------------------------------------------------------------------


def test_a_bad_key_fails_at_once_and_is_never_shown(
    servers: Callable[..., FakeVastAI], connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake = servers(echo_key_in_errors=True)  # a hostile server that repeats the key it got
    wrong_key = "wrong-key-5f3c9e0d7a"
    provider, sleeps = connect(fake, api_key=wrong_key)
    with pytest.raises(VastAIError) as raised:
        provider.launch(SPEC)
    assert raised.value.status == 401 and raised.value.auth
    assert "Invalid user key ***" in str(raised.value)
    assert wrong_key not in str(raised.value) and wrong_key not in repr(raised.value)
    assert wrong_key not in caplog.text
    assert wrong_key not in repr(provider) and wrong_key not in repr(provider.client)
    assert len(fake.calls) == 1 and sleeps == []


def test_the_key_is_never_logged(
    fake: FakeVastAI, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # httpx and httpcore included
    provider, _ = connect(fake, max_retries=2)
    fake.fail("search", 429, times=1)
    fake.lose_create_answer(mode="drop")
    provider_id = provider.launch(SPEC)
    provider.destroy(provider_id)
    fake.fail("list", 500, times=5)
    with pytest.raises(VastAIError) as raised:
        provider.list()
    assert caplog.records  # something was logged, so the check below means something
    assert "retry" in caplog.text
    assert fake.api_key not in caplog.text
    assert fake.api_key not in str(raised.value)
    assert SPEC.worker_token not in caplog.text


def test_from_settings(fake: FakeVastAI, tmp_path: Path) -> None:
    with pytest.raises(ProviderError, match="VASTAI_API_KEY"):
        VastAIProvider.from_settings(Settings(data_dir=tmp_path, vastai_api_key=" "))
    settings = Settings(data_dir=tmp_path, vastai_api_key=fake.api_key, vastai_base_url=fake.url)
    assert fake.api_key not in repr(settings)
    provider = VastAIProvider.from_settings(settings)
    try:
        assert provider.name == "vastai"
        assert [o.id for o in provider.search_offers(FILTERS)] == [102, 101, 103]
    finally:
        provider.close()


def test_vast_variables_keep_working(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SWARMSTATION_VASTAI_API_KEY", raising=False)
    monkeypatch.delenv("SWARMSTATION_VASTAI_BASE_URL", raising=False)
    monkeypatch.delenv("VASTAI_BASE_URL", raising=False)
    monkeypatch.setenv("VASTAI_API_KEY", "vast-key-from-env")
    monkeypatch.setenv("VAST_URL", "http://127.0.0.1:9")
    settings = Settings(data_dir=tmp_path)
    assert reveal(settings.vastai_api_key) == "vast-key-from-env"
    assert settings.vastai_base_url == "http://127.0.0.1:9"
    assert "vast-key-from-env" not in repr(settings)
    monkeypatch.setenv("VASTAI_BASE_URL", "http://127.0.0.1:10")  # the documented name wins
    assert Settings(data_dir=tmp_path).vastai_base_url == "http://127.0.0.1:10"
    monkeypatch.setenv("VASTAI_API_KEY", "")  # exported but empty: not configured
    assert Settings(data_dir=tmp_path).vastai_api_key is None


# -- list, get, destroy -----------------------------------------------------------------------------


def test_list_maps_statuses(servers: Callable[..., FakeVastAI], connect: Connect) -> None:
    fake = servers(provision_seconds=600)
    ids = {
        "ok": fake.add_instance("swarmstation-ok", actual_status="running", dph_total=0.42),
        "new": fake.add_instance("swarmstation-new"),  # actual_status null while provisioning
        "loading": fake.add_instance("swarmstation-loading", actual_status="loading"),
        "exited": fake.add_instance("swarmstation-exited", actual_status="exited"),
        "unknown": fake.add_instance("swarmstation-unknown", actual_status="unknown"),
        "offline": fake.add_instance("swarmstation-offline", actual_status="offline"),
        "pullfail": fake.add_instance(
            "swarmstation-pullfail",
            actual_status="loading",
            status_msg="Error response from daemon: pull access denied for nosuch/image",
        ),
    }
    fake.add_instance("someone-elses-training-run", actual_status="running")
    fake.add_instance("", actual_status="running")
    provider, _ = connect(fake)
    listed = {p.instance_id: p for p in provider.list()}
    assert set(listed) == set(ids)
    assert {k: p.provider_id for k, p in listed.items()} == {k: str(v) for k, v in ids.items()}
    assert {k: p.running for k, p in listed.items()} == {
        "ok": True,
        "new": True,
        "loading": True,
        "exited": False,
        "unknown": False,
        "offline": False,
        "pullfail": False,
    }
    assert listed["new"].status == "provisioning"
    assert listed["offline"].status == "offline"
    assert listed["pullfail"].status.startswith("loading: Error response from daemon")
    assert listed["ok"].price_per_hour == 0.42 and listed["ok"].gpu_name == "RTX 4090"


def test_no_instances_is_null_and_unknown_ids_are_none(fake: FakeVastAI, connect: Connect) -> None:
    headers = {"Authorization": f"Bearer {fake.api_key}"}
    raw = httpx.get(f"{fake.url}/api/v0/instances/?owner=me", headers=headers).json()
    assert raw == {"instances": None}  # the quirk is really served
    raw_one = httpx.get(f"{fake.url}/api/v0/instances/424242/", headers=headers).json()
    assert raw_one == {"instances": None}
    provider, _ = connect(fake)
    assert provider.list() == []
    assert provider.get("424242") is None
    assert provider.comfyui_url("424242") is None
    with pytest.raises(ProviderError, match=r"not a Vast\.ai instance id"):
        provider.get("swarmstation-inst-1")


def test_an_instance_that_exits_or_vanishes(fake: FakeVastAI, connect: Connect) -> None:
    provider, _ = connect(fake)
    first = provider.launch(SPEC)
    second = provider.launch(replace(SPEC, instance_id="inst-2"))
    fake.kill(int(first))
    fake.vanish(int(second))
    [exited] = provider.list()
    assert (exited.provider_id, exited.running, exited.status) == (first, False, "exited")
    assert provider.comfyui_url(first) is None  # no ports once exited
    assert provider.get(second) is None
    provider.destroy(second)  # already gone: fine
    provider.destroy(first)
    assert provider.list() == [] and fake.instances() == []


def test_destroy_is_idempotent_and_retried(fake: FakeVastAI, connect: Connect) -> None:
    provider, sleeps = connect(fake)
    provider_id = provider.launch(SPEC)
    fake.fail("destroy", 502, times=1)
    provider.destroy(provider_id)
    provider.destroy(provider_id)
    assert fake.count("destroy", 502) == 1
    assert fake.count("destroy", 200) == 1
    assert fake.count("destroy", 404) == 1
    assert fake.instances() == [] and len(sleeps) == 1
    # The freed machine is on the market again.
    assert 102 in [o.id for o in provider.search_offers(FILTERS)]
    with pytest.raises(ProviderError):
        provider.destroy("not-a-number")


# -- pure helpers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("instance", "expected"),
    [
        (
            {
                "public_ipaddr": "203.0.113.9",
                "ports": {"8188/tcp": [{"HostIp": "0.0.0.0", "HostPort": "41234"}]},
            },
            "http://203.0.113.9:41234",
        ),
        (
            {"public_ipaddr": " 203.0.113.9\n", "ports": {"8188/tcp": [{"HostPort": " 41234\n"}]}},
            "http://203.0.113.9:41234",
        ),
        (
            {"public_ipaddr": "2001:db8::1", "ports": {"8188/tcp": [{"HostPort": "41234"}]}},
            "http://[2001:db8::1]:41234",
        ),
        (
            {"public_ipaddr": "203.0.113.9", "ports": {"8188/tcp": [{"HostPort": 41234}]}},
            "http://203.0.113.9:41234",
        ),
        ({"public_ipaddr": "203.0.113.9", "ports": {"22/tcp": [{"HostPort": "20000"}]}}, None),
        ({"public_ipaddr": "203.0.113.9", "ports": {"8188/tcp": []}}, None),
        ({"public_ipaddr": "203.0.113.9", "ports": {"8188/tcp": [{"HostPort": "abc"}]}}, None),
        ({"public_ipaddr": "203.0.113.9", "ports": ["8188/tcp"]}, None),  # the docs' wrong list shape
        ({"public_ipaddr": "203.0.113.9"}, None),  # not running yet
        ({"public_ipaddr": None, "ports": {"8188/tcp": [{"HostPort": "41234"}]}}, None),
    ],
)
def test_comfyui_url_of(instance: dict[str, Any], expected: str | None) -> None:
    assert comfyui_url_of(instance) == expected


def test_instance_from_json_tolerates_odd_records() -> None:
    assert instance_from_json({"label": "swarmstation-x"}) is None  # no id
    assert instance_from_json({"id": True, "label": "swarmstation-x"}) is None
    mapped = instance_from_json(
        {"id": "17", "label": "swarmstation-x", "dph_total": "0.3", "actual_status": None}
    )
    assert mapped is not None
    assert (mapped.provider_id, mapped.instance_id, mapped.running, mapped.price_per_hour) == (
        "17",
        "x",
        True,
        0.3,
    )
    running_despite_old_msg = instance_from_json(
        {
            "id": 18,
            "label": "swarmstation-y",
            "actual_status": "running",
            "status_msg": "error pulling; retried",
        }
    )
    assert running_despite_old_msg is not None and running_despite_old_msg.running


def test_backoff_is_exponential_full_jitter_and_capped() -> None:
    class Top(random.Random):
        def random(self) -> float:
            return 1.0  # the top of the jitter window

    client = VastAIClient("k", backoff_base=1.0, backoff_cap=30.0, rng=Top())
    try:
        assert [client.backoff(n) for n in range(7)] == [1, 2, 4, 8, 16, 30, 30]
        client.rng = random.Random(3)
        delays = [client.backoff(4) for _ in range(200)]
        assert min(delays) < 2 and max(delays) > 14 and all(0 <= d <= 16 for d in delays)
    finally:
        client.close()


# -- onstart on the fake -----------------------------------------------------------------------------


def test_run_onstart_runs_the_bootstrap_and_destroy_stops_it(
    servers: Callable[..., FakeVastAI], connect: Connect
) -> None:
    fake = servers(run_onstart=True, load_seconds=0.2)
    provider, _ = connect(fake)
    onstart = (
        'echo "$SWARMSTATION_WORKER_TOKEN $SWARMSTATION_SERVER_URL $CONTAINER_ID $PUBLIC_IPADDR" '
        "> started.txt\n"
        'exec python -m http.server "$VAST_TCP_PORT_8188" --bind 127.0.0.1\n'
    )
    provider_id = provider.launch(replace(SPEC, onstart=onstart))
    url = None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        url = provider.comfyui_url(provider_id)
        if url is not None:
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
        time.sleep(0.05)
    else:
        pytest.fail(f"the onstart server never answered at {url}")
    assert url == f"http://127.0.0.1:{fake.host_port(int(provider_id))}"
    workdir = fake.instance_workdir(int(provider_id))
    assert workdir is not None
    assert (workdir / "started.txt").read_text().split() == [
        SPEC.worker_token,
        SPEC.server_url,
        provider_id,
        "127.0.0.1",
    ]
    process = fake.process(int(provider_id))
    assert process is not None and process.poll() is None
    provider.destroy(provider_id)
    assert process.poll() is not None
    with pytest.raises(httpx.TransportError):
        httpx.get(url, timeout=1)
