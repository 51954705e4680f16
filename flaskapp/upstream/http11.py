"""A lean HTTP/1.1 connection pool, built for thousands of open upstream streams.

`LeanTransport` (transport.py) sends the request the `openai` client would send (its
headers, composed once per process) through this instead of httpx. Two costs of httpx's default transport
dominate a busy gevent worker relaying streams:

- its connection pool re-checks every idle connection, with a poll through the gevent
  hub, each time any request starts or ends: quadratic in the number of streams;
- it decodes each chunk of a chunked body through h11's event machinery.

Here idle connections wait in a LIFO list per origin and only the one taken out is
checked (one non-blocking peek), when it has been idle a second or more (one the server
closed sooner answers nothing, and the request goes again on a new connection, as after
any stale one); and a chunked body is decoded with a few bytes
operations (`httpbody.Body`): each read from the socket becomes one piece of body,
however many chunks (tokens) it held. Interim 1xx heads are skipped (an unasked 101
is refused), and so is a response whose framing is ambiguous (`MalformedResponse`).
Everything else — proxies, HTTP/2 — is left to httpx: use its transport when you need
them (`FLASKAPP_UPSTREAM_TRANSPORT=httpx`); `proxy_variable` tells when you do.
"""
from __future__ import annotations

import select
import socket
import ssl
import sys
import time
import urllib.request
from collections import deque
from functools import lru_cache
from typing import Callable

import httpx2

from ..runtime.gevent_io import readable_waiter
from .httpbody import READ_SIZE, Body, MalformedResponse

__all__ = ["Body", "ConnectionPool", "MalformedResponse", "Origin", "proxy_variable"]


@lru_cache(maxsize=None)
def _real_poll() -> Callable[[], "select.poll"]:
    # The real poll(2), even under gevent: a zero-timeout check needs no trip through the hub.
    # (Looked up on first use, in the worker, after gevent has patched `select`.)
    monkey = sys.modules.get("gevent.monkey")
    return monkey.get_original("select", "poll") if monkey else select.poll

MAX_HEAD = 65536  # bytes of one response head
RECENTLY_IDLE = 1.0  # seconds: a connection idle no longer is reused without checking it first
MAX_INTERIM = 8  # 1xx heads skipped before the answer's own

Origin = tuple[str, str, int]  # scheme, host, port


class _Connection:
    __slots__ = ("sock", "origin", "buffer", "reused", "wait_readable", "recv_ready", "send_now", "idle_since")

    def __init__(self, sock: socket.socket, origin: Origin) -> None:
        self.sock, self.origin, self.buffer, self.reused = sock, origin, b"", False
        self.idle_since = 0.0  # monotonic time it was last checked in
        # Under gevent (plain sockets), a read the connection knows must wait waits first, then
        # reads gevent's real socket, and a request is one send() on it: no failed read
        # (EAGAIN) and exception, and none of gevent's sendall set-up, per request or token.
        self.wait_readable = readable_waiter(sock)  # None without gevent, and for TLS
        real = sock._sock if self.wait_readable is not None else None  # type: ignore[attr-defined]
        self.recv_ready = real.recv if real is not None else sock.recv
        self.send_now = real.send if real is not None else None

    def send(self, data: bytes) -> None:
        """All of `data`, within the socket's timeout."""
        sent = 0
        if self.send_now is not None:
            try:
                sent = self.send_now(data)
            except BlockingIOError:
                pass
        if sent < len(data):
            self.sock.sendall(data[sent:] if sent else data)

    def recv_answer(self) -> bytes:
        """A read the connection expects to wait for (an answer's head): waits, then reads."""
        if self.wait_readable is None:
            return self.sock.recv(READ_SIZE)
        self.wait_readable()  # raises socket.timeout past the socket's timeout
        try:
            return self.recv_ready(READ_SIZE)
        except BlockingIOError:  # woken with nothing to read after all
            return self.sock.recv(READ_SIZE)

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


def proxy_variable(scheme: str, host: str, port: int | None) -> str | None:
    """The environment variable (HTTPS_PROXY, ALL_PROXY…, any case) that asks for a proxy to
    this origin, respecting NO_PROXY; None when there is none. This transport cannot honour it."""
    proxies = urllib.request.getproxies_environment()
    key = scheme if scheme in proxies else "all"
    if not proxies.get(key):
        return None
    if urllib.request.proxy_bypass_environment(host + (f":{port}" if port else ""), proxies):
        return None
    return f"{key.upper()}_PROXY"


