"""domain/forecast.py: hour-of-week / hour-of-day profile with a recent-level correction, and the
pre-warm instance count it gives."""

import pytest

from swarmstation.domain import forecast as F

H = 3600.0


def daily_cycle(days: int, *, peak_per_hour: int = 60, quiet_per_hour: int = 2) -> list[float]:
    """Arrivals spread evenly in each hour: 18:00-21:00 busy, the rest quiet."""
    out: list[float] = []
    for d in range(days):
        for h in range(24):
            n = peak_per_hour if 18 <= h < 21 else quiet_per_hour
            out.extend(d * F.DAY + h * H + (i + 0.5) * H / n for i in range(n))
    return out


def test_profile_period_follows_the_history() -> None:
    assert F.profile_period(3 * H) is None
    assert F.profile_period(2 * F.DAY) == F.DAY
    assert F.profile_period(8 * F.DAY) == F.WEEK


def test_hour_of_day_profile_predicts_the_peak() -> None:
    arrivals = daily_cycle(3)
    now = 3 * F.DAY + 12 * H  # noon on day 4 (the morning of day 4 is not in the history)
    arrivals += [a + 3 * F.DAY for a in daily_cycle(1) if a < 12 * H]
    peak = F.expected_arrivals(arrivals, now=now, start=now + 6 * H, end=now + 7 * H)
    quiet = F.expected_arrivals(arrivals, now=now, start=now + 1 * H, end=now + 2 * H)
    assert peak == pytest.approx(60, rel=0.05)
    assert quiet == pytest.approx(2, rel=0.05)


def test_recent_level_scales_the_profile_within_bounds() -> None:
    base = daily_cycle(7)
    now = 7 * F.DAY + 17 * H
    today = [a + 7 * F.DAY for a in daily_cycle(1) if a < 17 * H]
    busier = [a + 7 * F.DAY for a in daily_cycle(1, quiet_per_hour=6) if a < 17 * H]
    usual = F.expected_arrivals(base + today, now=now, start=now + H, end=now + 2 * H)
    more = F.expected_arrivals(base + busier, now=now, start=now + H, end=now + 2 * H)
    assert usual == pytest.approx(60, rel=0.1)
    assert usual < more <= 2.0 * usual + 1e-9  # max_level


def test_hour_of_week_profile_tells_days_apart() -> None:
    # two weeks where only Mondays (day 0 of each week on this clock) have a peak
    arrivals = [a for a in daily_cycle(14) if (a // F.DAY) % 7 == 0 or not 18 * H <= a % F.DAY < 21 * H]
    now = 14 * F.DAY + 12 * H  # day 0 of week 3
    monday = F.expected_arrivals(arrivals, now=now, start=now + 6 * H, end=now + 7 * H)
    tuesday = F.expected_arrivals(arrivals, now=now, start=now + F.DAY + 6 * H, end=now + F.DAY + 7 * H)
    assert monday > 10 * tuesday


def test_no_cycle_yet_uses_the_recent_rate() -> None:
    arrivals = [i * 60.0 for i in range(60)]  # one an minute for an hour
    assert F.expected_arrivals(arrivals, now=3600.0, start=3600.0, end=7200.0) == pytest.approx(60)
    assert F.expected_arrivals([], now=3600.0, start=3600.0, end=7200.0) == 0.0


def test_a_profile_is_the_same_anywhere_in_its_bucket() -> None:
    arrivals = daily_cycle(3)
    a = F.build_profile(arrivals, now=2 * F.DAY + 5 * H + 1)
    b = F.build_profile(arrivals, now=2 * F.DAY + 5 * H + 3599)
    assert a == b


def test_prewarm_instances_rise_a_lead_time_before_the_peak() -> None:
    arrivals = daily_cycle(7)
    cfg = F.ForecastConfig(lead_seconds=900.0, utilisation=0.5)

    def need(hour: float) -> int:
        now = 7 * F.DAY + hour * H
        past = arrivals + [a + 7 * F.DAY for a in daily_cycle(1) if a < hour * H]
        return F.prewarm_instances(past, now=now, expected_job_seconds=30.0, config=cfg)

    # peak: 60 an hour x 30 s = 0.5 busy slots; at 50% utilisation one instance
    assert need(12.0) == 0  # 2 an hour: 0.5 jobs expected in the next 15 minutes, below min_arrivals
    assert need(17.80) == 1  # 17:48: the peak's first 12 minutes are in the lead time
    heavy = sorted(a for a in daily_cycle(8) for _ in range(10))  # 600 an hour at the peak

    def heavy_need(hour: float) -> int:
        now = 7 * F.DAY + hour * H
        past = [a for a in heavy if a < now]
        return F.prewarm_instances(past, now=now, expected_job_seconds=30.0, config=cfg)

    # 600 an hour x 30 s = 5 busy slots, at 50% utilisation 10 instances; 20 an hour: 1
    assert heavy_need(17.80) == 10  # 17:48: the 18:00 bucket is within the lead time
    assert heavy_need(17.5) == 1  # 17:30: not yet (20 an hour: 5 in the next 15 minutes, one instance)
    assert heavy_need(21.5) == 1  # after the peak
    assert F.prewarm_instances([], now=7 * F.DAY, expected_job_seconds=30.0) == 0
