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

from flaskapp.ops.metrics import FLUSH_AFTER
from gateway import make_app
from servers import Emulator, Process, raw_request, request, start_emulator, start_gunicorn, stream, upstream_env

KEY = "gw-metrics-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
STREAMS, BLOCKING, UNAUTHORIZED = 20, 6, 3
MODELS = ("gpt-4", "small-model")


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
    env = upstream_env(emulator, max_retries=0, api_keys=KEY, allowed_models=",".join(MODELS))
    env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    server = start_gunicorn(tmp_path_factory.mktemp("gunicorn"), env, workers=2)
    yield server
    server.stop()


def scrape(server: Process) -> dict[tuple, float]:
    """Every worker's samples, as a scrape finds them once each has written its last requests'
    (a worker sums them for up to `FLUSH_AFTER` before writing; the one answering writes its own first)."""
    time.sleep(FLUSH_AFTER + 0.05)
    status, headers, body = request("GET", f"{server.url}/metrics", headers=AUTH)
    assert status == 200 and headers["content-type"].startswith("text/plain; version=")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


def value(samples: dict[tuple, float], name: str, **labels: str) -> float:
    """The sum of `name`'s series carrying `labels` (whatever their other labels)."""
    wanted = set(labels.items())
    return sum(v for (n, series), v in samples.items() if n == name and wanted <= series)


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


def test_per_model_token_latency_and_token_counts_as_vllm_users_graph_them(server):
    before = scrape(server)
    v1 = f"{server.url}/v1/chat/completions"
    chat = {"model": "small-model", "messages": [{"role": "user", "content": "one two three"}], "max_tokens": 8}
    for streamed in (True, False):
        body = {**chat, "stream": streamed, "stream_options": {"include_usage": True}} if streamed else chat
        assert request("POST", v1, body, headers=AUTH)[0] == 200
    assert stream(f"{server.url}/stream?prompt=hi&max_tokens=6&model=small-model", AUTH).status == 200
    for model in ("not-on-the-list", "x" * 90):  # refused, and never a label value of their own
        assert request("POST", v1, {**chat, "model": model}, headers=AUTH)[0] == 404
    after = scrape(server)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    requests = "flaskapp_requests_total"
    assert grew(requests, route="/v1/chat/completions", status="200", model="small-model") == 2
    assert grew(requests, route="/stream", status="200", model="small-model") == 1
    assert grew(requests, route="/v1/chat/completions", status="404", model="") == 2
    assert {dict(labels)["model"] for name, labels in after if name == requests} <= {*MODELS, ""}
    # Time to first token and per output token: streams only (a blocking answer has no first token).
    assert grew("flaskapp_time_to_first_token_seconds_count", route="/v1/chat/completions", model="small-model") == 1
    assert grew("flaskapp_time_to_first_token_seconds_count", route="/stream", model="small-model") == 1
    assert grew("flaskapp_time_to_first_token_seconds_bucket", route="/stream", le="0.1") == 0  # ttft 0.2 s
    assert grew("flaskapp_time_per_output_token_seconds_count", route="/stream", model="small-model") == 1
    # 100 tokens/s: some 10 ms a token, never 0 and never the whole stream's time.
    per_token = grew("flaskapp_time_per_output_token_seconds_sum", route="/stream", model="small-model")
    assert 0.002 < per_token < 0.2
    # Tokens from the upstream's usage, on every endpoint, streamed or not.
    assert grew("flaskapp_completion_tokens_total", route="/v1/chat/completions", model="small-model") == 16
    assert grew("flaskapp_completion_tokens_total", route="/stream", mode="stream", model="small-model") == 6
    assert grew("flaskapp_prompt_tokens_total", route="/v1/chat/completions", model="small-model") > 0
    assert grew("flaskapp_prompt_tokens_total", route="/stream", model="small-model") > 0


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


def test_observations_summed_before_writing_are_written_as_one_at_a_time_would_be():
    from prometheus_client import CollectorRegistry, Histogram

    from flaskapp.ops.metrics import _Pending

    registry = CollectorRegistry()
    histogram = Histogram("t", "test", ["way"], buckets=(0.1, 0.5, 1, 5), registry=registry)
    values = [0.0, 0.05, 0.1, 0.1000001, 0.5, 0.7, 1, 4.99, 5, 5.01, 1e9]
    pending = _Pending()
    pending.scheduled = True  # nothing written until flushed
    for value in values:
        histogram.labels("one at a time").observe(value)
        pending.observe(histogram, ("summed",), value)
    assert registry.get_sample_value("t_count", {"way": "summed"}) is None
    pending.flush()
    for sample in ("t_bucket", "t_count", "t_sum"):
        for le in ("0.1", "0.5", "1.0", "5.0", "+Inf") if sample == "t_bucket" else (None,):
            labels = {"le": le} if le else {}
            assert (registry.get_sample_value(sample, {"way": "summed", **labels})
                    == registry.get_sample_value(sample, {"way": "one at a time", **labels}))
