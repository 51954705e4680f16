"""flaskapp.loadtest.client and runner: the HTTP driver against the real emulator and scripted servers."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from flaskapp.loadtest.client import Target
from flaskapp.loadtest.runner import run, run_kind
from servers import start_emulator

TTFT, TOKENS_PER_SECOND, TOKENS = 0.05, 400.0, 20


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    emulator = start_emulator(tmp_path_factory.mktemp("emulator"), TTFT, TOKENS_PER_SECOND, TOKENS)
    yield emulator
    emulator.stop()


def load(url: str, kind: str, concurrency: int = 1, requests: int | None = None, **options):
    return run(lambda: run_kind(Target(url), kind, concurrency, requests=requests or concurrency, **options))


def test_openai_stream_records_ttft_gaps_and_every_token(emulator):
    result = load(emulator.url, "openai-stream", concurrency=5)
    assert [r.error for r in result.records] == [None] * 5
    for record in result.records:
        assert record.status == 200
        assert record.chunks == TOKENS  # one SSE event with text per token; role and [DONE] not counted
        assert TTFT <= record.ttft < record.total
        assert record.total >= TTFT + (TOKENS - 1) / TOKENS_PER_SECOND
        assert len(record.gaps) >= 1 and all(gap >= 0 for gap in record.gaps)
    assert not result.timed_out


def test_openai_block_is_one_chunk_whose_first_byte_is_its_last(emulator):
    (record,) = load(emulator.url, "openai-block").records
    assert record.error is None and record.chunks == 1 and record.gaps == []
    assert record.ttft == record.total >= TTFT + TOKENS / TOKENS_PER_SECOND


def test_duration_keeps_sending_until_it_passes(emulator):
    result = run(lambda: run_kind(Target(emulator.url), "openai-block", 2, duration=0.3))
    assert len(result.records) >= 4 and all(r.ok for r in result.records)


@pytest.mark.parametrize("fault, kind, error", [
    ({"status": 500}, "openai-stream", "http_500"),
    ({"status": 429}, "openai-block", "http_429"),
    ({"cut_after": 3}, "openai-stream", "truncated"),
    ({"malformed_after": 2, "cut_after": 3}, "openai-stream", "truncated"),
])
def test_failures_get_their_error_kind(emulator, fault, kind, error):
    emulator.arm(**fault, count=1)
    (record,) = load(emulator.url, kind).records
    assert record.error == error
    if error.startswith("http_"):
        assert record.status == fault["status"] and "error" in record.detail


def test_a_slow_request_times_out(emulator):
    emulator.arm(delay=2.0, count=1)
    (record,) = load(emulator.url, "openai-stream", timeout=0.2).records
    assert record.error == "timeout" and 0.15 <= record.total < 1.9  # not the 2 s delay


def test_the_time_limit_cancels_what_is_in_flight(emulator):
    emulator.arm(delay=2.0, count=2)
    result = load(emulator.url, "openai-stream", concurrency=2, requests=4, time_limit=0.3)
    assert result.timed_out and result.wall_time < 1.9  # ended before the 2 s delay
    assert [r.error for r in result.records] == ["cancelled", "cancelled"]


def test_a_closed_port_is_a_connect_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: refused
        (record,) = load(f"http://127.0.0.1:{port}", "stream").records
    assert record.error == "connect"


def scripted_server(pieces: list[bytes], pause: float = 0.02) -> tuple[str, threading.Thread]:
    """A one-connection server that reads the request and writes `pieces` one by one, then closes."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        connection, _ = listener.accept()
        with connection, listener:
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection.recv(65536)
            for piece in pieces:
                connection.sendall(piece)
                time.sleep(pause)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}", thread


HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize("pieces, chunks, error", [
    ([HEAD, b"5\r\nHello\r\n", b"6\r\n world\r\n", b"0\r\n\r\n"], 2, None),
    # framing split across reads at every awkward place
    ([HEAD[:20], HEAD[20:] + b"5\r", b"\nHel", b"lo\r", b"\n6;ext=1\r\n world", b"\r\n0\r\n\r\n"], 2, None),
    ([HEAD, b"5\r\nHello\r\n"], 1, "truncated"),  # no last chunk: the stream failed mid-way
    ([HEAD[:30]], 0, "reset"),
    ([b"garbage\r\n\r\n"], 0, "protocol"),
])
def test_text_stream_framing(pieces, chunks, error):
    url, thread = scripted_server(pieces)
    (record,) = load(url, "stream", timeout=5.0).records
    thread.join(5)
    assert (record.chunks, record.error) == (chunks, error)
    if chunks == 2:
        assert record.bytes == sum(map(len, pieces)) and len(record.gaps) == 1


SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


@pytest.mark.parametrize("events, chunks, error", [
    ([b'data: {"text": "A"}\n\n', b'data: {"text": " b"}\n\nevent: done\ndata: {}\n\n'], 2, None),
    ([b'data: {"text": "A"}\n\n', b"event: error\ndata: {\"type\": \"upstream\"}\n\n"], 1, "stream_error"),
    ([b'data: {"text": "A"}\n\n'], 1, "truncated"),  # framing complete but no `event: done`
])
def test_sse_stream_events(events, chunks, error):
    url, thread = scripted_server([SSE_HEAD, *map(chunk, events), b"0\r\n\r\n"])
    (record,) = load(url, "stream-sse", timeout=5.0).records
    thread.join(5)
    assert (record.chunks, record.error) == (chunks, error)


def test_target_builds_each_kind_of_request():
    target = Target("http://127.0.0.1:8000/base", prompt="hi there", max_tokens=7)
    assert target.request_bytes("block").startswith(b"GET /base/?prompt=hi%20there&max_tokens=7 HTTP/1.1\r\n")
    assert b"&format=sse" in target.request_bytes("stream-sse")
    assert b"Accept: text/event-stream" in target.request_bytes("stream-sse")
    request = target.request_bytes("openai-stream")
    assert request.startswith(b"POST /base/v1/chat/completions HTTP/1.1\r\n")
    assert request.endswith(b'"stream": true, "max_tokens": 7}')
    assert b"Authorization" not in target.request_bytes("stream")
    assert b"Authorization: Bearer gk-1\r\n" in Target("http://h:1", api_key="gk-1").request_bytes("stream")
    with pytest.raises(ValueError):
        Target("https://example.invalid").request_bytes("block")
