"""Waiting for a socket to become readable, through gevent's own private wait.

A socket read just emptied will, read again at once, fail with EAGAIN and then wait:
a wasted system call and exception per token. gevent's socket keeps its read watcher
(`_read_event`) and its wait (`_wait`, honouring the socket's timeout) private; this is
the one place that uses them (see runtime/__init__.py).
"""
from __future__ import annotations

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
