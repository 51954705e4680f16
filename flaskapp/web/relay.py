"""The streaming hot path: from an open upstream stream to the client's bytes.

`Relay.open()` does everything that can still fail with a real HTTP status — opening
the upstream call and waiting for its first write in the view's `Output` — before the
view returns the response. After that, the body only passes the stream's writes on (one
per upstream read, however many tokens it held, and no per-token objects), then ends
them as its output says.

A failure after the first byte cannot change the status any more. The SSE body says
so with `event: error`; the plain-text body aborts the connection before the final
chunk, so the client sees an incomplete transfer, never a short answer that looks whole.

Whatever the upstream sends, the configured upstream key never goes out: each write is
searched for it (one `bytes.find`; the stream's by the stream, the ends here), and a
write holding it ends the stream with our error.
"""
from __future__ import annotations

import socket
from typing import Any, Callable, Iterator, NamedTuple

from flask import Response, stream_with_context
from werkzeug.datastructures import Headers

from ..upstream.stream import ChatStream, Encoding
from ..upstream.events import sse_event, text_of
from ..errors import ApiError, ClientClosedRequest, UpstreamError, withheld
from ..runtime import client_socket
from ..runtime.guard import ClientGone, Guard, guard_for
from ..ops.requestlog import CLIENT_DISCONNECTED, COMPLETED, UPSTREAM_ERROR, RequestRecord
from ..upstream.client import Upstream

# Streams must reach the client as they are written: no proxy buffering, no caching.
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# Shorter "keys" (test and emulator placeholders) are no secret, and would match ordinary text.
MIN_GUARDED_KEY = 8


def encode_text(pieces: list[bytes]) -> bytes:
    # A JSON string without escapes is its own UTF-8 text: most pieces need no decoding.
    if len(pieces) == 1:  # most reads hold one token
        piece = pieces[0]
        return piece[1:-1] if piece.find(b"\\") < 0 else text_of(piece)
    return b"".join([piece[1:-1] if piece.find(b"\\") < 0 else text_of(piece) for piece in pieces])


_SSE_TEXT = b'data: {"text":%s}\n\n'  # one piece's event


def encode_sse(pieces: list[bytes]) -> bytes:
    if len(pieces) == 1:
        return _SSE_TEXT % pieces[0]
    return b"".join([_SSE_TEXT % piece for piece in pieces])


def _stream_headers(content_type: str) -> Headers:
    """A stream's headers, as `Headers(STREAM_HEADERS)` plus its Content-Type would be. Werkzeug
    checks each header it is handed for line breaks, a regular expression each, every response:
    these are constants, so its list (`Headers._list`, pinned in runtime.WRITTEN_FOR) is set whole."""
    headers = Headers()
    headers._list = [("Content-Type", content_type), *_STREAM_HEADER_ITEMS]
    return headers


_STREAM_HEADER_ITEMS = list(Headers(STREAM_HEADERS).items())  # checked once, here


class StreamedResponse(Response):
    """A relayed stream's response, whose `stream_with_context` generator the server iterates itself.

    Werkzeug would resume two more frames for every piece (its closing iterator and its
    check that each piece is bytes). The relay's bodies yield bytes only, so the server gets
    the generator as it is, and the response's `close` (which closes the generator, then
    runs the close hooks) as the WSGI iterable's close. The request context stays pushed
    while the body is iterated, as for any `stream_with_context` body.
    """

    def get_app_iter(self, environ: dict) -> Any:
        if environ["REQUEST_METHOD"] == "HEAD" or not 200 <= self.status_code < 300 or self.status_code == 204:
            return super().get_app_iter(environ)
        return _ServedBody(self.response, self.close)


class _ServedBody:
    """The WSGI iterable: iterating it is iterating the generator; closing it closes the response."""

    __slots__ = ("_body", "close")

    def __init__(self, body: Iterator[bytes], close: Callable[[], None]) -> None:
        self._body, self.close = body, close

    def __iter__(self) -> Iterator[bytes]:
        return self._body


