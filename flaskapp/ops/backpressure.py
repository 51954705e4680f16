"""Backpressure: a per-worker cap on concurrent upstream calls (`FLASKAPP_MAX_INFLIGHT`).

Past the cap a request is answered at once with 503 `server_overloaded` and a
`Retry-After`, instead of joining a queue with no bound (gunicorn would otherwise
keep accepting up to `worker_connections`, and each caller would wait on the model
server behind all the others). A load balancer retries the 503 on another worker.

A slot is taken when a view admits its request (`admit()`, from `web/admission.py`) and
held by the request's record, which gives it back once, when it is finished: for a
stream that is when the stream ends, not when the view returns. 0 means no cap.

For metrics: `limiter_for(app)` (or `app.extensions["backpressure"]`) is an `Inflight`
whose `in_flight`, `limit` and `rejected` are plain numbers, read at scrape time.
"""
from __future__ import annotations

from flask import Flask, current_app

from ..errors import ApiError
from .requestlog import RequestRecord

RETRY_AFTER = "1"  # seconds: a slot frees as soon as any stream on this worker ends


class Overloaded(ApiError):
    """503 server_overloaded: this worker already carries its cap of upstream calls."""

    status, type = 503, "server_overloaded"


class Slot:
    """One admitted request's place under the cap; given back once, however often released."""

    __slots__ = ("_inflight",)

    def __init__(self, inflight: "Inflight") -> None:
        self._inflight: Inflight | None = inflight

    def release(self) -> None:
        if self._inflight is not None:
            self._inflight.in_flight -= 1
            self._inflight = None


class Inflight:
    """The count of admitted requests on this worker. Single-threaded under gevent: no lock."""

    def __init__(self, limit: int) -> None:
        self.limit = limit  # 0: unlimited
        self.in_flight = 0
        self.rejected = 0  # requests turned away since start

    def take(self) -> Slot:
        if self.limit and self.in_flight >= self.limit:
            self.rejected += 1
            raise Overloaded("This server is at capacity; retry shortly.", retry_after=RETRY_AFTER)
        self.in_flight += 1
        return Slot(self)


def limiter_for(app: Flask) -> Inflight:
    """This app's (this worker's) limiter, made on first use."""
    limiter = app.extensions.get("backpressure")
    if limiter is None:
        limiter = app.extensions["backpressure"] = Inflight(app.config["MAX_INFLIGHT"])
    return limiter


def admit(record: RequestRecord) -> None:
    """Take a slot for this request, held by its record; or raise `Overloaded` (503 with Retry-After)."""
    record.slot = limiter_for(current_app).take()
