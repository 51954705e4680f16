"""The relay's bookkeeping and its defences, with a fake upstream stream (unit tests)."""
import json
from contextlib import nullcontext

import pytest
from flask import has_request_context

from flaskapp.upstream.stream import ChatStream
from flaskapp.errors import UpstreamError
from flaskapp.runtime.guard import Guard
from flaskapp.web.relay import CHAT_EVENTS, SSE_BODY, TEXT_BODY, Relay
from flaskapp.ops.requestlog import RequestRecord
from flaskapp.upstream.client import UpstreamSettings

KEY = "sk-proj-0123456789abcdefSECRET"


class FakeUpstream:
    class settings:
        first_token_timeout = 5.0

    class client:
        api_key = KEY

    def __init__(self, events: list[bytes], **settings) -> None:
        self.events, self.closed = events, False
        self.stream_settings = UpstreamSettings(first_token_timeout=5.0, idle_timeout=5.0, **settings)

    def open_stream(self, body, guard) -> ChatStream:
        return ChatStream(iter(self.events), close=self.close, guard=guard, settings=self.stream_settings)

    def close(self) -> None:
        self.closed = True


def content(text: str, index: int = 0) -> bytes:
    return (b'data: {"choices":[{"index":%d,"delta":{"content":%s},"finish_reason":null}]}\n\n'
            % (index, json.dumps(text).encode()))


END = b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
EVENTS = [content("Hello"), content(" there"), END]
OUTPUTS = {"text": TEXT_BODY, "sse": SSE_BODY, "passthrough": CHAT_EVENTS}


def relay(app, events: list[bytes], kind: str, **settings) -> tuple[bytes, RequestRecord, FakeUpstream]:
    """The body a client gets for `kind` (`text`, `sse` or `passthrough`), and the request's record."""
    upstream = FakeUpstream(events, **settings)
    with app.test_request_context():
        record = RequestRecord(route="/stream", method="GET")
        opened = Relay.open(upstream, {}, {}, record, OUTPUTS[kind])
        body = b"".join(opened.body())
        opened.close()
    return body, record, upstream


def test_a_body_never_iterated_still_closes_the_upstream(app):
    upstream = FakeUpstream(EVENTS)
    with app.test_request_context():
        record = RequestRecord(route="/stream", method="GET")
        relay = Relay.open(upstream, {}, {}, record, TEXT_BODY)
        body = relay.body()  # the server closes the response before iterating it
        relay.close()
    assert upstream.closed and record.outcome == "client_disconnected"
    assert list(body) == []


def test_a_whole_stream_is_relayed_and_recorded(app):
    body, record, upstream = relay(app, EVENTS, "text")
    assert body == b"Hello there"
    assert upstream.closed and record.outcome == "completed" and record.chunks == 2


@pytest.mark.parametrize("kind", ["sse", "passthrough"])
def test_the_logged_bytes_are_every_byte_sent(app, kind):
    body, record, _ = relay(app, EVENTS, kind)
    assert record.outcome == "completed" and record.bytes == len(body)
    assert kind != "sse" or b"event: done" in body
    body, record, _ = relay(app, EVENTS[:2] + [b'data: {"error":{"type":"server_error"}}\n\n'], kind)
    assert record.outcome == "upstream_error" and record.bytes == len(body) and b"server_error" in body


def test_passthrough_relays_whole_events_only(app):
    data = b"".join(EVENTS)
    reads = [data[i:i + 7] for i in range(0, len(data), 7)]
    upstream = FakeUpstream(reads)
    with app.test_request_context():
        opened = Relay.open(upstream, {}, {}, RequestRecord(route="/v1", method="POST"), CHAT_EVENTS)
        writes = list(opened.body())
    assert b"".join(writes) == data
    assert all(write.endswith(b"\n\n") for write in writes)


@pytest.mark.parametrize("cut", [10, 40, 70])
def test_an_upstream_error_quoting_the_key_in_two_reads_never_reaches_the_client(app, cut):
    error = ('data: {"error":{"message":"Incorrect API key provided: %s. You can find your API key at '
             'https://platform.openai.com/account/api-keys.","type":"invalid_request_error"}}\n\n' % KEY).encode()
    for events in ([content("Hi"), error[:cut], error[cut:]], [content("Hi") + error[:cut], error[cut:]]):
        body, record, _ = relay(app, events, "passthrough")
        assert KEY.encode() not in body and KEY[:8].encode() not in body
        assert body.startswith(content("Hi")) and b"[DONE]" not in body
        assert json.loads(body.split(b"\n\n")[-2][6:])["error"]["type"] == "upstream_error"
        assert record.outcome == "upstream_error"


