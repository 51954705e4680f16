"""Backpressure and retries: the per-worker in-flight cap, and the upstream retries before the first byte."""
from __future__ import annotations

import json
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from flaskapp import create_app
from flaskapp.ops import backpressure
from flaskapp.ops.requestlog import RequestRecord, request_finished
from servers import Emulator, Process, request, start_emulator, start_gunicorn, stream, upstream_env
from http_checks import counted, log_records, log_size, metrics

CAP = 10


@pytest.fixture(scope="module")
def emulator(tmp_path_factory) -> Emulator:
    emulator = start_emulator(tmp_path_factory.mktemp("emulator"), 0.05, 200.0, 10_000)
    yield emulator
    emulator.stop()


@pytest.fixture(scope="module")
def capped(tmp_path_factory, emulator: Emulator) -> Process:
    server = start_gunicorn(tmp_path_factory.mktemp("capped"), upstream_env(
        emulator, max_retries=0, max_inflight=CAP))
    yield server
    server.stop(signal.SIGINT)


@pytest.fixture(scope="module")
def retrying(tmp_path_factory, emulator: Emulator) -> Process:
    server = start_gunicorn(tmp_path_factory.mktemp("retrying"), upstream_env(
        emulator, max_retries=2, first_token_timeout=1, request_timeout=1))
    yield server
    server.stop(signal.SIGINT)


# -- the cap ------------------------------------------------------------------------------------

def test_the_limiter_counts_admissions_and_releases_on_the_record():
    app = create_app({"TESTING": True, "MAX_INFLIGHT": 2})
    limiter = backpressure.limiter_for(app)
    first, second, third = (RequestRecord("/", "GET") for _ in range(3))
    with app.app_context():
        backpressure.admit(first)
        backpressure.admit(second)
        with pytest.raises(backpressure.Overloaded) as caught:
            backpressure.admit(third)
    assert caught.value.status == 503 and caught.value.retry_after == backpressure.RETRY_AFTER
    assert (limiter.in_flight, limiter.rejected) == (2, 1)
    third.finish("rejected")  # never admitted: frees nothing
    first.finish("completed")
    first.finish("completed")  # a record finishes once
    assert limiter.in_flight == 1
    request_finished.send(second)  # the signal is for observers: it frees nothing
    assert limiter.in_flight == 1
    second.slot.release()
    second.slot.release()  # a slot is given back once
    assert limiter.in_flight == 0
    second.finish("completed")
    assert limiter.in_flight == 0


def test_zero_means_no_cap():
    app = create_app({"TESTING": True, "MAX_INFLIGHT": 0})
    with app.app_context():
        for _ in range(5000):
            backpressure.admit(RequestRecord("/", "GET"))
    assert backpressure.limiter_for(app).in_flight == 5000


@pytest.mark.parametrize("path", ["/stream?prompt=burst&max_tokens=200", "/?prompt=burst&max_tokens=200"])
def test_a_burst_of_twice_the_cap_gets_503_at_once_for_the_excess(capped, emulator, path):
    emulator.reset()
    since, scraped = log_size(capped), metrics(capped)

    def one(i: int):
        started = time.monotonic()
        status, headers, body = request("GET", f"{capped.url}{path}&n={i}")
        return status, headers, body, time.monotonic() - started

    with ThreadPoolExecutor(2 * CAP) as pool:
        results = list(pool.map(one, range(2 * CAP)))

    answered = [r for r in results if r[0] == 200]
    rejected = [r for r in results if r[0] == 503]
    assert len(answered) == CAP and len(rejected) == CAP  # each answer takes 1 s: all overlap
    for status, headers, body, elapsed in rejected:
        assert headers["retry-after"] == backpressure.RETRY_AFTER
        assert json.loads(body)["error"]["type"] == "server_overloaded"
        assert elapsed < 0.5  # at once, not after queueing behind the others (1 s)
    stats = emulator.stats()
    assert stats["streams_started"] + stats["completions_started"] == CAP  # the excess never reached it
    time.sleep(0.1)
    outcomes = [r["outcome"] for r in log_records(capped, since)]
    assert sorted(outcomes) == ["completed"] * CAP + ["rejected"] * CAP
    route = path.split("?")[0]
    assert counted(scraped, metrics(capped), "flaskapp_requests_total", route=route,
                   status="503", outcome="rejected") == CAP
    # Every slot came back: the next burst of exactly the cap is served in full.
    with ThreadPoolExecutor(CAP) as pool:
        assert [r[0] for r in pool.map(one, range(CAP))] == [200] * CAP


