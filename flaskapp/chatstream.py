"""An open upstream chat-completions stream: its bytes, checked, as content or as they came."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, Iterator

import httpx2

from .chunks import ChunkParser, MalformedChunk
from .errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from .guard import ClientGone, Guard, UpstreamSilent

if TYPE_CHECKING:
    from .upstream import UpstreamSettings


def _yield_to_others(seconds: float = 0) -> None:
    import gevent  # only ever called under gevent, where the guard has an event loop

    gevent.sleep(seconds)


class ChatStream:
    """Iterate it for lists of content literals (one list per read), or `raw()` for the bytes."""

    def __init__(self, reads: Iterator[bytes], close: Callable[[], None], guard: Guard,
                 settings: "UpstreamSettings") -> None:
        self.parser = ChunkParser()
        self.close = close
        self._reads_from, self._guard = reads, guard
        self._first_token_timeout, self._idle_timeout = settings.first_token_timeout, settings.idle_timeout
        self._fair_slice = settings.fair_slice  # seconds a stream may relay without the event loop turning
        # least seconds between reads
        self._interval = settings.stream_interval if guard.loop is not None else 0.0

    def __iter__(self) -> Iterator[list[bytes]]:
        return self._reads(raw=False)

    def raw(self) -> Iterator[bytes]:
        """The upstream's bytes as they arrive, checked on the way through."""
        return self._reads(raw=True)

    def _reads(self, raw: bool) -> Iterator:
        # One generator for both outputs: this loop runs once per upstream read.
        guard, parser, idle, reads = self._guard, self.parser, self._idle_timeout, self._reads_from
        loop, last_iteration, running_since = guard.loop if self._fair_slice else None, -1, 0.0
        interval, read_at = self._interval, 0.0
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
                    guard.deadline = now + idle
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
                    break
                finally:
                    guard.waiting = False
                started = True
                if interval:
                    read_at = time.monotonic()
                pieces = parser.feed(data)
                if parser.error is not None:
                    raise UpstreamError(_error_message(parser.error))
                if raw:
                    yield data
                elif pieces:
                    yield pieces
        except UpstreamSilent:
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
    kind = str(error.get("type") or error.get("code") or "error")[:60]
    return f"The model server failed mid-stream ({kind})."
