"""This process's id, read once per process rather than by a system call each time it is asked.

`os.getpid()` is a system call (glibc no longer caches it), and a request asked for it
three times: the upstream client's check for a fork, and its log line's `pid`. The id
changes only in a forked child, where `os.register_at_fork` reads it again.
"""
from __future__ import annotations

import os

_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


def pid() -> int:
    """`os.getpid()`, without the system call."""
    return _pid
