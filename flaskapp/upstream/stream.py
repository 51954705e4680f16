"""An open upstream chat-completions stream: its bytes, read, checked and written out.

Every read is bounded: by the first-token and idle deadlines (the guard's, while waiting),
by the whole stream's time (`stream_timeout`, checked per read and held by the guard's
deadline while the upstream is silent) and by the answer's size (`max_answer_bytes`).
Past any of them the stream raises an `UpstreamError`, as for an upstream error event.
Under gevent a `Pacer` (runtime/pacer.py) keeps the stream fair to the worker's others.

The loop in `writes` runs once per upstream read, so it is the relay's cost per token.
Over the lean transport it reads the body's socket itself, and the common read (one whole
chunk holding one content event in the stream's frame, events.py) becomes its write there,
with a few byte comparisons; every other read goes through the chunked decoder
(httpbody.py) and the event parser, which would make the common read the same write.
"""
from __future__ import annotations

import re
import socket
import time
from functools import partial
from typing import TYPE_CHECKING, Callable, Iterator, NamedTuple

import httpx2

from .events import PLAIN_LITERAL, ChunkParser, MalformedChunk
from .httpbody import FRESH, MAX_LINE, READ_SIZE, Body, MalformedResponse
from ..errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable, malformed, too_large, withheld
from ..runtime.guard import ClientGone, Guard, UpstreamSilent
from ..runtime.pacer import pacer_for

if TYPE_CHECKING:
    from .client import UpstreamSettings


_ERROR_KIND = re.compile(r"[a-z_]{1,40}")
_fullmatch_plain = PLAIN_LITERAL.fullmatch
_INFINITY = float("inf")


class Encoding(NamedTuple):
    """How a read's content goes out: `many(literals)` for its JSON string literals; for a read
    of one plain literal (no escapes), `one % literal`, or, where `one` is None, its text."""
    many: Callable[[list[bytes]], bytes]
    one: bytes | None


