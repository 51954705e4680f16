"""Running a load: C workers, each sending one request after another, bounded in count and time."""
from __future__ import annotations

import asyncio
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Coroutine, TypeVar

from .client import Record, Target, fetch

T = TypeVar("T")


@dataclass
class RunResult:
    """The records of one kind at one concurrency, and what it cost this process."""
    kind: str
    concurrency: int
    records: list[Record] = field(default_factory=list)
    wall_time: float = 0.0  # first send to last completion (or to the time limit)
    client_cpu: float = 0.0  # CPU seconds this process spent, to show it was not the bottleneck
    timed_out: bool = False  # the time limit ended the run with requests still to do or in flight


class Progress:
    """A line on stderr about once a second: done, in flight, errors."""

    def __init__(self, label: str, enabled: bool = True, interval: float = 1.0) -> None:
        self.label, self.enabled = label, enabled
        self.tty = sys.stderr.isatty()
        self.interval = interval if self.tty else max(interval, 5.0)

    async def watch(self, records: list[Record], planned: int | None, started: float) -> None:
        while self.enabled:
            await asyncio.sleep(self.interval)
            self.show(records, planned, started)

    def show(self, records: list[Record], planned: int | None, started: float, final: bool = False) -> None:
        if not self.enabled:
            return
        done = sum(1 for r in records if r.total is not None)
        errors = sum(1 for r in records if r.error is not None)
        of = f"/{planned}" if planned else ""
        line = (f"[{self.label}] {time.perf_counter() - started:6.1f} s  done {done}{of}  "
                f"in flight {len(records) - done}  errors {errors}")
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
    result = RunResult(kind, concurrency)
    records = result.records
    payload = target.request_bytes(kind)
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
            await fetch(target, kind, started, timeout, payload, records)

    workers = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
    watcher = asyncio.ensure_future(progress.watch(records, requests, started)) if progress else None
    _, pending = await asyncio.wait(workers, timeout=time_limit)
    if pending:
        result.timed_out = True
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    if watcher:
        watcher.cancel()
        progress.show(records, requests, started, final=True)
    result.wall_time = time.perf_counter() - started
    result.client_cpu = time.process_time() - cpu_before
    return result


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
