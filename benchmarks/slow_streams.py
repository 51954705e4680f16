"""2,000 concurrent slow streams held by one gevent worker: errors and memory per stream.

    python benchmarks/slow_streams.py [--streams 2000] [--tokens-per-second 5] [--tokens 50]

Starts the emulator (CPU 1) and gunicorn with one gevent worker (CPU 0), warms the
worker up, then opens every stream at once with the load tester (CPU 1) and samples
the worker's resident memory while they are all in flight. Prints the load tester's
table and the worker's memory: before, at the peak, and per open stream.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flaskapp.loadtest.rig import start_emulator, start_gunicorn  # noqa: E402


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=2000, help="Concurrent streams (default: %(default)s).")
    parser.add_argument("--tokens-per-second", type=float, default=5.0,
                        help="The emulator's pace: slow, so every stream stays open (default: %(default)s).")
    parser.add_argument("--tokens", type=int, default=50, help="Answer length (default: %(default)s).")
    args = parser.parse_args()

    logs = Path(tempfile.mkdtemp(prefix="slow-streams-"))
    emulator = start_emulator(logs, 0.5, args.tokens_per_second, args.tokens, cpus={1})
    server = start_gunicorn(logs, f"{emulator.url}/v1", ["-k", "gevent", "-w", "1"], cpus={0},
                            extra_env={"FLASKAPP_MAX_INFLIGHT": "0", "GUNICORN_WORKER_CONNECTIONS": "10000"})
    try:
        worker, = server.worker_pids()
        load = [sys.executable, "-m", "flaskapp.loadtest", "run", server.url, "-k", "stream", "--quiet"]
        subprocess.run(["taskset", "-c", "1", *load, "-c", "50", "-n", "200"], check=True, capture_output=True)
        before = rss_kib(worker)
        tester = subprocess.Popen(["taskset", "-c", "1", *load, "-c", str(args.streams), "-n", str(args.streams),
                                   "--timeout", "120"], stdout=subprocess.PIPE, text=True)
        peak = before
        while tester.poll() is None:
            peak = max(peak, rss_kib(worker))
            time.sleep(0.2)
        print(tester.stdout.read())
        per_stream = (peak - before) * 1024 / args.streams
        print(f"worker RSS: {before / 1024:.1f} MiB before, {peak / 1024:.1f} MiB at the peak, "
              f"{per_stream / 1024:.1f} KiB per open stream ({args.streams} streams)")
    finally:
        server.stop()
        emulator.stop()


if __name__ == "__main__":
    main()
