"""The service end to end: real gunicorn (one gevent worker) in front of the real emulator."""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from servers import SECRET_KEY, raw_request, request, sse_events, stream

pytestmark = pytest.mark.usefixtures("clean_emulator")


def test_healthz(server):
    status, _, body = request("GET", f"{server.url}/healthz")
    assert status == 200 and body == b"ok\n"


def test_streamed_text_equals_blocking_text(server, emulator):
    status, headers, blocking = request("GET", f"{server.url}/?prompt=tell%20me")
    streamed = stream(f"{server.url}/stream?prompt=tell%20me")
    assert status == 200 and headers["content-type"] == "text/plain; charset=utf-8"
    assert streamed.status == 200 and streamed.complete
    assert streamed.headers["content-type"] == "text/plain; charset=utf-8"
    assert streamed.headers["x-accel-buffering"] == "no"
    assert streamed.body == blocking
    assert len(blocking.split()) > 20 and len(set(blocking.split())) > 10  # prose, not one word
    assert len(streamed.chunks) > 5  # flushed piece by piece, not buffered into one write


def test_post_json_is_the_same_as_get(server):
    _, _, by_get = request("GET", f"{server.url}/?prompt=hello&max_tokens=7")
    status, _, by_post = request("POST", f"{server.url}/", body={"prompt": "hello", "max_tokens": 7})
    assert status == 200 and by_post == by_get
    status, headers, body = request("POST", f"{server.url}/stream", body={"prompt": "hello", "max_tokens": 7})
    assert status == 200 and body == by_get


def test_the_first_streamed_byte_comes_at_the_first_token(server, emulator):
    result = stream(f"{server.url}/stream?prompt=timing")
    ttft = emulator.settings["ttft"]
    whole = ttft + emulator.settings["tokens"] / emulator.settings["tokens_per_second"]
    assert ttft * 0.9 <= result.first_byte < whole  # not after the whole answer
    assert result.total >= whole * 0.9


def test_server_sent_events(server):
    result = stream(f"{server.url}/stream?prompt=hi&max_tokens=12", headers={"Accept": "text/event-stream"})
    assert result.status == 200 and result.headers["content-type"].startswith("text/event-stream")
    events = sse_events(result.body)
    pieces = [data["text"] for name, data in events if name == "message"]
    assert len(pieces) == 12 and all(pieces)
    name, done = events[-1]
    assert name == "done"
    assert done["finish_reason"] == "length" and done["usage"]["completion_tokens"] == 12
    assert done["time_to_first_byte"] <= done["total_time"]
    _, _, blocking = request("GET", f"{server.url}/?prompt=hi&max_tokens=12")
    assert "".join(pieces).encode() == blocking
    assert stream(f"{server.url}/stream?prompt=hi&max_tokens=12&format=sse").body.count(b"data: ") == 13


def test_200_concurrent_streams_all_start_at_the_first_token(server, emulator):
    def one(i: int):
        return stream(f"{server.url}/stream?prompt=concurrent%20{i}&max_tokens=20", timeout=30)

    with ThreadPoolExecutor(200) as pool:
        results = list(pool.map(one, range(200)))
    assert all(r.status == 200 and r.complete for r in results)
    first_bytes = sorted(r.first_byte for r in results)
    whole = emulator.settings["ttft"] + 20 / emulator.settings["tokens_per_second"]
    # Serialized streams would start one whole answer after another (200 × 0.3 s).
    assert first_bytes[len(first_bytes) // 2] < emulator.settings["ttft"] + 1.0
    assert first_bytes[-1] < whole * 10
    assert emulator.stats()["streams_completed"] == 200


def test_blocking_requests_run_concurrently(server, emulator):
    def one(i: int):
        started = time.monotonic()
        status, _, body = request("GET", f"{server.url}/?prompt=block%20{i}&max_tokens=20")
        return status, time.monotonic() - started

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(one, range(50)))
    assert all(status == 200 for status, _ in results)
    whole = emulator.settings["ttft"] + 20 / emulator.settings["tokens_per_second"]
    assert max(elapsed for _, elapsed in results) < whole * 8  # 50 in a row would take 50 × whole


@pytest.mark.parametrize("path", ["/stream?prompt=bye", "/stream?prompt=bye&format=sse"])
def test_client_leaving_mid_stream_closes_the_upstream(server, emulator, path):
    sock = raw_request(server.port, path)
    assert sock.recv(4096).startswith(b"HTTP/1.1 200")  # headers and the first text
    sock.close()
    stats = emulator.wait_for(lambda s: s["streams_aborted"] == 1, timeout=1.5)
    assert stats["streams_aborted"] == 1 and stats["streams_completed"] == 0
    assert request("GET", f"{server.url}/healthz")[0] == 200


@pytest.mark.parametrize("fault, path", [
    ({"delay": 30}, "/stream?prompt=waiting"),  # waiting for the first token
    ({"stall_after": 3, "stall": 30}, "/stream?prompt=stalled"),  # during a stall
    ({"delay": 30}, "/?prompt=blocking"),  # a blocking call while the model writes
])
def test_client_leaving_while_nothing_is_sent_closes_the_upstream(server, emulator, fault, path):
    emulator.arm(**fault)
    sock = raw_request(server.port, path)
    if "stall" in fault:
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    time.sleep(0.3)
    assert emulator.stats()["in_flight"] == 1
    stats, took = emulator.after_hang_up(sock, lambda s: s["in_flight"] == 0)
    assert stats["in_flight"] == 0 and took < 1.0
    assert stats["streams_aborted"] + stats["completions_aborted"] == 1
    assert request("GET", f"{server.url}/healthz")[0] == 200


