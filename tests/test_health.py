"""Probes: /healthz always answers; /readyz answers 200 only while the upstream does, checked briefly cached."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest

from flaskapp.ops.health import Readiness
from gateway import NOWHERE, make_app
from servers import SECRET_KEY


class ModelList(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"object": "list", "data": []}).encode()
        self.send_response(200 if self.path == "/v1/models" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_ready_while_the_upstream_answers_and_not_once_it_hangs():
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), ModelList)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    base_url = f"http://127.0.0.1:{upstream.server_address[1]}/v1"
    client = make_app(base_url, READY_CACHE_SECONDS=0.01, READY_TIMEOUT=0.3).test_client()
    try:
        response = client.get("/readyz")
        assert response.status_code == 200 and response.get_json() == {"status": "ready"}
        assert response.headers["Cache-Control"] == "no-store"
        # Stop answering but keep the port: connections are taken, nothing is said.
        upstream.shutdown()
        response = client.get("/readyz")
        assert response.status_code == 503 and response.headers["Cache-Control"] == "no-store"
        error = response.get_json()["error"]
        assert error["type"] == "upstream_unavailable"
        assert error["message"] == "Not ready: The model server did not answer in time."
        assert client.get("/healthz").status_code == 200  # liveness never depends on the upstream
    finally:
        upstream.server_close()


def test_not_ready_when_nothing_listens():
    response = make_app(NOWHERE).test_client().get("/readyz")
    assert response.status_code == 503 and "could not be reached" in response.get_json()["error"]["message"]


class FakeClient:
    """Stands in for the openai client: counts model listings, fails on demand."""

    def __init__(self) -> None:
        self.calls, self.options, self.error = 0, {}, None
        self.models = self

    def with_options(self, **options):
        self.options = options
        return self

    def list(self):
        self.calls += 1
        if self.error:
            raise self.error


def test_the_check_is_cached_without_retries_and_with_a_short_timeout(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("flaskapp.ops.health.time.monotonic", lambda: clock[0])
    client, readiness = FakeClient(), Readiness(cache_seconds=5.0, timeout=2.0)
    assert [readiness.check(client) for _ in range(10)] == [None] * 10
    assert client.calls == 1 and client.options == {"max_retries": 0, "timeout": 2.0}
    client.error = openai.APIConnectionError(request=None)  # type: ignore[arg-type]
    clock[0] += 4.9
    assert readiness.check(client) is None and client.calls == 1  # still the cached answer
    clock[0] += 0.2
    assert readiness.check(client) == "The model server could not be reached." and client.calls == 2


@pytest.mark.parametrize("status, shown", [(401, "credentials"), (503, "unavailable (503)")])
def test_an_upstream_refusal_is_described_never_quoted(status, shown):
    import httpx2

    request = httpx2.Request("GET", "http://upstream/v1/models")
    response = httpx2.Response(status, request=request, json={"error": {"message": f"key {SECRET_KEY[:8]}..."}})
    client = FakeClient()
    client.error = openai.APIStatusError("refused", response=response, body=None)
    problem = Readiness(cache_seconds=5.0, timeout=2.0).check(client)
    assert shown in problem and SECRET_KEY[:8] not in problem
