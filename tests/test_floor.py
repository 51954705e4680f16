"""benchmarks/floor.py: the bare relay the hot path is measured against, and its command.

The README's floor figures are only worth something if the bare relay relays: every
byte of every answer, over kept-alive upstream connections, as any real relay would.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from flaskapp.loadtest import rig
from servers import ROOT, Process, request, start_emulator

FLOOR = ROOT / "benchmarks" / "floor.py"


def established_to(port: int) -> int:
    """Open TCP connections whose server end is this loopback port (from /proc/net/tcp)."""
    rows = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
    return sum(1 for row in rows if row[1].endswith(f":{port:04X}") and row[3] == "01")


def start_floor(tmp_path, upstream_port: int) -> Process:
    sock = rig.free_listener()
    port = sock.getsockname()[1]
    log_path = tmp_path / f"floor-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, str(FLOOR), "--serve", str(sock.fileno()),
                                    "--upstream-port", str(upstream_port)],
                                   stdout=log, stderr=subprocess.STDOUT, pass_fds=[sock.fileno()])
    sock.close()
    floor = Process("floor", process, port, log_path)
    floor.wait_ready()
    return floor


def test_the_bare_relay_passes_every_answer_on_whole_over_kept_alive_connections(tmp_path):
    emulator = start_emulator(tmp_path, tokens=20)
    floor = start_floor(tmp_path, emulator.port)
    try:
        for _ in range(3):
            status, headers, body = request("GET", f"{floor.url}/stream?prompt=hi&max_tokens=20")
            assert status == 200 and headers["content-type"] == "text/event-stream"
            events = [line for line in body.split(b"\n") if line.startswith(b"data: ")]
            assert len([e for e in events if b'"content":"' in e and b'"content":""' not in e]) == 20
            assert events[-1] == b"data: [DONE]"
        assert emulator.stats()["streams_completed"] == 3
        assert established_to(emulator.port) == 1  # one upstream connection, kept alive and reused
    finally:
        floor.stop()
        emulator.stop()


def test_the_floor_command_measures_both_relays():
    # The README's floor table comes from this command: keep it working.
    result = subprocess.run([sys.executable, str(FLOOR), "--concurrency", "3", "--rounds", "1", "--intervals", "0",
                             "--tokens-per-second", "1000"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines() if line.startswith(("floor ", "flaskapp "))]
    assert [row[0] for row in rows] == ["floor", "flaskapp"]
