"""An open upstream chat-completions stream: its bytes, checked, as content or as whole events.

Every read is bounded: by the first-token and idle deadlines (the guard's, while waiting),
by the whole stream's time (`stream_timeout`, checked per read and held by the guard's
deadline while the upstream is silent) and by the answer's size (`max_answer_bytes`).
Past any of them the stream raises an `UpstreamError`, as for an upstream error event.
"""
from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Callable, Iterator

import httpx2

from .events import ChunkParser, MalformedChunk
from ..errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from ..runtime.guard import ClientGone, Guard, UpstreamSilent

if TYPE_CHECKING:
    from .client import UpstreamSettings


_ERROR_KIND = re.compile(r"[a-z_]{1,40}")


def _yield_to_others(seconds: float = 0) -> None:
    import gevent  # only ever called under gevent, where the guard has an event loop

    gevent.sleep(seconds)


class ChatStream:
    """Iterate it for lists of content literals (one list per read), or `raw()` for whole events."""

    def __init__(self, reads: Iterator[bytes], close: Callable[[], None], guard: Guard,
                 settings: "UpstreamSettings") -> None:
        self.parser = ChunkParser()
        self.close = close
        self._reads_from, self._guard = reads, guard
        self._first_token_timeout, self._idle_timeout = settings.first_token_timeout, settings.idle_timeout
        self._fair_slice = settings.fair_slice  # seconds a stream may relay without the event loop turning
        # least seconds between reads
        self._interval = settings.stream_interval if guard.loop is not None else 0.0
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
        guard, parser, idle, reads = self._guard, self.parser, self._idle_timeout, self._reads_from
        loop, last_iteration, running_since = guard.loop if self._fair_slice else None, -1, 0.0
        interval, read_at = self._interval, 0.0
        stream_deadline, max_bytes, received = self._stream_deadline, self._max_bytes, 0
        started = False  # until the first read, the guard holds the first-token deadline
        try:
            while True:
                if guard.gone:
                    raise ClientGone()
                if interval and started:
                    # A read and its write cost the worker the same however few tokens they
                    # carry: pausing lets tokens gather in the socket for one read to take.
                    pause = read_at + interval - time.monotonic()
                    if pause > 0:
                        guard.waiting = True  # a client leaving ends the pause, and the stream
                        try:
                            _yield_to_others(pause)
                        finally:
                            guard.waiting = False
                now = time.monotonic()
                if started:
                    if now >= stream_deadline:  # an upstream that never pauses is never silent
                        raise UpstreamSilent()
                    guard.deadline = min(now + idle, stream_deadline)
                if loop is not None:
                    # gevent switches only when a greenlet would block. An upstream that always
                    # has data ready would keep this one running and starve every other request
                    # on the worker, so past a time slice without the event loop turning, yield.
                    if loop.iteration != last_iteration:
                        last_iteration, running_since = loop.iteration, now
                    elif now - running_since > self._fair_slice:
                        _yield_to_others()
                        last_iteration, running_since = loop.iteration, time.monotonic()
                guard.waiting = True
                try:
                    data = next(reads)
                except StopIteration:
                    data = parser.finish()  # a last event the upstream left unterminated
                    if not data:
                        break
                finally:
                    guard.waiting = False
                if not started:
                    started = True  # from now on the idle deadline, likely sooner than the first token's
                    guard.tighten(min(time.monotonic() + idle, stream_deadline))
                if interval:
                    read_at = time.monotonic()
                received += len(data)
                if received > max_bytes:
                    raise UpstreamError(f"The model server's answer exceeded {max_bytes} bytes.")
                pieces = parser.feed(data)
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
            what = "the next chunk" if started else "the first token"
            limit = idle if started else self._first_token_timeout
            raise UpstreamTimeout(f"The model server sent {what} after more than {limit:g} s.") from None
        except MalformedChunk as exc:
            raise UpstreamError(f"The model server sent a malformed event ({exc}).") from None
        except httpx2.TimeoutException:
            raise UpstreamTimeout("The model server stopped sending.") from None
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
