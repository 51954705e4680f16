"""A stream's pace under gevent: fairness to the worker's other requests, and the least interval between reads.

gevent switches only when a greenlet would block. An upstream that always has data ready
would keep one stream running and starve every other request on the worker, so past a
time slice without the event loop turning (`loop.iteration`), the stream yields. And a
read and its write cost the worker the same however few tokens they carry: pausing
`interval` between reads lets tokens gather in the socket for one read to take.
"""
from __future__ import annotations

import time

import gevent

from .guard import Guard


class Pacer:
    __slots__ = ("_loop", "_slice", "interval", "_guard", "_iteration", "_since", "read_at")

    def __init__(self, guard: Guard, *, fair_slice: float, interval: float) -> None:
        self._loop = gevent.get_hub().loop
        self._slice = fair_slice  # seconds a stream may relay without the event loop turning; 0: never yield
        self.interval = interval  # least seconds between reads; 0: none
        self._guard = guard
        self._iteration, self._since = -1, 0.0
        self.read_at = 0.0  # when the last read ended: the reader sets it, where interval is set

    def before_read(self) -> float:
        """Pause or yield as due; the time then (monotonic)."""
        if self.read_at:
            pause = self.read_at + self.interval - time.monotonic()
            if pause > 0:
                with self._guard.awaiting():  # a client leaving ends the pause, and the stream
                    gevent.sleep(pause)
        now = time.monotonic()
        if self._slice:
            loop = self._loop
            if loop.iteration != self._iteration:
                self._iteration, self._since = loop.iteration, now
            elif now - self._since > self._slice:
                gevent.sleep(0)
                now = time.monotonic()
                self._iteration, self._since = loop.iteration, now
        return now


def pacer_for(guard: Guard, *, fair_slice: float, interval: float) -> Pacer | None:
    """A Pacer where the guard is gevent's and there is pacing to do; None otherwise."""
    if not guard.active or not (fair_slice or interval):
        return None
    return Pacer(guard, fair_slice=fair_slice, interval=interval)
