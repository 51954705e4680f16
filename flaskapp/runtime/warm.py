"""A fresh worker serves like a warm one: what a first request would pay, paid before it accepts.

gunicorn's `post_worker_init` calls `warm(app)`, after the fork and gevent's patching and
before the worker takes its first connection. Without it the first burst on every new
worker (each `max_requests` recycle too) waits behind the first request's one-time work:
the upstream client (the `openai` client runs `uname` in a subprocess), its request head,
TLS context and a connection, and Flask's first dispatch (the metric files: gunicorn.conf.py,
through ops/metrics.py, as this layer imports nothing above it).
"""
from __future__ import annotations

import gc
import time
from typing import Any


def warm(app: Any) -> float | None:
    """Warm this worker's app; the seconds it took (None: not flaskapp, nothing done)."""
    started = time.perf_counter()
    upstream = getattr(app, "extensions", {}).get("upstream")
    if upstream is None:  # not flaskapp (a benchmark's peer app)
        return None
    upstream.warm()
    # Flask's first dispatch: the URL map compiled, the request and response machinery imported.
    # /healthz is neither logged nor counted, and calls no upstream.
    app.test_client().get("/healthz")
    # What the imports and the warm-up made lives as long as the worker: collected once now and
    # frozen out of every later collection, the first of which would otherwise land on the
    # first burst (a full pass over every module's objects) and every one after it.
    gc.collect()
    gc.freeze()
    return time.perf_counter() - started
