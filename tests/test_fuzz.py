"""Bad input, fuzzed: Hypothesis over every endpoint, and malformed HTTP on raw sockets.

Everything goes through real gunicorn (one gevent worker) in front of the emulator, so
an input that passes validation gets a real, quick answer rather than an upstream error.
The properties: never a 5xx the upstream did not cause, every 4xx in the JSON error
shape, never a traceback or a secret, and the worker goes on serving.
"""
from __future__ import annotations

import http.client
import json
import socket
import time
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from servers import SECRET_KEY, Process, request

GATEWAY_KEY = "gw-fuzz-key-9f8e7d6c5b4a"  # callers' key: as secret as the upstream's
FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

PATHS = ["/", "/stream", "/v1/chat/completions", "/v1/models", "/healthz", "/readyz", "/metrics",
         "/demo", "/static/demo.js", "/nowhere", "/v1/", "/stream/", "//", "/v1/chat/completions/x"]
FIELDS = ["prompt", "system", "max_tokens", "temperature", "model", "format", "stream",
          "messages", "max_completion_tokens", "stream_options", "n", "tools"]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]


# conftest's `emulator` and `server`: instant five-token answers, gateway keys on.
EMULATOR = {"ttft": 0.0, "tokens_per_second": 1_000_000.0, "tokens": 5}
SERVER_SETTINGS = {"max_retries": 0, "api_keys": GATEWAY_KEY, "first_token_timeout": 2, "request_timeout": 2}


# -- strategies ------------------------------------------------------------------------------------

scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=30)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)
messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant", "x"])},
                                          optional={"content": json_values}), max_size=3)
json_bodies = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=12),
                              json_values | messages, max_size=6) | json_values
query_values = st.text(max_size=40) | st.integers(-10**6, 10**6).map(str) | st.sampled_from(
    ["", "nan", "inf", "-1", "1e309", "gpt-4", "sse", "text", "true", "0x10", "\x00"])
queries = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), query_values, max_size=5)
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60)
headers = st.fixed_dictionaries({}, optional={
    "Authorization": st.just(f"Bearer {GATEWAY_KEY}") | header_text,
    "Content-Type": st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded",
                                     "multipart/form-data", "application/json; charset=latin-1"]) | header_text,
    "Accept": st.sampled_from(["text/event-stream", "*/*", "application/json", "text/event-stream;q=0"])
    | header_text,
    "Origin": header_text,
    "X-Request-ID": header_text,
    "X-Emulator-Fault": st.just("status=500"),  # must never reach the upstream
    "X-Forwarded-For": header_text,
})
authorized = st.just({"Authorization": f"Bearer {GATEWAY_KEY}"})


# -- the properties ------------------------------------------------------------------------------------

def send(server: Process, method: str, path: str, body: bytes | None, head: dict) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=head)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def check(method: str, status: int, head: dict, body: bytes) -> None:
    text = body.decode("utf-8", "replace")
    assert SECRET_KEY not in text and GATEWAY_KEY not in text and GATEWAY_KEY not in json.dumps(head)
    assert "Traceback" not in text and 'File "' not in text
    if status >= 500:
        # Only the upstream's failures, mapped (the emulator is healthy, so: bad arguments passed through).
        assert status in (502, 503, 504), (status, body)
        assert json.loads(body)["error"]["type"].startswith("upstream_"), body
    if 400 <= status < 500 and method != "HEAD":
        assert head["content-type"].startswith("application/json"), (status, head, body)
        error = json.loads(body)["error"]
        assert isinstance(error["type"], str) and isinstance(error["message"], str) and error["message"]


@FUZZ
@given(method=st.sampled_from(METHODS), path=st.sampled_from(PATHS), query=queries, head=headers)
def test_query_strings_headers_and_methods(server, method, path, query, head):
    url = f"{path}?{urlencode(query)}" if query else path
    status, got, body = send(server, method, url, None, head)
    check(method, status, got, body)


@FUZZ
@given(path=st.sampled_from(["/", "/stream", "/v1/chat/completions"]), body=json_bodies,
       head=authorized, query=queries)
def test_json_bodies(server, path, body, head, query):
    url = f"{path}?{urlencode(query)}" if query else path
    status, got, answer = send(server, "POST", url, json.dumps(body).encode(),
                               {**head, "Content-Type": "application/json"})
    check("POST", status, got, answer)


