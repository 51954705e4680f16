"""The fault matrix: every upstream and client fault, on every endpoint, end to end.

Real gunicorn (one gevent worker) in front of the emulator, whose fault injection plays
the broken upstream. One table, `FAULTS`, says what the client gets for each fault on
each endpoint; the tests check it, and docs/faults.md is rendered from it:

    python tests/test_faults.py        # rewrite docs/faults.md and the README's matrix from the tables below

For every case the tests also check the request log's outcome, that no secret reaches
the client or the log, that the upstream connection is closed (the emulator's
`in_flight` back to 0), and that the worker goes on serving.
"""
from __future__ import annotations

import http.client
import json
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from servers import (ROOT, SECRET_KEY, Emulator, Process, raw_request, request, sse_events,
                     start_emulator, start_gunicorn, stream, upstream_env)

DOC = ROOT / "docs" / "faults.md"

# The module's servers: a first-token timeout of 1 s, an idle timeout of 0.5 s and a
# whole-call timeout of 1 s keep every timeout case to a couple of seconds.
SETTINGS = {"max_retries": 0, "first_token_timeout": 1, "idle_timeout": 0.5, "request_timeout": 1}


# -- what a client sees ------------------------------------------------------------------

@dataclass(frozen=True)
class Rejected:
    """An HTTP error status with the JSON error body, before any answer byte."""
    status: int
    type: str
    retry_after: str | None = None

    def describe(self) -> str:
        retry = f" with `Retry-After: {self.retry_after}`" if self.retry_after else ""
        return f"{self.status} `{self.type}`{retry}"


@dataclass(frozen=True)
class Answered:
    """200 and the whole answer: the fault does not reach this endpoint."""

    def describe(self) -> str:
        return "200, whole answer"


@dataclass(frozen=True)
class Aborted:
    """Plain text: 200, some text, then the connection closes without the final chunk."""
    type: str

    def describe(self) -> str:
        return f"200, then the transfer is cut (no final chunk; curl exits 18); log `{self.type}`"


@dataclass(frozen=True)
class ErrorEvent:
    """Our SSE: 200, some `data:` events, then `event: error` with the JSON error."""
    type: str

    def describe(self) -> str:
        return f"200, then `event: error` `{self.type}`"


@dataclass(frozen=True)
class ErrorChunk:
    """OpenAI's SSE: 200, chunks, then a `data: {"error": ...}` event and no `[DONE]`."""
    type: str

    def describe(self) -> str:
        return f"200, then `data: {{\"error\"}}` `{self.type}`, no `[DONE]`"


Expect = Rejected | Answered | Aborted | ErrorEvent | ErrorChunk


# -- the endpoints -------------------------------------------------------------------------

@dataclass(frozen=True)
class Endpoint:
    name: str  # column heading
    method: str
    path: str
    body: dict | None = None


def _openai_body(stream: bool) -> dict:
    return {"model": "gpt-4", "messages": [{"role": "user", "content": "fault"}], "max_tokens": 20,
            "stream": stream}


ENDPOINTS = {
    "blocking": Endpoint("`GET /`", "GET", "/?prompt=fault&max_tokens=20"),
    "text": Endpoint("`GET /stream` (text)", "GET", "/stream?prompt=fault&max_tokens=20"),
    "sse": Endpoint("`GET /stream` (SSE)", "GET", "/stream?prompt=fault&max_tokens=20&format=sse"),
    "openai": Endpoint("`POST /v1/chat/completions`", "POST", "/v1/chat/completions", _openai_body(False)),
    "openai_stream": Endpoint("`POST /v1/chat/completions` stream", "POST", "/v1/chat/completions",
                              _openai_body(True)),
}


# -- the faults ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Fault:
    name: str
    emulator: dict | None  # the emulator fault to arm; None: another upstream (see `upstream`)
    expect: dict[str, Expect]
    upstream: str = "emulator"  # "emulator", "refused" (a closed port) or "scripted"
    script: dict[str, str] = field(default_factory=dict)  # endpoint -> scripted upstream mode
    note: str = ""
    bugs: dict[str, str] = field(default_factory=dict)  # endpoint -> what happens instead, for now


def _same(expect: Expect) -> dict[str, Expect]:
    return {name: expect for name in ENDPOINTS}


def _mid_stream(kind: str, blocking: Expect) -> dict[str, Expect]:
    """A failure after the first byte: each streaming endpoint's in-stream error."""
    return {"blocking": blocking, "text": Aborted(kind), "sse": ErrorEvent(kind),
            "openai": blocking, "openai_stream": ErrorChunk(kind)}


