"""Running a load, bounded in count and time: closed-loop bursts or an open-loop rate.

Closed loop (`run_kind`): C workers, each sending one request after another, so at most C
are in flight; a slow server slows the load down, which understates latency under overload.
Open loop (`run_rate`): requests start at their scheduled times whatever is in flight,
as users arrive; a server that cannot keep up shows it as growing latency.
"""
from __future__ import annotations

import asyncio
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Coroutine, TypeVar

from .client import Record, Target, fetch
from .schedule import arrival_times
from .stats import tally

T = TypeVar("T")


@dataclass
class RunResult:
    """The records of one kind at one concurrency, and what it cost this process."""
    kind: str
    concurrency: int  # open loop: the most in flight at once
    records: list[Record] = field(default_factory=list)
    planned: int | None = None  # requests the run meant to send (None: as many as the duration allowed)
    rate: float | None = None  # open loop: requests started per second
    wall_time: float = 0.0  # first send to last completion (or to the time limit)
    client_cpu: float = 0.0  # CPU seconds this process spent, to show it was not the bottleneck
    timed_out: bool = False  # the time limit ended the run with requests still to do or in flight


class Progress:
    """A line on stderr about once a second, in the tables' terms: completed, failed, in flight."""

    def __init__(self, label: str, enabled: bool = True, interval: float = 1.0) -> None:
        self.label, self.enabled = label, enabled
        self.tty = sys.stderr.isatty()
        self.interval = interval if self.tty else max(interval, 5.0)
        self.last_counts: tuple | None = None  # of the last line written

    async def watch(self, records: list[Record], planned: int | None, started: float) -> None:
        while self.enabled:
            await asyncio.sleep(self.interval)
            self.show(records, planned, started)

    def show(self, records: list[Record], planned: int | None, started: float, final: bool = False) -> None:
        if not self.enabled:
            return
        counts = tally(records, planned)
        key = tuple(counts.values())
        if final and not self.tty and key == self.last_counts:
            return  # a log already has this line: the watcher wrote it as the run ended
        self.last_counts = key
        of = f" of {planned}" if planned else ""
        line = (f"[{self.label}] {time.perf_counter() - started:6.1f} s  completed {counts['completed']}{of}  "
                f"failed {counts['failed']}  in flight {counts['in_flight']}")
        end = "\n" if final or not self.tty else ""
        sys.stderr.write(("\r" if self.tty else "") + line + end)
        sys.stderr.flush()


async def run_kind(target: Target, kind: str, concurrency: int, requests: int | None = None,
                   duration: float | None = None, timeout: float = 60.0, time_limit: float | None = None,
                   progress: Progress | None = None) -> RunResult:
    """Keep `concurrency` requests of `kind` in flight until `requests` were sent or `duration` passed.

    `time_limit` bounds the whole run: requests still in flight then are cancelled and
    recorded as `cancelled`, and the result is marked `timed_out`.
    """
    if requests is None and duration is None:
        raise ValueError("give a number of requests, a duration, or both")
    result = RunResult(kind, concurrency, planned=requests)
    records = result.records
    payload = target.request_bytes(kind)
    tls = target.tls_context() if target.https else None
    started = time.perf_counter()
    cpu_before = time.process_time()
    stop_sending = started + duration if duration is not None else None
    issued = 0

    async def worker() -> None:
        nonlocal issued
        while requests is None or issued < requests:
            if stop_sending is not None and time.perf_counter() >= stop_sending:
                return
            issued += 1
            await fetch(target, kind, started, timeout, payload, records, tls)

    workers = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
    await _finish(result, workers, time_limit, progress, requests, started, cpu_before)
    return result


async def run_rate(target: Target, kind: str, rate: float, duration: float, arrival: str = "constant",
                   timeout: float = 60.0, time_limit: float | None = None, progress: Progress | None = None,
                   seed: int | None = 0) -> RunResult:
    """Start requests of `kind` at `rate` a second for `duration` s, whatever is in flight (open loop).

    Sending stops after `duration`; the requests sent are then awaited, up to `time_limit`
    from the start (cancelled past it, as in `run_kind`). `concurrency` in the result is
    the most requests that were in flight at once.
    """
    schedule = list(arrival_times(rate, duration, arrival, seed))
    result = RunResult(kind, 0, planned=len(schedule), rate=rate)
    records = result.records
    payload = target.request_bytes(kind)
    tls = target.tls_context() if target.https else None
    started = time.perf_counter()
    cpu_before = time.process_time()
    in_flight = 0

    async def one() -> None:
        nonlocal in_flight
        in_flight += 1
        result.concurrency = max(result.concurrency, in_flight)
        try:
            await fetch(target, kind, started, timeout, payload, records, tls)
        finally:
            in_flight -= 1

    async def sender() -> None:
        tasks = []
        try:
            for at in schedule:
                delay = started + at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.ensure_future(one()))
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    await _finish(result, [asyncio.ensure_future(sender())], time_limit, progress, len(schedule), started,
                  cpu_before)
    return result


async def _finish(result: RunResult, tasks: list[asyncio.Future], time_limit: float | None,
                  progress: Progress | None, planned: int | None, started: float, cpu_before: float) -> None:
    watcher = asyncio.ensure_future(progress.watch(result.records, planned, started)) if progress else None
    _, pending = await asyncio.wait(tasks, timeout=time_limit)
    if pending:
        result.timed_out = True
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    if watcher:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        progress.show(result.records, planned, started, final=True)
    result.wall_time = time.perf_counter() - started
    result.client_cpu = time.process_time() - cpu_before


def raise_file_limit() -> None:
    """Thousands of concurrent connections need as many descriptors; take the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run(coroutine_factory: Callable[[], Coroutine[None, None, T]], loop: str = "auto") -> T:
    """Run a coroutine on a fresh event loop: uvloop when asked for or, with "auto", when installed."""
    raise_file_limit()
    factory = None
    if loop in ("auto", "uvloop"):
        try:
            import uvloop
            factory = uvloop.new_event_loop
        except ImportError:
            if loop == "uvloop":
                raise SystemExit("loadtest: --loop uvloop asked for, but uvloop is not installed") from None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coroutine_factory())