class ChatStream:
    """Iterate `writes()` for what to send the client, one write per upstream read.

    `body`: the lean transport's `Body`, whose socket the stream then reads itself when
    its framing is chunked; otherwise `reads` (the answer's bytes as they arrive) is iterated.
    """

    def __init__(self, reads: Iterator[bytes], *, close: Callable[[], None], guard: Guard,
                 settings: "UpstreamSettings", parser: ChunkParser | None = None, body: Body | None = None) -> None:
        self.parser = parser if parser is not None else ChunkParser()
        self.close = close
        self.written = 0  # bytes of the writes made, counted when `writes` ends
        self._reads_from, self._guard = reads, guard
        self._body = body if body is not None and body.decoder is not None else None
        self._first_token_timeout, self._idle_timeout = settings.first_token_timeout, settings.idle_timeout
        self._pacer = pacer_for(guard, fair_slice=settings.fair_slice, interval=settings.stream_interval)
        self._stream_timeout, self._max_bytes = settings.stream_timeout, settings.max_answer_bytes
        self._stream_deadline = time.monotonic() + settings.stream_timeout
        guard.tighten(self._stream_deadline)

    def writes(self, encoding: Encoding | None, forbidden: bytes | None = None) -> Iterator[bytes]:
        """One write per read that completes content: the content in `encoding`, or, where it is
        None, the upstream's whole events as they came (checked on the way through; never an
        error event). A write holding `forbidden` (the upstream's key) raises an UpstreamError."""
        guard, parser, idle, pacer = self._guard, self.parser, self._idle_timeout, self._pacer
        interval, due = (pacer.interval, 0.0) if pacer is not None else (0.0, _INFINITY)  # when to pace
        # After a read that waited, the loop has turned: the next look is a slice later.
        after_wait = _INFINITY if pacer is None else -_INFINITY if interval else pacer.slice
        feed, clock = parser.feed, time.monotonic
        stream_deadline, max_bytes, received, written, taken = self._stream_deadline, self._max_bytes, 0, 0, 0
        many, one = encoding if encoding is not None else (None, None)
        body, waits = self._body, None
        if body is not None:  # the lean transport's chunked body: read here, its framing undone here
            read, decoder, waits = body.read, body.decoder, body.reads()
        else:
            read, decoder = partial(next, self._reads_from, None), None
        if waits is not None:
            wait, recv_ready, recv = waits
        lane = prefix = gap = prefix_length = suffix = None  # the parser's frame, as compared here (chunked)
        until = None  # until the first read, the guard holds the first-token deadline
        emptied_at = -FRESH  # when the last read emptied the socket
        ended = False  # the answer's bytes have all been read
        try:
            while True:
                if ended:
                    data = parser.finish()  # a last event the upstream left unterminated
                    if not data:
                        break
                else:
                    now = clock()
                    if now >= due:
                        now, due = pacer.pace(now)
                    if until is not None:
                        if now >= stream_deadline:  # an upstream that never pauses is never silent
                            raise UpstreamSilent()
                        until = now + idle
                        if until > stream_deadline:
                            until = stream_deadline
                        # The guard's `awaiting(until)`, inline (this runs once per read): the deadline
                        # moves on, a departed client is noticed, and the read may be interrupted.
                        if until < guard.deadline:
                            guard.tighten(until)
                        else:
                            guard.deadline = until
                    if guard.gone:
                        raise ClientGone()
                    guard.waiting = True
                    try:
                        if waits is None or until is None:  # the first read takes what came with the head
                            data = read()
                        elif now - emptied_at < FRESH:
                            # Body.read's wait-then-read (httpbody.py), here, where the wait tells the
                            # pacer what it would look for: the loop turned.
                            wait()
                            try:
                                data = recv_ready(READ_SIZE)
                            except BlockingIOError:  # woken with nothing to read after all
                                data = recv(READ_SIZE)
                            emptied_at = clock() if len(data) < READ_SIZE else -FRESH
                            due = emptied_at + after_wait
                        else:
                            data = recv(READ_SIZE)
                            emptied_at = clock() if len(data) < READ_SIZE else -FRESH
                    except socket.timeout:
                        raise httpx2.ReadTimeout("timed out reading the response") from None
                    except OSError as exc:
                        raise httpx2.ReadError(str(exc)) from None
                    finally:
                        guard.waiting = False
                    if until is None:  # from now on the idle deadline, likely sooner than the first token's
                        emptied_at = clock()  # (what came with the head, too, emptied the socket just now)
                        until = min(emptied_at + idle, stream_deadline)
                        guard.tighten(until)
                    if interval:
                        pacer.read_at = clock()
                    if not data:
                        if data is None:  # the end of `reads`
                            ended = True
                            continue
                        if decoder is not None:
                            raise httpx2.RemoteProtocolError("peer closed connection without sending complete message body")
                        continue
                    if decoder is not None:
                        if parser.lane is not lane:
                            lane = parser.lane
                            if lane is not None:
                                prefix, after, gap = lane
                                prefix_length, suffix = len(prefix), after + b"\r\n"
                        if lane is not None and decoder.between:
                            # The common read: `<size>\r\n<prefix>"literal"<after>\r\n`, one whole chunk,
                            # where a padded frame's `gap` matches the literal, its padding and what lies between.
                            line_end = data.find(b"\r\n")
                            start, end = line_end + 2 + prefix_length, len(data) - len(suffix)
                            if gap is None:
                                fits = _fullmatch_plain(data, start, end) is not None
                            else:
                                match = gap(data, start, end)
                                fits = match is not None
                                if fits:
                                    end = match.end(1)
                            if (fits and 0 < line_end <= MAX_LINE and data.startswith(prefix, line_end + 2)
                                    and data.endswith(suffix)):
                                try:
                                    size = int(data[:line_end], 16)
                                except ValueError:
                                    size = -1
                                if size == len(data) - line_end - 4:
                                    received += size
                                    if received > max_bytes:
                                        raise too_large(max_bytes)
                                    taken += 1
                                    if many is None:
                                        out = data[line_end + 2:-2]  # the event, as it came
                                    elif one is None:
                                        out = data[start + 1:end - 1]
                                    else:
                                        out = one % data[start:end]
                                    if forbidden is not None and out.find(forbidden) >= 0:
                                        raise withheld()
                                    written += len(out)
                                    yield out
                                    continue
                        data = decoder.decode(data)
                        ended = decoder.ended
                received += len(data)
                if received > max_bytes:
                    raise too_large(max_bytes)
                pieces = feed(data)
                if parser.error is not None:
                    raise UpstreamError(_error_message(parser.error))
                if many is None:
                    out = parser.taken  # whole events only: the rest waits in the parser
                elif pieces:
                    out = many(pieces)
                else:
                    continue
                if out:
                    if forbidden is not None and out.find(forbidden) >= 0:
                        raise withheld()
                    written += len(out)
                    yield out
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
        finally:
            self.written, parser.chunks = written, parser.chunks + taken  # counted here as they went
        if not parser.complete:
            raise UpstreamError("The model server ended the stream before the answer was complete.")


def _error_message(error: dict) -> str:
    # Only a word like `server_error` from the upstream's error: its message may quote the key.
    kind = error.get("type") or error.get("code")
    if not (isinstance(kind, str) and _ERROR_KIND.fullmatch(kind)):
        kind = "error"
    return f"The model server failed mid-stream ({kind})."
