"""The relay's bookkeeping, with a fake upstream stream (unit tests)."""
from flaskapp.chatstream import ChatStream
from flaskapp.relay import Relay
from flaskapp.requestlog import RequestRecord
from flaskapp.upstream import UpstreamSettings


class FakeUpstream:
    class settings:
        first_token_timeout = 5.0

    def __init__(self, events: list[bytes]) -> None:
        self.events, self.closed = events, False

    def open_stream(self, body, guard) -> ChatStream:
        return ChatStream(iter(self.events), self.close, guard, UpstreamSettings(first_token_timeout=5.0, idle_timeout=5.0))

    def close(self) -> None:
        self.closed = True


EVENTS = [b'data: {"choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}]}\n\n',
          b'data: {"choices":[{"index":0,"delta":{"content":" there"},"finish_reason":null}]}\n\n',
          b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n']


def test_a_body_never_iterated_still_closes_the_upstream(app):
    upstream = FakeUpstream(EVENTS)
    with app.test_request_context():
        record = RequestRecord(route="/stream", method="GET")
        relay = Relay.open(upstream, {}, {}, record)
        body = relay.text()  # the server closes the response before iterating it
        relay.close()
    assert upstream.closed and record.outcome == "client_disconnected"
    assert list(body) == []


def test_a_whole_stream_is_relayed_and_recorded(app):
    upstream = FakeUpstream(EVENTS)
    with app.test_request_context():
        record = RequestRecord(route="/stream", method="GET")
        relay = Relay.open(upstream, {}, {}, record)
        assert b"".join(relay.text()) == b"Hello there"
        relay.close()  # after the end: changes nothing
    assert upstream.closed and record.outcome == "completed" and record.chunks == 2
