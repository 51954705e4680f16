"""The capacity figure: the highest open-loop rate a set-up sustains within a service-level objective.

Each step runs `run_rate` for a fixed duration at one rate and checks the objective on
its summary (p99 first token, p99 inter-token latency, no errors); the rate doubles
until a step fails, then the bracket is bisected (`schedule.next_rate`). Requests still
in flight a bounded time after sending stops are cancelled and count as errors, so an
overloaded step fails instead of running on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from .client import Target
from .runner import Progress, run, run_rate
from .schedule import Slo, next_rate, sweep_done
from .stats import summarize


@dataclass
class Capacity:
    """The sweep's outcome: the highest rate that met the objective (None: not even the lowest)."""
    kind: str
    slo: Slo
    rate: float | None
    failed_at: float | None  # the lowest rate that did not
    steps: list[dict[str, Any]] = field(default_factory=list)  # rate, met and summary of each run

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "slo": self.slo.describe(), "rate_per_s": self.rate,
                "failed_at_per_s": self.failed_at, "steps": self.steps}


def find_capacity(target: Target, kind: str, slo: Slo, start_rate: float = 1.0, duration: float = 10.0,
                  arrival: str = "poisson", max_steps: int = 8, precision: float = 0.1,
                  drain: float | None = None, timeout: float = 60.0, loop: str = "auto",
                  progress: bool = False, before_step: Callable[[], None] | None = None) -> Capacity:
    """Search the rate at which `kind` still meets `slo`; each step sends for `duration` seconds.

    `drain`: how long after sending stops the step waits for what is in flight (default:
    the duration again). `before_step` runs before each step (the experiment lets the
    previous step's leftovers finish there).
    """
    low = high = None
    steps: list[dict[str, Any]] = []
    limit = duration + (duration if drain is None else drain)
    while not sweep_done(low, high, len(steps), max_steps, precision):
        rate = next_rate(low, high, start_rate)
        if before_step:
            before_step()
        label = Progress(f"{kind} rate={rate:g}/s", enabled=progress)
        result = run(lambda: run_rate(target, kind, rate, duration, arrival, timeout=min(timeout, limit),
                                      time_limit=limit, progress=label), loop=loop)
        summary = summarize(result.records, result.wall_time, planned=result.planned)
        met = slo.met_by(summary)
        steps.append({"rate_per_s": rate, "met": met, "max_in_flight": result.concurrency, "summary": summary})
        if met:
            low = rate
        else:
            high = rate
    return Capacity(kind, slo, low, high, steps)
