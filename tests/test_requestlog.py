"""The request log: an id for every request, echoed, and one JSON line with what happened."""
from __future__ import annotations

import json
import logging

import pytest

from flaskapp.ops.requestlog import RequestRecord, request_finished, request_id_of
from gateway import make_app


@pytest.fixture
def client(emulator):
    return make_app(emulator.base_url).test_client()


@pytest.fixture
def lines(caplog):
    caplog.set_level(logging.INFO, logger="flaskapp.requests")

    def read() -> list[dict]:
        return [json.loads(r.getMessage()) for r in caplog.records if r.name == "flaskapp.requests"]
    return read


@pytest.mark.parametrize("given, kept", [
    ("req-42", True), ("0f8e2c1a-7d3b-4c9e-9a61-2b5d8e0f4c17", True), ("a" * 128, True),
    ("a" * 129, False), ("two words", False), ('x"},"outcome":"forged', False), ("", False),
])
def test_a_sane_request_id_is_kept_any_other_replaced(given, kept):
    request_id = request_id_of(given)
    assert (request_id == given) is kept
    if not kept:
        assert len(request_id) == 32 and int(request_id, 16) >= 0  # a fresh uuid4, in hex


def test_the_request_id_is_echoed_and_logged(client, lines):
    response = client.get("/?prompt=hi&max_tokens=3", headers={"X-Request-ID": "trace-abc.123"})
    assert response.headers["X-Request-ID"] == "trace-abc.123"
    made = client.get("/?prompt=hi&max_tokens=3").headers["X-Request-ID"]
    assert len(made) == 32
    assert [line["request_id"] for line in lines()] == ["trace-abc.123", made]


def test_a_blocking_answer_logs_every_field(client, lines):
    client.get("/?prompt=hi&max_tokens=5")
    (line,) = lines()
    assert line["event"] == "request" and line["route"] == "/" and line["method"] == "GET"
    assert line["status"] == 200 and line["outcome"] == "completed" and line["model"] == "gpt-4"
    assert line["tokens"] == 5 and line["bytes"] > 0
    assert 0 < line["time_to_first_byte"] <= line["total_time"]


def test_a_stream_logs_its_chunks_and_tokens(client, lines):
    response = client.get("/stream?prompt=hi&max_tokens=7")
    assert response.status_code == 200 and response.get_data()
    (line,) = lines()
    assert line["route"] == "/stream" and line["outcome"] == "completed"
    assert line["chunks"] == 7 and line["tokens"] == 7 and line["bytes"] == len(response.get_data())
    assert len(line["request_id"]) == 32


def test_requests_refused_before_any_view_are_logged_too(client, lines):
    client.get("/no-such-route", headers={"X-Request-ID": "lost-1"})
    client.post("/healthz")  # 405
    refused = lines()
    assert [(l["route"], l["status"], l["outcome"]) for l in refused] == [
        ("(unmatched)", 404, "rejected"), ("(unmatched)", 405, "rejected")]
    assert refused[0]["request_id"] == "lost-1"


def test_probes_scrapes_and_static_files_are_not_logged(client, lines):
    for path in ("/healthz", "/readyz", "/metrics", "/static/demo.css"):
        assert client.get(path).status_code == 200
    assert lines() == []


def test_every_finished_request_is_signalled_once(client):
    finished: list[RequestRecord] = []

    def receive(record: RequestRecord, **_: object) -> None:
        finished.append(record)

    with request_finished.connected_to(receive):
        client.get("/?prompt=hi&max_tokens=2")
        client.get("/stream?prompt=hi&max_tokens=2").get_data()
        client.get("/v1/models")
    assert [(r.route, r.outcome) for r in finished] == [
        ("/", "completed"), ("/stream", "completed"), ("/v1/models", "completed")]


@pytest.mark.parametrize("usage, fallback, counted", [
    ({"prompt_tokens": 7, "completion_tokens": 3}, None, (7, 3)),
    ({"input_tokens": 7, "output_tokens": 3}, None, (7, 3)),  # the Responses API's names
    (None, 4, (None, 4)),  # no usage sent: the chunks relayed
])
def test_token_counts_come_from_the_upstreams_usage(usage, fallback, counted):
    record = RequestRecord(route="/v1/responses", method="POST", request_id="usage-1")
    record.count_usage(usage, fallback)
    assert (record.prompt_tokens, record.tokens) == counted