UPSTREAM_ERROR = Rejected(502, "upstream_error")
UNAVAILABLE = Rejected(503, "upstream_unavailable")
TIMEOUT = Rejected(504, "upstream_timeout")

FAULTS = [
    Fault("upstream 400", {"status": 400}, _same(UPSTREAM_ERROR)),
    Fault("upstream 401", {"status": 401}, _same(UPSTREAM_ERROR),
          note="the upstream's message (which quotes the key) is never passed on"),
    Fault("upstream 403", {"status": 403}, _same(UPSTREAM_ERROR)),
    Fault("upstream 404", {"status": 404}, _same(UPSTREAM_ERROR)),
    Fault("upstream 429 with Retry-After", {"status": 429, "retry_after": 7},
          _same(Rejected(429, "rate_limit_error", "7")), note="the upstream's Retry-After is passed on"),
    Fault("upstream 429 without Retry-After", {"status": 429}, _same(Rejected(429, "rate_limit_error"))),
    Fault("upstream 500", {"status": 500}, _same(UPSTREAM_ERROR)),
    Fault("upstream 502", {"status": 502}, _same(UNAVAILABLE)),
    Fault("upstream 503", {"status": 503}, _same(UNAVAILABLE)),
    Fault("upstream refuses the connection", None, _same(UNAVAILABLE), upstream="refused"),
    Fault("no first token (upstream silent)", {"delay": 30}, _same(TIMEOUT),
          note="streams: FIRST_TOKEN_TIMEOUT; blocking calls: REQUEST_TIMEOUT"),
    Fault("upstream stalls mid-stream past the idle timeout", {"stall_after": 3, "stall": 30},
          _mid_stream("upstream_timeout", TIMEOUT),
          note="streams: IDLE_TIMEOUT; a blocking call sees a slow answer: REQUEST_TIMEOUT"),
    Fault("upstream cuts the answer mid-way", {"cut_after": 5},
          _mid_stream("upstream_unavailable", UNAVAILABLE),
          script={"blocking": "cut", "openai": "cut"},
          note="blocking: a JSON body shorter than its Content-Length"),
    Fault("upstream sends malformed SSE / JSON", {"malformed_after": 5},
          _mid_stream("upstream_error", UPSTREAM_ERROR),
          script={"blocking": "malformed", "openai": "malformed"},
          note="blocking: a 200 whose body is not JSON"),
]


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
def emulator(tmp_path_factory) -> Emulator:
    # A long answer cap, so a stream lasts as long as a test needs (max_tokens sets it).
    emulator = start_emulator(tmp_path_factory.mktemp("emulator"), 0.2, 200.0, 100_000)
    yield emulator
    emulator.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory, emulator: Emulator) -> Process:
    server = start_gunicorn(tmp_path_factory.mktemp("gunicorn"), upstream_env(emulator, **SETTINGS))
    yield server
    server.stop(signal.SIGINT)  # quick: nothing of ours is in flight


@pytest.fixture(scope="module")
def refused_server(tmp_path_factory) -> Process:
    """gunicorn whose upstream is a port nobody listens on."""
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    env = {"OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1", "OPENAI_API_KEY": SECRET_KEY}
    env.update({f"FLASKAPP_{k.upper()}": str(v) for k, v in SETTINGS.items()})
    server = start_gunicorn(tmp_path_factory.mktemp("refused"), env)
    yield server
    server.stop(signal.SIGINT)  # quick: nothing of ours is in flight


@pytest.fixture(scope="module")
def scripted() -> ScriptedUpstream:
    upstream = ScriptedUpstream()
    yield upstream
    upstream.shutdown()


@pytest.fixture(scope="module")
def scripted_server(tmp_path_factory, scripted: ScriptedUpstream) -> Process:
    env = {"OPENAI_BASE_URL": scripted.base_url, "OPENAI_API_KEY": SECRET_KEY}
    env.update({f"FLASKAPP_{k.upper()}": str(v) for k, v in SETTINGS.items()})
    server = start_gunicorn(tmp_path_factory.mktemp("scripted"), env)
    yield server
    server.stop(signal.SIGINT)  # quick: nothing of ours is in flight


# -- helpers ---------------------------------------------------------------------------------------

@dataclass
class Reply:
    status: int
    headers: dict
    body: bytes
    complete: bool  # False: the transfer ended without its final chunk


