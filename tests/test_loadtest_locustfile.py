"""locustfile.py: a short headless Locust run against the real app records TTFB and inter-chunk rows."""
from __future__ import annotations

import csv
import subprocess
import sys

from servers import ROOT, start_emulator, start_gunicorn, upstream_env


def test_headless_locust_records_ttfb_inter_chunk_and_end_to_end(tmp_path):
    emulator = start_emulator(tmp_path, 0.05, 200.0, 10)
    server = start_gunicorn(tmp_path, upstream_env(emulator))
    try:
        completed = subprocess.run(
            [sys.executable, "-m", "locust", "-f", str(ROOT / "locustfile.py"), "--host", server.url,
             "--headless", "-u", "2", "-r", "2", "-t", "2s", "--kinds", "block,stream,stream-sse",
             "--csv", str(tmp_path / "run"), "--only-summary", "--loglevel", "WARNING"],
            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    finally:
        server.stop()
        emulator.stop()
    assert completed.returncode == 0, completed.stderr[-2000:]
    with open(tmp_path / "run_stats.csv") as stats:
        rows = {(row["Type"], row["Name"]): row for row in csv.DictReader(stats)}
    for key in [("TTFB", "GET /stream"), ("INTER-CHUNK", "GET /stream"), ("END-TO-END", "GET /stream"),
                ("TTFB", "GET /"), ("END-TO-END", "GET /stream sse")]:
        assert key in rows, sorted(rows)
        assert int(rows[key]["Request Count"]) > 0 and int(rows[key]["Failure Count"]) == 0
