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
    """Called by a stream before a read once `due`: `now, due = pacer.pace(now)`.

    Between calls the stream only compares the time with `due`, the cheapest check there
    is, once per read. Without an interval a stream is looked at once a slice: one that
    finds the loop has not turned since the last look yields, so a stream runs at most
    about two slices while others wait.
    """

    __slots__ = ("_loop", "slice", "interval", "_guard", "_iteration", "read_at")

    def __init__(self, guard: Guard, *, fair_slice: float, interval: float) -> None:
        self._loop = gevent.get_hub().loop
        self.slice = fair_slice  # seconds a stream may relay without the event loop turning; 0: never yield
        self.interval = interval  # least seconds between reads; 0: none
        self._guard = guard
        self._iteration = -1
        self.read_at = 0.0  # when the last read ended: the stream sets it, where there is an interval

    def pace(self, now: float) -> tuple[float, float]:
        """Pause or yield as due; the time then (monotonic), and when to call again."""
        if self.interval and self.read_at:
            pause = self.read_at + self.interval - now
            if pause > 0:
                with self._guard.awaiting():  # a client leaving ends the pause, and the stream
                    gevent.sleep(pause)
                now = time.monotonic()
        if self.slice:
            iteration = self._loop.iteration
            if iteration == self._iteration:  # not turned for a slice at least
                gevent.sleep(0)
                now, iteration = time.monotonic(), self._loop.iteration
            self._iteration = iteration
        return now, (0.0 if self.interval else now + self.slice)


def pacer_for(guard: Guard, *, fair_slice: float, interval: float) -> Pacer | None:
    """A Pacer where the guard is gevent's and there is pacing to do; None otherwise."""
    if not guard.active or not (fair_slice or interval):
        return None
    return Pacer(guard, fair_slice=fair_slice, interval=interval)
