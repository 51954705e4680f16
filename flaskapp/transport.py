"""A lean HTTP/1.1 client transport, built for thousands of open upstream streams.

`Upstream` sends the request the `openai` client would send (its headers, composed once
per process) through this instead of httpx. Two costs of httpx's default transport
dominate a busy gevent worker relaying streams:

- its connection pool re-checks every idle connection, with a poll through the gevent
  hub, each time any request starts or ends: quadratic in the number of streams;
- it decodes each chunk of a chunked body through h11's event machinery.

Here idle connections wait in a LIFO list per origin and only the one taken out is
checked (one non-blocking peek), and a chunked body is decoded with a few bytes
operations: each read from the socket becomes one piece of body, however many
chunks (tokens) it held. Everything else — proxies, HTTP/2 — is left to httpx: use
its transport when you need them (`FLASKAPP_UPSTREAM_TRANSPORT=httpx`).
"""
from __future__ import annotations

import select
import socket
import ssl
import sys
import time
from collections import deque
from functools import lru_cache, partial
from typing import Callable, Iterator

import httpx2


@lru_cache(maxsize=None)
def _real_poll() -> Callable[[], "select.poll"]:
    # The real poll(2), even under gevent: a zero-timeout check needs no trip through the hub.
    # (Looked up on first use, in the worker, after gevent has patched `select`.)
    monkey = sys.modules.get("gevent.monkey")
    return monkey.get_original("select", "poll") if monkey else select.poll

READ_SIZE = 16384  # bytes per read: larger batches more tokens per write, smaller keeps turns short
MAX_HEAD = 65536
FRESH = 0.005  # seconds: a socket emptied more recently than this is taken to be still empty

Origin = tuple[str, str, int]  # scheme, host, port


class _Connection:
    __slots__ = ("sock", "origin", "buffer", "reused")

    def __init__(self, sock: socket.socket, origin: Origin) -> None:
        self.sock, self.origin, self.buffer, self.reused = sock, origin, b"", False

    def alive(self) -> bool:
        """An idle keep-alive connection is usable while it has nothing to read (no EOF)."""
        try:
            poller = _real_poll()()
            poller.register(self.sock.fileno(), select.POLLIN)
            return not poller.poll(0)
        except (OSError, ValueError):
            return False

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class LeanTransport:
    """Keep-alive HTTP/1.1 connections per origin; `send()` one request, iterate its `Body`."""

    def __init__(self, max_idle_per_origin: int = 1000, ssl_context: ssl.SSLContext | None = None) -> None:
        self._idle: dict[Origin, deque[_Connection]] = {}
        self._max_idle = max_idle_per_origin
        self._ssl_context = ssl_context
        self._addresses: dict[tuple[str, int], tuple] = {}  # (host, port) -> (expires, socket args, address)

    def send(self, origin: Origin, head: bytes, body: bytes,
             timeouts: dict) -> tuple[int, bytes, list[tuple[bytes, bytes]], "Body"]:
        """Send one request (head and body bytes); return the response head and its body stream.

        Raises httpx's transport exceptions, so callers handle one family of errors.
        """
        while True:
            connection = self._checkout(origin)
            fresh = connection is None
            if fresh:
                connection = self._connect(origin, timeouts)
            try:
                connection.sock.settimeout(timeouts.get("write"))
                connection.sock.sendall(head + body if len(body) < 65536 else head)
                if len(body) >= 65536:
                    connection.sock.sendall(body)
                connection.sock.settimeout(timeouts.get("read"))
                status, reason, headers = self._read_head(connection)
                break
            except socket.timeout:
                connection.close()
                raise httpx2.ReadTimeout("timed out waiting for the response") from None
            except (_StaleConnection, OSError) as exc:
                connection.close()
                if not fresh:
                    continue  # a kept-alive connection the server had closed: nothing was processed
                if isinstance(exc, _StaleConnection):
                    raise httpx2.RemoteProtocolError("server closed the connection without a response") from None
                raise httpx2.ReadError(str(exc)) from None
            except BaseException:
                connection.close()
                raise
        return status, reason, headers, Body(connection, headers, status in (204, 304), self.checkin)

    def close(self) -> None:
        for connections in self._idle.values():
            while connections:
                connections.pop().close()

    # -- connections ---------------------------------------------------------
    def _checkout(self, origin: Origin) -> _Connection | None:
        connections = self._idle.get(origin)
        while connections:
            connection = connections.pop()  # the most recently used: least likely to have timed out
            if connection.alive():
                connection.reused = True
                return connection
            connection.close()
        return None

    def checkin(self, connection: _Connection) -> None:
        connections = self._idle.setdefault(connection.origin, deque())
        if len(connections) >= self._max_idle:
            connection.close()
        else:
            connections.append(connection)

    def _resolve(self, host: str, port: int) -> tuple:
        # gevent resolves names in a small thread pool: a burst of new streams would queue
        # behind it. One lookup per origin a minute is plenty.
        cached = self._addresses.get((host, port))
        if cached is None or cached[0] < time.monotonic():
            family, kind, protocol, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
            cached = self._addresses[(host, port)] = (time.monotonic() + 60.0, (family, kind, protocol), address)
        return cached[1:]

    def _connect(self, origin: Origin, timeouts: dict) -> _Connection:
        scheme, host, port = origin
        try:
            kind, address = self._resolve(host, port)
            sock = socket.socket(*kind)
            sock.settimeout(timeouts.get("connect"))
            try:
                sock.connect(address)
            except OSError:
                sock.close()
                self._addresses.pop((host, port), None)
                raise
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if scheme == "https":
                if self._ssl_context is None:
                    self._ssl_context = ssl.create_default_context()
                sock = self._ssl_context.wrap_socket(sock, server_hostname=host)
        except socket.timeout:
            raise httpx2.ConnectTimeout(f"timed out connecting to {host}:{port}") from None
        except OSError as exc:
            raise httpx2.ConnectError(str(exc)) from None
        return _Connection(sock, origin)

    # -- wire format ---------------------------------------------------------
    @staticmethod
    def _read_head(connection: _Connection) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        data = b""
        while (end := data.find(b"\r\n\r\n")) < 0:
            if len(data) > MAX_HEAD:
                raise httpx2.RemoteProtocolError("response head too large")
            more = connection.sock.recv(READ_SIZE)
            if not more:
                if not data and connection.reused:
                    raise _StaleConnection()
                raise httpx2.RemoteProtocolError("server closed the connection without a response")
            data += more
        lines = data[:end].split(b"\r\n")
        connection.buffer = data[end + 4:]
        try:
            version, status, *reason = lines[0].split(b" ", 2)
            headers = [(name.strip(), value.strip()) for name, _, value in
                       (line.partition(b":") for line in lines[1:] if b":" in line)]
            return int(status), reason[0] if reason else b"", headers
        except ValueError:
            raise httpx2.RemoteProtocolError("malformed response head") from None