def fetch(url: str, endpoint: Endpoint, timeout: float = 15.0) -> Reply:
    host_port, _, path = url.removeprefix("http://").partition("/")
    host, _, port = host_port.partition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    body = json.dumps(endpoint.body) if endpoint.body is not None else None
    headers = {"Content-Type": "application/json"} if body else {}
    conn.request(endpoint.method, endpoint.path, body=body, headers=headers)
    response = conn.getresponse()
    chunks, complete = [], True
    try:
        while data := response.read1(65536):
            chunks.append(data)
    except (http.client.IncompleteRead, ConnectionError):
        complete = False
    finally:
        conn.close()
    return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, b"".join(chunks), complete)


def log_size(server: Process) -> int:
    return server.log_path.stat().st_size


def log_records(server: Process, since: int = 0) -> list[dict]:
    text = server.log_path.read_bytes()[since:].decode(errors="replace")
    return [json.loads(line.split("] ", 3)[-1]) for line in text.splitlines() if '"event":"request"' in line]


def wait_for_record(server: Process, since: int, timeout: float = 3.0) -> dict:
    """The request log line written since offset `since` (one request at a time here)."""
    deadline = time.monotonic() + timeout
    while not (records := log_records(server, since)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(records) == 1, records
    return records[0]


def assert_no_secret(*outputs: bytes | str) -> None:
    for output in outputs:
        text = output.decode(errors="replace") if isinstance(output, bytes) else output
        assert SECRET_KEY not in text and SECRET_KEY[-10:] not in text
        assert "Traceback" not in text


def check_reply(reply: Reply, expect: Expect) -> None:
    if isinstance(expect, Rejected):
        assert reply.status == expect.status, reply.body
        assert reply.headers["content-type"] == "application/json"
        error = json.loads(reply.body)["error"]
        assert error["type"] == expect.type and error["message"]
        assert reply.headers.get("retry-after") == expect.retry_after
    elif isinstance(expect, Answered):
        assert reply.status == 200 and reply.complete and reply.body
    elif isinstance(expect, Aborted):
        assert reply.status == 200 and reply.body and not reply.complete
    elif isinstance(expect, ErrorEvent):
        assert reply.status == 200 and reply.complete
        events = sse_events(reply.body)
        assert events[0][0] == "message"  # some of the answer came first
        name, data = events[-1]
        assert name == "error" and data["error"]["type"] == expect.type
    elif isinstance(expect, ErrorChunk):
        assert reply.status == 200 and reply.complete
        events = [e for e in reply.body.split(b"\n\n") if e]
        assert b"[DONE]" not in events[-1] and b'"choices"' in events[0]
        assert json.loads(events[-1].removeprefix(b"data: "))["error"]["type"] == expect.type


def metrics(server: Process) -> dict[tuple[str, frozenset], float]:
    """The server's /metrics samples: {(name, labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    status, _, body = request("GET", f"{server.url}/metrics")
    assert status == 200
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(body.decode()) for sample in family.samples}


def counted(before: dict, after: dict, name: str, **labels: str) -> float:
    """How much the samples of `name` carrying `labels` grew between two scrapes."""
    wanted = set(labels.items())
    return sum(value - before.get(key, 0.0) for key, value in after.items()
               if key[0] == name and wanted <= key[1])


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

@dataclass(frozen=True)
class Departure:
    name: str
    fault: dict  # the emulator fault that keeps the upstream busy
    endpoints: tuple[str, ...]
    wait_for_headers: bool  # the response has started before the client leaves


DEPARTURES = [
    Departure("client leaves before the first byte", {"delay": 30}, tuple(ENDPOINTS), False),
    Departure("client leaves mid-stream", {}, ("text", "sse", "openai_stream"), True),
    Departure("client leaves while the upstream stalls", {"stall_after": 3, "stall": 30},
              ("text", "sse", "openai_stream"), True),
]
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
    server = start_gunicorn(tmp_path, upstream_env(fast, **SETTINGS))
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


# -- docs/faults.md ------------------------------------------------------------------------------

def upstream_table() -> list[str]:
    """The matrix itself: upstream fault -> what each endpoint's client sees."""
    names = list(ENDPOINTS)
    lines = [
        "| fault | " + " | ".join(ENDPOINTS[n].name for n in names) + " | note |",
        "|---" * (len(names) + 2) + "|",
    ]
    for fault in FAULTS:
        cells = [fault.expect[n].describe() + (f" (**bug, for now:** {fault.bugs[n]})" if n in fault.bugs else "")
                 for n in names]
        lines.append(f"| {fault.name} | " + " | ".join(cells) + f" | {fault.note} |")
    return lines


README = ROOT / "README.md"
README_START = "<!-- fault matrix: generated by `python tests/test_faults.py` -->"
README_END = "<!-- end of fault matrix -->"


def render_readme(readme: str) -> str:
    """The README with the matrix between its markers brought up to date."""
    before, _, rest = readme.partition(README_START)
    _, _, after = rest.partition(README_END)
    return "\n".join([before + README_START, *upstream_table(), README_END]) + after


def render_doc() -> str:
    lines = [
        "# Faults: what a client sees",
        "",
        "Generated from `tests/test_faults.py` (the same tables its tests check). "
        "Regenerate with `python tests/test_faults.py`; `pytest` fails while this file is stale.",
        "",
        "Every case is run end to end through gunicorn (gevent) and the emulator's fault "
        "injection. In each, the request log says `outcome: upstream_error` with the error type "
        "shown (or `completed` for a whole answer), `/metrics` counts it (`flaskapp_requests_total` by outcome, `flaskapp_upstream_errors_total` by kind, `flaskapp_client_disconnects_total`), no secret reaches the client or the log, the "
        "upstream connection is closed, and the worker serves the next request. Error bodies are "
        '`{"error": {"type", "message", "param", "code"}}`.',
        "",
        "## Upstream faults",
        "",
        *upstream_table(),
    ]
    lines += [
        "",
        "Timeouts: `FLASKAPP_FIRST_TOKEN_TIMEOUT` (streams, to the first token), "
        "`FLASKAPP_IDLE_TIMEOUT` (streams, between chunks), `FLASKAPP_REQUEST_TIMEOUT` "
        "(blocking calls, whole answer). A stream's status is sent with its first token, "
        "so a failure before it gets a real status and a failure after it an in-stream error.",
        "",
        "## The client misbehaving",
        "",
        "| fault | endpoints | what happens |",
        "|---|---|---|",
    ]
    for departure in DEPARTURES:
        status = "200 (headers sent)" if departure.wait_for_headers else "499"
        where = ", ".join(ENDPOINTS[n].name for n in departure.endpoints)
        lines.append(f"| {departure.name} | {where} | the upstream call is closed within 1 s; "
                     f"log `client_disconnected`, status {status} |")
    lines += [
        "| client reads one byte a second | `GET /stream` | the worker holds only socket buffers; "
        "the upstream is held back by TCP flow control; other streams are not slowed |",
        "| more than `FLASKAPP_MAX_INFLIGHT` upstream calls on one worker | all prompt endpoints | "
        "503 `server_overloaded` with `Retry-After: 1`, at once; log `rejected` |",
        "",
    ]
    from hostile import SETTINGS as HOSTILE, hostile_table  # a library module, not a test module

    bounds = ", ".join(f"`FLASKAPP_{name.upper()}={value}`" for name, value in HOSTILE.items()
                       if name != "max_retries")
    lines += [
        "## Hostile upstreams and clients",
        "",
        "Generated from `tests/hostile.py`; each row is run end to end by `tests/test_hostile.py` "
        "through gunicorn (one gevent worker), against an upstream that misbehaves on purpose "
        "(`tests/hostile_upstream.py`) and whose error messages quote the key. In every case no "
        "byte of the key (nor its last 10 characters) reaches the client or the log, `/healthz` "
        "(asked every 50 ms throughout) keeps answering within 1 s, and the upstream call ends "
        "(for a client turned away, none is made). The tests set small bounds so that each case "
        f"takes a couple of seconds ({bounds}); the defaults are in the README's settings table.",
        "",
        *hostile_table(),
        "",
    ]
    return "\n".join(lines)


def test_docs_faults_md_is_up_to_date():
    assert DOC.exists() and DOC.read_text() == render_doc(), \
        "docs/faults.md is stale: run `python tests/test_faults.py`"


def test_the_readme_matrix_is_up_to_date():
    readme = README.read_text()
    assert README_START in readme and README_END in readme
    assert readme == render_readme(readme), "the README's fault matrix is stale: run `python tests/test_faults.py`"


if __name__ == "__main__":
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(render_doc())
    README.write_text(render_readme(README.read_text()))
    print(f"wrote {DOC.relative_to(ROOT)} and the matrix in {README.relative_to(ROOT)}")
