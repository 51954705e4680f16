"""The log stream under real gunicorn: one JSON object a line, the request lines with their time and level inside."""
from __future__ import annotations

import json
import logging
import time
from datetime import datetime

from flaskapp.ops.logformat import JsonLines
from flaskapp.ops.logformat import BufferedLines, Fields, direct_handler
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


class Writes:
    """A stream that remembers each write."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> None:
        self.writes.append(text)

    def flush(self) -> None:
        pass


def _record(level: int, text: str) -> logging.LogRecord:
    return logging.LogRecord("flaskapp.requests", level, __file__, 1, text, None, None)


def test_outside_a_gevent_worker_every_line_is_written_at_once():
    stream = Writes()
    handler = BufferedLines(stream)
    handler.handle(_record(logging.INFO, "one"))
    handler.handle(_record(logging.INFO, "two"))
    assert stream.writes == ["one\n", "two\n"]


GEVENT_BATCHES = '''
from gevent import monkey; monkey.patch_all()
import gevent, logging, json
from flaskapp.ops.logformat import BufferedLines
class Writes:
    writes = []
    def write(self, text): self.writes.append(text)
    def flush(self): pass
stream = Writes()
handler = BufferedLines(stream)
rec = lambda level, text: logging.LogRecord("x", level, "t.py", 1, text, None, None)
seen = {}
for text in ("a", "b", "c"):
    handler.handle(rec(logging.INFO, text))
seen["before"] = list(stream.writes)
gevent.sleep(BufferedLines.FLUSH_AFTER * 3)
seen["after"] = list(stream.writes)
handler.handle(rec(logging.INFO, "d"))
handler.handle(rec(logging.ERROR, "e"))
seen["error"] = list(stream.writes)
handler.handle(rec(logging.INFO, "f"))
handler.close()
handler.flush()
seen["closed"] = list(stream.writes)
print(json.dumps(seen))
'''


def test_in_a_gevent_worker_lines_wait_a_moment_and_go_out_in_one_write_errors_at_once():
    import subprocess
    import sys
    from pathlib import Path

    out = subprocess.run([sys.executable, "-c", GEVENT_BATCHES], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert seen["before"] == []  # nothing written yet: the lines wait for the loop's timer
    assert seen["after"] == ["a\nb\nc\n"]  # one write for the three
    assert seen["error"] == ["a\nb\nc\n", "d\ne\n"]  # an error goes out at once, after what waited
    assert seen["closed"] == ["a\nb\nc\n", "d\ne\n", "f\n"]  # nothing is lost at the end


def _chain(name: str, *handlers: logging.Handler) -> logging.Logger:
    parent = logging.getLogger(f"test-direct.{name}")
    parent.handlers, parent.propagate, parent.filters = list(handlers), False, []
    parent.setLevel(logging.INFO)
    child = logging.getLogger(f"test-direct.{name}.requests")
    child.handlers, child.filters, child.propagate = [], [], True
    return child


def _ours(stream: Writes) -> BufferedLines:
    handler = BufferedLines(stream)
    handler.setFormatter(JsonLines())
    return handler


def test_request_lines_skip_logging_only_where_that_writes_the_same_line():
    stream = Writes()
    handler = _ours(stream)
    assert direct_handler(_chain("ours", handler)) is handler

    quiet = _chain("quiet", _ours(Writes()))
    quiet.parent.setLevel(logging.WARNING)
    assert direct_handler(quiet) is None  # INFO is off: nothing may be written
    filtered = _chain("filtered", _ours(Writes()))
    filtered.parent.addFilter(lambda record: True)
    assert direct_handler(filtered) is None  # a filter must see every record
    assert direct_handler(_chain("two", _ours(Writes()), logging.StreamHandler(Writes()))) is None
    plain = logging.StreamHandler(Writes())
    plain.setFormatter(JsonLines())
    assert direct_handler(_chain("plain", plain)) is None

    fields = Fields(event="request", route="/stream", status=200)
    handler.write_fields(fields, "flaskapp.requests")
    handler.flush()
    direct = json.loads(stream.writes[-1])
    record = logging.LogRecord("flaskapp.requests", logging.INFO, __file__, 1, fields, None, None)
    logged = json.loads(JsonLines().format(record))
    assert direct.pop("time").endswith("Z") and logged.pop("time").endswith("Z")
    assert direct == logged  # the same line, but for its moment
