"""An HTTP/1.1 response body, read from its socket as it arrives (the lean transport's half).

Each socket read becomes at most one piece of body, however many chunks (tokens) it held,
and however large the chunk it is part of: the chunked decoder hands on the part of a chunk
that has arrived and keeps only the framing bytes it has not yet understood (a size line
split across two reads, bounded by `MAX_LINE`). Its work is linear in the bytes received;
nothing is re-scanned or re-joined as a large chunk comes in.

Framing the upstream gets wrong (RFC 9112 §6.3: conflicting or non-numeric Content-Length,
Content-Length beside chunked, a transfer coding we cannot decode, an endless size line) is
a `MalformedResponse`; its connection is closed, never reused.
"""
from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING, Callable, Iterator

import httpx2

if TYPE_CHECKING:
    from .http11 import _Connection

READ_SIZE = 16384  # bytes per read: larger batches more tokens per write, smaller keeps turns short
MAX_LINE = 4096  # longest chunk-size line, extensions included
MAX_TRAILERS = 16384
FRESH = 0.005  # seconds: a socket emptied more recently than this is taken to be still empty
_clock = time.monotonic


class MalformedResponse(httpx2.RemoteProtocolError):
    """The response breaks HTTP/1.1's framing: its body's end cannot be trusted."""


def framing(headers: list[tuple[bytes, bytes]]) -> tuple[bool, int | None, bool, bytes | None]:
    """(chunked, content length, keep-alive, content coding) from a response's headers."""
    chunked, length, keep_alive, coding = False, None, True, None
    codings: list[bytes] = []
    for name, value in headers:
        name = name.lower()
        if name == b"content-length":
            for item in value.split(b","):  # "5, 5" is allowed, as two identical headers are
                item = item.strip()
                if not item.isdigit() or len(item) > 18:
                    raise MalformedResponse("malformed Content-Length")
                if length is not None and int(item) != length:
                    raise MalformedResponse("conflicting Content-Length headers")
                length = int(item)
        elif name == b"transfer-encoding":
            codings += [token.strip() for token in value.lower().split(b",") if token.strip()]
        elif name == b"connection":
            keep_alive = keep_alive and b"close" not in [token.strip() for token in value.lower().split(b",")]
        elif name == b"content-encoding":
            coding = value.strip().lower()
    if codings:
        if codings != [b"chunked"]:
            raise MalformedResponse("unsupported Transfer-Encoding")
        if length is not None:
            raise MalformedResponse("Content-Length together with chunked")
        chunked = True
    return chunked, length, keep_alive, coding


def _size_before_extensions(line: bytes) -> int:
    try:
        return int(line.split(b";", 1)[0], 16)  # "1a;name=value": extensions are ignored
    except ValueError:
        raise MalformedResponse("malformed chunk size") from None


