"""Held-out evaluation: tune on some seeds, evaluate on others, mean ± spread; sensitivity."""

import json

import pytest
from typer.testing import CliRunner

from swarmstation.sim import config as C
from swarmstation.sim import evaluate as V
from swarmstation.sim import market as M
from swarmstation.sim import trace as T
from swarmstation.sim.cli import sim_app


def test_parse_seeds() -> None:
    assert V.parse_seeds("11-15") == [11, 12, 13, 14, 15]
    assert V.parse_seeds("1,2, 7,2") == [1, 2, 7]
    assert V.parse_seeds("1-2,9") == [1, 2, 9]
    for bad in ("", "x", "5-3"):
        with pytest.raises(ValueError):
            V.parse_seeds(bad)


def test_spread() -> None:
    s = V.spread([1.0, 2.0, 3.0])
    assert (s.mean, s.sd, s.lo, s.hi, s.n) == (2.0, 1.0, 1.0, 3.0, 3)


def test_evaluate_summarises_each_seed() -> None:
    data = V.evaluate(
        lambda s: T.generate("prior", days=2, seed=s), C.SimConfig(), [3, 4], ("ours", "managed")
    )
    assert set(data["per_seed"]) == {3, 4}
    costs = [next(r for r in rows if r["policy"] == "ours")["cost_usd"] for rows in data["per_seed"].values()]
    summary = data["summary"]["ours"]["cost_usd"]
    assert summary["mean"] == pytest.approx(sum(costs) / 2, abs=1e-4) and summary["n"] == 2
    assert costs[0] != costs[1]  # each seed is a different trace and market


def test_sensitivity_moves_what_it_scales() -> None:
    price = next(a for a in M.ASSUMPTIONS if a.name == "managed price")
    cold = next(a for a in M.ASSUMPTIONS if a.name == "managed cold start")
    data = V.sensitivity(
        lambda s: T.generate("prior", days=2, seed=s),
        C.SimConfig(),
        [3],
        policies=("managed",),
        assumptions=(price, cold),
    )
    base = data["base"]["managed"]
    by = {(r["assumption"], r["factor"]): r["results"]["managed"] for r in data["rows"]}
    assert by[("managed price", 2.0)]["cost_per_1000_images"] > base["cost_per_1000_images"]
    assert by[("managed price", 0.5)]["cost_per_1000_images"] < base["cost_per_1000_images"]
    assert by[("managed cold start", 2.0)]["wait_p95_s"] > base["wait_p95_s"]
    assert "| managed cold start | x2 |" in V.sensitivity_markdown(data)


def test_capped_assumption_stays_a_probability() -> None:
    fails = next(a for a in M.ASSUMPTIONS if a.name == "launch failures")
    cfg = V.with_assumption(C.SimConfig(market=M.MARKETS["observed"]), fails, 2.0)
    assert cfg.market.never_running_prob <= 0.45 and cfg.market.never_ready_prob <= 0.45


def test_every_assumption_names_a_field_and_a_source() -> None:
    for a in M.ASSUMPTIONS:
        target = M.Marketplace() if a.target == "market" else M.ManagedService()
        assert a.source and all(hasattr(target, f) for f in a.fields), a.name


def test_run_refuses_the_seeds_it_was_tuned_on(tmp_path) -> None:
    runner = CliRunner()
    tuned = tmp_path / "tuned"
    grid = ["--preset", "prior", "--days", "1", "--seeds", "3", "--quick", "--workers", "1"]
    result = runner.invoke(sim_app, ["sweep", *grid, "--out", str(tuned), "--json"])
    assert result.exit_code == 0, result.output
    sweep = json.loads((tuned / "sweep.json").read_text())
    assert sweep["tuned_on"]["seeds"] == [3]
    same = ["run", "--preset", "prior", "--days", "1", "--knobs-from", str(tuned / "sweep.json")]
    refused = runner.invoke(sim_app, [*same, "--seeds", "3-4", "--out", str(tmp_path / "x")])
    assert refused.exit_code == 2 and "tuned on" in refused.output
    held = runner.invoke(sim_app, [*same, "--seeds", "5-6", "--out", str(tmp_path / "h"), "--json"])
    assert held.exit_code == 0, held.output
    payload = json.loads(held.output[held.output.index("{") :])
    assert payload["meta"]["seeds"] == [5, 6]
    assert payload["meta"]["pool"]["idle_minutes"] == sweep["recommended"]["idle_minutes"]
    assert (tmp_path / "h" / "heldout.md").read_text().count("| ours |") == 1


def test_unknown_market_is_refused() -> None:
    result = CliRunner().invoke(sim_app, ["run", "--preset", "prior", "--days", "0.1", "--market", "moon"])
    assert result.exit_code == 2 and "unknown market" in result.output


def test_run_with_chosen_policies(tmp_path) -> None:
    runner = CliRunner()
    args = ["run", "--preset", "prior", "--days", "1", "--seed", "3", "--out", str(tmp_path), "--json"]
    result = runner.invoke(sim_app, [*args, "--policies", "ours,managed"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output[result.output.index("{") :])
    assert [r["policy"] for r in payload["results"]] == ["ours", "managed"]
    bad = runner.invoke(sim_app, [*args, "--policies", "ours,psychic"])
    assert bad.exit_code == 2 and "psychic" in bad.output


def test_sweep_grid_option_and_forecast_knobs() -> None:
    from swarmstation.sim import sweep as S

    cfg = S.apply(C.SimConfig(), {"prewarm": 1, "prewarm_min_arrivals": 0.25, "prewarm_lead_seconds": 1800})
    assert cfg.pool.prewarm and cfg.forecast.min_arrivals == 0.25 and cfg.forecast.lead_seconds == 1800
    runner = CliRunner()
    base = ["sweep", "--preset", "prior", "--days", "1", "--seed", "3", "--workers", "1", "--json"]
    bad = runner.invoke(sim_app, [*base, "--grid", '{"moon_phase": [1]}'])
    assert bad.exit_code == 2 and "moon_phase" in bad.output
    assert runner.invoke(sim_app, [*base, "--grid", "[1]"]).exit_code == 2
    ok = runner.invoke(sim_app, [*base, "--grid", '{"idle_minutes": [5], "max_parked": [0, 2]}', "--quick"])
    assert ok.exit_code == 0, ok.output
    points = json.loads(ok.output[ok.output.index("{") :])["points"]
    assert {p["idle_minutes"] for p in points} == {5.0} and len(points) == 2 * 2 * 2  # x prewarm x prebuilt