class Relay:
    def __init__(self, stream: ChatStream, writes: Iterator[bytes], first: bytes | None, output: "Output",
                 guard: Guard, record: RequestRecord, environ: dict, key: bytes | None = None) -> None:
        self.stream, self._writes, self._first, self.output = stream, writes, first, output
        self.guard, self.record, self._environ = guard, record, environ
        self._key = key  # the upstream's key, which no byte we send may contain

    @classmethod
    def open(cls, upstream: Upstream, body: dict[str, Any], environ: dict,
             record: RequestRecord, output: "Output", **endpoint: Any) -> "Relay":
        """Open the upstream stream and wait for its first write in `output`.
        `endpoint`: the upstream path and parser, for streams other than chat completions."""
        guard = guard_for(environ, record.started + upstream.settings.first_token_timeout)
        stream = None
        try:
            stream = upstream.open_stream(body, guard, **endpoint)
            # The stream searches each of its writes for the key (before the first byte: a real status).
            key = _secret(upstream)
            writes = stream.writes(output.encoding, key)
            first = next(writes, None)
            if first:
                record.first_token()
        except ClientGone:
            _close(stream, guard)
            raise ClientClosedRequest("The client closed the connection.") from None
        except ApiError:
            _close(stream, guard)
            raise
        return cls(stream, writes, first, output, guard, record, environ, key)

    def close(self) -> None:
        """For the response's close: a body the server never iterated still ends the upstream call."""
        self._finish(CLIENT_DISCONNECTED)

    def response(self) -> Response:
        """The streamed response, whose close ends the upstream call."""
        # Run by the record's close, the response's one close hook (requestlog.end registers it).
        self.record.closers.append(self.close)
        return StreamedResponse(stream_with_context(self.body()), headers=_stream_headers(self.output.content_type))

    def body(self) -> Iterator[bytes]:
        """The writes, then the output's end (`done`), or its failure after the first byte (`fail`)."""
        record, key, fail, done = self.record, self._key, self.output.fail, self.output.done
        if record.written:
            return  # closed before the server iterated it
        record.status = 200
        try:
            if self._first:
                record.first_byte()
                yield self._first
            yield from self._writes
            if done is not None:
                out = done(self)  # it quotes the upstream's finish reason and usage: searched like the rest
                if key is not None and out.find(key) >= 0:
                    raise withheld()
                record.bytes += len(out)
                yield out
            self._finish(COMPLETED)
        except UpstreamError as exc:
            # Our own words, never the upstream's: only the message of an error we made goes out.
            out = b""
            try:
                out = b"".join(fail(self, exc))  # the plain-text body aborts its connection here
                if key is not None and out.find(key) >= 0:
                    out = b"".join(fail(self, withheld()))
                record.bytes += len(out)
            finally:
                self._finish(UPSTREAM_ERROR, exc.type)
            if out:
                yield out
        except (ClientGone, GeneratorExit, OSError):
            # GeneratorExit: the server closed us after a failed write to the client.
            self._finish(CLIENT_DISCONNECTED)
        finally:
            self._finish(CLIENT_DISCONNECTED)  # no-op when already finished

    def _finish(self, outcome: str, error: str | None = None) -> None:
        if self.record.written:
            return
        self._writes.close()  # a stream the server never iterated: its counts, as they stand
        _close(self.stream, self.guard)
        parser = self.stream.parser
        if self.record.status is not None:  # the body was iterated: its writes went to the server
            self.record.bytes += self.stream.written
        self.record.chunks = parser.chunks
        self.record.count_usage(parser.usage, parser.chunks)
        self.record.finish(outcome, error)

    def _done_event(self) -> bytes:
        parser, record = self.stream.parser, self.record
        return sse_event({"finish_reason": parser.finish_reason, "usage": parser.usage,
                          "chunks": parser.chunks, "time_to_first_byte": record.time_to_first_byte,
                          "total_time": record.elapsed()}, event="done")

    def _error_event(self, error: UpstreamError) -> Iterator[bytes]:
        yield sse_event(error.body(), event="error")

    def _openai_error_event(self, error: UpstreamError) -> Iterator[bytes]:
        # As OpenAI does: an error object as a data event and no [DONE], so SDKs raise.
        yield sse_event(error.body())

    def _responses_error_event(self, error: UpstreamError) -> Iterator[bytes]:
        # The Responses API's own error event, which its SDKs hand to the caller as typed.
        sequence = getattr(self.stream.parser, "sequence", -1) + 1
        yield sse_event({"type": "error", "code": error.type, "message": error.message, "param": None,
                         "sequence_number": sequence}, event="error")

    def _abort_connection(self, error: UpstreamError) -> Iterator[bytes]:
        client = client_socket(self._environ)
        if client is None:
            raise RuntimeError(error.message)  # other servers abort the response on an exception
        # The server's final zero-length chunk will now fail to send: the transfer stays incomplete.
        try:
            client.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        return iter(())


class Output(NamedTuple):
    """A relayed body: its content's encoding (None: the upstream's own events, unchanged), its
    Content-Type, how a failure after the first byte ends it, and its last write (None: none)."""
    encoding: Encoding | None
    content_type: str
    fail: Callable[[Relay, UpstreamError], Iterator[bytes]]
    done: Callable[[Relay], bytes] | None


# Plain text; a failure after the first byte aborts the connection.
TEXT_BODY = Output(Encoding(encode_text, None), "text/plain; charset=utf-8", Relay._abort_connection, None)
# Our events: `data: {"text": ...}` per piece, then `event: done` or `event: error`.
SSE_BODY = Output(Encoding(encode_sse, _SSE_TEXT), "text/event-stream; charset=utf-8",
             Relay._error_event, Relay._done_event)
# The upstream's own chat-completion (or legacy completion) events, for OpenAI-compatible clients.
CHAT_EVENTS = Output(None, "text/event-stream; charset=utf-8", Relay._openai_error_event, None)
# The upstream's own Responses events; a failure is our `error` event.
RESPONSE_EVENTS = Output(None, "text/event-stream; charset=utf-8", Relay._responses_error_event, None)


def complete(upstream: Upstream, body: dict[str, Any], environ: dict, path: str | None = None) -> bytes:
    """A blocking call (to chat completions, or `path`), ended like a stream's when the client leaves."""
    guard = guard_for(environ, float("inf"))
    try:
        return upstream.complete(body, guard, path) if path else upstream.complete(body, guard)
    except ClientGone:
        raise ClientClosedRequest("The client closed the connection.") from None
    finally:
        guard.close()


def _secret(upstream: Upstream) -> bytes | None:
    """The upstream key as bytes, when it is long enough to be a secret worth searching for."""
    client = getattr(upstream, "client", None)
    key = getattr(client, "api_key", None)
    if not isinstance(key, str) or len(key) < MIN_GUARDED_KEY:
        return None
    return key.encode("utf-8", "replace")


def _close(stream: ChatStream | None, guard: Guard) -> None:
    guard.close()
    if stream is not None:
        stream.close()
