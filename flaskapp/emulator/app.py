"""An OpenAI-compatible chat-completions server that costs almost nothing per token.

It is a plain WSGI application (no framework on the per-token path) served by
gevent's pywsgi: one greenlet per connection, token pacing against a deadline so a
busy process sends late tokens together instead of drifting, and chunk bytes built
from pre-encoded pieces. Long waits watch the client socket, so a caller that hangs
up is counted as `aborted` within a few milliseconds, not at the next write.
"""
from __future__ import annotations

import json
import socket
import time
import uuid
from dataclasses import dataclass, field

import gevent
from gevent.socket import wait_read

from .faults import NO_FAULT, Fault, FaultQueue
from .text import answer_tokens, token_pool

MAX_BODY = 1 << 20


@dataclass
class EmulatorSettings:
    ttft: float = 1.0  # seconds before the first token
    tokens_per_second: float = 50.0
    tokens: int = 500  # answer length when the request sets no lower max_tokens
    seed: int = 0
    api_key: str | None = None  # when set, requests must carry it as a bearer token
    models: tuple[str, ...] = ("gpt-4", "gpt-4o", "gpt-4o-mini", "gpt-3.5-turbo")


@dataclass
class Stats:
    requests: int = 0
    streams_started: int = 0
    streams_completed: int = 0
    streams_aborted: int = 0  # the caller hung up before the end
    completions_started: int = 0
    completions_completed: int = 0
    completions_aborted: int = 0
    tokens_sent: int = 0
    in_flight: int = 0
    faults: dict[str, int] = field(default_factory=dict)


class ClientGone(Exception):
    """The caller closed its connection while we were waiting."""


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400, param: str | None = None):
        super().__init__(message)
        self.status, self.param = status, param


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
            404: "Not Found", 405: "Method Not Allowed", 413: "Payload Too Large",
            429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
            503: "Service Unavailable", 504: "Gateway Timeout"}
_ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                429: "rate_limit_error"}
_JSON = [("Content-Type", "application/json")]
_SSE = [("Content-Type", "text/event-stream; charset=utf-8"), ("Cache-Control", "no-cache")]


def _status_line(status: int) -> str:
    return f"{status} {_REASONS.get(status, 'Error')}"


def _error_body(status: int, message: str, param: str | None = None) -> bytes:
    error_type = _ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return json.dumps({"error": {"message": message, "type": error_type,
                                 "param": param, "code": None}}).encode()


