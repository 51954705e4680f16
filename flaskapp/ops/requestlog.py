"""One structured log line per request: what was asked, what happened, how long it took.

The record is the request's state, with one owner per fact: made here, before any
other hook; auth writes the key's id, the error handlers the refusal, the views the
model and tokens, backpressure's slot is held here and given back when it finishes.
Streams end long after the view returns, so the record travels with the response and
is finished once: by the relay when its stream ends, else when the server closes the
response (one `call_on_close`, `RequestRecord.close`), else at once for a plain body.
It never holds a secret: prompts and keys are not logged, only their outcome.

Every request gets an id (the caller's `X-Request-ID` when it is sane, else a new
one), echoed in the response and written in its line. Every request to a logged route
(ops/policy.py) gets a record from the start, so one rejected before any view runs
(401, 429, 404) is logged and counted too. CORS preflights (OPTIONS) are not logged.
"""
from __future__ import annotations

import logging
import random
import re
import time
from typing import TYPE_CHECKING, Any, Callable

from flask import Response, g, has_app_context, request
from flask.signals import Namespace

# What became of a request: defined with the errors that lead to each, re-exported here.
from ..errors import CLIENT_DISCONNECTED, COMPLETED, REJECTED, UPSTREAM_ERROR  # noqa: F401
from .logformat import BufferedLines, Fields, direct_handler
from .policy import GUARDED, Policy

if TYPE_CHECKING:
    from ..errors import ApiError

# Sent with the record once a request is over, streamed or not: for metrics and accounting.
request_finished = Namespace().signal("flaskapp.request-finished")

log = logging.getLogger("flaskapp.requests")

REQUEST_ID_HEADER = "X-Request-ID"
# A caller's id is kept only when it cannot forge or bloat a log line.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


# The line's fields, in order: the record's public state. The rest is state for the request.
LOGGED = ("route", "method", "request_id", "model", "status", "outcome", "error", "time_to_first_token",
          "time_to_first_byte", "total_time", "bytes", "chunks", "prompt_tokens", "tokens")


class RequestRecord:
    """One request's state, made once and finished once: slots, not a dict, as every request pays for it."""

    __slots__ = (*LOGGED, "started", "written", "failure", "key_id", "slot", "closers")

    def __init__(self, route: str, method: str, request_id: str | None = None) -> None:
        self.route, self.method, self.request_id = route, method, request_id
        self.model = self.status = self.outcome = self.error = None
        self.time_to_first_token = None  # streams: the upstream's first content arrived
        self.time_to_first_byte = self.total_time = None
        self.bytes = self.chunks = 0
        self.prompt_tokens = self.tokens = None  # tokens: completion tokens
        self.started = time.monotonic()
        self.written = False
        self.failure: "ApiError | None" = None  # the error handlers' answer
        self.key_id: str | None = None  # auth's name for the gateway key
        self.slot: Any = None  # backpressure's, given back on finish
        self.closers: list[Callable[[], None]] = []  # run on close

    def __repr__(self) -> str:
        return f"RequestRecord({', '.join(f'{name}={getattr(self, name)!r}' for name in LOGGED)})"

    def elapsed(self) -> float:
        return round(time.monotonic() - self.started, 4)

    def first_token(self) -> None:
        if self.time_to_first_token is None:
            self.time_to_first_token = self.elapsed()

    def first_byte(self) -> None:
        if self.time_to_first_byte is None:
            self.time_to_first_byte = self.elapsed()

    def count_usage(self, usage: dict[str, Any] | None, completion_tokens: int | None = None) -> None:
        """The upstream's token counts (OpenAI's `usage`, or the Responses API's input and output
        tokens); `completion_tokens` when it sent none."""
        usage = usage or {}
        self.prompt_tokens = usage.get("prompt_tokens", usage.get("input_tokens"))
        self.tokens = usage.get("completion_tokens", usage.get("output_tokens", completion_tokens))

    def finish(self, outcome: str, error: str | None = None) -> None:
        if self.written:
            return
        self.written = True
        self.outcome, self.error = outcome, error
        self.total_time = self.elapsed()
        if self.slot is not None:
            self.slot.release()
        direct = _direct[0]
        if direct is not None or log.isEnabledFor(logging.INFO):
            fields = Fields(event="request")
            for name in LOGGED:
                value = getattr(self, name)
                if value is not None:
                    fields[name] = value
            if direct is not None:
                direct.write_fields(fields, log.name)
            else:
                # makeRecord and handle, not info(): no walk up the stack for a caller nobody logs.
                log.handle(log.makeRecord(log.name, logging.INFO, __file__, 0, fields, None, None))
        request_finished.send(self)

    def close(self) -> None:
        """The streamed response's one close hook: its closers, then the record if still open."""
        for closer in self.closers:
            closer()
        # A body the server closes before the view's generator ever ran never finished it.
        if not self.written:
            self.finish(CLIENT_DISCONNECTED)


_direct: list["BufferedLines | None"] = [None]


def write_directly() -> None:
    """Once logging is set up (under gunicorn): hand the request lines straight to the one handler
    they would reach, when that is the same as logging them (`logformat.direct_handler`); a line
    a request is the hot path's, and a `LogRecord` and `Logger.handle` are most of its cost."""
    _direct[0] = direct_handler(log)


def request_id_of(header: str | None) -> str:
    """The caller's request id when it is sane, else a new one."""
    if header and _SANE_REQUEST_ID.fullmatch(header):
        return header
    # 128 random bits, as a uuid4's hex, from the worker's generator (reseeded on fork): no
    # system call, no UUID object.
    return "%032x" % random.getrandbits(128)


def current_record() -> RequestRecord | None:
    """This request's record; None for routes not logged (and outside a request)."""
    return g.get("record") if has_app_context() else None


def start(policies: dict[str | None, Policy]) -> Callable[[], None]:
    """The first request step: the request id, and the record for a logged route."""

    def start_record() -> None:
        req = request._get_current_object()  # one lookup through the proxy, not five
        g.request_id = request_id = request_id_of(req.environ.get("HTTP_X_REQUEST_ID"))  # no Headers object
        if policies.get(req.endpoint, GUARDED).logged and req.method != "OPTIONS":
            rule = req.url_rule
            g.record = RequestRecord(rule.rule if rule else "(unmatched)", req.method, request_id)

    return start_record


def end(response: Response) -> Response:
    """The last response step: echo the request id; finish the record, or hand it to the close."""
    state = g._get_current_object()  # one lookup through the proxy
    request_id = state.get("request_id")
    if request_id is not None:
        response.headers[REQUEST_ID_HEADER] = request_id
    record = state.get("record")
    if record is None:
        return response
    if response.is_streamed:
        record.status = record.status or response.status_code
        response.call_on_close(record.close)  # the relay finishes it first when the stream ends
    else:
        record.status = response.status_code
        record.first_byte()
        record.bytes = response.content_length or 0
        failure = record.failure
        if failure is None:
            record.finish(COMPLETED)
        else:
            record.finish(getattr(failure, "outcome", REJECTED), failure.type)
    return response
