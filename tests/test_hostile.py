"""The hostile-upstream / hostile-client matrix (tests/hostile.py's CASES), end to end.

Real gunicorn (the documented command, one gevent worker) in front of `HostileUpstream`,
which answers the broken way each case says, or hostile clients in front of an upstream
that answers well. For every row and endpoint the test checks what the client sees,
that no byte of the key reaches the client or the log, that the worker keeps answering
`/healthz` (polled every 50 ms while the case runs; the worst wait is reported at the
end), and that the upstream call ends (or, for a client turned away, never starts).
"""
from __future__ import annotations

import json
import signal
import socket
import time
from typing import Callable

import pytest

from hostile import CASES, SETTINGS, Case
from hostile_upstream import HostileUpstream
from http_checks import (ENDPOINTS, Answered, Dropped, Endpoint, HealthPoller, Rejected, Reply, assert_no_secret,
                         check_reply, fetch, log_records, log_size, peak_rss_mib, raw_reply, worker_pid)
from servers import SECRET_KEY, Process, start_gunicorn

WORST_HEALTHZ = 1.0  # seconds: generous; a frozen worker makes /healthz wait many times this


@pytest.fixture(scope="module")
def upstream() -> HostileUpstream:
    upstream = HostileUpstream()
    yield upstream
    upstream.close()


@pytest.fixture(scope="module")
def servers(tmp_path_factory, upstream: HostileUpstream) -> Callable[[tuple], Process]:
    """gunicorn in front of the hostile upstream, one per set of settings, started when first asked."""
    started: dict[tuple, Process] = {}

    def server(extra: tuple) -> Process:
        if extra not in started:
            env = {"OPENAI_BASE_URL": upstream.base_url, "OPENAI_API_KEY": SECRET_KEY}
            env.update({f"FLASKAPP_{k.upper()}": str(v) for k, v in {**SETTINGS, **dict(extra)}.items()})
            started[extra] = start_gunicorn(tmp_path_factory.mktemp("hostile"), env)
        return started[extra]

    yield server
    for process in started.values():
        log = process.log()
        process.stop(signal.SIGINT)
        assert log.count("Booting worker") == 1, "a worker died"
        assert_no_secret(log)


@pytest.fixture(scope="module")
def healthz_waits(request) -> dict[str, float]:
    """The worst /healthz wait of each case, written out when the module ends."""
    waits: dict[str, float] = {}
    yield waits
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter and capture and waits:
        with capture.global_and_fixture_disabled():
            reporter.write_line("\nworst /healthz wait during each hostile case:")
            for name, worst in sorted(waits.items(), key=lambda item: -item[1]):
                reporter.write_line(f"  {worst * 1000:7.1f} ms  {name}")


# -- the clients ---------------------------------------------------------------------------------

def _head(port: int, endpoint: Endpoint, extra: str) -> bytes:
    return (f"{endpoint.method} {endpoint.path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\n{extra}\r\n").encode()


def _send_quietly(sock: socket.socket, *parts: bytes) -> None:
    # The server may answer and close before it has read everything: its answer still counts.
    try:
        for part in parts:
            sock.sendall(part)
    except OSError:
        pass


def stall_body(server: Process, endpoint: Endpoint, upstream: HostileUpstream) -> Reply:
    """Headers announcing 200,000 bytes of body, a few of them, then nothing."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    with sock:
        _send_quietly(sock, _head(server.port, endpoint, "Content-Length: 200000\r\n"), b'{"prompt": "')
        return raw_reply(sock)


def chunked_past_max(server: Process, endpoint: Endpoint, upstream: HostileUpstream) -> Reply:
    """A chunked body of 300 KB, past the 256 KiB limit, all spaces until its last bytes."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    with sock:
        spaces = b" " * 16384
        chunks = [b"%x\r\n%s\r\n" % (len(spaces), spaces)] * 19
        last = json.dumps({"prompt": "x"}).encode()
        _send_quietly(sock, _head(server.port, endpoint, "Transfer-Encoding: chunked\r\n"), *chunks,
                      b"%x\r\n%s\r\n0\r\n\r\n" % (len(last), last))
        return raw_reply(sock)


def deep_json(server: Process, endpoint: Endpoint, upstream: HostileUpstream) -> Reply:
    """A JSON body of arrays nested 1,000 deep."""
    body = b"[" * 1000 + b"]" * 1000
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    with sock:
        _send_quietly(sock, _head(server.port, endpoint, f"Content-Length: {len(body)}\r\n"), body)
        return raw_reply(sock)


