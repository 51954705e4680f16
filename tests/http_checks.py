"""What a client sees, and how to check it: shapes of replies, the endpoints, hostile clients.

A library for the end-to-end matrices (tests/test_hostile.py): each expectation is a small
value that both checks a reply (`check_reply`) and describes itself for docs/faults.md.
"""
from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from servers import SECRET_KEY, Process, request, sse_events


# -- what a client sees --------------------------------------------------------------------

@dataclass(frozen=True)
class Rejected:
    """An HTTP error status with the JSON error body, before any answer byte."""
    status: int
    type: str
    retry_after: str | None = None

    def describe(self) -> str:
        retry = f" with `Retry-After: {self.retry_after}`" if self.retry_after else ""
        return f"{self.status} `{self.type}`{retry}"


@dataclass(frozen=True)
class Answered:
    """200 and the whole answer; `text`, when given, is exactly the text a client reads."""
    text: str | None = None

    def describe(self) -> str:
        return "200, whole answer"


@dataclass(frozen=True)
class Aborted:
    """Plain text: 200, some text, then the connection closes without the final chunk."""
    type: str

    def describe(self) -> str:
        return f"200, then the transfer is cut (no final chunk; curl exits 18); log `{self.type}`"


@dataclass(frozen=True)
class ErrorEvent:
    """Our SSE: 200, some `data:` events, then `event: error` with the JSON error."""
    type: str

    def describe(self) -> str:
        return f"200, then `event: error` `{self.type}`"


@dataclass(frozen=True)
class ErrorChunk:
    """OpenAI's SSE: 200, chunks, then a `data: {"error": ...}` event and no `[DONE]`."""
    type: str

    def describe(self) -> str:
        return f"200, then `data: {{\"error\"}}` `{self.type}`, no `[DONE]`"


@dataclass(frozen=True)
class Dropped:
    """200, then the connection is closed under a client that takes no byte."""

    def describe(self) -> str:
        return "200, then the connection is closed"


@dataclass(frozen=True)
class Headers:
    """A status and headers, no body (HEAD)."""
    status: int

    def describe(self) -> str:
        return f"{self.status}, headers only"


Expect = Rejected | Answered | Aborted | ErrorEvent | ErrorChunk | Dropped | Headers


# -- the endpoints ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Endpoint:
    name: str  # as the docs name it
    method: str
    path: str
    body: dict | None = None


def openai_body(stream: bool, prompt: str = "hostile") -> dict:
    return {"model": "gpt-4", "messages": [{"role": "user", "content": prompt}], "max_tokens": 20,
            "stream": stream}


def endpoints(prompt: str) -> dict[str, Endpoint]:
    """Every endpoint a matrix drives, each asking for `prompt` (20 tokens)."""
    query = f"prompt={prompt}&max_tokens=20"
    return {
        "blocking": Endpoint("`GET /`", "GET", f"/?{query}"),
        "text": Endpoint("`GET /stream` (text)", "GET", f"/stream?{query}"),
        "sse": Endpoint("`GET /stream` (SSE)", "GET", f"/stream?{query}&format=sse"),
        "openai": Endpoint("`POST /v1/chat/completions`", "POST", "/v1/chat/completions",
                           openai_body(False, prompt)),
        "openai_stream": Endpoint("`POST /v1/chat/completions` stream", "POST", "/v1/chat/completions",
                                  openai_body(True, prompt)),
        "post_blocking": Endpoint("`POST /`", "POST", "/"),
        "head": Endpoint("`HEAD /`", "HEAD", f"/?{query}"),
    }


ENDPOINTS = endpoints("hostile")


@dataclass
class Reply:
    status: int
    headers: dict
    body: bytes
    complete: bool  # False: the transfer ended without its final chunk, or was cut


def fetch(url: str, endpoint: Endpoint, timeout: float = 15.0) -> Reply:
    """One well-behaved request, read to its end."""
    port = int(url.rpartition(":")[2])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    body = json.dumps(endpoint.body) if endpoint.body is not None else None
    headers = {"Content-Type": "application/json"} if body else {}
    conn.request(endpoint.method, endpoint.path, body=body, headers=headers)
    try:
        return read_reply(conn.getresponse())
    finally:
        conn.close()


def read_reply(response: http.client.HTTPResponse) -> Reply:
    chunks, complete = [], True
    try:
        while data := response.read1(65536):
            chunks.append(data)
    except (http.client.IncompleteRead, ConnectionError, socket.timeout):
        complete = False
    return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, b"".join(chunks), complete)


