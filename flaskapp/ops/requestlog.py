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

import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from flask import Response, g, has_app_context, request
from flask.signals import Namespace

# What became of a request: defined with the errors that lead to each, re-exported here.
from ..errors import CLIENT_DISCONNECTED, COMPLETED, REJECTED, UPSTREAM_ERROR  # noqa: F401
from .policy import GUARDED, Policy

if TYPE_CHECKING:
    from ..errors import ApiError

# Sent with the record once a request is over, streamed or not: for metrics and accounting.
request_finished = Namespace().signal("flaskapp.request-finished")

log = logging.getLogger("flaskapp.requests")

REQUEST_ID_HEADER = "X-Request-ID"
# A caller's id is kept only when it cannot forge or bloat a log line.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
# Not logged: state for the request, never a line.
_PRIVATE = frozenset({"started", "written", "failure", "key_id", "slot", "closers"})


class Fields(dict):
    """A log record's fields: JSON formatters (ops/logformat.py) take them as they are; any other
    formatter, and `getMessage()`, gets them as one compact JSON text."""

    def __str__(self) -> str:
        return json.dumps(self, separators=(",", ":"))


def _current_request_id() -> str | None:
    return g.get("request_id") if has_app_context() else None


@dataclass
class RequestRecord:
    route: str
    method: str
    request_id: str | None = field(default_factory=_current_request_id)
    model: str | None = None
    status: int | None = None
    outcome: str | None = None
    error: str | None = None
    time_to_first_token: float | None = None  # streams: the upstream's first content arrived
    time_to_first_byte: float | None = None
    total_time: float | None = None
    bytes: int = 0
    chunks: int = 0
    prompt_tokens: int | None = None
    tokens: int | None = None  # completion tokens
    started: float = field(default_factory=time.monotonic, repr=False)
    written: bool = field(default=False, repr=False)
    failure: "ApiError | None" = field(default=None, repr=False)  # the error handlers' answer
    key_id: str | None = field(default=None, repr=False)  # auth's name for the gateway key
    slot: Any = field(default=None, repr=False)  # backpressure's, given back on finish
    closers: list[Callable[[], None]] = field(default_factory=list, repr=False)  # run on close

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
        # vars(), not dataclasses.asdict(): no deep copy on every request.
        if log.isEnabledFor(logging.INFO):
            fields = Fields(event="request", **{k: v for k, v in vars(self).items()
                                                if v is not None and k not in _PRIVATE})
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


def request_id_of(header: str | None) -> str:
    """The caller's request id when it is sane, else a new one."""
    if header and _SANE_REQUEST_ID.fullmatch(header):
        return header
    return os.urandom(16).hex()  # as random as a uuid4's hex, without making a UUID


def current_record() -> RequestRecord | None:
    """This request's record; None for routes not logged (and outside a request)."""
    return g.get("record") if has_app_context() else None


def start(policies: dict[str | None, Policy]) -> Callable[[], None]:
    """The first request step: the request id, and the record for a logged route."""

    def start_record() -> None:
        g.request_id = request_id_of(request.environ.get("HTTP_X_REQUEST_ID"))  # no Headers object
        if policies.get(request.endpoint, GUARDED).logged and request.method != "OPTIONS":
            rule = request.url_rule
            g.record = RequestRecord(route=rule.rule if rule else "(unmatched)", method=request.method)

    return start_record


def end(response: Response) -> Response:
    """The last response step: echo the request id; finish the record, or hand it to the close."""
    if "request_id" in g:
        response.headers[REQUEST_ID_HEADER] = g.request_id
    record = g.get("record")
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
