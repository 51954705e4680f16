"""What one request records, and the minimal HTTP/1.1 reader that times it.

Per request we record the send time, time to response headers, time to first text
(TTFT), the time of the last read that carried text, the gaps between reads that carried
text (inter-chunk latency), the end-to-end time, body bytes (after chunked framing is
removed; headers not counted), chunks, output tokens and how they were known, HTTP status
and an error kind. Output tokens come from the server's `usage` where it reports one
(openai-* kinds, which ask for it with `stream_options.include_usage`; the `event: done`
of the app's SSE stream), else are counted: words of a plain-text body, or SSE events
with text as a last resort. Error kinds:

    http_<status>   the server answered with a non-2xx status
    connect         the connection could not be made
    reset           the connection broke before the response was complete
    truncated       a stream ended without its terminator (final chunk, `[DONE]`, `event: done`)
    stream_error    an SSE stream reported an error event
    protocol        the response could not be parsed as HTTP/1.1
    timeout         the request took longer than its timeout
    cancelled       the run ended (its time bound) while the request was in flight
"""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

STREAMING_KINDS = frozenset({"stream", "stream-sse", "openai-stream"})
_SSE_KINDS = frozenset({"stream-sse", "openai-stream"})


@dataclass
class Record:
    """One request. Times are seconds; `start` counts from the run's start, the rest from `start`."""
    kind: str
    start: float
    headers: float | None = None  # response headers received
    ttft: float | None = None  # first text: first body byte, or first SSE event carrying text
    last_token: float | None = None  # the last read that carried text
    total: float | None = None  # last byte
    gaps: list[float] = field(default_factory=list)  # between successive reads that carried text
    bytes: int = 0  # body bytes, without headers or chunk framing
    chunks: int = 0  # HTTP chunks with data (text kinds) or SSE events with text (SSE kinds)
    tokens: int | None = None  # output tokens (see token_source)
    token_source: str | None = None  # usage (the server's count), words, or chunks
    status: int = 0
    error: str | None = None
    detail: str | None = None  # the start of an error body or exception text

    @property
    def ok(self) -> bool:
        return self.error is None


