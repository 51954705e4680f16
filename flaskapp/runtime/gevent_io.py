"""gevent's event loop where the standard library has no word for it: waiting for a socket to
become readable, through gevent's own private wait, and a callback run later from the loop.

A socket read just emptied will, read again at once, fail with EAGAIN and then wait:
a wasted system call and exception per token. gevent's socket keeps its read watcher
(`_read_event`) and its wait (`_wait`, honouring the socket's timeout) private; this is
the one place that uses them (see runtime/__init__.py).
"""
from __future__ import annotations

import sys
from functools import partial
from typing import Any, Callable


def readable_waiter(sock: Any) -> Callable[[], None] | None:
    """A call that waits until `sock` is readable (within its timeout); None where there is none.

    Only for a plain gevent socket: not a standard one (no event loop) and not TLS, whose
    buffer may hold bytes the socket no longer shows.
    """
    if not hasattr(sock, "_read_event") or hasattr(sock, "pending"):
        return None
    return partial(sock._wait, sock._read_event)


def call_later(seconds: float, callback: Callable[[], None]) -> bool:
    """Have gevent's event loop run `callback` in `seconds`, in a gevent-patched process (a gevent
    worker). False where there is no such loop (gunicorn's master, other workers): nothing is scheduled.

    The callback runs in the hub: it must not block on anything gevent waits for, nor raise.
    """
    monkey = sys.modules.get("gevent.monkey")
    if monkey is None or not monkey.is_module_patched("socket"):
        return False
    from gevent import get_hub

    timer = get_hub().loop.timer(seconds)

    def fire() -> None:
        timer.close()
        callback()

    timer.start(fire)
    return True
