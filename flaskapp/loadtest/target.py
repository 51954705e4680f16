"""What each kind of request asks, as the exact bytes sent: built once per run, not per request."""
from __future__ import annotations

import json
import ssl
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

# block, stream, stream-sse: the app's views; openai-*: any OpenAI-compatible server (the emulator too).
KINDS = ("block", "stream", "stream-sse", "openai-block", "openai-stream")


@dataclass(frozen=True)
class Target:
    """What to ask: a base URL and the request shape of each kind."""
    base_url: str
    prompt: str = "Write a short story about a lighthouse keeper."
    max_tokens: int | None = None
    model: str = "gpt-4"  # the service's default model, always on its allow-list
    api_key: str | None = None  # sent as a bearer token; openai-* kinds send a dummy one without it
    cafile: str | None = None  # https: trust this certificate (or bundle) instead of the system's
    verify: bool = True  # https: check the server's certificate and name

    @property
    def https(self) -> bool:
        return urlsplit(self.base_url).scheme == "https"

    def tls_context(self) -> ssl.SSLContext:
        """The client side of an https:// target's TLS: the system's CAs, or `cafile`, or none checked."""
        context = ssl.create_default_context(cafile=self.cafile)
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def request_bytes(self, kind: str) -> bytes:
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"only http:// and https:// URLs are supported, not {self.base_url!r}")
        prefix = parts.path.rstrip("/")
        host = parts.netloc
        headers = {"Host": host, "User-Agent": "flaskapp-loadtest", "Connection": "close"}
        body = b""
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        if kind in ("block", "stream", "stream-sse"):
            query = "prompt=" + quote(self.prompt)
            if self.model != Target.model:  # the service's default needs no asking
                query += "&model=" + quote(self.model)
            if self.max_tokens is not None:
                query += f"&max_tokens={self.max_tokens}"
            path = prefix + ("/" if kind == "block" else "/stream")
            if kind == "stream-sse":
                query += "&format=sse"
                headers["Accept"] = "text/event-stream"
            method, target = "GET", f"{path}?{query}"
        elif kind in ("openai-block", "openai-stream"):
            payload: dict = {"model": self.model, "messages": [{"role": "user", "content": self.prompt}],
                             "stream": kind == "openai-stream"}
            if kind == "openai-stream":  # the server's own token count, in a last chunk
                payload["stream_options"] = {"include_usage": True}
            if self.max_tokens is not None:
                payload["max_tokens"] = self.max_tokens
            body = json.dumps(payload).encode()
            method, target = "POST", prefix + "/v1/chat/completions"
            headers.update({"Content-Type": "application/json", "Content-Length": str(len(body)),
                            "Authorization": f"Bearer {self.api_key or 'sk-loadtest'}"})
        else:
            raise ValueError(f"unknown kind {kind!r}; choose from {', '.join(KINDS)}")
        head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        return head.encode("latin-1") + b"\r\n" + body

    @property
    def address(self) -> tuple[str, int]:
        parts = urlsplit(self.base_url)
        return parts.hostname or "127.0.0.1", parts.port or (443 if parts.scheme == "https" else 80)
