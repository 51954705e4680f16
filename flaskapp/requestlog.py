"""One structured log line per request: what was asked, what happened, how long it took.

Streams end long after the view returns, so the record travels with the response
and is written once, by whoever finishes the request (the relay, or the teardown).
It never holds a secret: prompts and keys are not logged, only their outcome.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field

from flask import Flask, Response, g
from flask.signals import Namespace

# Sent with the record once a request is over, streamed or not: for metrics and accounting.
request_finished = Namespace().signal("flaskapp.request-finished")

log = logging.getLogger("flaskapp.requests")

# What became of a request.
COMPLETED = "completed"
CLIENT_DISCONNECTED = "client_disconnected"
UPSTREAM_ERROR = "upstream_error"
REJECTED = "rejected"


@dataclass
class RequestRecord:
    route: str
    method: str
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
        fields = {k: v for k, v in asdict(self).items()
                  if k not in ("started", "written") and v is not None}
        log.info(json.dumps({"event": "request", **fields}, separators=(",", ":")))
        request_finished.send(self)


def init_app(app: Flask) -> None:
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
        return response
