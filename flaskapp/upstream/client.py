"""The model server, behind one small interface. Knows nothing of Flask.

`Upstream.complete()` makes a blocking call; `Upstream.open_stream()` opens a
streaming one and returns a `ChatStream` once the upstream has answered with a
status, so failures before the first byte surface as exceptions, not as a broken
200. Both take the request's `Guard`, which may interrupt them when the client
leaves or the upstream goes silent; both send through a `Transport` (transport.py):
the lean one by default, httpx's with `transport="httpx"`, or one handed in (tests).

The official `openai` client is the source of truth: it reads OPENAI_API_KEY,
OPENAI_BASE_URL, OPENAI_ORG_ID and OPENAI_PROJECT_ID as its users expect, and its
headers are the ones sent.

A blocking call is bounded as a whole: `request_timeout` from its start to its last
byte, however slowly the bytes come, and `max_answer_bytes` of answer at most.

The client and transport are made lazily per process (or at once by `warm()`):
gunicorn forks workers after loading the config, and a connection pool must never be
shared across a fork.
"""
from __future__ import annotations

import json
import os
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import httpx2
import openai

from .http11 import MalformedResponse
from .stream import ChatStream
from .events import ChunkParser
from .transport import CHAT_COMPLETIONS, HttpxTransport, LeanTransport, Transport, refuse_proxies
from ..errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable, malformed, too_large, unreadable
from ..runtime import process
from ..runtime.guard import Guard, UpstreamSilent

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)  # eleven settings: by name only
class UpstreamSettings:
    connect_timeout: float = 5.0
    first_token_timeout: float = 60.0
    idle_timeout: float = 60.0
    request_timeout: float = 600.0
    max_retries: int = 2
    max_connections: int = 10_000
    transport: str = "lean"  # or "httpx": every request through client.post() and httpx
    fair_slice: float = 0.001  # seconds a stream may relay before letting others run; 0: never
    stream_interval: float = 0.0  # least seconds between a stream's reads (so writes); 0: none
    stream_timeout: float = 1800.0  # whole streamed answer
    max_answer_bytes: int = 32 * 1024 * 1024  # largest upstream answer, streamed or blocking

    @classmethod
    def from_config(cls, config: Any) -> "UpstreamSettings":
        return cls(connect_timeout=config["CONNECT_TIMEOUT"], first_token_timeout=config["FIRST_TOKEN_TIMEOUT"],
                   idle_timeout=config["IDLE_TIMEOUT"], request_timeout=config["REQUEST_TIMEOUT"],
                   max_retries=config["MAX_RETRIES"], max_connections=config["UPSTREAM_MAX_CONNECTIONS"],
                   transport=config["UPSTREAM_TRANSPORT"], fair_slice=config["FAIR_SLICE"],
                   stream_interval=config["STREAM_INTERVAL"], stream_timeout=config["STREAM_TIMEOUT"],
                   max_answer_bytes=config["MAX_ANSWER_BYTES"])


@dataclass
class Completion:
    text: str
    usage: dict | None