STATUS_FAULTS = [
    ({"status": 429, "retry_after": 7}, 429, "rate_limit_error"),
    ({"status": 401}, 502, "upstream_error"),
    ({"status": 500}, 502, "upstream_error"),
    ({"status": 503}, 503, "upstream_unavailable"),
]
STREAMS = ["/stream?prompt=x", "/stream?prompt=x&format=sse"]


@pytest.mark.parametrize("fault, status, kind, path", [
    *[(*fault, path) for fault in STATUS_FAULTS for path in ["/?prompt=x", *STREAMS]],
    # No first token within the first-token timeout (3 s here); a blocking call has the
    # whole request timeout instead (tests/test_faults.py).
    *[({"delay": 10}, 504, "upstream_timeout", path) for path in STREAMS],
])
def test_upstream_failure_before_the_first_byte_gets_a_real_status(server, emulator, fault, status, kind, path):
    emulator.arm(**fault)
    got, headers, body = request("GET", f"{server.url}{path}")
    assert got == status
    assert headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert error["type"] == kind and error["message"]
    if status == 429:
        assert headers["retry-after"] == "7"
    assert SECRET_KEY.encode() not in body and b"sk-" not in body


def test_a_stream_cut_mid_way_never_looks_complete(server, emulator):
    emulator.arm(cut_after=5)
    text = stream(f"{server.url}/stream?prompt=cut")
    assert text.status == 200 and text.body and not text.complete  # curl: incomplete transfer
    emulator.arm(cut_after=5)
    sse = stream(f"{server.url}/stream?prompt=cut&format=sse")
    assert sse.complete
    name, data = sse_events(sse.body)[-1]
    assert name == "error" and data["error"]["type"] == "upstream_unavailable"
    assert request("GET", f"{server.url}/healthz")[0] == 200


def test_a_stall_past_the_idle_timeout_ends_the_stream_with_an_error(server, emulator):
    emulator.arm(stall_after=3, stall=30)  # idle timeout is 2 s here
    result = stream(f"{server.url}/stream?prompt=stall&format=sse", timeout=10)
    name, data = sse_events(result.body)[-1]
    assert name == "error" and data["error"]["type"] == "upstream_timeout"
    assert result.total < 5
    assert emulator.wait_for(lambda s: s["in_flight"] == 0)["in_flight"] == 0


@pytest.mark.parametrize("method, path, body, status", [
    ("GET", "/?max_tokens=lots", None, 400),
    ("GET", "/?max_tokens=0", None, 400),
    ("GET", "/stream?temperature=3", None, 400),
    ("GET", "/stream?prompt=", None, 400),
    ("GET", "/stream?model=gpt-5-secret", None, 400),
    ("GET", "/stream?format=xml", None, 400),
    ("POST", "/", json.dumps({"prompt": "x" * 40_000}).encode(), 400),
    ("POST", "/", b"{not json", 400),
    ("POST", "/stream", b"[1, 2]", 400),
    ("POST", "/", json.dumps({"prompt": 5}).encode(), 400),
    ("POST", "/", json.dumps({"prompt": "hi", "max_tokens": True}).encode(), 400),
    ("POST", "/", json.dumps({"prompt": "hi", "stream": True}).encode(), 400),
    ("POST", "/", json.dumps({"prompt": "x" * 300_000}).encode(), 413),
    ("DELETE", "/", None, 405),
    ("PUT", "/stream", None, 405),
    ("GET", "/nowhere", None, 404),
], ids=lambda value: str(value)[:40] if isinstance(value, (str, bytes)) else None)
def test_bad_input_gets_a_clear_json_error(server, emulator, method, path, body, status):
    got, headers, answer = request(method, f"{server.url}{path}", body=body,
                                   headers={"Content-Type": "application/json"} if body else None)
    assert got == status
    assert headers["content-type"] == "application/json"
    assert json.loads(answer)["error"]["message"]
    assert b"Traceback" not in answer
    stats = emulator.stats()
    assert stats["streams_started"] + stats["completions_started"] == 0  # rejected before any upstream call


def test_logs_say_what_happened_and_hold_no_secret(server, emulator):
    request("GET", f"{server.url}/?prompt=logged&max_tokens=3")
    time.sleep(0.2)
    log = server.log()
    lines = [json.loads(line.split("] ", 3)[-1]) for line in log.splitlines() if '"event":"request"' in line]
    assert {"completed", "client_disconnected", "upstream_error", "rejected"} <= {l["outcome"] for l in lines}
    assert SECRET_KEY not in log
    assert "monkey-patching ssl" not in log.lower() and "Traceback" not in log


def test_the_httpx_transport_also_streams_concurrently(tmp_path, emulator):
    """FLASKAPP_UPSTREAM_TRANSPORT=httpx: every request through client.post() and httpx's pool,
    whose sockets gevent has patched: streams must still overlap, not queue."""
    from servers import start_gunicorn, upstream_env

    server = start_gunicorn(tmp_path, upstream_env(emulator, upstream_transport="httpx", max_retries=0))
    try:
        with ThreadPoolExecutor(50) as pool:
            results = list(pool.map(lambda i: stream(f"{server.url}/stream?prompt=h{i}&max_tokens=20"), range(50)))
        assert all(r.status == 200 and r.complete for r in results)
        whole = emulator.settings["ttft"] + 20 / emulator.settings["tokens_per_second"]
        assert max(r.first_byte for r in results) < whole * 5  # 50 in a row would take 50 × whole
        _, _, blocking = request("GET", f"{server.url}/?prompt=h0&max_tokens=20")
        assert blocking == results[0].body
    finally:
        server.stop()
