"""The fault matrix: every upstream and client fault, on every endpoint, end to end.

Real gunicorn (one gevent worker) in front of the emulator, whose fault injection plays
the broken upstream. One table, `FAULTS`, says what the client gets for each fault on
each endpoint (tests/fault_matrix.py); the tests check every row, and
`python tests/render_docs.py` writes docs/faults.md and the README's matrix from it.

For every case the tests also check the request log's outcome, that no secret reaches
the client or the log, that the upstream connection is closed (the emulator's
`in_flight` back to 0), and that the worker goes on serving.
"""
from __future__ import annotations

import json
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import http_checks
from fault_matrix import DEPARTURES, ENDPOINTS, FAULTS, Fault
from http_checks import (Aborted, Answered, ErrorChunk, ErrorEvent, Expect, Reply, assert_no_secret, counted,
                         fetch, log_records, log_size, metrics)
from servers import (SECRET_KEY, Emulator, Process, raw_request, request, sse_events,
                     start_emulator, start_gunicorn, stream, upstream_env)

# The module's servers (conftest's `server`, and the ones below): a first-token timeout of
# 1 s, an idle timeout of 0.5 s and a whole-call timeout of 1 s keep every timeout case to
# a couple of seconds.
SERVER_SETTINGS = {"max_retries": 0, "first_token_timeout": 1, "idle_timeout": 0.5, "request_timeout": 1}
# conftest's `emulator`, with a long answer cap, so a stream lasts as long as a test needs
# (max_tokens sets it).
EMULATOR = {"ttft": 0.2, "tokens_per_second": 200.0, "tokens": 100_000}


def _outcome(expect: Expect) -> tuple[str, str | None]:
    """The request log's (outcome, error) for this expectation."""
    if isinstance(expect, Answered):
        return "completed", None
    return "upstream_error", expect.type


# -- servers -------------------------------------------------------------------------------------

class ScriptedUpstream(ThreadingHTTPServer):
    """An upstream that answers every call one broken way (`mode`), for faults the emulator
    injects into streams only: a blocking answer cut short, or not JSON."""

    daemon_threads = True
    mode = "malformed"

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ScriptedHandler)
        self.connections_open = 0
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _ScriptedHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b'{"id": "chatcmpl-1", "object": "chat.completion", "choices": [{"index": 0, "mess'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if self.server.mode == "cut":
            self.send_header("Content-Length", str(len(body) + 500))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def refused_server(start_server) -> Process:
    """gunicorn whose upstream is a port nobody listens on."""
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    return start_server(_upstream_at(f"http://127.0.0.1:{port}/v1"), name="refused")


@pytest.fixture(scope="module")
def scripted() -> ScriptedUpstream:
    upstream = ScriptedUpstream()
    yield upstream
    upstream.shutdown()


@pytest.fixture(scope="module")
def scripted_server(start_server, scripted: ScriptedUpstream) -> Process:
    return start_server(_upstream_at(scripted.base_url), name="scripted")


def _upstream_at(base_url: str) -> dict[str, str]:
    env = {"OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": SECRET_KEY}
    env.update({f"FLASKAPP_{k.upper()}": str(v) for k, v in SERVER_SETTINGS.items()})
    return env


# -- helpers ---------------------------------------------------------------------------------------

