"""How much load, decided before any request is sent: arrival times, a cell's size, the capacity search.

Pure functions, so that what a run will do can be tested without running it.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Iterator

ARRIVALS = ("constant", "poisson")
# A cell is planned to fill at most this share of its time limit at the ideal pace, leaving
# the rest for what the ideal leaves out (connecting, relaying, a busy core).
CELL_HEADROOM = 0.8


def arrival_times(rate: float, duration: float, arrival: str = "constant", seed: int | None = 0) -> Iterator[float]:
    """Send times (seconds from the start) of an open-loop load of `rate` requests a second.

    constant: one every 1/rate s. poisson: exponential gaps of mean 1/rate s (independent
    users, as guidellm's and vLLM's benchmarks draw them), reproducible from `seed`.
    """
    if rate <= 0:
        raise ValueError(f"the rate must be positive, not {rate}")
    if arrival not in ARRIVALS:
        raise ValueError(f"arrival is one of {', '.join(ARRIVALS)}, not {arrival!r}")
    draw = random.Random(seed)
    at, sent = 0.0, 0
    while at < duration:
        yield at
        sent += 1
        # i / rate, not a running sum: 20 a second for 0.5 s is 10 requests, not 11.
        at = sent / rate if arrival == "constant" else at + draw.expovariate(rate)


@dataclass(frozen=True)
class CellPlan:
    """A burst cell's size: `requests` sent by `concurrency` workers, `waves` one after another."""
    requests: int
    waves: int
    wanted: int  # what rounds and min-requests asked for
    ideal_s: float  # the time the waves take at the upstream's pace

    @property
    def sized_down(self) -> bool:
        return self.requests < self.wanted


class CellTooShort(ValueError):
    """The time limit cannot hold even one request at the upstream's pace."""


def plan_cell(concurrency: int, rounds: int, min_requests: int, ideal_request_s: float,
              time_limit: float) -> CellPlan:
    """Size a burst cell to its time limit, or refuse a limit too short for a single wave.

    A cell of C workers sends max(rounds x C, min_requests) requests in ceil(n / C) waves;
    when those waves cannot finish within CELL_HEADROOM of the limit at the ideal pace,
    the cell sends as many whole waves as can, so that "timed out" means the server was
    slow, never that the cell was planned longer than its bound.
    """
    wanted = max(rounds * concurrency, min_requests)
    fits = math.floor(time_limit * CELL_HEADROOM / ideal_request_s) if ideal_request_s > 0 else math.inf
    if fits < 1:
        raise CellTooShort(
            f"a cell time limit of {time_limit:g} s cannot hold one request: each takes {ideal_request_s:g} s "
            f"at the upstream's pace, and a cell plans at most {CELL_HEADROOM:.0%} of its limit; "
            f"give --cell-time-limit {math.ceil(ideal_request_s / CELL_HEADROOM * 10) / 10:g} or more")
    waves = math.ceil(wanted / concurrency)
    if waves <= fits:
        return CellPlan(wanted, waves, wanted, waves * ideal_request_s)
    waves = int(fits)
    return CellPlan(waves * concurrency, waves, wanted, waves * ideal_request_s)


@dataclass(frozen=True)
class Slo:
    """Service-level objective of a streaming set-up: p99 first token and p99 inter-token latency."""
    ttft_p99_s: float | None = None
    itl_p99_s: float | None = None
    max_error_rate: float = 0.0

    def met_by(self, summary: dict) -> bool:
        """Whether a run's summary meets the objective (no completed request: it does not)."""
        if not summary["completed"]:
            return False
        if summary["errors"] > self.max_error_rate * summary["requests"]:
            return False
        for limit, name in ((self.ttft_p99_s, "ttft_s"), (self.itl_p99_s, "inter_token_latency_s")):
            p99 = summary[name]["p99"]
            if limit is not None and (p99 is None or p99 > limit):
                return False
        return True

    def describe(self) -> str:
        parts = [f"first token p99 <= {self.ttft_p99_s * 1000:g} ms" if self.ttft_p99_s is not None else "",
                 f"inter-token p99 <= {self.itl_p99_s * 1000:g} ms" if self.itl_p99_s is not None else "",
                 f"errors <= {self.max_error_rate:.0%}"]
        return ", ".join(p for p in parts if p)


def next_rate(low: float | None, high: float | None, start: float, factor: float = 2.0) -> float:
    """The next rate to try: double until a rate fails, then bisect between the last pass and first fail.

    `low` is the highest rate that met the objective so far, `high` the lowest that did not.
    """
    if low is None and high is None:
        return start
    if high is None:
        return low * factor
    if low is None:
        return high / factor
    return (low + high) / 2


def sweep_done(low: float | None, high: float | None, steps: int, max_steps: int, precision: float) -> bool:
    """Stop when the bracket is within `precision` (relative), or after `max_steps` runs."""
    if steps >= max_steps:
        return True
    if low is not None and high is not None:
        return (high - low) <= precision * high
    return False
