"""The model server, behind one small interface. Knows nothing of Flask.

`Upstream.complete()` makes a blocking call; `Upstream.open_stream()` opens a
streaming one and returns a `ChatStream` once the upstream has answered with a
status, so failures before the first byte surface as exceptions, not as a broken
200. Both take the request's `Guard`, which may interrupt them when the client
leaves or the upstream goes silent.

The official `openai` client is the source of truth: it reads OPENAI_API_KEY,
OPENAI_BASE_URL, OPENAI_ORG_ID and OPENAI_PROJECT_ID as its users expect, and its
headers are the ones sent. On the default (`lean`) path the request those headers
make is composed once per process and sent over `LeanTransport`: the client's own
per-call machinery (option models, URL and header merging, the httpx request)
costs more CPU than relaying a whole answer, and it runs once per request. The
`httpx` path sends every request through `client.post()` instead, for what the lean
path leaves out: proxies, HTTP/2, credentials that change while the process runs. A
proxy set in the environment for the upstream's host stops the lean path at start-up,
rather than being silently bypassed.

A blocking call is bounded as a whole: `request_timeout` from its start to its last
byte, however slowly the bytes come, and `max_answer_bytes` of answer at most.

The client is made lazily per process: gunicorn forks workers after loading the
config, and a connection pool must never be shared across a fork.
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

from .stream import ChatStream
from ..config import ConfigError
from ..errors import (UpstreamError, UpstreamTimeout, UpstreamUnavailable, from_openai, from_status, unreachable,
                     unreadable)
from ..runtime.guard import Guard, UpstreamSilent
from .transport import Body, LeanTransport, MalformedResponse, Origin, proxy_variable

CHAT_COMPLETIONS = "/chat/completions"
T = TypeVar("T")


@dataclass(frozen=True)
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
    finish_reason: str | None
    usage: dict | None


class Upstream:
    def __init__(self, settings: UpstreamSettings, **client_options: Any) -> None:
        self.settings = settings
        self._client_options = client_options  # e.g. api_key, base_url, http_client (tests)
        self._client: openai.OpenAI | None = None
        self._pid = 0
        self._transport: LeanTransport | None = None
        self._endpoint: tuple[Origin, bytes] | None = None
        self._client_lock: tuple[int, threading.Lock] = (0, threading.Lock())
        if self._lean:
            _refuse_proxies(client_options.get("base_url") or os.environ.get("OPENAI_BASE_URL")
                            or "https://api.openai.com/v1")

    @property
    def client(self) -> openai.OpenAI:
        if self._client is None or self._pid != os.getpid():
            # The client's platform headers run `uname` in a subprocess, which yields under
            # gevent: without the lock every request of a first burst would run its own.
            # The lock is made in this process, so that it is gevent's where gevent patched.
            if self._client_lock[0] != os.getpid():
                self._client_lock = (os.getpid(), threading.Lock())
            with self._client_lock[1]:
                if self._client is None or self._pid != os.getpid():
                    self._make_client()
        return self._client

    def _make_client(self) -> None:
        options = dict(self._client_options)
        options.setdefault("http_client", openai.DefaultHttpxClient(limits=httpx2.Limits(
            max_connections=self.settings.max_connections, max_keepalive_connections=1000)))
        # Retries are ours (`_retrying`), on both paths: bounded by the request's deadline.
        client = openai.OpenAI(max_retries=0, **options)
        self._endpoint = self._compose_head(client)  # also fills the client's own header cache
        self._transport = LeanTransport(max_idle_per_origin=self.settings.max_connections)
        self._client, self._pid = client, os.getpid()

    @property
    def _lean(self) -> bool:
        return self.settings.transport == "lean" and "http_client" not in self._client_options

    def complete(self, body: dict[str, Any], guard: Guard) -> bytes:
        """The upstream's JSON answer to a blocking call, as the bytes it sent."""
        s = self.settings
        deadline = time.monotonic() + s.request_timeout
        if self._lean:
            response = self._retrying(lambda: self._send(body, s.request_timeout, deadline), guard, deadline)
            if response.length is not None and response.length > s.max_answer_bytes:
                response.close()
                raise _too_large(s.max_answer_bytes)
            pieces, close = iter(response), response.close
        else:
            timeout = httpx2.Timeout(s.request_timeout, connect=s.connect_timeout)
            response = self._retrying(lambda: self._post(body, timeout, stream=True), guard, deadline)
            pieces, close = response.iter_bytes(), response.close
        guard.waiting = True
        try:
            answer, size = [], 0
            for piece in pieces:
                size += len(piece)
                if size > s.max_answer_bytes:
                    raise _too_large(s.max_answer_bytes)
                if time.monotonic() > deadline:  # the lean body enforces it; httpx, only per read
                    raise httpx2.ReadTimeout("past the deadline")
                answer.append(piece)
            return b"".join(answer)
        except httpx2.TimeoutException:
            raise UpstreamTimeout(f"The model server did not answer within {s.request_timeout:g} s.") from None
        except (MalformedResponse, httpx2.DecodingError):
            raise _malformed() from None
        except httpx2.TransportError:
            raise UpstreamUnavailable("The model server dropped the connection.") from None
        finally:
            guard.waiting = False
            close()

    def open_stream(self, body: dict[str, Any], guard: Guard) -> ChatStream:
        s = self.settings
        body = {**body, "stream": True}
        # The guard, when active, enforces the first-token and idle deadlines precisely;
        # the socket's read timeout is the backstop where it cannot.
        backstop = max(s.first_token_timeout, s.idle_timeout)
        try:
            if self._lean:
                read_timeout = None if guard.active else backstop
                response = self._retrying(lambda: self._send(body, read_timeout), guard, guard.deadline)
                reads, close = iter(response), response.close
            else:
                timeout = httpx2.Timeout(backstop, connect=s.connect_timeout)
                response = self._retrying(lambda: self._post(body, timeout, stream=True), guard, guard.deadline)
                reads, close = response.iter_bytes(), response.close
        except UpstreamSilent:
            raise UpstreamTimeout(f"The model server sent nothing within {s.first_token_timeout:g} s.") from None
        return ChatStream(reads, close, guard, s)

    def _retrying(self, attempt: Callable[[], T], guard: Guard, deadline: float) -> T:
        """Retry where it is safe: before any answer, on connection errors, 429 and 5xx, with
        backoff or the upstream's Retry-After, and never past the request's deadline."""
        tries = 0
        while True:
            guard.waiting = True  # a client leaving during the call or the pause ends it
            try:
                try:
                    return attempt()
                except UpstreamError as error:
                    delay = _backoff(tries, error.retry_after)
                    if (not error.retryable or tries >= self.settings.max_retries
                            or time.monotonic() + delay > deadline):
                        raise
                tries += 1
                time.sleep(delay)
            finally:
                guard.waiting = False

    # -- the httpx path: everything through the client ------------------------
    def _post(self, body: dict[str, Any], timeout: httpx2.Timeout, stream: bool = False) -> httpx2.Response:
        try:
            return self.client.post(CHAT_COMPLETIONS, body=body, cast_to=httpx2.Response,
                                    stream=stream, options={"timeout": timeout, "max_retries": 0})
        except openai.OpenAIError as exc:
            raise from_openai(exc) from None

    # -- the lean path ------------------------------------------------------
    def _request_head(self) -> tuple[Origin, bytes]:
        """The request line and the client's headers, composed once per process."""
        self.client  # made, with the head, once per process
        return self._endpoint

    @staticmethod
    def _compose_head(client: openai.OpenAI) -> tuple[Origin, bytes]:
        """The request line and the client's headers for a chat completion."""
        url = client.base_url
        target = url.path.rstrip("/") + CHAT_COMPLETIONS + (f"?{url.query.decode()}" if url.query else "")
        headers = {**client.default_headers, **client.auth_headers}
        # The body is read as it comes, undecoded: the client's headers ask for no compression
        # (httpx adds its own Accept-Encoding), and "identity" says so explicitly.
        lines = [f"POST {target} HTTP/1.1", f"Host: {url.netloc.decode()}", "Connection: keep-alive",
                 "Accept-Encoding: identity"]
        lines += [f"{name}: {value}" for name, value in headers.items()
                  if isinstance(value, str) and name.lower() != "accept-encoding"]
        origin = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        return origin, ("\r\n".join(lines) + "\r\n").encode("latin-1")

    def _send(self, body: dict[str, Any], read_timeout: float | None, deadline: float | None = None) -> Body:
        """POST the body over the lean transport; the response's body once its status is 2xx."""
        s = self.settings
        origin, head = self._request_head()
        payload = json.dumps(body, separators=(",", ":")).encode()
        timeouts = {"connect": s.connect_timeout, "write": s.connect_timeout, "read": read_timeout}
        try:
            status, _, headers, response = self._transport.send(
                origin, head + b"Content-Length: %d\r\n\r\n" % len(payload), payload, timeouts, deadline)
        except httpx2.TimeoutException:
            raise UpstreamTimeout("The model server did not answer in time.") from None
        except MalformedResponse:
            raise _malformed() from None
        except httpx2.TransportError:
            raise unreachable() from None
        if not 200 <= status < 300:  # a redirect, too, is an error: its body is no answer
            response.close()
            raise from_status(status, _header(headers, b"retry-after"))
        if response.content_coding not in (None, b"identity"):
            response.close()
            raise UpstreamError("The model server compressed its answer, which it was not asked to do.")
        return response


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _malformed() -> UpstreamError:
    return UpstreamError("The model server sent a malformed HTTP response.")


def _too_large(limit: int) -> UpstreamError:
    return UpstreamError(f"The model server's answer was larger than {limit} bytes.")


def _refuse_proxies(base_url: str) -> None:
    """The lean transport connects directly: a proxy asked for in the environment stops it."""
    url = httpx2.URL(str(base_url))
    variable = proxy_variable(url.scheme, url.host, url.port)
    if variable:  # its value is not quoted: it may hold a password
        raise ConfigError(f"{variable} is set and applies to the upstream {url.host}, but the lean upstream "
                          "transport does not use proxies: set FLASKAPP_UPSTREAM_TRANSPORT=httpx to go through "
                          "the proxy, or add the host to NO_PROXY to connect directly.")


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
        choice = data["choices"][0]
        text = choice["message"]["content"] or ""
        if not isinstance(text, str):
            raise TypeError
        usage = data.get("usage")
        return Completion(text, choice.get("finish_reason"), usage if isinstance(usage, dict) else None)
    except (ValueError, KeyError, IndexError, TypeError, RecursionError):
        # RecursionError: JSON nested deeper than the parser's stack.
        raise unreadable() from None
