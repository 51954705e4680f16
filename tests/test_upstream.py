"""The upstream client behind its small interface: httpx's transport over a mock (no network), and a
scripted fake transport for what Upstream itself decides (retries, the deadline, the guard)."""
import httpx2
import pytest

from flaskapp import errors
from flaskapp.runtime.guard import Guard
from flaskapp.web.params import ChatParams
from flaskapp.web.relay import TEXT_BODY
from flaskapp.upstream.client import Upstream, UpstreamSettings, parse_completion
from flaskapp.upstream.http11 import MalformedResponse
from flaskapp.upstream.transport import Answer, HttpxTransport, LeanTransport

ARGUMENTS = ChatParams(prompt="hi", system="be brief", model="gpt-4", max_tokens=5).chat_body()


def upstream_answering(handler) -> Upstream:
    return Upstream(UpstreamSettings(max_retries=0, transport="httpx"), api_key="sk-unit",
                    base_url="http://upstream.test/v1",
                    http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))


def test_the_request_carries_the_messages_and_limits():
    seen = {}

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.update(json=__import__("json").loads(request.content), auth=request.headers["authorization"])
        return httpx2.Response(200, json={"choices": [{"message": {"content": "Hello."}, "finish_reason": "stop"}],
                                          "usage": {"completion_tokens": 2}})

    completion = parse_completion(upstream_answering(handler).complete(ARGUMENTS, Guard()))
    assert completion.text == "Hello." and completion.usage == {"completion_tokens": 2}
    assert seen["json"]["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert seen["json"]["max_tokens"] == 5 and seen["auth"] == "Bearer sk-unit"


@pytest.mark.parametrize("status, headers, expected, answered", [
    (429, {"retry-after": "3"}, errors.UpstreamRateLimited, 429),
    (401, {}, errors.UpstreamError, 502),
    (403, {}, errors.UpstreamError, 502),
    (400, {}, errors.UpstreamError, 502),
    (500, {}, errors.UpstreamError, 502),
    (502, {}, errors.UpstreamUnavailable, 503),
    (503, {}, errors.UpstreamUnavailable, 503),
])
@pytest.mark.parametrize("call", ["complete", "open_stream"])
def test_upstream_statuses_map_to_ours(status, headers, expected, answered, call):
    body = {"error": {"message": "Incorrect API key provided: sk-abc***xyz", "type": "x"}}
    upstream = upstream_answering(lambda request: httpx2.Response(status, json=body, headers=headers))
    with pytest.raises(expected) as caught:
        getattr(upstream, call)(ARGUMENTS, Guard())
    assert caught.value.status == answered
    assert "sk-" not in caught.value.message  # upstream messages may quote the key
    if status == 429:
        assert caught.value.retry_after == "3"


def test_an_unreadable_blocking_answer_is_a_502():
    upstream = upstream_answering(lambda request: httpx2.Response(200, content=b"<html>oops</html>"))
    with pytest.raises(errors.UpstreamError):
        parse_completion(upstream.complete(ARGUMENTS, Guard()))


def test_a_stream_without_its_end_is_an_error():
    body = b'data: {"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}\n\n'
    upstream = upstream_answering(lambda request: httpx2.Response(
        200, content=body, headers={"content-type": "text/event-stream"}))
    stream = upstream.open_stream(ARGUMENTS, Guard())
    pieces = stream.writes(TEXT_BODY.encoding)
    assert next(pieces) == b"Hi"
    with pytest.raises(errors.UpstreamError, match="before the answer was complete"):
        next(pieces)


def test_json_nested_too_deep_is_unreadable_not_a_crash():
    with pytest.raises(errors.UpstreamError) as caught:
        parse_completion(b"[" * 100_000 + b"]" * 100_000)
    assert caught.value.status == 502


@pytest.mark.parametrize("answer", [
    b'{"choices":[{"message":{"content":5}}]}',
    b'{"choices":"abc"}',
    b'[1, 2]',
], ids=["content not text", "choices not a list", "not an object"])
def test_answers_of_the_wrong_shape_are_unreadable(answer):
    with pytest.raises(errors.UpstreamError):
        parse_completion(answer)


def test_usage_of_the_wrong_shape_is_dropped():
    completion = parse_completion(b'{"choices":[{"message":{"content":"hi"}}],"usage":5}')
    assert completion.text == "hi" and completion.usage is None


def dripping(pieces: int, piece: bytes = b"x", pause: float = 0.0):
    import time

    for _ in range(pieces):
        if pause:
            time.sleep(pause)
        yield piece


def test_the_httpx_path_ends_a_dripping_answer_at_the_request_deadline():
    # Every piece comes well within the read timeout; only a deadline on the whole call ends it.
    upstream = Upstream(UpstreamSettings(max_retries=0, request_timeout=0.5, transport="httpx"), api_key="sk-unit",
                        base_url="http://upstream.test/v1", http_client=httpx2.Client(transport=httpx2.MockTransport(
                            lambda request: httpx2.Response(200, content=dripping(40, pause=0.05)))))
    with pytest.raises(errors.UpstreamTimeout):
        upstream.complete(ARGUMENTS, Guard())


def test_the_httpx_path_caps_the_answer_size():
    upstream = Upstream(UpstreamSettings(max_retries=0, max_answer_bytes=100_000, transport="httpx"), api_key="sk-unit",
                        base_url="http://upstream.test/v1", http_client=httpx2.Client(transport=httpx2.MockTransport(
                            lambda request: httpx2.Response(200, content=dripping(1000, b"x" * 1024)))))
    with pytest.raises(errors.UpstreamError, match="larger than 100000 bytes"):
        upstream.complete(ARGUMENTS, Guard())


class ScriptedTransport:
    """A Transport that answers from a script: an UpstreamError to raise, or the answer's pieces."""

    def __init__(self, *script) -> None:
        self.script, self.sent, self.closed = list(script), [], 0

    def send(self, body, *, read_timeout, deadline=None) -> Answer:
        self.sent.append((body, read_timeout, deadline))
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        return Answer(iter(step), self.close, None)

    def close(self) -> None:
        self.closed += 1


def upstream_over(transport: ScriptedTransport, **settings) -> Upstream:
    return Upstream(UpstreamSettings(**settings), transport=transport, api_key="sk-unit",
                    base_url="http://upstream.test/v1")


def test_the_lean_transport_is_the_default_and_a_given_http_client_does_not_change_it():
    upstream = Upstream(UpstreamSettings(), api_key="sk-unit", base_url="http://upstream.test/v1",
                        http_client=httpx2.Client(transport=httpx2.MockTransport(lambda request: None)))
    assert isinstance(upstream.transport, LeanTransport)
    assert isinstance(Upstream(UpstreamSettings(transport="httpx"), api_key="k").transport, HttpxTransport)


def test_retryable_errors_are_retried_then_the_answer_read_and_closed(monkeypatch):
    monkeypatch.setattr("flaskapp.upstream.client._backoff", lambda attempt, retry_after: 0.0)
    transport = ScriptedTransport(errors.unreachable(), errors.from_status(503), [b'{"choices":', b"[]}"])
    assert upstream_over(transport, max_retries=2).complete(ARGUMENTS, Guard()) == b'{"choices":[]}'
    assert len(transport.sent) == 3 and transport.closed == 1
    assert transport.sent[0][1] == 600.0 and transport.sent[0][2] is not None  # bounded as a whole


def test_errors_that_are_not_retryable_are_raised_at_once():
    transport = ScriptedTransport(errors.from_status(401), [b"{}"])
    with pytest.raises(errors.UpstreamError, match="credentials"):
        upstream_over(transport, max_retries=2).complete(ARGUMENTS, Guard())
    assert len(transport.sent) == 1


def test_a_stream_asks_for_streaming_and_reads_within_the_backstop_without_gevent():
    transport = ScriptedTransport([b'data: {"choices":[{"index":0,"delta":{"content":"Hi"},'
                                   b'"finish_reason":"stop"}]}\n\n', b"data: [DONE]\n\n"])
    stream = upstream_over(transport, first_token_timeout=7.0, idle_timeout=9.0).open_stream(ARGUMENTS, Guard())
    assert list(stream.writes(TEXT_BODY.encoding)) == [b"Hi"]
    body, read_timeout, deadline = transport.sent[0]
    assert body["stream"] is True and read_timeout == 9.0 and deadline is None


def test_a_malformed_response_mid_stream_is_a_502_not_a_503():
    def cut():
        yield b'data: {"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}\n\n'
        raise MalformedResponse("malformed chunk size")

    transport = ScriptedTransport(cut())
    pieces = upstream_over(transport).open_stream(ARGUMENTS, Guard()).writes(TEXT_BODY.encoding)
    next(pieces)
    with pytest.raises(errors.UpstreamError) as caught:
        next(pieces)
    assert caught.value.status == 502 and "malformed HTTP response" in caught.value.message