@FUZZ
@given(path=st.sampled_from(["/", "/stream", "/v1/chat/completions"]), body=st.binary(max_size=300),
       content_type=st.sampled_from(["application/json", "application/x-www-form-urlencoded", "text/plain", ""]),
       raw_path=st.text(max_size=30).map(lambda s: quote(s, safe="/?&=%")))
def test_raw_bodies_and_paths(server, path, body, content_type, raw_path):
    head = {"Authorization": f"Bearer {GATEWAY_KEY}", "Content-Type": content_type}
    status, got, answer = send(server, "POST", path, body, head)
    check("POST", status, got, answer)
    status, got, answer = send(server, "GET", "/" + raw_path.lstrip("/"), None, head)
    check("GET", status, got, answer)


# -- malformed HTTP on raw sockets ---------------------------------------------------------------------

def exchange(server: Process, raw: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, half-close, and read whatever gunicorn answers."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        received = b""
        try:
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)
        except OSError:  # gunicorn answered an oversized head before reading it all, and reset
            pass
        try:
            while data := sock.recv(65536):
                received += data
        except (ConnectionResetError, socket.timeout):
            pass
    return received


POST = b"POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + GATEWAY_KEY.encode() + b"\r\n"
JSON_BODY = b'{"prompt": "hi", "max_tokens": 3}'


@pytest.mark.parametrize("raw, status", [
    (POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400),  # not a chunk size
    (POST + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello world\r\n0\r\n\r\n", 400),  # chunk longer than said
    (POST + b"Transfer-Encoding: chunked\r\n\r\n3\r\nhel", None),  # body ends mid-chunk
    (POST + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),  # smuggling
    (POST + b"Content-Length: abc\r\n\r\n", 400),
    (POST + b"Content-Length: 1000\r\nContent-Type: application/json\r\n\r\n" + JSON_BODY, None),  # short body
    (b"GET /?" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),  # huge request line
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n", 431),  # huge header
    (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(200)) + b"\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Nul: a\x00b\r\n\r\n", 400),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40), None),  # TLS to a plain port: closed
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET / HTTP/9.9\r\nHost: x\r\n\r\n", 400),
], ids=["bad-chunk-size", "chunk-overrun", "truncated-chunk", "cl-and-te", "bad-content-length",
        "short-body", "huge-request-line", "huge-header", "too-many-headers", "nul-in-header",
        "tls-hello", "garbage", "bad-version"])
def test_malformed_http_is_refused_and_the_worker_goes_on(server, emulator, raw, status):
    answer = exchange(server, raw)
    if status is not None:  # gunicorn answers some framing errors with its generic 400
        assert answer.split(b"\r\n", 1)[0].split(b" ")[1] in (str(status).encode(), b"400"), answer[:200]
    elif answer:  # None: any 4xx, or the connection closed without an answer
        assert answer.startswith(b"HTTP/1.1 4"), answer[:200]
    assert b"Traceback" not in answer and SECRET_KEY.encode() not in answer
    assert request("GET", f"{server.url}/healthz")[0] == 200


def test_slow_headers_hold_no_other_request_up(server):
    # Slowloris: 50 clients trickle their headers in; each costs one greenlet, and
    # everyone else is still answered at once. (gunicorn has no header timeout of its
    # own: put nginx in front, whose client_header_timeout closes such clients.)
    slow = []
    for _ in range(50):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        slow.append(sock)
    try:
        for _ in range(5):
            for sock in slow:
                sock.sendall(b"X-Slow: 1\r\n")
            started = time.monotonic()
            assert request("GET", f"{server.url}/healthz")[0] == 200
            assert time.monotonic() - started < 0.5
            time.sleep(0.2)
        for sock in slow:  # they finish their headers at last and are answered
            sock.sendall(b"\r\n")
        assert all(sock.recv(64).startswith(b"HTTP/1.1 200") for sock in slow)
    finally:
        for sock in slow:
            sock.close()


def test_the_worker_survived_the_fuzzing(server, emulator):
    status, _, body = request("GET", f"{server.url}/?prompt=still%20here",
                              headers={"Authorization": f"Bearer {GATEWAY_KEY}"})
    assert status == 200 and body
    log = server.log()
    assert log.count("Booting worker") == 1
    assert "Traceback" not in log and "unhandled error" not in log
    assert SECRET_KEY not in log and GATEWAY_KEY not in log
    assert emulator.stats()["faults"] == {}  # no client header ever reached the upstream
