"""How a chat-completion request reaches the model server: one interface, two transports.

`Transport.send()` POSTs a request body and returns the `Answer` once the upstream has
answered 2xx; before that, every failure is an `UpstreamError` of errors.py (a status
through `from_status`). The answer's pieces raise httpx's transport exceptions, which
the caller maps (client.py, stream.py), so both transports fail alike.

- `LeanTransport`, the default: the `openai` client's request line and headers, composed
  once per process, sent over `ConnectionPool` (http11.py). The client's own per-call
  machinery (option models, URL and header merging, the httpx request) costs more CPU
  than relaying a whole answer. It connects directly: a proxy asked for in the
  environment for the upstream's host stops it at start-up (`refuse_proxies`), rather
  than being silently bypassed.
- `HttpxTransport` (FLASKAPP_UPSTREAM_TRANSPORT=httpx): every request through the
  client's `post()`, for what the lean one leaves out: proxies, HTTP/2, credentials that
  change while the process runs.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, NamedTuple, Protocol

import httpx2
import openai

from ..config import ConfigError
from ..errors import UpstreamError, UpstreamTimeout, from_openai, from_status, malformed, unreachable
from .events import compact_json
from .http11 import ConnectionPool, MalformedResponse, Origin, proxy_variable
from .httpbody import Body

CHAT_COMPLETIONS = "/chat/completions"
# The other endpoints /v1 relays; a request head is composed once per path.
PATHS = (CHAT_COMPLETIONS, "/completions", "/embeddings", "/responses")


class Answer(NamedTuple):
    pieces: Iterator[bytes]  # the body as it arrives
    close: Callable[[], None]
    length: int | None  # the declared Content-Length, where known
    body: Body | None = None  # the lean transport's body, which a stream reads itself


class Transport(Protocol):
    def send(self, body: dict[str, Any], *, read_timeout: float | None,
             deadline: float | None = None, path: str = CHAT_COMPLETIONS) -> Answer:
        """POST `body`; the answer once its status is 2xx. `read_timeout` bounds each read
        (None: none), `deadline` (monotonic time), when given, the whole exchange."""


class LeanTransport:
    def __init__(self, client: openai.OpenAI, *, connect_timeout: float, max_idle_per_origin: int) -> None:
        self._origin, self._head = _compose_head(client)
        self._heads = {path: _compose_head(client, path)[1] for path in PATHS}
        self._connect_timeout = connect_timeout
        self.pool = ConnectionPool(max_idle_per_origin=max_idle_per_origin)

    def warm(self) -> None:
        self.pool.warm(self._origin)

    def send(self, body: dict[str, Any], *, read_timeout: float | None,
             deadline: float | None = None, path: str = CHAT_COMPLETIONS) -> Answer:
        payload = compact_json(body).encode()
        head = self._head if path is CHAT_COMPLETIONS else self._heads[path]
        timeouts = {"connect": self._connect_timeout, "write": self._connect_timeout, "read": read_timeout}
        try:
            status, _, headers, response = self.pool.send(
                self._origin, head + b"Content-Length: %d\r\n\r\n" % len(payload), payload, timeouts, deadline)
        except httpx2.TimeoutException:
            raise UpstreamTimeout("The model server did not answer in time.") from None
        except MalformedResponse:
            raise malformed() from None
        except httpx2.TransportError:
            raise unreachable() from None
        if not 200 <= status < 300:  # a redirect, too, is an error: its body is no answer
            response.close()
            raise from_status(status, _header(headers, b"retry-after"))
        if response.content_coding not in (None, b"identity"):
            response.close()
            raise UpstreamError("The model server compressed its answer, which it was not asked to do.")
        return Answer(iter(response), response.close, response.length, response)


class HttpxTransport:
    def __init__(self, client: openai.OpenAI, *, connect_timeout: float) -> None:
        self._client, self._connect_timeout = client, connect_timeout

    def send(self, body: dict[str, Any], *, read_timeout: float | None,
             deadline: float | None = None, path: str = CHAT_COMPLETIONS) -> Answer:
        # httpx bounds each read only: the caller checks `deadline` between pieces.
        timeout = httpx2.Timeout(read_timeout, connect=self._connect_timeout)
        try:
            response = self._client.post(path, body=body, cast_to=httpx2.Response, stream=True,
                                         options={"timeout": timeout, "max_retries": 0})
        except openai.OpenAIError as exc:
            raise from_openai(exc) from None
        return Answer(response.iter_bytes(), response.close, None)


def _compose_head(client: openai.OpenAI, path: str = CHAT_COMPLETIONS) -> tuple[Origin, bytes]:
    """The request line and the client's headers for a POST to `path` (a chat completion by default)."""
    url = client.base_url
    target = url.path.rstrip("/") + path + (f"?{url.query.decode()}" if url.query else "")
    headers = {**client.default_headers, **client.auth_headers}
    # The body is read as it comes, undecoded: the client's headers ask for no compression
    # (httpx adds its own Accept-Encoding), and "identity" says so explicitly.
    lines = [f"POST {target} HTTP/1.1", f"Host: {url.netloc.decode()}", "Connection: keep-alive",
             "Accept-Encoding: identity"]
    lines += [f"{name}: {value}" for name, value in headers.items()
              if isinstance(value, str) and name.lower() != "accept-encoding"]
    origin = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
    return origin, ("\r\n".join(lines) + "\r\n").encode("latin-1")


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def refuse_proxies(base_url: str) -> None:
    """The lean transport connects directly: a proxy asked for in the environment stops it."""
    url = httpx2.URL(str(base_url))
    variable = proxy_variable(url.scheme, url.host, url.port)
    if variable:  # its value is not quoted: it may hold a password
        raise ConfigError(f"{variable} is set and applies to the upstream {url.host}, but the lean upstream "
                          "transport does not use proxies: set FLASKAPP_UPSTREAM_TRANSPORT=httpx to go through "
                          "the proxy, or add the host to NO_PROXY to connect directly.")
