"""Real servers for integration tests: the emulator and gunicorn, each on a free loopback port.

Each listening socket is bound here and handed to the child as an inherited file
descriptor, so there is no window in which another process could take the port.
"""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from flaskapp.loadtest.rig import Server, free_listener
from flaskapp.ops.logformat import BufferedLines

ROOT = Path(__file__).resolve().parent.parent
LOG_SETTLE = BufferedLines.FLUSH_AFTER + 0.05  # seconds
SECRET_KEY = "sk-test-secret-key-0123456789"  # the upstream key; never in a response or a log


def request(method: str, url: str, body: bytes | str | dict | None = None,
            headers: dict | None = None, timeout: float = 30.0) -> tuple[int, dict, bytes]:
    """One HTTP request; returns (status, lower-cased headers, body)."""
    host_port, _, path = url.removeprefix("http://").partition("/")
    host, _, port = host_port.partition(":")
    if isinstance(body, dict):
        body = json.dumps(body)
        headers = {"Content-Type": "application/json", **(headers or {})}
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, "/" + path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


@dataclass
class Process(Server):
    """A server the test started; unlike the experiment's, it stops gracefully and says how."""

    def log(self) -> str:
        """The log as written, once the lines a gevent worker still holds are out."""
        self.settle_log()
        return self.log_path.read_text(errors="replace")

    def settle_log(self) -> None:
        # A gevent worker writes its log lines in batches, each at most FLUSH_AFTER late
        # (flaskapp/ops/logformat.py): wait that out, so a line reads as soon as its request ends.
        time.sleep(LOG_SETTLE)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:  # the exit code
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@dataclass
class Emulator(Process):
    settings: dict = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def stats(self) -> dict:
        return json.loads(request("GET", f"{self.url}/_emulator/stats")[2])

    def arm(self, **fault) -> None:
        """Make the next request(s) fail as described (see flaskapp.emulator.faults)."""
        status, _, body = request("POST", f"{self.url}/_emulator/faults", body=fault)
        assert status == 200, body

    def reset(self) -> None:
        request("POST", f"{self.url}/_emulator/reset", body={})

    def after_hang_up(self, sock: socket.socket, predicate, timeout: float = 2.0) -> tuple[dict, float]:
        """Close the client's socket, wait until `predicate(stats)`; the stats and the seconds it took."""
        sock.close()
        left = time.monotonic()
        stats = self.wait_for(predicate, timeout)
        return stats, time.monotonic() - left

    def wait_for(self, predicate, timeout: float = 5.0) -> dict:
        """Poll the stats until `predicate(stats)` holds; returns the last stats."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats()
            if predicate(stats) or time.monotonic() > deadline:
                return stats
            time.sleep(0.02)


def start_emulator(tmp_path: Path, ttft: float = 0.05, tokens_per_second: float = 1000.0,
                   tokens: int = 50, *extra: str) -> Emulator:
    sock = free_listener()
    port = sock.getsockname()[1]
    log_path = tmp_path / f"emulator-{port}.log"
    args = [sys.executable, "-m", "flaskapp.emulator", "--fd", str(sock.fileno()),
            "--ttft", str(ttft), "--tokens-per-second", str(tokens_per_second),
            "--tokens", str(tokens), *extra]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                   pass_fds=[sock.fileno()])
    sock.close()
    emulator = Emulator("emulator", process, port, log_path,
                        settings={"ttft": ttft, "tokens_per_second": tokens_per_second, "tokens": tokens})
    emulator.wait_ready()
    return emulator


def start_gunicorn(tmp_path: Path, env: dict[str, str], *args: str,
                   worker_class: str = "gevent", workers: int = 1) -> Process:
    """`gunicorn -c gunicorn.conf.py wsgi:app` as a user would run it, on a free port."""
    sock = free_listener()
    port = sock.getsockname()[1]
    log_path = tmp_path / f"gunicorn-{port}.log"
    child_env = {k: v for k, v in os.environ.items()
                 if not k.startswith(("OPENAI_", "FLASKAPP_", "GUNICORN_"))}
    child_env.update(env)
    command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py",
               "-b", f"fd://{sock.fileno()}", "-k", worker_class, "-w", str(workers), *args, "wsgi:app"]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=child_env, stdout=log,
                                   stderr=subprocess.STDOUT, pass_fds=[sock.fileno()])
    sock.close()
    server = Process("gunicorn", process, port, log_path)
    server.wait_ready()  # stops it and raises with its log's tail when it does not come up
    return server


def upstream_env(emulator: Emulator, **settings: str) -> dict[str, str]:
    """Environment pointing the app at this emulator, plus FLASKAPP_* settings."""
    env = {"OPENAI_BASE_URL": emulator.base_url, "OPENAI_API_KEY": SECRET_KEY}
    env.update({f"FLASKAPP_{name.upper()}": str(value) for name, value in settings.items()})
    return env


def raw_request(port: int, path: str, method: str = "GET", headers: dict | None = None,
                body: bytes = b"") -> socket.socket:
    """Send one request on a raw socket and return the socket, for tests that hang up early."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    return sock


@dataclass
class StreamResult:
    status: int
    headers: dict
    chunks: list[bytes]
    first_byte: float | None  # seconds from sending to the first body byte
    total: float
    complete: bool  # False when the chunked transfer ended without its final chunk

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


def stream(url: str, headers: dict | None = None, timeout: float = 30.0) -> StreamResult:
    """GET a streamed response, timing the first body byte and noting whether it completed."""
    host_port, _, path = url.removeprefix("http://").partition("/")
    host, _, port = host_port.partition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    started = time.monotonic()
    conn.request("GET", "/" + path, headers=headers or {})
    response = conn.getresponse()
    chunks, first_byte, complete = [], None, True
    try:
        while True:
            data = response.read1(65536)
            if not data:
                break
            if first_byte is None:
                first_byte = time.monotonic() - started
            chunks.append(data)
    except (http.client.IncompleteRead, ConnectionError):
        complete = False
    finally:
        conn.close()
    return StreamResult(response.status, {k.lower(): v for k, v in response.getheaders()}, chunks,
                        first_byte, time.monotonic() - started, complete)


def sse_events(body: bytes) -> list[tuple[str, object]]:
    """(event name, decoded JSON data) for each event of an SSE body."""
    events = []
    for block in body.decode().split("\n\n"):
        if not block.strip():
            continue
        name, data = "message", []
        for line in block.split("\n"):
            field, _, value = line.partition(": ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
        events.append((name, json.loads("\n".join(data))))
    return events
