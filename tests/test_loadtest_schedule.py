"""flaskapp.loadtest.schedule: arrival times, a cell's size and the capacity search, decided before any request."""
from __future__ import annotations

import pytest

from flaskapp.loadtest.schedule import (CellTooShort, Slo, arrival_times, next_rate, plan_cell,
                                        sweep_done)
from flaskapp.loadtest.stats import summarize


def test_constant_arrivals_are_evenly_spaced_and_exactly_rate_times_duration():
    times = list(arrival_times(20, 0.5))
    assert len(times) == 10 and times[1] == pytest.approx(0.05) and times[-1] == pytest.approx(0.45)


def test_poisson_arrivals_average_the_rate_and_are_reproducible():
    times = list(arrival_times(100, 20, "poisson", seed=3))
    assert 1800 < len(times) < 2200  # 2,000 expected; 4.5 standard deviations either side
    assert times == list(arrival_times(100, 20, "poisson", seed=3))
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps) < 0.001 < 0.03 < max(gaps)  # not evenly spaced


@pytest.mark.parametrize("rate, arrival", [(0, "constant"), (-1, "poisson"), (1, "burst")])
def test_arrivals_reject_what_they_cannot_schedule(rate, arrival):
    with pytest.raises(ValueError):
        list(arrival_times(rate, 1, arrival))


@pytest.mark.parametrize("concurrency, rounds, minimum, ideal, limit, requests, waves", [
    # The short experiment: 3 requests of 2.5 s one after another never fit in 5 s; one does.
    (1, 1, 3, 2.5, 5, 1, 1),
    (10, 1, 3, 2.5, 5, 10, 1),
    (1, 1, 3, 2.5, 15, 3, 3),  # the default bound holds all three
    (2, 3, 3, 1.0, 2.5, 4, 2),  # 3 rounds wanted, 2 fit
    (500, 1, 3, 2.5, 15, 500, 1),
])
def test_a_cell_sizes_itself_to_its_limit(concurrency, rounds, minimum, ideal, limit, requests, waves):
    plan = plan_cell(concurrency, rounds, minimum, ideal, limit)
    assert (plan.requests, plan.waves) == (requests, waves)
    assert plan.ideal_s <= 0.8 * limit
    assert plan.sized_down == (requests < max(rounds * concurrency, minimum))


def test_a_limit_that_cannot_hold_one_request_is_refused_with_the_limit_that_would():
    with pytest.raises(CellTooShort, match=r"cannot hold one request.*--cell-time-limit 3\.2 or more"):
        plan_cell(1, 1, 3, 2.5, 2.5)


def _summary(ttft: float, itl_gap: float, errors: int = 0) -> dict:
    ok = [{"kind": "stream", "ttft": ttft, "last_token": ttft + 9 * itl_gap, "total": ttft + 9 * itl_gap,
           "tokens": 10, "chunks": 10, "gaps": [itl_gap] * 9} for _ in range(20)]
    failed = [{"kind": "stream", "error": "timeout", "total": 1.0, "chunks": 0}] * errors
    return summarize(ok + failed, 10.0)


@pytest.mark.parametrize("summary, met", [
    (_summary(0.4, 0.02), True),
    (_summary(0.6, 0.02), False),  # first token too late
    (_summary(0.4, 0.06), False),  # tokens too slow
    (_summary(0.4, 0.02, errors=1), False),  # an error is a miss at 0 % allowed
    (summarize([], 1.0), False),  # nothing completed: not met
])
def test_slo_is_met_by_p99_first_token_and_inter_token_latency(summary, met):
    assert Slo(ttft_p99_s=0.5, itl_p99_s=0.05).met_by(summary) is met


def test_the_rate_search_doubles_then_bisects():
    assert next_rate(None, None, start=4) == 4
    assert next_rate(4, None, start=4) == 8
    assert next_rate(None, 4, start=4) == 2
    assert next_rate(8, 16, start=4) == 12
    assert sweep_done(15, 16, steps=3, max_steps=10, precision=0.1)
    assert not sweep_done(8, 16, steps=3, max_steps=10, precision=0.1)
    assert sweep_done(8, None, steps=10, max_steps=10, precision=0.1)