class ChunkedDecoder:
    """The chunked transfer coding, undone read by read: `decode(data)` is the body bytes `data` holds.

    Between reads it keeps only the framing bytes it has not yet understood (a size line or
    a chunk's CRLF split across two reads, bounded by `MAX_LINE`), the count of a chunk's
    data still to come, and, after the last chunk, its trailers until their empty line.
    `between` says it holds none of these: a read that is one whole chunk may then be taken
    by a caller's own check (upstream/stream.py) without it. `ended` says the body is whole.
    """

    __slots__ = ("_carry", "_remaining", "_crlf_due", "_trailers", "between", "ended", "extra")

    def __init__(self) -> None:
        self._carry = b""  # framing bytes not yet understood
        self._remaining = 0  # bytes of the current chunk's data still to come
        self._crlf_due = False  # the CRLF that ends a chunk's data is still to come
        self._trailers: bytes | None = None  # after the last chunk: what came of its trailers
        self.between = True
        self.ended = False
        self.extra = False  # bytes came after the body's end: the connection is out of step

    def decode(self, data: bytes) -> bytes:
        """The body bytes in `data` (b"" for none); MalformedResponse for framing that is wrong."""
        if self._trailers is not None:
            self._read_trailers(self._trailers + data)
            return b""
        if self.between:
            # The common case, answered first: the read is one whole chunk (a token's event).
            end = len(data)
            line_end = data.find(b"\r\n")
            if 0 < line_end <= MAX_LINE and data.endswith(b"\r\n"):
                try:
                    size = int(data[:line_end], 16)
                except ValueError:
                    size = 0  # extensions, or not a size: the general path below decides
                if size > 0 and line_end + size + 4 == end:
                    return data[line_end + 2:end - 2]
        elif self._carry:
            data, self._carry = self._carry + data, b""
        remaining, crlf_due = self._remaining, self._crlf_due
        end = len(data)
        if remaining >= end:  # the whole read is the middle of a large chunk: it goes on as it came
            self._remaining = remaining - end
            return data
        pieces = []
        position = 0
        if remaining:
            pieces.append(data[:remaining])
            position, remaining = remaining, 0
        if crlf_due and end - position >= 2:
            if not data.startswith(b"\r\n", position):
                raise MalformedResponse("chunk data longer than its size")
            position += 2
            crlf_due = False
        # Every chunk that starts in this read, the last one perhaps only in part.
        while not crlf_due:
            line_end = data.find(b"\r\n", position)
            if line_end < 0 or line_end - position > MAX_LINE:
                break
            try:
                size = int(data[position:line_end], 16)
            except ValueError:
                size = _size_before_extensions(data[position:line_end])
            start = line_end + 2
            stop = start + size
            if size <= 0:
                if size < 0:
                    raise MalformedResponse("malformed chunk size")
                self.between = False
                self._read_trailers(data[start:])
                return pieces[0] if len(pieces) == 1 else b"".join(pieces)
            if stop + 2 <= end:  # the common case: the whole chunk, and its CRLF, in this read
                if not data.startswith(b"\r\n", stop):
                    raise MalformedResponse("chunk data longer than its size")
                pieces.append(data[start:stop])
                position = stop + 2
                continue
            crlf_due = True  # this chunk ends in a later read
            if start < end:
                pieces.append(data[start:stop])
            remaining, position = max(stop - end, 0), min(stop, end)
        if end - position > MAX_LINE:
            raise MalformedResponse("chunk size line too long")
        # Only the few framing bytes not yet understood are carried over.
        self._carry = data[position:] if position < end else b""
        self._remaining, self._crlf_due = remaining, crlf_due
        self.between = not (self._carry or remaining or crlf_due)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _read_trailers(self, data: bytes) -> None:
        # After the last chunk: an empty line, or trailer fields and then one.
        if data.startswith(b"\r\n"):
            done = 2
        else:
            found = data.find(b"\r\n\r\n")
            done = found + 4 if found >= 0 else 0
        if done:
            self.extra = len(data) > done
            self.ended = True
            self._trailers = None
            return
        if len(data) > MAX_TRAILERS:
            raise MalformedResponse("trailers too large")
        self._trailers = data