class Emulator:
    """The WSGI application. `stats` and `faults` are public so tests and the CLI can read them."""

    def __init__(self, settings: EmulatorSettings | None = None) -> None:
        self.settings = settings or EmulatorSettings()
        self.stats = Stats()
        self.faults = FaultQueue()
        self.tokens, self.token_json = token_pool(self.settings.seed)

    # -- routing -----------------------------------------------------------
    def __call__(self, environ, start_response):
        self.stats.requests += 1
        path, method = environ.get("PATH_INFO", ""), environ["REQUEST_METHOD"]
        try:
            if path == "/v1/chat/completions":
                if method != "POST":
                    raise BadRequest(f"Method {method} not allowed", 405)
                self._authorize(environ)
                return self._chat(environ, start_response)
            if path == "/v1/models" and method == "GET":
                self._authorize(environ)
                data = [{"id": m, "object": "model", "created": 0, "owned_by": "emulator"}
                        for m in self.settings.models]
                return self._json(start_response, 200, {"object": "list", "data": data})
            if path == "/_emulator/stats" and method == "GET":
                return self._json(start_response, 200, self.stats.__dict__)
            if path == "/_emulator/faults" and method == "POST":
                values = self._read_json(environ)
                try:
                    fault = self.faults.arm(values) if values else self.faults.clear()
                except (TypeError, ValueError) as exc:
                    raise BadRequest(str(exc)) from None
                return self._json(start_response, 200, {"armed": (fault or NO_FAULT).__dict__})
            if path == "/_emulator/reset" and method == "POST":
                self.stats = Stats()
                self.faults.clear()
                return self._json(start_response, 200, {"reset": True})
            if path in ("/healthz", "/"):
                return self._json(start_response, 200, {"status": "ok"})
            raise BadRequest(f"Unknown path {path}", 404)
        except BadRequest as exc:
            start_response(_status_line(exc.status), list(_JSON))
            return [_error_body(exc.status, str(exc), exc.param)]

    def _json(self, start_response, status: int, payload: object):
        start_response(_status_line(status), list(_JSON))
        return [json.dumps(payload).encode()]

    def _authorize(self, environ) -> None:
        expected = self.settings.api_key
        if expected and environ.get("HTTP_AUTHORIZATION", "") != f"Bearer {expected}":
            raise BadRequest("Incorrect API key provided.", 401)

    @staticmethod
    def _read_json(environ) -> dict:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise BadRequest("Invalid Content-Length") from None
        if length > MAX_BODY:
            raise BadRequest("Request body too large", 413)
        raw = environ["wsgi.input"].read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            raise BadRequest("We could not parse the JSON body of your request.") from None
        if not isinstance(body, dict):
            raise BadRequest("The request body must be a JSON object.")
        return body

    # -- chat completions --------------------------------------------------
    def _chat(self, environ, start_response):
        body = self._read_json(environ)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
            raise BadRequest("'messages' must be a non-empty array of message objects.", param="messages")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("'model' is required.", param="model")
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
            raise BadRequest("'max_tokens' must be a positive integer.", param="max_tokens")
        count = self.settings.tokens if limit is None else min(limit, self.settings.tokens)
        finish_reason = "length" if limit is not None and limit < self.settings.tokens else "stop"

        header = environ.get("HTTP_X_EMULATOR_FAULT")
        try:
            fault = Fault.from_header(header) if header else self.faults.take()
        except (TypeError, ValueError) as exc:
            raise BadRequest(f"bad X-Emulator-Fault: {exc}") from None
        if fault is not NO_FAULT:
            kind = next(k for k, v in fault.__dict__.items() if v not in (None, 0.0))
            self.stats.faults[kind] = self.stats.faults.get(kind, 0) + 1
        if fault.status:
            headers = list(_JSON)
            if fault.retry_after is not None:
                headers.append(("Retry-After", f"{fault.retry_after:g}"))
            start_response(_status_line(fault.status), headers)
            return [_error_body(fault.status, f"Emulated upstream failure ({fault.status}).")]

        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages) + 4 * len(messages)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": count,
                 "total_tokens": prompt_tokens + count}
        indices = answer_tokens(self.settings.seed, messages, count)
        ttft = self.settings.ttft if fault.delay is None else fault.delay
        completion_id = "chatcmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        sock = environ.get("emulator.socket")
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            start_response("200 OK", list(_SSE))
            return self._stream(sock, fault, indices, ttft, model, completion_id, created,
                                finish_reason, usage if include_usage else None)
        return self._complete(sock, start_response, fault, indices, ttft, model,
                              completion_id, created, finish_reason, usage)

    def _complete(self, sock, start_response, fault, indices, ttft, model, completion_id,
                  created, finish_reason, usage):
        stats = self.stats
        stats.completions_started += 1
        stats.in_flight += 1
        try:
            self._wait(sock, ttft + len(indices) / self.settings.tokens_per_second + fault.stall)
        except ClientGone:
            stats.completions_aborted += 1
            return []
        finally:
            stats.in_flight -= 1
        text = "".join(self.tokens[i] for i in indices).lstrip()
        stats.completions_completed += 1
        stats.tokens_sent += len(indices)
        return self._json(start_response, 200, {
            "id": completion_id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "logprobs": None, "finish_reason": finish_reason}],
            "usage": usage})

    def _stream(self, sock, fault, indices, ttft, model, completion_id, created, finish_reason, usage):
        stats = self.stats
        stats.streams_started += 1
        stats.in_flight += 1
        head = (f'data: {{"id":"{completion_id}","object":"chat.completion.chunk","created":{created},'
                f'"model":{json.dumps(model)},"choices":[{{"index":0,"delta":').encode()
        token_json, interval = self.token_json, 1.0 / self.settings.tokens_per_second
        stall_at = -1 if fault.stall_after is None else fault.stall_after
        cut_at = -1 if fault.cut_after is None else fault.cut_after
        malformed_at = -1 if fault.malformed_after is None else fault.malformed_after
        finished = False
        try:
            self._wait(sock, ttft)
            start = time.monotonic()
            yield head + b'{"role":"assistant","content":""},"finish_reason":null}]}\n\n'
            sent, total = 0, len(indices)
            while sent < total:
                if sent == stall_at:
                    self._wait(sock, fault.stall)
                    start += fault.stall
                    stall_at = -1
                if sent == cut_at:
                    sock.shutdown(socket.SHUT_RDWR)
                    return
                if sent == malformed_at:
                    malformed_at = -1
                    yield b'data: {"id": "broken", "choices": [{"delta": {"content": \n\n'
                    continue
                # Everything due by now goes out in one write: a late process catches up
                # instead of drifting, and the stream's total time stays what was asked.
                due = min(total, int((time.monotonic() - start) / interval) + 1)
                for stop in (stall_at, cut_at, malformed_at):
                    if sent < stop < due:
                        due = stop
                if due <= sent:
                    gevent.sleep(start + sent * interval - time.monotonic())
                    continue
                pieces = []
                for position in range(sent, due):
                    index = indices[position]
                    content = (json.dumps(self.tokens[index].lstrip()).encode()
                               if position == 0 else token_json[index])
                    pieces.append(b'%s{"content":%s},"finish_reason":null}]}\n\n' % (head, content))
                stats.tokens_sent += due - sent
                sent = due
                yield b"".join(pieces)
            tail = head + b'{},"finish_reason":"%s"}]}\n\n' % finish_reason.encode()
            if usage is not None:
                tail += (head.split(b'"choices"')[0] + b'"choices":[],"usage":'
                         + json.dumps(usage).encode() + b"}\n\n")
            yield tail + b"data: [DONE]\n\n"
            finished = True
        except ClientGone:
            pass
        finally:
            stats.in_flight -= 1
            if finished:
                stats.streams_completed += 1
            else:
                stats.streams_aborted += 1

    @staticmethod
    def _wait(sock, seconds: float) -> None:
        """Sleep, but notice at once if the caller hangs up meanwhile."""
        if seconds <= 0:
            return
        if sock is None or seconds < 0.05:
            gevent.sleep(seconds)
            return
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                wait_read(sock.fileno(), timeout=remaining)
            except socket.timeout:
                return
            try:
                peeked = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue
            except OSError:
                raise ClientGone() from None
            if not peeked:
                raise ClientGone()
            # The caller sent more bytes (a pipelined request): nothing to watch any more.
            gevent.sleep(max(0.0, deadline - time.monotonic()))
            return
