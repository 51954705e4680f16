"""nginx in front of gunicorn, with deploy/nginx.conf as shipped: streams stay streams.

Runs Debian's nginx (`apt-get install nginx`) on a loopback port, with the site config
from deploy/nginx.conf pointed at a test gunicorn and every path nginx writes to in
the test's temporary directory.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from servers import ROOT, Emulator, Process, raw_request, request, sse_events, stream

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
pytestmark = pytest.mark.skipif(not os.path.exists(NGINX),
                                reason="nginx is not installed (Debian: apt-get install nginx)")

TTFT = 0.3  # the emulator's first-token time; each answer then runs at 100 tokens/s


def render_config(tmp_path: Path, listen_port: int, gunicorn_port: int) -> Path:
    site = (ROOT / "deploy" / "nginx.conf").read_text()
    site, found = re.subn(r"server 127\.0\.0\.1:8000\b", f"server 127.0.0.1:{gunicorn_port}", site)
    assert found == 1, "deploy/nginx.conf: the upstream server line moved"
    site, found = re.subn(r"listen 80;", f"listen 127.0.0.1:{listen_port};", site)
    assert found == 1, "deploy/nginx.conf: the listen line moved"
    (tmp_path / "site.conf").write_text(site)
    temp = {name: tmp_path / name for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")}
    user = "user root;" if os.geteuid() == 0 else ""  # workers must reach the temp paths
    config = tmp_path / "nginx.conf"
    config.write_text(f"""
daemon off;
master_process on;
worker_processes 1;
{user}
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log info;
events {{ worker_connections 1024; }}
http {{
    access_log {tmp_path}/access.log;
    client_body_temp_path {temp['client_body']};
    proxy_temp_path {temp['proxy']};
    fastcgi_temp_path {temp['fastcgi']};
    uwsgi_temp_path {temp['uwsgi']};
    scgi_temp_path {temp['scgi']};
    include {tmp_path}/site.conf;
}}
""")
    return config


# conftest's `emulator` and `server` (the gunicorn behind nginx).
EMULATOR = {"ttft": TTFT, "tokens_per_second": 100.0, "tokens": 10_000}
SERVER_SETTINGS = {"max_retries": 0}


@pytest.fixture(scope="module")
def nginx(tmp_path_factory, server: Process) -> str:
    tmp_path = tmp_path_factory.mktemp("nginx")
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nginx binds it itself; a tiny window in which another process could take it
    config = render_config(tmp_path, port, server.port)
    process = subprocess.Popen([NGINX, "-c", str(config), "-p", str(tmp_path), "-e", str(tmp_path / "error.log")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            assert process.poll() is None, (tmp_path / "error.log").read_text()
            try:
                if request("GET", f"{url}/healthz", timeout=1)[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "nginx did not come up"
            time.sleep(0.05)
        yield url
    finally:
        process.send_signal(signal.SIGQUIT)  # graceful
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(autouse=True)
def clean(emulator: Emulator) -> None:
    emulator.reset()


@pytest.mark.parametrize("path", ["/stream?prompt=through&max_tokens=50",
                                  "/stream?prompt=through&max_tokens=50&format=sse"])
def test_time_to_first_byte_through_nginx_stays_near_the_first_token(nginx, server, path):
    direct = stream(f"{server.url}{path}")
    proxied = stream(f"{nginx}{path}")
    assert proxied.status == 200 and proxied.complete
    assert _answer(proxied.body) == _answer(direct.body)
    assert TTFT * 0.9 <= proxied.first_byte < TTFT + 0.25  # the whole answer takes TTFT + 0.5 s
    assert proxied.first_byte - direct.first_byte < 0.1
    assert len(proxied.chunks) > 5  # passed on piece by piece, not gathered into one


def _answer(body: bytes) -> bytes:
    """The answer's text, without the timings of an SSE `done` event."""
    return b"".join(block for block in body.split(b"\n\n") if not block.startswith(b"event: done"))


def test_openai_stream_through_nginx_is_not_buffered(nginx):
    body = json.dumps({"model": "gpt-4", "messages": [{"role": "user", "content": "x"}],
                       "max_tokens": 50, "stream": True}).encode()
    sock = raw_request(int(nginx.rsplit(":", 1)[1]), "/v1/chat/completions", "POST",
                       {"Content-Type": "application/json"}, body)
    started, received = time.monotonic(), b""
    while b"chat.completion.chunk" not in received:
        data = sock.recv(65536)
        assert data, received
        received += data
    first_chunk = time.monotonic() - started
    sock.close()
    assert received.startswith(b"HTTP/1.1 200")
    assert first_chunk < TTFT + 0.25  # the whole answer takes TTFT + 0.5 s


def test_blocking_answers_and_errors_pass_through(nginx, emulator):
    status, _, body = request("GET", f"{nginx}/?prompt=through&max_tokens=10")
    assert status == 200 and len(body.split()) >= 5
    emulator.arm(status=429, retry_after=3)
    status, headers, body = request("GET", f"{nginx}/stream?prompt=limited")
    assert status == 429 and headers["retry-after"] == "3"
    assert json.loads(body)["error"]["type"] == "rate_limit_error"
    emulator.arm(cut_after=5)
    sse = stream(f"{nginx}/stream?prompt=cut&format=sse")
    assert sse_events(sse.body)[-1][0] == "error"
    emulator.arm(cut_after=5)
    assert not stream(f"{nginx}/stream?prompt=cut").complete  # an incomplete transfer stays incomplete


@pytest.mark.parametrize("fault, wait_for_headers", [
    ({}, True),  # mid-stream
    ({"delay": 30}, False),  # waiting for the first token
])
def test_a_client_leaving_nginx_closes_the_upstream_stream(nginx, emulator, fault, wait_for_headers):
    if fault:
        emulator.arm(**fault)
    sock = raw_request(int(nginx.rsplit(":", 1)[1]), "/stream?prompt=leaving&max_tokens=1000")
    if wait_for_headers:
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    time.sleep(0.3)
    assert emulator.stats()["in_flight"] == 1
    stats, took = emulator.after_hang_up(sock, lambda s: s["streams_aborted"] == 1)
    assert stats["streams_aborted"] == 1 and stats["in_flight"] == 0
    assert took < 1.0