def never_read(server: Process, endpoint: Endpoint, upstream: HostileUpstream) -> Reply:
    """Read the response's first bytes, then nothing: the worker's writes must time out."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", server.port))
    with sock:
        body = json.dumps({**endpoint.body, "max_tokens": 16384}).encode() if endpoint.body else b""
        _send_quietly(sock, _head(server.port, endpoint, f"Content-Length: {len(body)}\r\n"), body)
        first = sock.recv(4096)
        # The worker's buffers and ours fill, then nothing moves until the worker gives up on us.
        assert upstream.wait_ended(upstream.calls[-1:], timeout=15), "the upstream call goes on"
        closed = False
        try:
            while sock.recv(65536):
                pass
            closed = True
        except ConnectionResetError:
            closed = True
        except socket.timeout:
            pass
        assert closed, "the worker kept the connection"
    status = int(first.split(b" ", 2)[1]) if first.startswith(b"HTTP/1.1 ") else 0
    return Reply(status, {}, first, complete=False)


CLIENTS: dict[str, Callable[[Process, Endpoint, HostileUpstream], Reply]] = {
    "fetch": lambda server, endpoint, upstream: fetch(server.url, endpoint),
    "stall_body": stall_body,
    "chunked_past_max": chunked_past_max,
    "deep_json": deep_json,
    "never_read": never_read,
    "head": lambda server, endpoint, upstream: fetch(server.url, endpoint),
}


# -- the matrix ----------------------------------------------------------------------------------

KNOWN_BUGS: dict[tuple[str, str], str] = {}  # (case name, endpoint) -> what happens instead, for now

PARAMS = [pytest.param(case, name, id=f"{case.name}-{name}", marks=[pytest.mark.xfail(
              strict=True, reason=KNOWN_BUGS[case.name, name])] if (case.name, name) in KNOWN_BUGS else [])
          for case in CASES for name in case.expect]


def _logged(case: Case, expect) -> tuple[str, str | None] | None:
    """The request log's outcome and error for this row (None: not checked)."""
    if isinstance(expect, Dropped):
        return "client_disconnected", None
    if case.client != "fetch":
        return ("rejected", expect.type) if isinstance(expect, Rejected) else None
    return ("completed", None) if isinstance(expect, Answered) else ("upstream_error", expect.type)


@pytest.mark.parametrize("case, endpoint_name", PARAMS)
def test_hostile(case: Case, endpoint_name: str, upstream: HostileUpstream, servers, healthz_waits):
    server = servers(case.settings)
    upstream.mode = case.mode
    expect = case.expect[endpoint_name]
    since, calls_before = log_size(server), len(upstream.calls)
    worker = worker_pid(server.process.pid)
    peak_before = peak_rss_mib(worker, reset=True)

    with HealthPoller(server.url) as health:
        started = time.monotonic()
        reply = CLIENTS[case.client](server, ENDPOINTS[endpoint_name], upstream)
        took = time.monotonic() - started
        calls = upstream.calls[calls_before:]
        ended = upstream.wait_ended(calls, timeout=2)
    healthz_waits[f"{case.name} / {endpoint_name}"] = health.worst

    check_reply(reply, expect)
    if case.upstream_called:
        assert calls and ended, "the upstream call did not end"
        assert not any(call.safety_stop for call in calls), "an endless answer ran to the safety stop"
    else:
        assert not calls, "an upstream call was made"
    if case.deadline:  # at the deadline: not before it, and not long after
        assert SETTINGS[case.deadline] - 0.1 < took < SETTINGS[case.deadline] + 1.5, took
    assert health.polls and not health.failures, health.failures
    assert health.worst < WORST_HEALTHZ, f"/healthz waited {health.worst:.2f} s"
    log = server.log()[since:]
    assert_no_secret(reply.body, json.dumps(reply.headers), log)
    if case.max_peak_rss_mib is not None:
        assert peak_rss_mib(worker) - peak_before < case.max_peak_rss_mib
    logged = _logged(case, expect)
    if logged is not None:
        records = _records(server, since)
        assert [(r["outcome"], r.get("error")) for r in records] == [logged], records
    assert_no_secret(server.log()[since:])  # the request's own line too, written just now


def _records(server: Process, since: int, timeout: float = 3.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while not (records := log_records(server, since)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return records
