"""`GET /metrics`: Prometheus text format, summed over every gunicorn worker.

Under gunicorn, gunicorn.conf.py sets `PROMETHEUS_MULTIPROC_DIR` before any worker
starts, and each worker writes its samples to files there; a scrape, whichever worker
answers it, adds them all up (prometheus_client's multiprocess mode). Without it (the
Flask dev server, tests) the process's own registry is served.

Fed from one place, `requestlog.request_finished`: one update per request when its
record is finished, never per chunk. Only the in-flight gauge needs a response step: a
stream counts from the moment its response is returned until the server closes it
(the record's close, its one close hook).

A gevent worker sums its requests' observations in memory and writes them to its files
at most `FLUSH_AFTER` seconds later (one write per series and bucket touched, however
many requests touched it), before it answers a scrape, and at exit: eleven locked file
writes per request were a tenth of a one-token request's CPU. A scrape may so miss the
last tenth of a second of the other workers' requests, and a worker killed outright
loses at most that much. Elsewhere (gunicorn's other workers, the dev server, tests)
each request's observations are written at once.

    flaskapp_requests_total{route,status,outcome,model}            counter
    flaskapp_streams_in_flight{route}                              gauge (live workers summed)
    flaskapp_time_to_first_token_seconds{route,model}              histogram, streams: the upstream's first content
    flaskapp_time_per_output_token_seconds{route,model}            histogram, streams: after the first token, per token
    flaskapp_time_to_first_byte_seconds{route,model}               histogram, successful requests
    flaskapp_request_duration_seconds{route,model}                 histogram, every request
    flaskapp_prompt_tokens_total{route,model}                      counter; the upstream's usage
    flaskapp_completion_tokens_total{route,mode,model}             counter; mode "stream" or "blocking"
    flaskapp_client_disconnects_total{route}                       counter
    flaskapp_upstream_errors_total{kind}                           counter; kind is the error type
    flaskapp_rate_limited_total{route}                             counter; our own 429s, not the upstream's
    flaskapp_worker_starts_total, flaskapp_workers, flaskapp_worker_warmup_seconds   workers (ours)

Routes are URL rules (`/v1/chat/completions`, `(unmatched)` for 404s), never raw
paths, and models only those on an app's allow-list (any other, or none, is ""), so
label values stay few. Probes, scrapes and static files are not counted.
"""
from __future__ import annotations

import atexit
import os
from bisect import bisect_left
from functools import lru_cache
from typing import Any

from flask import Blueprint, Flask, Response, request
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

from ..runtime.gevent_io import call_later
from .policy import policy
from .requestlog import (CLIENT_DISCONNECTED, REJECTED, UPSTREAM_ERROR, RequestRecord, current_record,
                         request_finished)

bp = Blueprint("metrics", __name__)

# Buckets as vLLM's, so its dashboards' panels read these too.
TOKEN_LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                         7.5, 10.0, 20.0, 40.0, 80.0)
OUTPUT_TOKEN_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
                        10.0, 20.0, 40.0, 80.0)

REQUESTS = Counter("flaskapp_requests", "Requests finished, by route, status, outcome and model.",
                   ["route", "status", "outcome", "model"])
STREAMS_IN_FLIGHT = Gauge("flaskapp_streams_in_flight", "Streamed responses being sent now.",
                          ["route"], multiprocess_mode="livesum")
TIME_TO_FIRST_TOKEN = Histogram(
    "flaskapp_time_to_first_token_seconds", "From the request to the upstream's first streamed content.",
    ["route", "model"], buckets=TOKEN_LATENCY_BUCKETS)
TIME_PER_OUTPUT_TOKEN = Histogram(
    "flaskapp_time_per_output_token_seconds", "A stream's time after its first token, per further token.",
    ["route", "model"], buckets=OUTPUT_TOKEN_BUCKETS)
TIME_TO_FIRST_BYTE = Histogram(
    "flaskapp_time_to_first_byte_seconds", "From the request to the first byte of the answer.", ["route", "model"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60))
DURATION = Histogram(
    "flaskapp_request_duration_seconds", "From the request to its last byte.", ["route", "model"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600))
PROMPT_TOKENS = Counter("flaskapp_prompt_tokens", "Prompt tokens sent to the model (its usage).", ["route", "model"])
TOKENS = Counter("flaskapp_completion_tokens", "Completion tokens answered.", ["route", "mode", "model"])
CLIENT_DISCONNECTS = Counter("flaskapp_client_disconnects", "Clients that left before their answer ended.",
                             ["route"])
UPSTREAM_ERRORS = Counter("flaskapp_upstream_errors", "Requests failed by the model server, by kind.", ["kind"])
RATE_LIMITED = Counter("flaskapp_rate_limited", "Requests refused by this gateway's rate limit.", ["route"])

WORKER_STARTS = Counter("flaskapp_worker_starts", "Workers started (recycled ones included).")
WORKERS = Gauge("flaskapp_workers", "Live workers.", multiprocess_mode="livesum")
WORKER_WARMUP = Histogram("flaskapp_worker_warmup_seconds", "A new worker's warm-up, before it accepts.",
                          buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))

# Every app's allow-list in this process: a model label is one of these or "".
_LABELLED_MODELS: set[str] = set()


