"""A fresh worker is warmed before it accepts: the upstream's client, TLS context and one connection,
its metric files and Flask's first dispatch (flaskapp/runtime/warm.py, from post_worker_init)."""
from __future__ import annotations

import gc
import socket

from flaskapp.upstream.http11 import ConnectionPool
from http_checks import metrics
from servers import Process


def test_each_worker_is_warmed_and_counted_before_its_first_request(server: Process):
    samples = metrics(server)  # the first request this worker answers
    assert samples[("flaskapp_worker_starts_total", frozenset())] == 1
    assert samples[("flaskapp_workers", frozenset())] == 1
    assert samples[("flaskapp_worker_warmup_seconds_count", frozenset())] == 1
    assert not any(name == "flaskapp_requests_total" for name, _ in samples)  # the warm-up is not traffic


def test_the_pool_is_warmed_with_one_idle_connection_and_its_tls_context():
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        origin = ("http", "127.0.0.1", listener.getsockname()[1])
        pool = ConnectionPool()
        pool.warm(origin)
        listener.settimeout(2)
        accepted, _ = listener.accept()  # the connection was made before any request
        accepted.close()
        assert len(pool._idle[origin]) == 1
    finally:
        listener.close()
    tls = ConnectionPool()
    tls.warm(("https", "127.0.0.1", 9))  # nothing listens there: no connection, and no error
    assert tls._ssl_context is not None and not tls._idle.get(("https", "127.0.0.1", 9))


def test_the_warm_up_freezes_what_the_worker_made_before_its_first_request(app):
    from flaskapp.runtime.warm import warm

    try:
        gc.unfreeze()
        assert warm(app) is not None
        # Collected once and frozen: later collections never walk the imports' objects again.
        assert gc.get_freeze_count() > 1000
    finally:
        gc.unfreeze()
