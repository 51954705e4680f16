"""One structured log line per request: what was asked, what happened, how long it took.

Streams end long after the view returns, so the record travels with the response
and is written once, by whoever finishes the request (the relay, or the teardown).
It never holds a secret: prompts and keys are not logged, only their outcome.

Every request gets an id (the caller's `X-Request-ID` when it is sane, else a new
one), echoed in the response and written in its line. Every request but the probes,
the metrics scrape and static files gets a record from the start, so one rejected
before any view runs (401, 429, 404) is logged and counted too; the views fill it in.
"""
from __future__ import annotations

import json
import logging
import re
import time
import uuid
from dataclasses import dataclass, field

from flask import Flask, Response, g, has_app_context, request
from flask.signals import Namespace

# What became of a request: defined with the errors that lead to each, re-exported here.
from ..errors import CLIENT_DISCONNECTED, COMPLETED, REJECTED, UPSTREAM_ERROR  # noqa: F401

# Sent with the record once a request is over, streamed or not: for metrics and accounting.
request_finished = Namespace().signal("flaskapp.request-finished")

log = logging.getLogger("flaskapp.requests")

REQUEST_ID_HEADER = "X-Request-ID"
# A caller's id is kept only when it cannot forge or bloat a log line.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
# Asked every few seconds by machines: counting them would drown the requests that matter.
# (CORS preflights, OPTIONS, are not recorded either.)
UNRECORDED_ENDPOINTS = frozenset({"health.healthz", "health.readyz", "metrics.metrics", "static"})


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
    time_to_first_byte: float | None = None
    total_time: float | None = None
    bytes: int = 0
    chunks: int = 0
    tokens: int | None = None
    started: float = field(default_factory=time.monotonic, repr=False)
    written: bool = field(default=False, repr=False)

    def elapsed(self) -> float:
        return round(time.monotonic() - self.started, 4)

    def first_byte(self) -> None:
        if self.time_to_first_byte is None:
            self.time_to_first_byte = self.elapsed()

    def finish(self, outcome: str, error: str | None = None) -> None:
        if self.written:
            return
        self.written = True
        self.outcome, self.error = outcome, error
        self.total_time = self.elapsed()
        # vars(), not dataclasses.asdict(): no deep copy on every request.
        fields = {k: v for k, v in vars(self).items() if v is not None and k not in ("started", "written")}
        log.info(json.dumps({"event": "request", **fields}, separators=(",", ":")))
        request_finished.send(self)


def request_id_of(header: str | None) -> str:
    """The caller's request id when it is sane, else a new one."""
    if header and _SANE_REQUEST_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


def init_app(app: Flask) -> None:
    """Call before anything else that adds request hooks: ours must run first."""

    @app.before_request
    def start_record() -> None:
        g.request_id = request_id_of(request.headers.get(REQUEST_ID_HEADER))
        if request.endpoint not in UNRECORDED_ENDPOINTS and request.method != "OPTIONS":
            rule = request.url_rule
            g.record = RequestRecord(route=rule.rule if rule else "(unmatched)", method=request.method)

    @app.after_request
    def echo_request_id(response: Response) -> Response:
        if "request_id" in g:
            response.headers[REQUEST_ID_HEADER] = g.request_id
        return response

    @app.after_request
    def finish_record(response: Response) -> Response:
        # Streamed responses are finished by their relay, when the stream ends.
        record = g.get("record")
        if record is not None and not response.is_streamed:
            record.status = response.status_code
            record.first_byte()
            record.bytes = response.content_length or 0
            error = g.get("error")
            if error is None:
                record.finish(COMPLETED)
            else:
                record.finish(getattr(error, "outcome", REJECTED), error.type)
        elif record is not None:
            # A body the server closes before the view's generator ever ran never
            # finishes its own record: finish it here (a no-op when it did).
            def finish_unfinished() -> None:
                if not record.written:
                    record.status = record.status or response.status_code
                    record.finish(CLIENT_DISCONNECTED)
            response.call_on_close(finish_unfinished)
        return response