@lru_cache(maxsize=4096)  # label values are few (routes, statuses, error kinds): a bound, not a limit
def _child(metric: Any, *values: str) -> Any:
    # `labels()` checks and converts its values on every call; each request would pay it four times.
    return metric.labels(*values)


FLUSH_AFTER = 0.1  # seconds an observation may wait, summed with others, before it is written


class _Pending:
    """Observations not yet written: an amount per counter or gauge series, and per histogram
    series its sum and a count per bucket (prometheus_client's: `value <= bound`)."""

    def __init__(self) -> None:
        self.amounts: dict[tuple, float] = {}
        self.histograms: dict[tuple, list[float]] = {}
        self.scheduled = False

    def add(self, metric: Any, labels: tuple[str, ...], amount: float = 1.0) -> None:
        key = (metric, labels)
        self.amounts[key] = self.amounts.get(key, 0.0) + amount

    def observe(self, histogram: Any, labels: tuple[str, ...], value: float) -> None:
        key = (histogram, labels)
        sums = self.histograms.get(key)
        bounds = histogram._upper_bounds  # its buckets, +Inf last
        if sums is None:
            sums = self.histograms[key] = [0.0] * (len(bounds) + 1)
        sums[0] += value
        sums[1 + bisect_left(bounds, value)] += 1

    def due(self) -> None:
        """After adding: have what waits written in `FLUSH_AFTER` seconds, or now without an event loop."""
        if not self.scheduled:
            self.scheduled = call_later(FLUSH_AFTER, self.flush)
            if not self.scheduled:  # no event loop to write later from: now
                self.flush()

    def flush(self) -> None:
        """Write what waits. A histogram's bounds, sum and buckets are its `_upper_bounds` and its
        child's `_sum` and `_buckets` (prometheus_client's internals, pinned in runtime.WRITTEN_FOR):
        it has no public way to add many observations at once."""
        self.scheduled = False
        amounts, self.amounts = self.amounts, {}
        histograms, self.histograms = self.histograms, {}
        for (metric, labels), amount in amounts.items():
            if amount:
                _child(metric, *labels).inc(amount)
        for (histogram, labels), sums in histograms.items():
            child = _child(histogram, *labels)
            child._sum.inc(sums[0])
            for bucket, count in enumerate(sums[1:]):
                if count:
                    child._buckets[bucket].inc(count)


_pending = _Pending()
flush = _pending.flush
atexit.register(flush)


def observe(record: RequestRecord, **_: object) -> None:
    """Count one finished request (a `request_finished` receiver)."""
    route, status = record.route, record.status or 0
    model = record.model if record.model in _LABELLED_MODELS else ""
    pending, by_route = _pending, (route, model)
    pending.add(REQUESTS, (route, str(status), record.outcome or "", model))
    total_time = record.total_time
    if total_time is not None:
        pending.observe(DURATION, by_route, total_time)
    if status < 400:
        if record.time_to_first_byte is not None:
            pending.observe(TIME_TO_FIRST_BYTE, by_route, record.time_to_first_byte)
        first_token = record.time_to_first_token
        if first_token is not None:
            pending.observe(TIME_TO_FIRST_TOKEN, by_route, first_token)
            tokens = record.tokens or 0
            if tokens > 1 and total_time is not None:
                pending.observe(TIME_PER_OUTPUT_TOKEN, by_route, (total_time - first_token) / (tokens - 1))
    if record.prompt_tokens:
        pending.add(PROMPT_TOKENS, by_route, record.prompt_tokens)
    if record.tokens:
        pending.add(TOKENS, (route, "stream" if record.chunks else "blocking", model), record.tokens)
    if record.outcome == CLIENT_DISCONNECTED:
        pending.add(CLIENT_DISCONNECTS, (route,))
    elif record.outcome == UPSTREAM_ERROR:
        pending.add(UPSTREAM_ERRORS, (record.error or "unknown",))
    elif record.outcome == REJECTED and status == 429:
        pending.add(RATE_LIMITED, (route,))
    pending.due()


@bp.route("/metrics")
@policy(key=True, limited=False, logged=False)  # the operator's business, scraped every few seconds
def metrics() -> Response:
    flush()  # this worker's own last requests, at least
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    # Prometheus text format, or OpenMetrics when the scraper asks for it.
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return Response(encode(registry), content_type=content_type)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    _LABELLED_MODELS.update(app.config["ALLOWED_MODELS"])
    request_finished.connect(observe)  # module-level function: the weak reference lives on


def worker_started(warmup: float) -> None:
    """A worker is up: counted, and its metric files opened before its first request."""
    WORKER_STARTS.inc()
    WORKERS.set(1)
    WORKER_WARMUP.observe(warmup)


def count_stream(response: Response) -> Response:
    """A response step: a stream is in flight until the server closes it."""
    if not response.is_streamed or response.status_code >= 400:
        return response
    record = current_record()
    if record is not None:
        labels = (record.route,)
        _in_flight(labels, 1.0)
        record.closers.append(lambda: _in_flight(labels, -1.0))
    return response


def _in_flight(labels: tuple[str], change: float) -> None:
    _pending.add(STREAMS_IN_FLIGHT, labels, change)
    _pending.due()
