"""The demo's concurrent experiment, run by the server: N blocking and N streaming requests at once.

A browser opens at most six HTTP/1.1 connections to one server, so when the page fired
the requests itself, all but three of each kind queued inside the browser and the
blocking ones looked twice as slow as the server had logged them. Here the worker sends
the requests to its own listening address and streams each one's events to the page
over one Server-Sent Events response, stamped with the server's clock:

    event: start  {"run", "count"}
    event: sent   {"kind", "index", "id", "at"}        id: the request's X-Request-ID (in its log line)
    event: text   {"kind", "index", "at", "chunks"}    a read that carried text
    event: done   {"kind", "index", "at", "status", "first", "total", "tokens", "error"}
    event: end    {"at"}

`at` is seconds since the run started; `first` and `total` count from the request's own
send, as the load tester and the request log do. Each response is read by the load
tester's own HTTP reader (`loadtest.client`), driven by a gevent socket instead of an
asyncio loop: the worker runs gevent, whose patched sockets make this cooperative.
When the page leaves, every request is closed, so the server ends their model calls.
"""
from __future__ import annotations

import json
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any, Iterator

from ..errors import CLIENT_DISCONNECTED, COMPLETED, ApiError
from ..loadtest.exchange import Exchange, Record
from ..runtime import client_socket
from ..runtime.guard import ClientGone, guard_for

# The page's names for the kinds, and the load tester's for the same requests.
KINDS = {"stream": "stream-sse", "blocking": "block"}
PATHS = {"stream": "/stream", "blocking": "/"}


class DemoUnavailable(ApiError):
    """501: the experiment needs gunicorn's gevent worker (its socket and cooperative I/O)."""

    status, type = 501, "not_supported"


class _Transport:
    """The part of an asyncio transport the load tester's reader uses, over a plain socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.closing = sock, False

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing


class _Done:
    """The part of an asyncio future the reader sets when its record is final."""

    finished = False

    def done(self) -> bool:
        return self.finished

    def set_result(self, _: object) -> None:
        self.finished = True


@dataclass(frozen=True)
class Experiment:
    family: int
    address: Any  # the worker's own listening address, as the socket module takes it
    host: str  # the Host header the page used
    count: int
    body: dict[str, Any]  # the chat fields, already checked
    authorization: str | None  # the caller's gateway key, passed on so each request is its own
    run_id: str
    timeout: float  # seconds a request may send nothing (its server-side bounds end it first)
    on_behalf: dict[str, str] | None = None  # ops/limits.py's: each request counts against the caller

    @classmethod
    def for_request(cls, environ: dict, count: int, body: dict[str, Any], authorization: str | None,
                    timeout: float, on_behalf: dict[str, str] | None = None) -> "Experiment":
        client = client_socket(environ)
        monkey = sys.modules.get("gevent.monkey")
        if client is None or monkey is None or not monkey.is_module_patched("socket"):
            raise DemoUnavailable("The concurrent experiment runs only under gunicorn's gevent worker.")
        run_id = f"{time.time_ns():x}"[-10:]
        return cls(client.family, client.getsockname(), environ.get("HTTP_HOST", "localhost"), count, body,
                   authorization, run_id, timeout, on_behalf)

    def request_id(self, kind: str, index: int) -> str:
        return f"demo-{self.run_id}-{kind}-{index}"

    def request_bytes(self, kind: str, index: int) -> bytes:
        body = {**self.body, "format": "sse"} if kind == "stream" else self.body
        payload = json.dumps(body).encode()
        headers = {"Host": self.host, "User-Agent": "flaskapp-demo", "Connection": "close",
                   "Content-Type": "application/json", "Content-Length": str(len(payload)),
                   "X-Request-ID": self.request_id(kind, index)}
        if kind == "stream":
            headers["Accept"] = "text/event-stream"
        if self.authorization:
            headers["Authorization"] = self.authorization
        if self.on_behalf:
            headers.update(self.on_behalf)
        head = f"POST {PATHS[kind]} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        return head.encode("latin-1") + b"\r\n" + payload


def _sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _one(experiment: Experiment, kind: str, index: int, run_start: float, emit) -> None:
    """One request, read as the load tester reads it; its events go to `emit` as they happen."""
    payload = experiment.request_bytes(kind, index)
    sent = time.perf_counter()
    record = Record(kind=KINDS[kind], start=sent - run_start)
    emit("sent", {"kind": kind, "index": index, "id": experiment.request_id(kind, index),
                  "at": _rounded(record.start)})
    done = _Done()
    sock = socket.socket(experiment.family, socket.SOCK_STREAM)
    sock.settimeout(experiment.timeout)
    try:
        sock.connect(experiment.address)
        exchange = Exchange(record, payload, sent, done)
        exchange.connection_made(_Transport(sock))
        last_text = None
        while not done.done():
            data = sock.recv(65536)
            if not data:
                exchange.eof_received()
                exchange.connection_lost(None)
                break
            exchange.data_received(data)
            if record.last_token != last_text and record.error is None:
                last_text = record.last_token
                emit("text", {"kind": kind, "index": index, "at": _rounded(record.start + last_text),
                              "chunks": record.chunks})
    except TimeoutError:
        record.error = "timeout"
    except OSError as exc:
        record.error = record.error or ("connect" if record.headers is None else "reset")
        record.detail = str(exc)[:200]
    finally:
        sock.close()
    if record.total is None:
        record.total = time.perf_counter() - sent
    emit("done", {"kind": kind, "index": index, "at": _rounded(record.start + record.total),
                  "status": record.status, "first": _rounded(record.ttft), "total": _rounded(record.total),
                  "tokens": record.tokens, "error": record.error, "detail": record.detail})


def events(experiment: Experiment, environ: dict, request_record: Any) -> Iterator[str]:
    """The run as SSE; leaving it (closing the connection) ends every request still running."""
    import gevent.pool
    import gevent.queue

    queue: gevent.queue.Queue = gevent.queue.Queue()
    group = gevent.pool.Group()
    # Watches the page's socket while this greenlet waits for events: a page that left is
    # noticed at once, not at the next write, which may be many seconds away.
    guard = guard_for(environ, float("inf"))
    outcome = CLIENT_DISCONNECTED
    run_start = time.perf_counter()

    def emit(event: str, data: dict) -> None:
        queue.put(_sse(event, data))

    try:
        request_record.first_byte()
        yield _sse("start", {"run": experiment.run_id, "count": experiment.count})
        for index in range(experiment.count):  # alternate the kinds: neither gets a head start
            for kind in KINDS:
                group.spawn(_one, experiment, kind, index, run_start, emit)
        remaining = 2 * experiment.count
        while remaining:
            with guard.awaiting():
                batch = [queue.get()]
            while not queue.empty():  # whatever else is ready goes out in the same write
                batch.append(queue.get_nowait())
            remaining -= sum(item.startswith("event: done") for item in batch)
            chunk = "".join(batch)
            request_record.bytes += len(chunk)
            yield chunk
        yield _sse("end", {"at": _rounded(time.perf_counter() - run_start)})
        outcome = COMPLETED
    except ClientGone:
        pass
    finally:
        guard.close()
        group.kill(timeout=5)  # each request closes its socket as it dies
        request_record.status = request_record.status or 200
        request_record.finish(outcome)
