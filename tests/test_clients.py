"""Careless and hostile clients, end to end through real gunicorn (one gevent worker).

A body that never comes, an answer nobody reads, a body past the size limit sent
chunked, HEAD: each gets an answer or is dropped, and holds no upstream call.
The server here drops a client after CLIENT_TIMEOUT = 3 s without progress; its
keep-alive (1 s) is shorter, so an idle connection must close on keep-alive's time.
"""
from __future__ import annotations

import json
import select
import socket
import time

import pytest

from servers import SECRET_KEY, request, start_emulator, start_gunicorn, upstream_env

CLIENT_TIMEOUT = 3
MAX_CONTENT_LENGTH = 4096


@pytest.fixture(scope="module")
def fast_emulator(tmp_path_factory):
    """An upstream that writes a long answer as fast as it is taken."""
    emulator = start_emulator(tmp_path_factory.mktemp("emulator"), 0.05, 100_000.0, 2_000_000)
    yield emulator
    emulator.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory, fast_emulator):
    # No cap on the answer's size: the client's stall, not the cap, must end the stream here.
    env = upstream_env(fast_emulator, max_retries=0, client_timeout=CLIENT_TIMEOUT,
                       max_content_length=MAX_CONTENT_LENGTH, max_answer_bytes=2**40)
    server = start_gunicorn(tmp_path_factory.mktemp("gunicorn"), {**env, "GUNICORN_KEEPALIVE": "1"})
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def clean(fast_emulator):
    fast_emulator.reset()


def connect(server, receive_buffer: int | None = None) -> socket.socket:
    sock = socket.socket()
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(CLIENT_TIMEOUT + 10)
    sock.connect(("127.0.0.1", server.port))
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    received = bytearray()
    while data := sock.recv(65536):
        received += data
    return bytes(received)


def model_calls(emulator) -> int:
    stats = emulator.stats()
    return stats["streams_started"] + stats["completions_started"]


def parse_response(raw: bytes) -> tuple[int, dict, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def stalled_body(server, path: str) -> socket.socket:
    sock = connect(server)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 "Content-Length: 2000\r\n\r\n{\"prompt\": ".encode())
    return sock


# -- a body that never comes ---------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/", "/stream", "/v1/chat/completions"])
def test_a_stalled_body_is_a_408_and_the_connection_closes(server, fast_emulator, path):
    sock = stalled_body(server, path)
    try:
        status, headers, body = parse_response(read_until_closed(sock))  # closed by the server
    finally:
        sock.close()
    assert status == 408
    error = json.loads(body)["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "request_timeout"
    assert f"{CLIENT_TIMEOUT} s" in error["message"]
    assert model_calls(fast_emulator) == 0  # no upstream call


def test_the_worker_answers_while_200_bodies_stall_and_then_drops_them_all(server):
    stalled = [stalled_body(server, "/") for _ in range(200)]
    try:
        assert request("GET", f"{server.url}/healthz", timeout=CLIENT_TIMEOUT)[0] == 200
        readable, _, _ = select.select(stalled, [], [], 0)
        assert not readable  # all 200 still open and waiting while /healthz was answered
        statuses = [parse_response(read_until_closed(sock))[0] for sock in stalled]
    finally:
        for sock in stalled:
            sock.close()
    assert statuses == [408] * 200
    assert request("GET", f"{server.url}/healthz")[0] == 200
    assert "Traceback" not in server.log()


def test_a_slow_body_that_keeps_coming_is_read_whole(server, fast_emulator):
    # The timeout is on progress, not on the whole body.
    body = json.dumps({"prompt": "slow", "max_tokens": 3}).encode()
    sock = connect(server)
    try:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body))
        for piece in (body[:10], body[10:]):  # in all longer than CLIENT_TIMEOUT
            sock.sendall(piece)
            time.sleep(CLIENT_TIMEOUT * 0.6)
        status, _, answer = parse_response(read_until_closed(sock))
    finally:
        sock.close()
    assert status == 200 and answer


# -- an answer nobody reads ----------------------------------------------------------------------