def test_slots_come_back_after_failures_and_departures(capped, emulator):
    emulator.reset()
    emulator.arm(status=500, count=CAP)
    for _ in range(CAP):
        assert request("GET", f"{capped.url}/stream?prompt=fail")[0] == 502
    emulator.arm(cut_after=3, count=CAP)
    for _ in range(CAP):
        assert not stream(f"{capped.url}/stream?prompt=cut&max_tokens=50").complete
    with ThreadPoolExecutor(CAP) as pool:
        statuses = list(pool.map(lambda i: request("GET", f"{capped.url}/stream?prompt=ok{i}&max_tokens=20")[0], range(CAP)))
    assert statuses == [200] * CAP


# -- retries --------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/?prompt=retry&max_tokens=5", "/stream?prompt=retry&max_tokens=5"])
def test_a_transient_503_before_the_first_byte_is_retried(retrying, emulator, path):
    emulator.reset()
    emulator.arm(status=503, count=1)
    status, _, body = request("GET", f"{retrying.url}{path}")
    assert status == 200 and body
    stats = emulator.stats()
    assert stats["faults"] == {"status": 1}  # one failed attempt, then the answer
    assert stats["streams_completed"] + stats["completions_completed"] == 1


def test_the_openai_client_honours_retry_after(retrying, emulator):
    emulator.reset()
    emulator.arm(status=429, retry_after=0.8, count=1)
    started = time.monotonic()
    assert request("GET", f"{retrying.url}/?prompt=retry&max_tokens=5")[0] == 200
    assert time.monotonic() - started >= 0.8


def test_a_stream_is_never_retried_after_its_first_byte(retrying, emulator):
    emulator.reset()
    emulator.arm(cut_after=5, count=1)
    result = stream(f"{retrying.url}/stream?prompt=once&max_tokens=50")
    assert result.status == 200 and not result.complete
    assert emulator.stats()["streams_started"] == 1


def timed_under_fault(emulator: Emulator, url: str, **fault) -> tuple[int, bytes, float]:
    """GET `url` while every upstream call fails as `fault` says: status, body, seconds taken."""
    emulator.reset()
    emulator.arm(count=0, **fault)
    started = time.monotonic()
    try:
        status, _, body = request("GET", url)
        return status, body, time.monotonic() - started
    finally:
        emulator.reset()


@pytest.mark.parametrize("path", ["/?prompt=deadline", "/stream?prompt=deadline"])
def test_retries_are_bounded_by_the_request_deadline(retrying, emulator, path):
    # Every attempt fails asking for a 2 s pause: retrying would overrun the 1 s deadline
    # (FIRST_TOKEN_TIMEOUT for streams, REQUEST_TIMEOUT for blocking calls here).
    status, body, elapsed = timed_under_fault(emulator, f"{retrying.url}{path}", status=503, retry_after=2)
    assert status in (503, 504) and json.loads(body)["error"]["type"].startswith("upstream_")
    assert elapsed < 1.5, elapsed


@pytest.fixture(scope="module")
def retrying_over_httpx(tmp_path_factory, emulator: Emulator) -> Process:
    server = start_gunicorn(tmp_path_factory.mktemp("httpx"), upstream_env(
        emulator, max_retries=2, first_token_timeout=1, request_timeout=1, upstream_transport="httpx"))
    yield server
    server.stop(signal.SIGINT)


def test_blocking_retries_over_httpx_are_bounded_by_the_request_timeout(retrying_over_httpx, emulator):
    status, _, elapsed = timed_under_fault(emulator, f"{retrying_over_httpx.url}/?prompt=deadline",
                                           status=503, retry_after=1)
    assert status == 503
    assert elapsed < 1.5, elapsed  # REQUEST_TIMEOUT is 1 s: two 1 s Retry-After pauses would overrun it