def wait_for_record(server: Process, since: int, timeout: float = 3.0) -> dict:
    """The request log line written since offset `since` (one request at a time here)."""
    deadline = time.monotonic() + timeout
    while not (records := log_records(server, since)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(records) == 1, records
    return records[0]


def check_reply(reply: Reply, expect: Expect) -> None:
    http_checks.check_reply(reply, expect)
    # A fault mid-way: some of the answer came first, then the error.
    if isinstance(expect, Aborted):
        assert reply.body
    elif isinstance(expect, ErrorEvent):
        assert sse_events(reply.body)[0][0] == "message"
    elif isinstance(expect, ErrorChunk):
        assert b'"choices"' in reply.body.split(b"\n\n")[0]


# -- the matrix ----------------------------------------------------------------------------------

CASES = [pytest.param(fault, name, id=f"{fault.name}-{name}", marks=[pytest.mark.xfail(
             strict=True, reason=f"known bug: {fault.bugs[name]}")] if name in fault.bugs else [])
         for fault in FAULTS for name in ENDPOINTS]


@pytest.mark.parametrize("fault, endpoint_name", CASES)
def test_fault(request_fixture, fault: Fault, endpoint_name: str, emulator: Emulator):
    expect = fault.expect[endpoint_name]
    mode = fault.script.get(endpoint_name)
    if fault.upstream == "refused":
        server = request_fixture.getfixturevalue("refused_server")
    elif mode:
        server = request_fixture.getfixturevalue("scripted_server")
        request_fixture.getfixturevalue("scripted").mode = mode
    else:
        server = request_fixture.getfixturevalue("server")
        emulator.reset()
        emulator.arm(**fault.emulator)
    since, scraped = log_size(server), metrics(server)

    reply = fetch(server.url, ENDPOINTS[endpoint_name])

    check_reply(reply, expect)
    record = wait_for_record(server, since)
    outcome, error = _outcome(expect)
    assert (record["outcome"], record.get("error")) == (outcome, error)
    counts = metrics(server)
    assert counted(scraped, counts, "flaskapp_requests_total", route=record["route"],
                   status=str(record["status"]), outcome=outcome) == 1
    if error is not None:
        assert counted(scraped, counts, "flaskapp_upstream_errors_total", kind=error) == 1
    assert_no_secret(reply.body, json.dumps(reply.headers), server.log()[since:])
    if fault.upstream == "emulator" and not mode:
        assert emulator.wait_for(lambda s: s["in_flight"] == 0)["in_flight"] == 0  # upstream closed
    assert request("GET", f"{server.url}/healthz")[0] == 200  # the worker goes on


@pytest.fixture
def request_fixture(request):
    return request


# -- the client misbehaving ----------------------------------------------------------------------

# Long enough to be mid-stream whenever the client leaves (200 tokens/s).
LONG = {"blocking": "/?prompt=long&max_tokens=2000", "text": "/stream?prompt=long&max_tokens=2000",
        "sse": "/stream?prompt=long&max_tokens=2000&format=sse"}


@pytest.mark.parametrize("departure, endpoint_name", [
    pytest.param(d, e, id=f"{d.name}-{e}") for d in DEPARTURES for e in d.endpoints])
def test_client_departure_ends_the_upstream_call_within_a_second(server, emulator, departure, endpoint_name):
    emulator.reset()
    if departure.fault:
        emulator.arm(**departure.fault)
    endpoint = ENDPOINTS[endpoint_name]
    since = log_size(server)
    if endpoint.body is not None:
        body = json.dumps({**endpoint.body, "max_tokens": 2000}).encode()
        sock = raw_request(server.port, endpoint.path, "POST", {"Content-Type": "application/json"}, body)
    else:
        sock = raw_request(server.port, LONG[endpoint_name])
    if departure.wait_for_headers:
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    time.sleep(0.3)
    assert emulator.stats()["in_flight"] == 1
    scraped = metrics(server)
    stats, took = emulator.after_hang_up(sock, lambda s: s["in_flight"] == 0)
    assert stats["in_flight"] == 0 and took < 1.0
    assert stats["streams_aborted"] + stats["completions_aborted"] == 1
    record = wait_for_record(server, since)
    assert record["outcome"] == "client_disconnected"
    assert record["status"] == (200 if departure.wait_for_headers else 499)
    assert counted(scraped, metrics(server), "flaskapp_client_disconnects_total", route=record["route"]) == 1
    assert_no_secret(server.log()[since:])
    assert request("GET", f"{server.url}/healthz")[0] == 200


def _worker_pid(master: int) -> int:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_slow_reader_holds_a_bounded_buffer_and_slows_no_other_stream(tmp_path):
    # A fast upstream with a huge answer: unless backpressure reaches it through our
    # worker, it would send the whole answer in seconds and our worker would hold it.
    total = 3_000_000
    fast = start_emulator(tmp_path, 0.05, 100_000.0, total)
    server = start_gunicorn(tmp_path, upstream_env(fast, **SERVER_SETTINGS))
    slow = socket.socket()
    done = threading.Event()
    received = []

    def read_one_byte_a_second() -> None:
        while not done.is_set():
            received.append(slow.recv(1))
            time.sleep(1)

    try:
        worker = _worker_pid(server.process.pid)
        request("GET", f"{server.url}/?prompt=warm&max_tokens=5")
        rss_before = _rss_kib(worker)
        warm = fast.stats()["tokens_sent"]
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(("127.0.0.1", server.port))
        slow.sendall(b"GET /stream?prompt=slow&format=sse HTTP/1.1\r\nHost: x\r\n\r\n")
        threading.Thread(target=read_one_byte_a_second, daemon=True).start()

        # The buffers between the upstream and the slow reader fill (a few MB), then the
        # upstream is held back by TCP flow control: nothing more leaves it.
        # (Counted from the slow stream's start: the warm-up's tokens alone once looked steady.)
        held = _wait_until_steady(lambda: fast.stats()["tokens_sent"] - warm, timeout=8)
        rss_held = _rss_kib(worker)
        # Meanwhile other streams on the same worker start and finish as usual.
        others = [stream(f"{server.url}/stream?prompt=other{i}&max_tokens=200") for i in range(5)]
        time.sleep(0.5)
        stats = fast.stats()

        assert all(o.status == 200 and o.complete and o.first_byte < 0.3 for o in others)
        assert stats["streams_completed"] == 5 and stats["in_flight"] == 1
        assert stats["tokens_sent"] - warm - 5 * 200 == held < total // 10  # the slow one still held
        assert rss_held - rss_before < 64 * 1024  # KiB: socket buffers, not the answer
        assert len(received) >= 2 and all(len(b) == 1 for b in received)

        slow.close()
        assert fast.wait_for(lambda s: s["in_flight"] == 0, timeout=3)["in_flight"] == 0
        assert request("GET", f"{server.url}/healthz")[0] == 200
    finally:
        done.set()
        slow.close()
        server.stop(signal.SIGINT)
        fast.stop()


def _wait_until_steady(read, timeout: float, still: float = 0.5) -> int:
    """Poll `read()` until it has not changed for `still` seconds; return that value."""
    deadline = time.monotonic() + timeout
    last, since = read(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        value = read()
        if value != last:
            last, since = value, time.monotonic()
        elif value and time.monotonic() - since >= still:
            return value
    raise AssertionError(f"still changing after {timeout} s: {last}")


# -- the worker, after all of the above ---------------------------------------------------------

def test_the_worker_survived_every_fault_and_logged_no_secret(server):
    log = server.log()
    assert log.count("Booting worker") == 1  # never restarted
    assert_no_secret(log)