@pytest.mark.parametrize("path, body", [
    ("/stream?prompt=never%20read&format=sse", None),
    ("/v1/chat/completions", {"model": "gpt-4", "stream": True, "messages": [{"role": "user", "content": "hi"}]}),
])
def test_a_client_that_stops_reading_is_dropped_and_its_upstream_call_ends(server, fast_emulator, path, body):
    sock = connect(server, receive_buffer=4096)
    try:
        payload = json.dumps(body).encode() if body else b""
        method = "POST" if body else "GET"
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
        assert fast_emulator.wait_for(lambda s: s["in_flight"] == 1)["in_flight"] == 1
        # The buffers fill, the worker's write waits, and after CLIENT_TIMEOUT without
        # progress it gives up: the relay ends the upstream call.
        stats = fast_emulator.wait_for(lambda s: s["in_flight"] == 0, timeout=CLIENT_TIMEOUT + 10)
        assert stats["in_flight"] == 0 and stats["streams_aborted"] == 1
        assert stats["tokens_sent"] < 2_000_000  # the answer was not written out whole
    finally:
        sock.close()
    log = server.log()
    assert "Traceback" not in log and SECRET_KEY not in log
    assert request("GET", f"{server.url}/healthz")[0] == 200


def test_an_idle_kept_alive_connection_closes_on_keepalive_not_client_timeout(server):
    sock = connect(server)
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while not answer.endswith(b"ok\n"):
            answer += sock.recv(65536)
        idle_since = time.monotonic()
        assert answer.startswith(b"HTTP/1.1 200") and sock.recv(65536) == b""  # the server closed it
        closed_after = time.monotonic() - idle_since
    finally:
        sock.close()
    assert closed_after < CLIENT_TIMEOUT  # GUNICORN_KEEPALIVE = 1 s, as before the socket timeout


# -- a body past the limit, sent chunked -----------------------------------------------------------

def chunked(server, path: str, body: bytes) -> tuple[int, dict, bytes]:
    head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 1000]), body[i:i + 1000]) for i in range(0, len(body), 1000))
    sock = connect(server)
    try:
        # One write: the server has it all when it answers, so closing leaves nothing unread (no reset).
        sock.sendall(head + chunks + b"0\r\n\r\n")
        return parse_response(read_until_closed(sock))
    finally:
        sock.close()


@pytest.mark.parametrize("path", ["/", "/v1/chat/completions"])
def test_a_chunked_body_past_the_limit_is_a_413_not_cut(server, fast_emulator, path):
    # Whitespace past the limit: cut there, the body would be empty and the default prompt would run.
    body = b"{}" + b" " * MAX_CONTENT_LENGTH
    status, _, answer = chunked(server, path, body)
    assert status == 413 and json.loads(answer)["error"]["type"] == "invalid_request_error"
    assert model_calls(fast_emulator) == 0


def test_a_chunked_body_of_exactly_the_limit_is_read(server):
    prefix = b'{"prompt": "hi", "max_tokens": 2, "system": "'
    body = prefix + b"x" * (MAX_CONTENT_LENGTH - len(prefix) - 2) + b'"}'
    assert len(body) == MAX_CONTENT_LENGTH
    status, _, answer = chunked(server, "/", body)
    assert status == 200 and answer


# -- HEAD ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("path, accept, content_type", [
    ("/?prompt=hi", None, "text/plain; charset=utf-8"),
    ("/stream?prompt=hi", None, "text/plain; charset=utf-8"),
    ("/stream?prompt=hi", "text/event-stream", "text/event-stream; charset=utf-8"),
])
def test_head_answers_as_get_would_without_calling_the_upstream(server, fast_emulator, path, accept, content_type):
    headers = {"Accept": accept} if accept else {}
    status, got, body = request("HEAD", f"{server.url}{path}", headers=headers)
    assert status == 200 and got["content-type"] == content_type and body == b""
    assert request("HEAD", f"{server.url}{path}&max_tokens=0")[0] == 400  # the same input checks
    assert model_calls(fast_emulator) == 0