class _StaleConnection(Exception):
    """A reused connection was closed by the server before answering."""


class Body:
    """The response body: each socket read becomes one piece, chunked framing removed.

    Iterate it, then close it: a connection whose body was read to its end goes back
    to the pool (`checkin`), any other is closed.
    """

    def __init__(self, connection: _Connection, headers: list[tuple[bytes, bytes]], empty: bool,
                 checkin: Callable[[_Connection], None]) -> None:
        self._connection, self._checkin = connection, checkin
        self._complete = empty  # 204 and 304 have no body
        self._chunked = self._length = None
        self._keep_alive = True
        self._drained, self._read_at = False, 0.0
        sock = connection.sock
        # gevent's own wait for a plain socket to become readable (with the socket's
        # timeout); not for TLS, whose buffer may hold bytes the socket no longer shows.
        self._wait_readable = (partial(sock._wait, sock._read_event)
                               if hasattr(sock, "_read_event") and not hasattr(sock, "pending") else None)
        for name, value in headers:
            name = name.lower()
            if name == b"transfer-encoding":
                self._chunked = b"chunked" in value.lower()
            elif name == b"content-length":
                self._length = int(value)
            elif name == b"connection" and value.lower() == b"close":
                self._keep_alive = False

    def __iter__(self) -> Iterator[bytes]:
        if self._complete:
            return
        try:
            if self._chunked:
                yield from self._read_chunked()
            elif self._length is not None:
                yield from self._read_length(self._length)
            else:
                self._keep_alive = False
                yield from self._read_until_close()
        except socket.timeout:
            raise httpx2.ReadTimeout("timed out reading the response") from None
        except OSError as exc:
            raise httpx2.ReadError(str(exc)) from None

    def _recv(self) -> bytes:
        if self._drained and self._wait_readable is not None and time.monotonic() - self._read_at < FRESH:
            # The last read emptied the socket moments ago, so reading now would fail
            # (EAGAIN) and then wait: a wasted system call and exception per token. Wait
            # first. (A socket emptied longer ago, by a stream that paused, has likely
            # filled again: there, waiting first would cost a trip through the hub.)
            self._wait_readable()
        data = self._connection.sock.recv(READ_SIZE)
        self._drained, self._read_at = len(data) < READ_SIZE, time.monotonic()
        if not data:
            raise httpx2.RemoteProtocolError("peer closed connection without sending complete message body")
        return data

    def _read_length(self, remaining: int) -> Iterator[bytes]:
        data, self._connection.buffer = self._connection.buffer, b""
        while True:
            if data:
                data, extra = data[:remaining], data[remaining:]
                remaining -= len(data)
                if extra:
                    self._keep_alive = False  # the server sent more than it announced
                yield data
            if remaining <= 0:
                self._complete = True
                return
            data = self._recv()

    def _read_until_close(self) -> Iterator[bytes]:
        data, self._connection.buffer = self._connection.buffer, b""
        if data:
            yield data
        while data := self._connection.sock.recv(READ_SIZE):
            yield data
        self._complete = True

    def _read_chunked(self) -> Iterator[bytes]:
        buffer = self._connection.buffer
        self._connection.buffer = b""
        while True:
            pieces = []
            position = 0
            # Every complete chunk in what has arrived so far.
            while (line_end := buffer.find(b"\r\n", position)) >= 0:
                try:
                    size = int(buffer[position:line_end].split(b";", 1)[0], 16)
                except ValueError:
                    raise httpx2.RemoteProtocolError("malformed chunk size") from None
                if size == 0:
                    if buffer.find(b"\r\n\r\n", line_end) < 0:
                        break  # the trailer section has not fully arrived
                    if pieces:
                        yield b"".join(pieces)
                    self._complete = True
                    return
                start = line_end + 2
                if len(buffer) < start + size + 2:
                    break  # this chunk has not fully arrived
                pieces.append(buffer[start:start + size])
                position = start + size + 2
            if pieces:
                yield pieces[0] if len(pieces) == 1 else b"".join(pieces)
            buffer = buffer[position:] + self._recv()

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if self._complete and self._keep_alive:
            self._checkin(connection)
        else:
            connection.close()  # unread body: the connection cannot be reused