class ConnectionPool:
    """Keep-alive HTTP/1.1 connections per origin; `send()` one request, iterate its `Body`."""

    def __init__(self, max_idle_per_origin: int = 1000, ssl_context: ssl.SSLContext | None = None) -> None:
        self._idle: dict[Origin, deque[_Connection]] = {}
        self._max_idle = max_idle_per_origin
        self._ssl_context = ssl_context
        self._addresses: dict[tuple[str, int], tuple] = {}  # (host, port) -> (expires, socket args, address)

    def warm(self, origin: Origin) -> None:
        """Make now what a first request to `origin` would make: its TLS context (some 20 ms), its
        address (gevent's resolver starts its thread pool on first use) and a connection."""
        scheme, host, port = origin
        if scheme == "https" and self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()
        try:
            self.checkin(self._connect(origin, 1.0))  # one idle connection, as a request leaves it
        except (OSError, httpx2.TransportError):
            pass  # the first request will say so, with a real status

    def send(self, origin: Origin, head: bytes, body: bytes, timeouts: dict,
             deadline: float | None = None) -> tuple[int, bytes, list[tuple[bytes, bytes]], Body]:
        """Send one request (head and body bytes); return the response head and its body stream.

        `timeouts` bounds each step ("connect", "write", "read": seconds, or None); `deadline`
        (monotonic time), when given, bounds the whole exchange, the body's reads included.
        Raises httpx's transport exceptions, so callers handle one family of errors.
        """
        while True:
            connection = self._checkout(origin)
            fresh = connection is None
            if fresh:
                connection = self._connect(origin, _within(timeouts.get("connect"), deadline, httpx2.ConnectTimeout))
            try:
                connection.sock.settimeout(_within(timeouts.get("write"), deadline))
                if len(body) < 65536:
                    connection.send(head + body)
                else:
                    connection.send(head)
                    connection.send(body)
                for _ in range(MAX_INTERIM + 1):
                    status, reason, headers = self._read_head(connection, timeouts.get("read"), deadline)
                    if not 100 <= status < 200:
                        break  # 1xx (100 Continue, 103 Early Hints) come before the answer: skipped
                    if status == 101:
                        raise MalformedResponse("switched protocols unasked")
                else:
                    raise MalformedResponse("too many interim responses")
                connection.sock.settimeout(timeouts.get("read"))
                response = Body(connection, headers, status in (204, 304), self.checkin, deadline)
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
        return status, reason, headers, response

    # -- connections ---------------------------------------------------------
    def _checkout(self, origin: Origin) -> _Connection | None:
        connections = self._idle.get(origin)
        while connections:
            connection = connections.pop()  # the most recently used: least likely to have timed out
            # One idle for a moment only is taken as it is (a system call a request saved): a
            # server that closed it meanwhile answers nothing, and `send` retries on a new one.
            if time.monotonic() - connection.idle_since < RECENTLY_IDLE or connection.alive():
                connection.reused = True
                return connection
            connection.close()
        return None

    def checkin(self, connection: _Connection) -> None:
        connections = self._idle.setdefault(connection.origin, deque())
        if len(connections) >= self._max_idle:
            connection.close()
        else:
            connection.idle_since = time.monotonic()
            connections.append(connection)

    def _resolve(self, host: str, port: int) -> tuple:
        # gevent resolves names in a small thread pool: a burst of new streams would queue
        # behind it. One lookup per origin a minute is plenty.
        cached = self._addresses.get((host, port))
        if cached is None or cached[0] < time.monotonic():
            family, kind, protocol, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
            cached = self._addresses[(host, port)] = (time.monotonic() + 60.0, (family, kind, protocol), address)
        return cached[1:]

    def _connect(self, origin: Origin, timeout: float | None) -> _Connection:
        scheme, host, port = origin
        try:
            kind, address = self._resolve(host, port)
            sock = socket.socket(*kind)
            sock.settimeout(timeout)
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
    def _read_head(connection: _Connection, read_timeout: float | None,
                   deadline: float | None) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        data = bytearray(connection.buffer)
        searched = 0
        while (end := data.find(b"\r\n\r\n", searched)) < 0:
            if len(data) > MAX_HEAD:
                raise MalformedResponse("response head too large")
            searched = max(len(data) - 3, 0)  # a head dripped a byte a read is still scanned once
            connection.sock.settimeout(_within(read_timeout, deadline))
            more = connection.recv_answer()
            if not more:
                if not data and connection.reused:
                    raise _StaleConnection()
                raise httpx2.RemoteProtocolError("server closed the connection without a response")
            data += more
        if end > MAX_HEAD:
            raise MalformedResponse("response head too large")
        lines = bytes(data[:end]).split(b"\r\n")
        connection.buffer = bytes(data[end + 4:])
        try:
            version, status, *reason = lines[0].split(b" ", 2)
            if not version.startswith(b"HTTP/1.") or len(status) != 3 or not status.isdigit():
                raise ValueError
            headers = [(name.strip(), value.strip()) for name, _, value in
                       (line.partition(b":") for line in lines[1:] if b":" in line)]
            return int(status), reason[0] if reason else b"", headers
        except ValueError:
            raise MalformedResponse("malformed response head") from None


def _within(timeout: float | None, deadline: float | None, expired: type = socket.timeout) -> float | None:
    """A step's timeout, cut to the time left before the deadline; `expired` raised if none is."""
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise expired("timed out")
    return left if timeout is None else min(timeout, left)


class _StaleConnection(Exception):
    """A reused connection was closed by the server before answering."""