class Body:
    """The response body: each socket read becomes one piece, chunked framing removed.

    Iterate it, then close it: a connection whose body was read to its end goes back
    to the pool (`checkin`), any other is closed. With a `deadline` (monotonic time),
    no read waits past it: the whole body, however slowly it comes, ends by then.

    A reader of its own (upstream/stream.py) may instead call `read()` and undo a
    chunked body's framing with `decoder`; the body counts as read to its end once
    the decoder says so.
    """

    def __init__(self, connection: "_Connection", headers: list[tuple[bytes, bytes]], empty: bool,
                 checkin: Callable[["_Connection"], None], deadline: float | None = None) -> None:
        self._connection, self._checkin = connection, checkin
        self._complete = empty  # 204, 304 and 101 have no body
        chunked, self.length, self._keep_alive, self.content_coding = framing(headers)
        self.decoder = ChunkedDecoder() if chunked and not empty else None
        self._emptied_at = -FRESH  # when a read last emptied the socket (monotonic); long ago: none did
        self._sock = sock = connection.sock
        self._deadline, self._read_timeout = deadline, sock.gettimeout()
        # Once the wait says the socket is readable, the read goes to the real socket under
        # gevent's (its `_sock`, as runtime/clientsocket.py writes): one frame less per read.
        self._wait_readable, self._recv_ready = connection.wait_readable, connection.recv_ready
        self._waits = self._wait_readable is not None  # None without gevent, and for TLS

    def __iter__(self) -> Iterator[bytes]:
        # One generator resumed per read.
        if self._complete:
            return iter(())
        if self.decoder is not None:
            return self._read_chunked()
        if self.length is not None:
            return self._read_length(self.length)
        self._keep_alive = False
        return self._read_until_close()

    @property
    def complete(self) -> bool:
        """Whether the body was read to its end."""
        return self._complete if self.decoder is None else self.decoder.ended

    def read(self) -> bytes:
        """The next read (what came with the head first); b"" at the end of the stream.
        Socket errors become httpx's."""
        if self._connection.buffer:
            data, self._connection.buffer = self._connection.buffer, b""
            return data
        sock = self._sock
        try:
            if self._deadline is not None:
                left = self._deadline - _clock()
                if left <= 0:
                    raise socket.timeout()
                sock.settimeout(left if self._read_timeout is None else min(left, self._read_timeout))
            if _clock() - self._emptied_at < FRESH:
                # The last read emptied the socket moments ago, so reading now would fail
                # (EAGAIN) and then wait: a wasted system call and exception per token. Wait
                # first. (A socket emptied longer ago, by a stream that paused, has likely
                # filled again: there, waiting first would cost a trip through the hub.)
                self._wait_readable()
                try:
                    data = self._recv_ready(READ_SIZE)
                except BlockingIOError:  # woken with nothing to read after all
                    data = sock.recv(READ_SIZE)
            else:
                data = sock.recv(READ_SIZE)
        except socket.timeout:
            raise httpx2.ReadTimeout("timed out reading the response") from None
        except OSError as exc:
            raise httpx2.ReadError(str(exc)) from None
        if len(data) < READ_SIZE:
            if self._waits:  # only where there is a wait to make first
                self._emptied_at = _clock()
        else:
            self._emptied_at = -FRESH  # a full read: more may be waiting
        return data

    def reads(self) -> tuple[Callable[[], None], Callable[[int], bytes], Callable[[int], bytes]] | None:
        """For a reader of its own, after its first `read()`: (wait until the socket is readable,
        read what it holds, read waiting as needed), each raising the socket's errors; None where
        every read must be `read()` (no event loop to wait on first, TLS, or a deadline)."""
        if not self._waits or self._deadline is not None:
            return None
        return self._wait_readable, self._recv_ready, self._sock.recv

    def _more(self) -> bytes:
        data = self.read()
        if not data:
            raise httpx2.RemoteProtocolError("peer closed connection without sending complete message body")
        return data

    def _read_length(self, remaining: int) -> Iterator[bytes]:
        while remaining > 0:
            data = self._more()
            if len(data) > remaining:
                data = data[:remaining]
                self._keep_alive = False  # the server sent more than it announced
            remaining -= len(data)
            yield data
        if self._connection.buffer:
            self._keep_alive = False  # more than announced came with the head
        self._complete = True

    def _read_until_close(self) -> Iterator[bytes]:
        while data := self.read():
            yield data
        self._complete = True

    def _read_chunked(self) -> Iterator[bytes]:
        decode, decoder = self.decoder.decode, self.decoder
        while not decoder.ended:
            piece = decode(self._more())
            if piece:
                yield piece

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if self.complete and self._keep_alive and not (self.decoder is not None and self.decoder.extra):
            self._checkin(connection)
        else:
            connection.close()  # unread body: the connection cannot be reused