def raw_reply(sock: socket.socket, method: str = "POST") -> Reply:
    """The answer on a socket we wrote a request to by hand."""
    response = http.client.HTTPResponse(sock, method=method)
    try:
        response.begin()
        return read_reply(response)
    finally:
        response.close()


def check_reply(reply: Reply, expect: Expect) -> None:
    if isinstance(expect, Rejected):
        assert reply.status == expect.status, reply.body[:300]
        assert reply.headers["content-type"] == "application/json"
        error = json.loads(reply.body)["error"]
        assert error["type"] == expect.type and error["message"]
        assert set(error) == {"type", "message", "param", "code"}
        assert reply.headers.get("retry-after") == expect.retry_after
    elif isinstance(expect, Answered):
        assert reply.status == 200 and reply.complete and reply.body, reply.body[:300]
        if expect.text is not None:
            assert answer_text(reply) == expect.text
    elif isinstance(expect, Aborted):
        assert reply.status == 200 and not reply.complete, reply.body[:300]
    elif isinstance(expect, ErrorEvent):
        assert reply.status == 200 and reply.complete, reply.body[:300]
        name, data = sse_events(reply.body)[-1]
        assert name == "error" and data["error"]["type"] == expect.type
    elif isinstance(expect, ErrorChunk):
        assert reply.status == 200 and reply.complete, reply.body[:300]
        events = [e for e in reply.body.split(b"\n\n") if e]
        assert b"[DONE]" not in reply.body
        assert json.loads(events[-1].removeprefix(b"data: "))["error"]["type"] == expect.type
    elif isinstance(expect, Dropped):
        assert reply.status == 200 and not reply.complete
    elif isinstance(expect, Headers):
        assert reply.status == expect.status and reply.body == b""


def answer_text(reply: Reply) -> str:
    """The answer's text, whichever way the endpoint framed it (ours, or OpenAI's, streamed or not)."""
    kind = reply.headers["content-type"]
    if kind.startswith("application/json"):
        return json.loads(reply.body)["choices"][0]["message"]["content"]
    if not kind.startswith("text/event-stream"):
        return reply.body.decode()
    text = []
    for name, data in sse_events(reply.body.replace(b"data: [DONE]\n\n", b"")):
        if name == "message" and "text" in data:
            text.append(data["text"])
        for choice in data.get("choices", []) if name == "message" else []:
            if choice["index"] == 0:
                text.append(choice["delta"].get("content") or "")
    return "".join(text)


def assert_no_secret(*outputs: bytes | str) -> None:
    """Neither the upstream key nor its last 10 characters, nor a traceback."""
    for output in outputs:
        text = output.decode(errors="replace") if isinstance(output, bytes) else output
        assert SECRET_KEY not in text and SECRET_KEY[-10:] not in text
        assert "Traceback" not in text


# -- the server's side ---------------------------------------------------------------------------

def log_size(server: Process) -> int:
    """Where the next request's lines will start: once every earlier line is written."""
    server.settle_log()
    return server.log_path.stat().st_size


def log_records(server: Process, since: int = 0) -> list[dict]:
    text = server.log_path.read_bytes()[since:].decode(errors="replace")
    return [json.loads(line.split("] ", 3)[-1]) for line in text.splitlines() if '"event":"request"' in line]


def metrics(server: Process) -> dict[tuple[str, frozenset], float]:
    """The server's /metrics samples: {(name, labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    status, _, body = request("GET", f"{server.url}/metrics")
    assert status == 200
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(body.decode()) for sample in family.samples}


def counted(before: dict, after: dict, name: str, **labels: str) -> float:
    """How much the samples of `name` carrying `labels` grew between two scrapes."""
    wanted = set(labels.items())
    return sum(value - before.get(key, 0.0) for key, value in after.items()
               if key[0] == name and wanted <= key[1])


def worker_pid(master: int) -> int:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def peak_rss_mib(pid: int, reset: bool = False) -> float:
    """The process's peak RSS (VmHWM); `reset` starts a new peak from its current RSS."""
    if reset:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


class HealthPoller:
    """`GET /healthz` every 50 ms on a thread while a case runs; `worst` is the longest wait."""

    def __init__(self, url: str, every: float = 0.05) -> None:
        self._port, self._every = int(url.rpartition(":")[2]), every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.worst, self.polls, self.failures = 0.0, 0, []

    def __enter__(self) -> "HealthPoller":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            conn = http.client.HTTPConnection("127.0.0.1", self._port, timeout=10)
            try:
                conn.request("GET", "/healthz")
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    self.failures.append(response.status)
            except OSError as exc:
                self.failures.append(repr(exc))
            finally:
                conn.close()
            self.worst = max(self.worst, time.monotonic() - started)
            self.polls += 1
            self._stop.wait(self._every)
