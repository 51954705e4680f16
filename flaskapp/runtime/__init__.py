"""What flaskapp asks of gevent, gunicorn, prometheus_client and werkzeug beyond their public APIs, gathered here.

Each use of an internal, and why:

- `clientsocket.py` rewrites the class of each gevent client socket gunicorn accepts
  (`socket.__class__`), to write a token in one send() and to give the connection a stall
  timeout; it wraps gunicorn's `GeventWorker.handle`, `handle_request` and `timeout_ctx`,
  because `handle` makes every connection blocking (dropping its timeout) and a write that
  times out would otherwise be logged as a traceback.
- `gevent_io.readable_waiter()` uses a gevent socket's private `_wait(_read_event)`: waiting
  for a socket just emptied before reading it saves a failed recv (EAGAIN) and an
  exception per token on the upstream read path; once the wait says the socket is
  readable, `upstream/httpbody.py` (a token) and `http11.py` (an answer's head) read gevent's
  real socket (`_sock.recv`), one frame less; `http11.py` sends a request with one `_sock.send`.
- `clientsocket.install()` also replaces `gunicorn.http.wsgi.Response` (which `wsgi.create`
  makes for each HTTP/1 request) with `ChunkedResponse`: a chunked body's piece is one
  format and one send instead of five calls; it relies on the response's `chunked`,
  `headers_sent`, `sent`, `sock` and `write`, and sends the same bytes.
- `guard.py` starts raw event-loop watchers (`hub.loop.io`, `loop.timer`,
  `loop.run_callback`) and throws into the request's greenlet: two watchers per request
  instead of a greenlet per request to notice a client leaving or an upstream going silent.
- `pacer.py` reads `hub.loop.iteration` to tell whether the loop has turned since a stream
  last yielded: an upstream that always has data ready would otherwise starve the worker.
- `client_socket()` reads `environ["gunicorn.socket"]`, the client's socket, which WSGI
  does not expose: the guard watches it, the relay shuts it to abort a broken transfer,
  and the 408 handler shuts it for reading.
- `embedded.py` configures workers through `os.environ`: gunicorn forks the workers, which
  inherit the master's environment and read OPENAI_BASE_URL and OPENAI_API_KEY as the
  `openai` client does, with no other channel from the master's hooks to the app.
- `gunicorn.conf.py`'s `post_worker_init` hook calls `warm.warm(app)` (the upstream client,
  its TLS context and one connection, made per process after the fork; Flask's first
  dispatch through `app.test_client()`) and `clientsocket.install(worker)`.
- `recycle.py` takes `max_requests` recycling over from gunicorn, so a recycled worker keeps
  accepting until its replacement does: it reads and sets `worker.max_requests`, `nr`,
  `alive` and `ppid`, sends the master SIGTTIN (gunicorn's "one worker more"), and in the
  master adjusts `Arbiter.num_workers` against `WORKERS` from the `nworkers_changed`,
  `child_exit` and `on_reload` hooks. gunicorn itself forks the replacement only after the
  old worker has drained and exited, leaving nothing accepting meanwhile with one worker.

- `ops/metrics.py` writes a histogram's summed observations through its `_upper_bounds`
  and its child's `_sum` and `_buckets` (prometheus_client has no public way to add many
  observations at once): a gevent worker writes its metrics every tenth of a second, not
  eleven locked file writes per request.

- `web/relay.py` sets a stream's constant headers as werkzeug's `Headers._list`, rather than
  having each checked for line breaks on every response.

`WRITTEN_FOR` names the versions these were written against; tests/test_runtime.py fails
on any other, naming what to re-check. Only the standard library is imported at this
level: gunicorn's master imports `runtime.embedded` before any worker exists.
"""
from __future__ import annotations

from typing import Any

WRITTEN_FOR = {"gevent": "26.9.0", "gunicorn": "27.0.1", "prometheus_client": "0.26.0", "werkzeug": "3.1.8"}

# What to re-read in each package's new version before raising its pin.
RECHECK = {
    "gevent": "gevent/_socketcommon.py and _socket3.py: socket.__slots__, _sock, _wait, _read_event, "
              "send/sendall (clientsocket.py, gevent_io.py), _sock.recv after the wait and _sock.send (httpbody.py, http11.py); the libev/libuv loop's io/timer/run_callback "
              "and loop.iteration (guard.py, pacer.py)",
    "gunicorn": "gunicorn/workers/ggevent.py and base_async.py: GeventWorker.handle (setblocking), "
                "handle_request, timeout_ctx around the keep-alive wait, environ['gunicorn.socket'], "
                "the post_worker_init hook (clientsocket.py, gunicorn.conf.py); gunicorn/http/wsgi.py's "
                "Response (chunked, headers_sent, sent, sock, write) and create() (clientsocket.ChunkedResponse); base_async.py's max_requests "
                "check and worker.nr/alive/ppid, arbiter.py's handle_ttin, manage_workers and reap_workers, "
                "num_workers and WORKERS, the nworkers_changed/child_exit/on_reload hooks (recycle.py)",
    "prometheus_client": "prometheus_client/metrics.py: Histogram._upper_bounds, its children's _sum and "
                         "_buckets and what observe() does with them (ops/metrics.py, _Pending.flush)",
    "werkzeug": "werkzeug/datastructures/headers.py: Headers._list, the (name, value) pairs every method "
                "reads (web/relay.py, _stream_headers)",
}


def client_socket(environ: dict) -> Any:
    """The client's socket under gunicorn (WSGI exposes none); None under other servers."""
    return environ.get("gunicorn.socket")
