"""Restarts never cut a stream: SIGTERM drains, SIGHUP reloads, max_requests recycles workers.

Each test starts its own gunicorn (the signals end or replace it) in front of one
shared emulator, with answers of a couple of seconds so streams are surely in flight.
"""
from __future__ import annotations

import json
import re
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

from servers import Emulator, request, start_gunicorn, stream, upstream_env

TOKENS_PER_SECOND = 50.0


EMULATOR = {"ttft": 0.1, "tokens_per_second": TOKENS_PER_SECOND, "tokens": 10_000}  # conftest's `emulator`


def _stream(url: str, tokens: int, i: int):
    return stream(f"{url}/stream?prompt=restart{i}&max_tokens={tokens}", timeout=30)


def _wait_in_flight(emulator: Emulator, count: int) -> None:
    stats = emulator.wait_for(lambda s: s["in_flight"] >= count, timeout=10)
    assert stats["in_flight"] >= count, stats


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return False
    except OSError:
        return True


def _worker_pids(log: str) -> list[int]:
    return [int(pid) for pid in re.findall(r"Booting worker with pid: (\d+)", log)]


def test_sigterm_lets_100_streams_finish_accepts_nothing_new_and_exits_0(tmp_path, emulator):
    emulator.reset()
    graceful = 10
    server = start_gunicorn(tmp_path, upstream_env(emulator, max_retries=0), "--graceful-timeout", str(graceful))
    tokens = 100  # 2 s of answer each
    with ThreadPoolExecutor(100) as pool:
        streams = [pool.submit(_stream, server.url, tokens, i) for i in range(100)]
        _wait_in_flight(emulator, 100)
        server.process.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        deadline = time.monotonic() + 1.0
        while not _refused(server.port) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _refused(server.port)  # the listener closed at once: nothing new is accepted
        results = [s.result() for s in streams]
    assert server.process.wait(graceful + 5) == 0
    assert time.monotonic() - stopped < graceful
    assert all(r.status == 200 and r.complete for r in results)
    assert all(len(r.body.split()) >= tokens // 2 for r in results)  # whole answers, not stubs
    stats = emulator.stats()
    assert stats["streams_completed"] == 100 and stats["streams_aborted"] == 0
    assert "graceful timeout" not in server.log().lower()


def test_sighup_reload_cuts_no_stream_and_new_workers_take_new_requests(tmp_path, emulator):
    emulator.reset()
    server = start_gunicorn(tmp_path, upstream_env(emulator, max_retries=0), "--graceful-timeout", "10",
                            workers=2)
    try:
        old_workers = set(_worker_pids(server.log()))
        with ThreadPoolExecutor(20) as pool:
            streams = [pool.submit(_stream, server.url, 200, i) for i in range(20)]  # 4 s each
            _wait_in_flight(emulator, 20)
            server.process.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while len(_worker_pids(server.log())) < 4 and time.monotonic() < deadline:
                time.sleep(0.05)
            new_workers = set(_worker_pids(server.log())) - old_workers
            assert len(new_workers) == 2
            time.sleep(1.0)  # the master tells the old workers to stop on its next round (1 s)
            # New requests are answered while the old workers still drain their streams.
            since = len(server.log())
            fresh = [request("GET", f"{server.url}/?prompt=after-reload&max_tokens=3") for _ in range(6)]
            assert emulator.stats()["in_flight"] >= 1  # the old streams are still going
            results = [s.result() for s in streams]
        assert all(status == 200 for status, _, _ in fresh)
        assert all(r.status == 200 and r.complete for r in results)
        assert emulator.stats()["streams_aborted"] == 0
        time.sleep(0.2)
        answered_by = {line["pid"] for line in map(json.loads, server.log()[since:].splitlines())
                       if line.get("event") == "request" and line["route"] == "/"}
        assert answered_by and answered_by <= new_workers
    finally:
        server.stop()
    assert server.process.returncode == 0


def test_max_requests_with_jitter_recycles_workers_without_cutting_a_stream(tmp_path, emulator):
    emulator.reset()
    server = start_gunicorn(tmp_path, upstream_env(emulator, max_retries=0), "--max-requests", "5",
                            "--max-requests-jitter", "3", "--graceful-timeout", "10", workers=2)
    try:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda i: _stream(server.url, 25, i), range(32)))  # 0.6 s each
        assert all(r.status == 200 and r.complete for r in results)
        stats = emulator.stats()
        assert stats["streams_completed"] == 32 and stats["streams_aborted"] == 0
        assert server.log().count("Autorestarting worker") >= 2  # workers really were recycled
    finally:
        server.stop()
