"""Ending the upstream call when nobody waits for it, or when it has gone silent.

WSGI tells an application about a departed client only when it next writes, so a
stream waiting for its first token, a stalled stream and a blocking call would keep
the model generating (and billing) for nobody. Under gevent, a side greenlet per
request watches the client socket and the upstream deadline, and interrupts the
request's greenlet — only while that greenlet is waiting on the upstream, never in
the middle of a write. Without gevent (sync and gthread workers, the test client) the
guard does nothing and the client's read timeouts are the only bound.

The interruptions are BaseExceptions, like gevent.Timeout, so that the `openai`
client's retry loop (which catches Exception) does not retry a call nobody wants.
"""
from __future__ import annotations

import socket
import sys
import time
from typing import Any


class ClientGone(BaseException):
    """The client closed its connection."""


class UpstreamSilent(BaseException):
    """The upstream sent nothing before the deadline."""


def _gevent_active() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and monkey.is_module_patched("socket")


class Guard:
    """The no-op guard: used where no client socket can be watched."""

    active = False  # whether deadlines and departures are enforced at all
    loop = None  # gevent's event loop, for the relay's fairness check
    gone = False
    waiting = False
    deadline = float("inf")

    def close(self) -> None:
        pass


class SocketGuard(Guard):
    active = True

    def __init__(self, client: Any, deadline: float) -> None:
        import gevent

        self.deadline = deadline  # monotonic time; the request loop moves it forward
        self.waiting = False  # True while the request greenlet waits on the upstream
        self.gone = False
        self._closed = False
        self._client = client
        self._target = gevent.getcurrent()
        self._hub = gevent.get_hub()
        self.loop = self._hub.loop
        self._watcher = gevent.spawn(self._watch)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._watcher.kill(block=False)

    def _watch(self) -> None:
        import gevent
        from gevent.socket import wait_read

        fileno = self._client.fileno()
        watching_client = fileno >= 0  # -1: the request is already over
        while not self._closed:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0 and self.waiting:
                self._interrupt(UpstreamSilent())
                return
            # Past the deadline but writing to the client: look again shortly.
            timeout = min(max(remaining, 0.05), 3600.0)
            if not watching_client:
                gevent.sleep(timeout)
                continue
            try:
                wait_read(fileno, timeout=timeout)
            except socket.timeout:
                continue
            except OSError:  # the socket was closed under us: the request is over
                return
            try:
                peeked = self._client.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue
            except OSError:
                peeked = b""
            if peeked:
                # The client sent more (a pipelined request): it is still there.
                watching_client = False
                continue
            self.gone = True
            if self.waiting:
                self._interrupt(ClientGone())
            return

    def _interrupt(self, exc: BaseException) -> None:
        # From the hub, not from here: by the time it runs the request may have moved on.
        def throw() -> None:
            if self.waiting and not self._closed:
                self._target.throw(exc)
        self._hub.loop.run_callback(throw)


def guard_for(environ: dict, deadline: float) -> Guard:
    client = environ.get("gunicorn.socket")
    if client is None or not _gevent_active():
        return Guard()
    return SocketGuard(client, deadline)
