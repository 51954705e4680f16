"""/metrics under real gunicorn with two workers: known traffic in, the same numbers out of any scrape."""
from __future__ import annotations

import http.client
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway import make_app
from servers import Emulator, Process, raw_request, request, start_emulator, start_gunicorn, stream, upstream_env

KEY = "gw-metrics-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
STREAMS, BLOCKING, UNAUTHORIZED = 20, 6, 3


@pytest.fixture(scope="module")
def emulator(tmp_path_factory) -> Emulator:
    """Slower than the shared one (100 tokens/s) so a stream is still running when scraped."""
    emulator = start_emulator(tmp_path_factory.mktemp("emulator"), 0.2, 100.0, 60)
    yield emulator
    emulator.stop()


@pytest.fixture(scope="module")
def metrics_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("metrics")
    (directory / "counter_999999.db").write_bytes(b"left over from the last run")
    return directory


@pytest.fixture(scope="module")
def server(tmp_path_factory, emulator, metrics_dir) -> Process:
    env = upstream_env(emulator, max_retries=0, api_keys=KEY)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    server = start_gunicorn(tmp_path_factory.mktemp("gunicorn"), env, workers=2)
    yield server
    server.stop()


def scrape(server: Process) -> dict[tuple, float]:
    status, headers, body = request("GET", f"{server.url}/metrics", headers=AUTH)
    assert status == 200 and headers["content-type"].startswith("text/plain; version=")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


def value(samples: dict[tuple, float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def worker_pids(server: Process) -> set[int]:
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read_text()
    return {int(pid) for pid in children.split()}


def wait_for(predicate, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while not (result := predicate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return result


def test_the_stale_files_of_a_given_directory_are_removed_at_start(server, metrics_dir):
    assert not (metrics_dir / "counter_999999.db").exists()


def test_metrics_need_the_gateway_key(server):
    assert request("GET", f"{server.url}/metrics")[0] == 401


def test_known_traffic_adds_up_across_both_workers(server, emulator, metrics_dir):
    with ThreadPoolExecutor(STREAMS) as pool:  # concurrent, so both workers take a share
        results = list(pool.map(lambda i: stream(f"{server.url}/stream?prompt=m{i}&max_tokens=12", AUTH),
                                range(STREAMS)))
        blocking = list(pool.map(lambda i: request("GET", f"{server.url}/?prompt=b{i}&max_tokens=5",
                                                   headers=AUTH), range(BLOCKING)))
    assert all(r.status == 200 and r.complete for r in results)
    assert all(status == 200 for status, _, _ in blocking)
    for _ in range(UNAUTHORIZED):
        assert request("GET", f"{server.url}/?prompt=x")[0] == 401
    emulator.arm(status=503, count=1)
    assert request("GET", f"{server.url}/?prompt=fails", headers=AUTH)[0] == 503
    pids = {name.rsplit("_", 1)[-1] for name in os.listdir(metrics_dir) if name.startswith("counter_")}
    assert len(pids) == 2  # both workers wrote samples ...

    for _ in range(4):  # ... and every scrape, whichever worker answers it, sums them
        samples = scrape(server)
        requests = "flaskapp_requests_total"
        assert value(samples, requests, route="/stream", status="200", outcome="completed") == STREAMS
        assert value(samples, requests, route="/", status="200", outcome="completed") == BLOCKING
        assert value(samples, requests, route="/", status="401", outcome="rejected") == UNAUTHORIZED
        assert value(samples, requests, route="/", status="503", outcome="upstream_error") == 1
        assert value(samples, "flaskapp_completion_tokens_total", route="/stream", mode="stream") == STREAMS * 12
        assert value(samples, "flaskapp_completion_tokens_total", route="/", mode="blocking") == BLOCKING * 5
        assert value(samples, "flaskapp_upstream_errors_total", kind="upstream_unavailable") == 1
        assert value(samples, "flaskapp_time_to_first_byte_seconds_count", route="/stream") == STREAMS
        assert value(samples, "flaskapp_time_to_first_byte_seconds_bucket", route="/stream", le="0.1") == 0
        assert value(samples, "flaskapp_time_to_first_byte_seconds_bucket", route="/stream", le="+Inf") == STREAMS
        assert value(samples, "flaskapp_request_duration_seconds_count", route="/") == BLOCKING + UNAUTHORIZED + 1
        assert value(samples, "flaskapp_streams_in_flight", route="/stream") == 0
        assert not any(name == requests and dict(labels).get("route") in ("/healthz", "/metrics")
                       for name, labels in samples)


def test_a_client_that_leaves_is_counted(server):
    def disconnects() -> float:
        return value(scrape(server), "flaskapp_client_disconnects_total", route="/stream")

    before = disconnects()
    sock = raw_request(server.port, "/stream?prompt=leaving&max_tokens=60", headers=AUTH)
    assert sock.recv(100).startswith(b"HTTP/1.1 200")
    sock.close()
    assert wait_for(lambda: disconnects() == before + 1)


def test_streams_in_flight_are_counted_while_they_run_and_not_after_their_worker_dies(server):
    def in_flight() -> float:
        return value(scrape(server), "flaskapp_streams_in_flight", route="/stream")

    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request("GET", "/stream?prompt=slow&max_tokens=60", headers=AUTH)
    response = connection.getresponse()
    assert response.status == 200 and response.read1(100)
    assert in_flight() == 1
    response.read()  # to the end of the stream
    connection.close()
    assert wait_for(lambda: in_flight() == 0)

    finished = value(scrape(server), "flaskapp_requests_total", route="/stream", status="200", outcome="completed")
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request("GET", "/stream?prompt=doomed&max_tokens=60", headers=AUTH)
    assert connection.getresponse().read1(100)
    assert in_flight() == 1
    old_workers = worker_pids(server)
    for pid in old_workers:  # a crash: no chance to decrement anything
        os.kill(pid, signal.SIGKILL)
    connection.close()
    assert wait_for(lambda: len(worker_pids(server) - old_workers) == 2)
    assert wait_for(lambda: request("GET", f"{server.url}/healthz")[0] == 200)
    samples = scrape(server)
    assert value(samples, "flaskapp_streams_in_flight", route="/stream") == 0  # child_exit dropped its gauge
    # A dead worker's counters still count.
    assert value(samples, "flaskapp_requests_total", route="/stream", status="200", outcome="completed") == finished


def test_without_a_directory_gunicorn_makes_one_and_removes_it_at_exit(tmp_path, emulator):
    server = start_gunicorn(tmp_path, {**upstream_env(emulator), "TMPDIR": str(tmp_path)})
    try:
        assert request("GET", f"{server.url}/?prompt=one&max_tokens=2")[0] == 200
        samples = scrape(server)
        assert value(samples, "flaskapp_requests_total", route="/", status="200", outcome="completed") == 1
        assert len(list(tmp_path.glob("flaskapp-metrics-*/counter_*.db"))) == 1
    finally:
        assert server.stop() == 0
    assert list(tmp_path.glob("flaskapp-metrics-*")) == []


def test_openmetrics_when_the_scraper_asks_for_it():
    client = make_app().test_client()
    client.get("/no-such-route")
    response = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert response.get_data().endswith(b"# EOF\n") and b"flaskapp_requests_total" in response.get_data()