class Exchange(asyncio.Protocol):
    """One request/response on its own connection; `done` resolves when the record is final."""

    def __init__(self, record: Record, request: bytes, t0: float, done: asyncio.Future) -> None:
        self.record, self.request, self.t0, self.done = record, request, t0, done
        self.sse = record.kind in _SSE_KINDS
        self.openai = record.kind.startswith("openai")
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.mode = "head"  # head -> length | chunked | close -> finished
        self.remaining = 0  # bytes left of a Content-Length body or of the current chunk
        self.buffer = b""  # unparsed chunked framing
        self.events = b""  # unparsed SSE text
        self.error_body = b""
        self.finished_stream = False  # the terminator of a streaming body was seen
        self.text_seen = False  # this read carried text
        self.last_text: float | None = None
        self.body = b""  # an openai-block answer, kept to read its usage
        self.words = 0  # words of a plain-text body, counted as it arrives
        self.in_word = False

    # -- asyncio callbacks ---------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter() - self.t0
        self.text_seen = False
        if self.mode == "head":
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            data = self.head[end + 4:]
            if not self._parse_head(self.head[:end], now):
                return
        if self.mode == "length":
            piece = data[:self.remaining]
            self.remaining -= len(piece)
            self._content(piece, now)
            if self.remaining == 0:
                self._finish(now)
        elif self.mode == "chunked":
            self._chunked(data, now)
        elif self.mode == "close":
            self._content(data, now)
        if self.text_seen:
            if self.last_text is None:
                self.record.ttft = now
            else:
                self.record.gaps.append(now - self.last_text)
            self.last_text = self.record.last_token = now

    def eof_received(self) -> bool:
        now = time.perf_counter() - self.t0
        if self.mode == "close":
            self._finish(now)
        elif self.mode != "finished":
            self._fail("reset" if self.mode == "head" else "truncated", now)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            now = time.perf_counter() - self.t0
            if self.mode == "close":
                self._finish(now)
            else:
                self._fail("reset" if self.mode == "head" else "truncated", now, exc)

    # -- parsing -------------------------------------------------------------
    def _parse_head(self, head: bytes, now: float) -> bool:
        record = self.record
        record.headers = now
        lines = head.split(b"\r\n")
        try:
            record.status = int(lines[0].split(None, 2)[1])
        except (IndexError, ValueError):
            self._fail("protocol", now, detail=lines[0][:200].decode("latin-1"))
            return False
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            fields[name.strip().lower()] = value.strip().lower()
        if not 200 <= record.status < 300:
            record.error = f"http_{record.status}"
        if b"chunked" in fields.get(b"transfer-encoding", b""):
            self.mode = "chunked"
        elif b"content-length" in fields:
            self.mode, self.remaining = "length", int(fields[b"content-length"])
            if self.remaining == 0:
                self._finish(now)
                return False
        else:
            self.mode = "close"
        return True

    def _chunked(self, data: bytes, now: float) -> None:
        buffer = self.buffer + data if self.buffer else data
        position = 0
        while position < len(buffer):
            if self.remaining > 0:  # inside a chunk's data
                piece = buffer[position:position + self.remaining]
                position += len(piece)
                self.remaining -= len(piece)
                self._content(piece, now, new_chunk=False)
                if self.remaining == 0:
                    self.remaining = -2  # its trailing CRLF is next
                continue
            end = buffer.find(b"\r\n", position)
            if end < 0:
                break
            if self.remaining == -2:  # the CRLF after a chunk's data
                self.remaining, position = 0, end + 2
                continue
            try:
                size = int(buffer[position:end].split(b";", 1)[0], 16)
            except ValueError:
                self._fail("protocol", now, detail="bad chunk size")
                return
            position = end + 2
            if size == 0:  # the last chunk; trailers are not read (the connection closes)
                self.buffer = b""
                self._finish(now)
                return
            self.remaining = size
            self._count_chunk()
        self.buffer = buffer[position:]

    def _count_chunk(self) -> None:
        # A text stream counts HTTP chunks; SSE kinds count events instead (in _content).
        if not self.sse and self.record.status < 300:
            self.record.chunks += 1
            self.text_seen = True

    def _content(self, piece: bytes, now: float, new_chunk: bool = True) -> None:
        if not piece:
            return
        self.record.bytes += len(piece)
        if self.record.error:
            if len(self.error_body) < 200:
                self.error_body += piece[:200]
            return
        if self.sse:
            self._events(piece)
            return
        if self.openai:
            self.body += piece
        else:
            self._count_words(piece)
        if self.mode != "chunked" and new_chunk:
            self.record.chunks += 1  # a Content-Length or read-until-close body is one chunk per read
            self.text_seen = True

    def _count_words(self, piece: bytes) -> None:
        # Words across reads: a word split by a read boundary is counted once.
        words = piece.split()
        if words:
            self.words += len(words) - (1 if self.in_word and not piece[:1].isspace() else 0)
        self.in_word = not piece[-1:].isspace()

    def _usage(self, data: bytes) -> None:
        try:
            usage = json.loads(data).get("usage") or {}
        except (ValueError, AttributeError):
            return
        if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
            self.record.tokens, self.record.token_source = usage["completion_tokens"], "usage"

    def _events(self, piece: bytes) -> None:
        events = (self.events + piece).split(b"\n\n")
        self.events = events.pop()
        for event in events:
            if self.openai:
                if event.startswith(b"data: [DONE]"):
                    self.finished_stream = True
                elif b'"content":' in event and b'"content":""' not in event and b'"content":null' not in event:
                    self.record.chunks += 1
                    self.text_seen = True
                elif event.startswith(b'data: {"error"'):
                    self.record.error, self.record.detail = "stream_error", event[6:206].decode(errors="replace")
                if b'"usage":{' in event or b'"usage": {' in event:  # most chunks say "usage":null
                    self._usage(event[6:])
            elif event.startswith(b"event: done"):
                self.finished_stream = True
                self._usage(event.partition(b"data:")[2])
            elif event.startswith(b"event: error"):
                self.record.error, self.record.detail = "stream_error", event[:200].decode(errors="replace")
            elif event.startswith(b"data:"):
                self.record.chunks += 1
                self.text_seen = True

    # -- endings -------------------------------------------------------------
    def _finish(self, now: float) -> None:
        record = self.record
        self.mode = "finished"
        record.total = now
        if record.error is None and record.kind in STREAMING_KINDS and self.sse and not self.finished_stream:
            record.error = "truncated"
        if self.body and record.error is None:
            self._usage(self.body)
        if record.tokens is None:
            record.tokens, record.token_source = ((self.words, "words") if not (self.sse or self.openai)
                                                  else (record.chunks, "chunks"))
        if self.error_body and record.detail is None:
            record.detail = self.error_body[:200].decode(errors="replace")
        self._close()

    def _fail(self, kind: str, now: float, exc: BaseException | None = None, detail: str | None = None) -> None:
        record = self.record
        self.mode = "finished"
        record.total = now
        if record.error is None or record.error.startswith("http_"):
            record.error = record.error or kind
        record.detail = detail or (str(exc)[:200] if exc else None) or record.detail
        self._close()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if not self.done.done():
            self.done.set_result(None)
