"""Ending the upstream call when nobody waits for it, or when it has gone silent.

WSGI tells an application about a departed client only when it next writes, so a
stream waiting for its first token, a stalled stream and a blocking call would keep
the model generating (and billing) for nobody. Under gevent, two event-loop watchers
per request (the client socket, a deadline timer) interrupt the request's greenlet —
only while that greenlet is waiting on the upstream, never in the middle of a write.
Without gevent (sync and gthread workers, the test client) the guard does nothing and
the upstream read timeouts are the only bound.

The interruptions are BaseExceptions, like gevent.Timeout, so that no `except
Exception` on the way (the `openai` client's, httpx's) swallows or retries them.
"""
from __future__ import annotations

import socket
import sys
import time
from typing import Any

from . import client_socket


class ClientGone(BaseException):
    """The client closed its connection."""


class UpstreamSilent(BaseException):
    """The upstream sent nothing before the deadline."""


def _gevent_active() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and monkey.is_module_patched("socket")


class Guard:
    """The no-op guard: used where no client socket can be watched.

    A request's greenlet waits on the upstream only inside `with guard.awaiting(until):`,
    the one place that marks it interruptible; the deadline moves only through
    `awaiting(until)`, `expect_by()` and `tighten()`. A stream's loop, which waits once per
    upstream read and cannot spare the calls (upstream/stream.py), takes `awaiting`'s
    steps itself: the deadline moved on as `awaiting(until)` moves it, ClientGone where
    `gone`, and `waiting` set for the read alone.
    """

    active = False  # whether deadlines and departures are enforced at all
    gone = False  # the client left (set by the watcher)
    waiting = False  # inside `awaiting()`: read by the watchers, written only there
    deadline = float("inf")  # monotonic time after which a wait is cut short

    def awaiting(self, until: float | None = None) -> "Guard":
        """`with guard.awaiting(until):` around a wait on the upstream, with `until` the new deadline.

        Entering raises ClientGone if the client has already left. (The guard is its own
        context manager: this runs once per upstream read, where every call counts.)
        """
        if until is not None:
            if until < self.deadline:
                self.tighten(until)
            else:
                self.deadline = until  # later: the timer looks again when it fires
        return self

    def __enter__(self) -> None:
        if self.gone:
            raise ClientGone()
        self.waiting = True

    def __exit__(self, *exc_info: object) -> None:
        self.waiting = False

    def expect_by(self, deadline: float) -> None:
        """Move the deadline, sooner or later."""
        self.awaiting(deadline)

    def tighten(self, deadline: float) -> None:
        """Bring the deadline forward, never back."""
        self.deadline = min(self.deadline, deadline)

    def close(self) -> None:
        pass


class SocketGuard(Guard):
    """Two event-loop watchers, no greenlet: the client socket becoming readable, and a timer.

    The client's watcher starts once the request has lasted `WATCH_AFTER` (the timer's first
    call, when its deadline is later): a watcher costs two system calls, its socket's
    registration with the kernel's epoll and its removal, and most short requests are over
    before. A client that left earlier is noticed then.
    """

    active = True
    RECHECK = 0.05  # seconds: a deadline that passes mid-write is looked at again this soon
    WATCH_AFTER = 0.1  # seconds from the guard's start to the client's watcher's

    def __init__(self, client: Any, *, deadline: float) -> None:
        import gevent

        now = time.monotonic()
        self.deadline = deadline
        self.waiting = False
        self.gone = False
        self._closed = False
        self._client = client
        self._target = gevent.getcurrent()
        self._loop = gevent.get_hub().loop
        self._readable: Any = None  # the client's watcher, from `_watch_at` on
        self._watch_at = now + self.WATCH_AFTER
        self._timer = None
        self._arm(deadline - now)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._readable is not None:
                self._readable.close()
            if self._timer is not None:
                self._timer.close()

    def tighten(self, deadline: float) -> None:
        if deadline < self.deadline:
            self.deadline = deadline
            if not self._closed:
                self._arm(deadline - time.monotonic())  # the timer may be set for the later one

    def _arm(self, seconds: float) -> None:
        if self._readable is None:  # the client is not watched yet: look again when it is to be
            seconds = min(seconds, self._watch_at - time.monotonic())
        if seconds > 1e6:
            return  # no deadline: only the client is watched
        if self._timer is not None:
            self._timer.close()
        self._timer = self._loop.timer(max(seconds, 0.0))
        self._timer.start(self._on_timer)

    def _on_timer(self) -> None:
        if self._closed:
            return
        if self._readable is None and time.monotonic() >= self._watch_at:
            self._readable = self._loop.io(self._client.fileno(), 1)
            self._readable.start(self._on_readable)
        remaining = self.deadline - time.monotonic()
        if remaining <= 0 and self.waiting:
            self._interrupt(UpstreamSilent())
        else:
            # The request moved the deadline on, or is writing to its client: look again then.
            self._arm(remaining if remaining > 0 else self.RECHECK)

    def _on_readable(self) -> None:
        try:
            peeked = self._client.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            peeked = b""
        self._readable.stop()  # either way, nothing more to learn from this socket
        if peeked:
            return  # the client sent more (a pipelined request): it is still there
        self.gone = True
        if self.waiting:
            self._interrupt(ClientGone())

    def _interrupt(self, exc: BaseException) -> None:
        # From a fresh callback, not from inside a watcher's: by then the request may have moved on.
        def throw() -> None:
            if self.waiting and not self._closed:
                self._target.throw(exc)
        self._loop.run_callback(throw)


def guard_for(environ: dict, deadline: float) -> Guard:
    """The request's guard: watching its client under gevent, the no-op one elsewhere."""
    client = client_socket(environ)
    if client is None or not _gevent_active():
        return Guard()
    return SocketGuard(client, deadline=deadline)
