"""An open upstream chat-completions stream: its bytes, checked, as content or as whole events.

Every read is bounded: by the first-token and idle deadlines (the guard's, while waiting),
by the whole stream's time (`stream_timeout`, checked per read and held by the guard's
deadline while the upstream is silent) and by the answer's size (`max_answer_bytes`).
Past any of them the stream raises an `UpstreamError`, as for an upstream error event.
Under gevent a `Pacer` (runtime/pacer.py) keeps the stream fair to the worker's others.
"""
from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Callable, Iterator

import httpx2

from .events import ChunkParser, MalformedChunk
from .httpbody import MalformedResponse
from ..errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable, malformed, too_large
from ..runtime.guard import ClientGone, Guard, UpstreamSilent
from ..runtime.pacer import pacer_for

if TYPE_CHECKING:
    from .client import UpstreamSettings


_ERROR_KIND = re.compile(r"[a-z_]{1,40}")


class ChatStream:
    """Iterate it for lists of content literals (one list per read), or `raw()` for whole events."""

    def __init__(self, reads: Iterator[bytes], *, close: Callable[[], None], guard: Guard,
                 settings: "UpstreamSettings", parser: ChunkParser | None = None) -> None:
        self.parser = parser if parser is not None else ChunkParser()
        self.close = close
        self._reads_from, self._guard = reads, guard
        self._first_token_timeout, self._idle_timeout = settings.first_token_timeout, settings.idle_timeout
        self._pacer = pacer_for(guard, fair_slice=settings.fair_slice, interval=settings.stream_interval)
        self._stream_timeout, self._max_bytes = settings.stream_timeout, settings.max_answer_bytes
        self._stream_deadline = time.monotonic() + settings.stream_timeout
        guard.tighten(self._stream_deadline)

    def __iter__(self) -> Iterator[list[bytes]]:
        return self._reads(raw=False)

    def raw(self) -> Iterator[bytes]:
        """The upstream's whole events as they arrive, checked on the way through; never an error event."""
        return self._reads(raw=True)

    def _reads(self, raw: bool) -> Iterator:
        # One generator for both outputs: this loop runs once per upstream read.
        guard, parser, idle, reads, pacer = self._guard, self.parser, self._idle_timeout, self._reads_from, self._pacer
        interval, due = (pacer.interval, 0.0) if pacer is not None else (0.0, float("inf"))  # when to pace
        next_read, feed, clock = guard.next_read, parser.feed, time.monotonic
        stream_deadline, max_bytes, received = self._stream_deadline, self._max_bytes, 0
        until = None  # until the first read, the guard holds the first-token deadline
        try:
            while True:
                now = clock()
                if now >= due:
                    now, due = pacer.pace(now)
                if until is not None:
                    if now >= stream_deadline:  # an upstream that never pauses is never silent
                        raise UpstreamSilent()
                    until = now + idle
                    if until > stream_deadline:
                        until = stream_deadline
                try:
                    data = next_read(reads, until)  # raises ClientGone if the client has left
                except StopIteration:
                    data = parser.finish()  # a last event the upstream left unterminated
                    if not data:
                        break
                if until is None:  # from now on the idle deadline, likely sooner than the first token's
                    until = min(clock() + idle, stream_deadline)
                    guard.tighten(until)
                if interval:
                    pacer.read_at = clock()
                received += len(data)
                if received > max_bytes:
                    raise too_large(max_bytes)
                pieces = feed(data)
                if parser.error is not None:
                    raise UpstreamError(_error_message(parser.error))
                if raw:
                    if parser.taken:  # whole events only: the rest waits in the parser
                        yield parser.taken
                elif pieces:
                    yield pieces
        except UpstreamSilent:
            if time.monotonic() >= self._stream_deadline:
                raise UpstreamTimeout(f"The answer took more than {self._stream_timeout:g} s.") from None
            what = "the first token" if until is None else "the next chunk"
            limit = self._first_token_timeout if until is None else idle
            raise UpstreamTimeout(f"The model server sent {what} after more than {limit:g} s.") from None
        except MalformedChunk as exc:
            raise UpstreamError(f"The model server sent a malformed event ({exc}).") from None
        except httpx2.TimeoutException:
            raise UpstreamTimeout("The model server stopped sending.") from None
        except MalformedResponse:  # before TransportError, its base: the upstream was reached
            raise malformed() from None
        except httpx2.TransportError:
            raise UpstreamUnavailable("The model server dropped the stream.") from None
        if not parser.complete:
            raise UpstreamError("The model server ended the stream before the answer was complete.")


def _error_message(error: dict) -> str:
    # Only a word like `server_error` from the upstream's error: its message may quote the key.
    kind = error.get("type") or error.get("code")
    if not (isinstance(kind, str) and _ERROR_KIND.fullmatch(kind)):
        kind = "error"
    return f"The model server failed mid-stream ({kind})."
