"""The model server, through the official `openai` client. Knows nothing of Flask.

`Upstream.complete()` makes a blocking call; `Upstream.open_stream()` opens a
streaming one and returns a `ChatStream` once the upstream has answered with a
status, so failures before the first byte surface as exceptions, not as a broken
200. Both take the request's `Guard`, which may interrupt them when the client
leaves or the upstream goes silent.

The client is made lazily per process: gunicorn forks workers after loading the
config, and a connection pool must never be shared across a fork.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any, Iterator

import httpx2
import openai

from .chunks import ChunkParser, MalformedChunk
from .errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable, from_openai
from .guard import ClientGone, Guard, UpstreamSilent
from .params import ChatParams
from .transport import LeanTransport

# Through the client's own `post()`: its auth, retries and error mapping, without the
# per-call argument transformation of `chat.completions.create()` (half a millisecond).
CHAT_COMPLETIONS = "/chat/completions"


@dataclass(frozen=True)
class UpstreamSettings:
    connect_timeout: float = 5.0
    first_token_timeout: float = 60.0
    idle_timeout: float = 60.0
    request_timeout: float = 600.0
    max_retries: int = 2
    max_connections: int = 10_000
    transport: str = "lean"  # or "httpx": httpx's own transport (proxies, HTTP/2)

    @classmethod
    def from_config(cls, config: Any) -> "UpstreamSettings":
        return cls(config["CONNECT_TIMEOUT"], config["FIRST_TOKEN_TIMEOUT"], config["IDLE_TIMEOUT"],
                   config["REQUEST_TIMEOUT"], config["MAX_RETRIES"], config["UPSTREAM_MAX_CONNECTIONS"],
                   config["UPSTREAM_TRANSPORT"])


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

    @property
    def client(self) -> openai.OpenAI:
        if self._client is None or self._pid != os.getpid():
            options = dict(self._client_options)
            if "http_client" not in options and self.settings.transport == "lean":
                options["http_client"] = openai.DefaultHttpxClient(
                    transport=LeanTransport(max_idle_per_origin=self.settings.max_connections))
            elif "http_client" not in options:
                options["http_client"] = openai.DefaultHttpxClient(limits=httpx2.Limits(
                    max_connections=self.settings.max_connections, max_keepalive_connections=1000))
            self._client = openai.OpenAI(max_retries=self.settings.max_retries, **options)
            self._pid = os.getpid()
        return self._client

    @property
    def base_url(self) -> str:
        return str(self.client.base_url)

    def complete(self, body: dict[str, Any], guard: Guard) -> bytes:
        """The upstream's JSON answer to a blocking call, as the bytes it sent."""
        s = self.settings
        timeout = httpx2.Timeout(s.request_timeout, connect=s.connect_timeout)
        guard.waiting = True
        try:
            response = self.client.post(CHAT_COMPLETIONS, body=body, cast_to=httpx2.Response,
                                        options={"timeout": timeout})
            return response.content
        except openai.OpenAIError as exc:
            raise from_openai(exc) from None
        finally:
            guard.waiting = False

    def open_stream(self, body: dict[str, Any], guard: Guard) -> "ChatStream":
        s = self.settings
        # The client's read timeout is the backstop; the guard enforces the finer deadlines.
        timeout = httpx2.Timeout(max(s.first_token_timeout, s.idle_timeout), connect=s.connect_timeout)
        guard.waiting = True
        try:
            response = self.client.post(CHAT_COMPLETIONS, body={**body, "stream": True}, cast_to=httpx2.Response,
                                        stream=True, options={"timeout": timeout})
        except openai.OpenAIError as exc:
            raise from_openai(exc) from None
        except UpstreamSilent:
            raise UpstreamTimeout(
                f"The model server sent nothing within {s.first_token_timeout:g} s.") from None
        finally:
            guard.waiting = False
        return ChatStream(response, guard, s)


def chat_body(params: ChatParams, stream: bool = False) -> dict[str, Any]:
    """The chat-completions request body for a prompt view's request."""
    body: dict[str, Any] = {"model": params.model, "messages": params.messages()}
    if params.max_tokens is not None:
        body["max_tokens"] = params.max_tokens
    if params.temperature is not None:
        body["temperature"] = params.temperature
    if stream:
        body["stream_options"] = {"include_usage": True}  # for the `done` event and the log
    return body


def parse_completion(body: bytes) -> Completion:
    try:
        data = json.loads(body)
        choice = data["choices"][0]
        return Completion(choice["message"]["content"] or "", choice.get("finish_reason"), data.get("usage"))
    except (ValueError, KeyError, IndexError, TypeError):
        raise UpstreamError("The model server sent a response that could not be read.") from None


class ChatStream:
    """An open upstream stream. Iterate it for lists of content literals, one list per read."""

    def __init__(self, response: httpx2.Response, guard: Guard, settings: UpstreamSettings) -> None:
        self.response = response
        self.parser = ChunkParser()
        self._guard = guard
        self._settings = settings

    def close(self) -> None:
        self.response.close()

    def __iter__(self) -> Iterator[list[bytes]]:
        """Content literals, one list per upstream read that completed any."""
        for _, pieces in self._reads():
            if pieces:
                yield pieces

    def raw(self) -> Iterator[bytes]:
        """The upstream's bytes as they arrive, checked on the way through."""
        for data, _ in self._reads():
            yield data

    def _reads(self) -> Iterator[tuple[bytes, list[bytes]]]:
        guard, parser, idle = self._guard, self.parser, self._settings.idle_timeout
        reads = self.response.iter_bytes()
        started = False  # until the first read, the guard holds the first-token deadline
        try:
            while True:
                if guard.gone:
                    raise ClientGone()
                if started:
                    guard.deadline = time.monotonic() + idle
                guard.waiting = True
                try:
                    data = next(reads)
                except StopIteration:
                    break
                finally:
                    guard.waiting = False
                started = True
                pieces = parser.feed(data)
                if parser.error is not None:
                    raise UpstreamError(_error_message(parser.error))
                yield data, pieces
        except UpstreamSilent:
            what = "the next chunk" if started else "the first token"
            limit = self._settings.idle_timeout if started else self._settings.first_token_timeout
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
