"""locustfile.py: short headless Locust runs against the real app record one event per request, in tokens."""
from __future__ import annotations

import csv
import subprocess
import sys

from servers import ROOT, start_emulator, start_gunicorn, upstream_env

TOKENS = 10


def locust(tmp_path, host: str, kinds: str, seconds: str = "2s") -> dict:
    completed = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(ROOT / "locustfile.py"), "--host", host,
         "--headless", "-u", "2", "-r", "2", "-t", seconds, "--kinds", kinds,
         "--csv", str(tmp_path / "run"), "--only-summary", "--loglevel", "WARNING"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert completed.returncode in (0, 1), completed.stderr[-2000:]  # 1: some request failed
    with open(tmp_path / "run_stats.csv") as stats:
        return {(row["Type"], row["Name"]): row for row in csv.DictReader(stats)}


def test_headless_locust_records_a_request_its_first_token_and_its_inter_token_latency(tmp_path):
    emulator = start_emulator(tmp_path, 0.05, 200.0, TOKENS)
    server = start_gunicorn(tmp_path, upstream_env(emulator))
    try:
        rows = locust(tmp_path, server.url, "block,stream,stream-sse,openai-block,openai-stream")
    finally:
        server.stop()
        emulator.stop()
    streams = ("GET /stream", "GET /stream sse", "POST /v1/chat/completions stream")
    expected = [("GET", "GET /"), ("TTFT", "GET /"), ("POST", "POST /v1/chat/completions"),
                *[(method, name) for name in streams for method in (name.split()[0], "TTFT", "ITL")]]
    for key in expected:
        assert key in rows, sorted(rows)
        assert int(rows[key]["Request Count"]) > 0 and int(rows[key]["Failure Count"]) == 0, rows[key]
    for name in streams:
        requests, itl = rows[(name.split()[0], name)], rows[("ITL", name)]
        # One event per request for each figure, not one per chunk.
        assert int(itl["Request Count"]) == int(requests["Request Count"])
        # The request's time is send to last byte: the first token and the 10 tokens at 200/s after it.
        assert float(requests["Median Response Time"]) >= 50 + (TOKENS - 1) * 5
        assert 3 <= float(itl["Median Response Time"]) <= 50  # 5 ms a token, whatever the load
        assert float(requests["Average Content Size"]) > 0  # body bytes


def test_a_stream_cut_mid_way_is_a_failure(tmp_path):
    emulator = start_emulator(tmp_path, 0.02, 400.0, TOKENS)
    emulator.arm(cut_after=3, count=1000)
    try:
        rows = locust(tmp_path, emulator.url, "openai-stream")
    finally:
        emulator.stop()
    name = "POST /v1/chat/completions stream"
    assert int(rows[("POST", name)]["Failure Count"]) == int(rows[("POST", name)]["Request Count"]) > 0
    assert ("TTFT", name) not in rows
