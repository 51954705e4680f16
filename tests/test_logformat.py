"""The log stream under real gunicorn: one JSON object a line, the request lines with their time and level inside."""
from __future__ import annotations

import json
import logging
import time
from datetime import datetime

from flaskapp.ops.logformat import JsonLines
from flaskapp.ops.logformat import Fields
from servers import SECRET_KEY, Process, request, stream

SERVER_SETTINGS = {"max_retries": 0, "first_token_timeout": 3, "idle_timeout": 2}


def lines_of(server: Process) -> list[dict]:
    return [json.loads(line) for line in server.log().splitlines() if line.strip()]


def wait_for_requests(server: Process, count: int, timeout: float = 5.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        requests = [line for line in lines_of(server) if line.get("event") == "request"]
        if len(requests) >= count or time.monotonic() > deadline:
            return requests
        time.sleep(0.05)


def test_every_line_under_gunicorn_is_one_json_object_with_time_and_level(server: Process):
    request_id = "logformat-stream-1"
    assert stream(f"{server.url}/stream?prompt=hi&max_tokens=5", {"X-Request-ID": request_id}).status == 200
    assert request("GET", f"{server.url}/no-such-page")[0] == 404
    requests = wait_for_requests(server, 2)

    every = lines_of(server)  # raises on any line that is not JSON: gunicorn's own lines too
    assert any(line["logger"] == "gunicorn.error" and "Booting worker" in line["message"] for line in every)
    for line in every:
        assert line["level"] in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
        assert datetime.fromisoformat(line["time"]).utcoffset().total_seconds() == 0

    streamed = next(line for line in requests if line["request_id"] == request_id)
    assert streamed["level"] == "INFO" and streamed["logger"] == "flaskapp.requests"
    assert streamed["route"] == "/stream" and streamed["status"] == 200 and streamed["outcome"] == "completed"
    assert streamed["tokens"] == 5 and "message" not in streamed
    assert any(line["route"] == "(unmatched)" and line["status"] == 404 for line in requests)
    assert SECRET_KEY not in server.log()


def test_no_access_log_unless_asked_for(server: Process):
    # gunicorn would build an access line on every request once logconfig_dict is set.
    assert request("GET", f"{server.url}/healthz")[0] == 200
    assert not any(line["logger"] == "gunicorn.access" for line in lines_of(server))


def test_fields_read_as_json_by_any_formatter_and_as_fields_by_ours():
    record = logging.LogRecord("flaskapp.requests", logging.INFO, __file__, 1,
                               Fields(event="request", route="/", status=200), None, None)
    assert json.loads(record.getMessage()) == {"event": "request", "route": "/", "status": 200}
    line = json.loads(JsonLines().format(record))
    assert line["event"] == "request" and line["status"] == 200 and line["level"] == "INFO"
    assert "message" not in line and line["time"].endswith("Z")
    text = logging.LogRecord("x", logging.WARNING, __file__, 1, "plain %s", ("text",), None)
    assert json.loads(JsonLines().format(text))["message"] == "plain text"