class Upstream:
    def __init__(self, settings: UpstreamSettings, *, transport: Transport | None = None,
                 **client_options: Any) -> None:
        """`client_options` go to the `openai` client (api_key, base_url, http_client…); a
        `transport` handed in replaces the one `settings.transport` names (tests)."""
        self.settings = settings
        self._client_options = client_options
        self._client: openai.OpenAI | None = None
        self._pid = 0
        self._given_transport = transport
        self._transport: Transport | None = None
        self._client_lock: tuple[int, threading.Lock] = (0, threading.Lock())
        if transport is None and settings.transport == "lean":
            refuse_proxies(client_options.get("base_url") or os.environ.get("OPENAI_BASE_URL")
                           or "https://api.openai.com/v1")

    def warm(self) -> None:
        """Make this process's client and transport now, not in its first request."""
        warm = getattr(self._made()[1], "warm", None)  # the lean transport's TLS context
        if warm is not None:
            warm()

    @property
    def client(self) -> openai.OpenAI:
        return self._made()[0]

    @property
    def transport(self) -> Transport:
        return self._made()[1]

    def _made(self) -> tuple[openai.OpenAI, Transport]:
        if self._client is None or self._pid != process.pid():
            # The client's platform headers run `uname` in a subprocess, which yields under
            # gevent: without the lock every request of a first burst would run its own.
            # The lock is made in this process, so that it is gevent's where gevent patched.
            if self._client_lock[0] != process.pid():
                self._client_lock = (process.pid(), threading.Lock())
            with self._client_lock[1]:
                if self._client is None or self._pid != process.pid():
                    self._make_client()
        return self._client, self._transport

    def _make_client(self) -> None:
        s, options = self.settings, dict(self._client_options)
        options.setdefault("http_client", openai.DefaultHttpxClient(limits=httpx2.Limits(
            max_connections=s.max_connections, max_keepalive_connections=1000)))
        # Retries are ours (`_retrying`), on every transport: bounded by the request's deadline.
        client = openai.OpenAI(max_retries=0, **options)
        if self._given_transport is not None:
            self._transport = self._given_transport
        elif s.transport == "lean":
            self._transport = LeanTransport(client, connect_timeout=s.connect_timeout,
                                            max_idle_per_origin=s.max_connections)
        else:
            self._transport = HttpxTransport(client, connect_timeout=s.connect_timeout)
        self._client, self._pid = client, process.pid()

    def complete(self, body: dict[str, Any], guard: Guard, path: str = CHAT_COMPLETIONS) -> bytes:
        """The upstream's JSON answer to a blocking call to `path`, as the bytes it sent."""
        s, transport = self.settings, self.transport
        deadline = time.monotonic() + s.request_timeout
        # Chat calls keep the transport's own default: transports handed in may know only that path.
        on = {} if path is CHAT_COMPLETIONS else {"path": path}
        answer = self._retrying(lambda: transport.send(body, read_timeout=s.request_timeout, deadline=deadline,
                                                       **on), guard, deadline)
        try:
            if answer.length is not None and answer.length > s.max_answer_bytes:
                raise too_large(s.max_answer_bytes)
            with guard.awaiting():
                pieces, size = [], 0
                for piece in answer.pieces:
                    size += len(piece)
                    if size > s.max_answer_bytes:
                        raise too_large(s.max_answer_bytes)
                    if time.monotonic() > deadline:  # the lean body enforces it; httpx, only per read
                        raise httpx2.ReadTimeout("past the deadline")
                    pieces.append(piece)
                return b"".join(pieces)
        except httpx2.TimeoutException:
            raise UpstreamTimeout(f"The model server did not answer within {s.request_timeout:g} s.") from None
        except (MalformedResponse, httpx2.DecodingError):
            raise malformed() from None
        except httpx2.TransportError:
            raise UpstreamUnavailable("The model server dropped the connection.") from None
        finally:
            answer.close()

    def open_stream(self, body: dict[str, Any], guard: Guard, path: str = CHAT_COMPLETIONS,
                    parser: ChunkParser | None = None) -> ChatStream:
        """A stream from `path`, read by `parser` (a chat-completion chunk parser by default)."""
        s, transport = self.settings, self.transport
        on = {} if path is CHAT_COMPLETIONS else {"path": path}
        body = {**body, "stream": True}
        # The guard, when active, enforces the first-token and idle deadlines precisely;
        # the socket's read timeout is the backstop where it cannot.
        read_timeout = None if guard.active else max(s.first_token_timeout, s.idle_timeout)
        try:
            answer = self._retrying(lambda: transport.send(body, read_timeout=read_timeout, **on), guard,
                                    guard.deadline)
        except UpstreamSilent:
            raise UpstreamTimeout(f"The model server sent nothing within {s.first_token_timeout:g} s.") from None
        return ChatStream(answer.pieces, close=answer.close, guard=guard, settings=s, parser=parser,
                          body=answer.body)

    def _retrying(self, attempt: Callable[[], T], guard: Guard, deadline: float) -> T:
        """Retry where it is safe: before any answer, on connection errors, 429 and 5xx, with
        backoff or the upstream's Retry-After, and never past the request's deadline."""
        tries = 0
        while True:
            with guard.awaiting():  # a client leaving during the call or the pause ends it
                try:
                    return attempt()
                except UpstreamError as error:
                    delay = _backoff(tries, error.retry_after)
                    if (not error.retryable or tries >= self.settings.max_retries
                            or time.monotonic() + delay > deadline):
                        raise
                tries += 1
                time.sleep(delay)


def _backoff(attempt: int, retry_after: str | None) -> float:
    """Seconds before retry number `attempt + 1`: the server's Retry-After, else exponential with jitter."""
    try:
        if retry_after is not None and 0 <= float(retry_after) <= 60:
            return float(retry_after)
    except ValueError:
        pass
    return min(0.5 * 2 ** attempt, 8.0) * (1 - 0.25 * random.random())


def parse_completion(body: bytes) -> Completion:
    try:
        data = json.loads(body)
        text = data["choices"][0]["message"]["content"] or ""
        if not isinstance(text, str):
            raise TypeError
        usage = data.get("usage")
        return Completion(text, usage if isinstance(usage, dict) else None)
    except (ValueError, KeyError, IndexError, TypeError, RecursionError):
        # RecursionError: JSON nested deeper than the parser's stack.
        raise unreadable() from None
