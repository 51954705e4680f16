"""FLASKAPP_STREAM_INTERVAL: a stream writes at most once per interval, and loses nothing by it."""
from __future__ import annotations

import time

import openai

from servers import SECRET_KEY, raw_request, request, sse_events, stream

INTERVAL = 0.5
TOKENS, TOKENS_PER_SECOND = 40, 20.0  # two seconds of tokens, one every 50 ms


# conftest's `emulator` and `server`: answers slow enough for several tokens an interval.
EMULATOR = {"ttft": 0.05, "tokens_per_second": TOKENS_PER_SECOND, "tokens": TOKENS}
SERVER_SETTINGS = {"max_retries": 0, "stream_interval": INTERVAL, "idle_timeout": 5}


def test_tokens_arriving_within_an_interval_go_out_in_one_write(server):
    _, _, blocking = request("GET", f"{server.url}/?prompt=batch")
    streamed = stream(f"{server.url}/stream?prompt=batch")
    assert streamed.status == 200 and streamed.complete and streamed.body == blocking
    assert streamed.first_byte < 0.4  # the first text is never held back
    seconds = TOKENS / TOKENS_PER_SECOND
    assert 2 <= len(streamed.chunks) <= seconds / INTERVAL + 3  # not one write per token (40)


def test_sse_events_and_the_openai_stream_are_whole(server):
    _, _, blocking = request("GET", f"{server.url}/?prompt=events")
    events = sse_events(stream(f"{server.url}/stream?prompt=events&format=sse").body)
    assert "".join(data["text"] for name, data in events if name == "message") == blocking.decode()
    assert events[-1][0] == "done"
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=SECRET_KEY, max_retries=0)
    ask = {"model": "gpt-4", "messages": [{"role": "user", "content": "events"}]}
    whole = client.chat.completions.create(**ask).choices[0].message.content
    chunks = client.chat.completions.create(**ask, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole


def test_a_client_leaving_during_a_pause_ends_the_upstream_at_once(server, emulator):
    emulator.reset()
    sock = raw_request(server.port, "/stream?prompt=leaving")
    assert sock.recv(4096).startswith(b"HTTP/1.1 200")  # the first text: the stream now pauses
    stats, took = emulator.after_hang_up(sock, lambda s: s["in_flight"] == 0)
    assert stats["streams_aborted"] == 1 and took < INTERVAL / 2  # not at the pause's end
    time.sleep(0.1)
    assert request("GET", f"{server.url}/healthz")[0] == 200