@pytest.mark.parametrize("kind", ["text", "sse", "passthrough"])
def test_the_key_never_goes_out_in_any_stream(app, kind):
    # The last line of defence: even as content, the configured key is not relayed.
    events = [content("Hello"), content(f"the key is {KEY}"), END]
    with pytest.raises(RuntimeError) if kind == "text" else nullcontext():
        body, record, _ = relay(app, events, kind)  # plain text aborts (without gunicorn: raises)
        assert KEY.encode() not in body and b"Hello" in body and record.outcome == "upstream_error"
    with pytest.raises(UpstreamError):  # in the first write: a real status instead
        relay(app, [content(KEY), END], kind)


def test_a_stream_past_its_time_ends_with_a_timeout(app):
    # stream_timeout=0: the first read is taken; the next one is past the stream's deadline.
    body, record, upstream = relay(app, EVENTS, "sse", stream_timeout=0.0)
    assert body.startswith(b'data: {"text":"Hello"}\n\n') and b" there" not in body
    assert b"event: error" in body and b"upstream_timeout" in body
    assert record.outcome == "upstream_error" and upstream.closed


def test_the_guard_never_waits_past_the_stream_deadline():
    guard = Guard()
    guard.deadline = float("inf")
    stream = ChatStream(iter(EVENTS), close=lambda: None, guard=guard, settings=UpstreamSettings(idle_timeout=60.0, stream_timeout=2.0))
    assert guard.deadline == stream._stream_deadline
    items = stream.writes(TEXT_BODY.encoding)
    next(items), next(items)
    assert guard.deadline == stream._stream_deadline  # not now + the idle timeout


def test_an_answer_past_its_size_ends_with_an_upstream_error(app):
    body, record, _ = relay(app, EVENTS, "passthrough", max_answer_bytes=len(EVENTS[0]) + 10)
    assert body.startswith(EVENTS[0]) and b"there" not in body and b"upstream_error" in body
    assert record.outcome == "upstream_error"
    with pytest.raises(UpstreamError):  # before the first byte: a real status
        relay(app, EVENTS, "sse", max_answer_bytes=10)


def test_an_endless_line_ends_with_an_upstream_error_not_a_growing_buffer(app):
    endless = [b'data: {"choices":[{"index":0,"delta":{"content":"'] + [b"a" * 65536] * 40
    body, record, _ = relay(app, [content("Hi")] + endless, "passthrough")
    assert body.startswith(content("Hi")) and b"aaaa" not in body and b"upstream_error" in body


def test_with_two_choices_the_text_is_choice_0s_and_v1_gets_both(app):
    events = [content("A"), content("X", 1), content("B"), content("Y", 1), END]
    assert relay(app, events, "text")[0] == b"AB"
    assert relay(app, events, "passthrough")[0] == b"".join(events)


@pytest.mark.parametrize("kind", ["sse", "passthrough"])
def test_an_upstream_error_is_named_in_our_words_only(app, kind):
    for error_type in (KEY, "a long message quoting " + KEY, "a_key_like_word"):
        error = b'data: {"error":{"type":%s,"message":"boom"}}\n\n' % json.dumps(error_type).encode()
        body, record, _ = relay(app, [content("Hi"), error], kind)
        assert KEY.encode() not in body and b"boom" not in body and record.outcome == "upstream_error"
    assert b"(a_key_like_word)" in body  # a plain word is kept: it tells what failed


def test_even_our_error_event_never_carries_the_key(app, monkeypatch):
    monkeypatch.setattr(FakeUpstream.client, "api_key", "lowercase_only_key")  # passes as an error's type
    error = b'data: {"error":{"type":"lowercase_only_key"}}\n\n'
    body, record, _ = relay(app, [content("Hi"), error], "sse")
    assert b"lowercase_only_key" not in body and b"event: error" in body and record.bytes == len(body)


def test_the_server_iterates_the_relays_body_itself_and_its_close_ends_the_stream(app):
    upstream = FakeUpstream(EVENTS)
    environ = {"REQUEST_METHOD": "GET"}
    with app.test_request_context():
        record = RequestRecord(route="/stream", method="GET")
        relay = Relay.open(upstream, {}, environ, record, TEXT_BODY)
        response = relay.response()
        response.call_on_close(record.close)  # as requestlog.end does
    served = response(environ, lambda status, headers: None)
    # No werkzeug wrapper between the server and the body: only stream_with_context's generator,
    # which keeps the request context pushed while the body is iterated.
    assert iter(served) is response.response
    assert next(iter(served)) == b"Hello"
    assert has_request_context()  # pushed again by the body, until it is closed
    served.close()
    assert not has_request_context()
    assert upstream.closed and record.written and record.outcome == "client_disconnected"


def test_a_head_request_gets_no_body_and_still_ends_the_stream(app):
    upstream = FakeUpstream(EVENTS)
    environ = {"REQUEST_METHOD": "HEAD"}
    with app.test_request_context(method="HEAD"):
        record = RequestRecord(route="/stream", method="HEAD")
        relay = Relay.open(upstream, {}, environ, record, TEXT_BODY)
        response = relay.response()
        response.call_on_close(record.close)
    served = response(environ, lambda status, headers: None)
    assert list(served) == []
    served.close()
    assert upstream.closed and record.written
