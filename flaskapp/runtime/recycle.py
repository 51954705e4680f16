"""max_requests recycling with no gap: a recycled worker has its replacement accepting before it stops.

What gunicorn 27 does by itself (workers/base_async.py, ggevent.py, arbiter.py): the request
that reaches a worker's `max_requests` (plus its jitter) sets `worker.alive = False`; within
a second the gevent worker closes its listener, then lets its streams finish (up to
graceful_timeout) and exits; only then does the master reap it and fork the replacement,
which imports and warms the app before it accepts. With one worker nothing accepts
meanwhile: new requests wait the old streams' remaining time plus a boot (4.4-5.1 s with
200 streams in flight). With more workers the others carry the load, one worker short.

What this module does instead, from gunicorn's hooks (gunicorn.conf.py):

- In each worker (`post_worker_init` -> `worker_ready`): say the worker is ready (a file
  `ready-<pid>`), then take the limit over from gunicorn (`max_requests` set out of reach,
  a greenlet watching `worker.nr`). At the limit the worker asks the master for one worker
  more (a `want-<pid>` file, then SIGTTIN, gunicorn's own "one worker more" signal), keeps
  accepting until a worker started after it asked is ready, and only then sets
  `alive = False`: gunicorn's own drain from there.
- In the master: `nworkers_changed` counts an increase by one while a live worker's want
  is unanswered as that worker's replacement; `child_exit` takes that one back
  (`num_workers -= 1`) when the worker exits. Only increases matched to a want are given
  back, each once, so an operator's own TTIN or TTOU stays; a reload (SIGHUP) sets the
  count from the settings again, so it forgets what was granted (`reloaded`).
- One request at a time (a lock file held until the replacement is ready): two signals of
  one kind sent together may be delivered once, which would grant one replacement for two.

The files live in a directory the master makes (`_FLASKAPP_RECYCLE_DIR`, inherited by the
workers). Workers other than gevent's keep gunicorn's own recycling.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import signal
import sys
import tempfile
import time
from typing import Any

ENV = "_FLASKAPP_RECYCLE_DIR"
POLL = 0.05  # seconds between looks at the request count, the lock and the ready files
READY_TIMEOUT = 30.0  # a replacement not ready by then: stop as gunicorn would (its boot failed or hangs)


# -- master ---------------------------------------------------------------------------------
def nworkers_changed(server: Any, new: int, old: int | None) -> None:
    """gunicorn's `nworkers_changed` hook: make the directory first, then match each TTIN to a want."""
    if old is None:  # Arbiter.setup(), before any worker exists
        _make_directory(server)
        return
    if new != old + 1:
        return
    granted = server.recycle_granted
    for pid in sorted(_pids("want-")):
        if pid in server.WORKERS and pid not in granted:
            granted.add(pid)
            return
    if server.recycle_unmatched:  # the TTIN of a worker that exited before it was handled
        server.recycle_unmatched -= 1
        server.num_workers -= 1


def worker_exited(server: Any, worker: Any) -> None:
    """From gunicorn's `child_exit`: give back the worker that was this one's replacement."""
    directory = os.environ.get(ENV)
    if not directory:
        return
    wanted = os.path.exists(os.path.join(directory, f"want-{worker.pid}"))
    for name in (f"want-{worker.pid}", f"ready-{worker.pid}"):
        try:
            os.remove(os.path.join(directory, name))
        except FileNotFoundError:
            pass
    if worker.pid in server.recycle_granted:
        server.recycle_granted.discard(worker.pid)
        if server.num_workers > 1:
            server.num_workers -= 1
    elif wanted:
        server.recycle_unmatched += 1


def reloaded(server: Any) -> None:
    """From gunicorn's `on_reload`: the reload set num_workers from the settings; nothing is owed."""
    server.recycle_granted.clear()
    server.recycle_unmatched = 0


def remove_directory(server: Any) -> None:
    """From gunicorn's `on_exit`."""
    directory = getattr(server, "recycle_directory", None)
    if directory:
        shutil.rmtree(directory, ignore_errors=True)


def _make_directory(server: Any) -> None:
    # Each master its own (a USR2 re-exec's new master too): pids are only meaningful to one.
    directory = tempfile.mkdtemp(prefix="flaskapp-recycle-")
    if server.cfg.uid != os.geteuid() or server.cfg.gid != os.getegid():
        os.chown(directory, server.cfg.uid, server.cfg.gid)  # workers that run as another user write here
    os.environ[ENV] = server.recycle_directory = directory
    server.recycle_granted, server.recycle_unmatched = set(), 0


def _pids(prefix: str) -> set[int]:
    directory = os.environ.get(ENV)
    try:
        names = os.listdir(directory) if directory else []
    except FileNotFoundError:
        names = []
    return {int(name[len(prefix):]) for name in names if name.startswith(prefix)}


# -- worker ---------------------------------------------------------------------------------
def worker_ready(worker: Any) -> None:
    """From gunicorn's `post_worker_init`, last: this worker accepts now; take its recycling over."""
    directory = os.environ.get(ENV)
    if not directory:
        return
    _touch(os.path.join(directory, f"ready-{worker.pid}"))
    from gunicorn.workers.ggevent import GeventWorker

    if worker.max_requests == sys.maxsize or not isinstance(worker, GeventWorker):
        return
    import gevent

    limit, worker.max_requests = worker.max_requests, sys.maxsize  # gunicorn's jittered limit, now ours
    gevent.spawn(_recycle_at, worker, limit, directory)


def _recycle_at(worker: Any, limit: int, directory: str) -> None:
    import gevent

    while worker.alive and worker.nr < limit:
        gevent.sleep(POLL)
    if not worker.alive:  # stopping already (SIGTERM, reload)
        return
    worker.log.info("Autorestarting worker after %s requests: it accepts until its replacement does", worker.nr)
    lock = os.open(os.path.join(directory, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:  # another worker is handing over: keep serving meanwhile
                if not worker.alive:
                    return
                gevent.sleep(POLL)
        replacement = _hand_over(worker, directory)
    finally:
        os.close(lock)  # releases the lock
    if replacement:
        worker.log.info("Worker %s accepts in this one's place: it stops accepting and drains", replacement)
    elif worker.alive:
        worker.log.warning("No replacement ready after %.0f s: this worker stops accepting anyway", READY_TIMEOUT)
    worker.alive = False  # gunicorn closes the listener within a second and drains


def _hand_over(worker: Any, directory: str) -> int | None:
    """Ask the master for one worker more; the pid of the first worker ready since, or None."""
    import gevent

    ready_before = _pids("ready-")
    _touch(os.path.join(directory, f"want-{worker.pid}"))
    os.kill(worker.ppid, signal.SIGTTIN)
    deadline = time.monotonic() + READY_TIMEOUT
    while worker.alive and time.monotonic() < deadline:
        fresh = _pids("ready-") - ready_before - {worker.pid}
        if fresh:
            return min(fresh)
        gevent.sleep(POLL)
    return None


def _touch(path: str) -> None:
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
