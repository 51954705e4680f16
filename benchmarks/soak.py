"""The soak: mixed requests, random hang-ups and armed upstream faults on one worker, for minutes.

    python benchmarks/soak.py [--duration 240] [--concurrency 50]

Starts the emulator (CPU 1; first token after 20 ms, 1,000 tokens a second) and flaskapp as
documented (`gunicorn -c gunicorn.conf.py wsgi:app`, one gevent worker, CPU 0). A gevent driver
(CPU 1) keeps `--concurrency` requests in flight for `--duration` seconds, each drawn at random:
the blocking view, the text and SSE streams, `/v1/chat/completions` streamed and not; a fifth of
them hang up (before the answer, after its head, or mid-stream), and every 50th request arms an
upstream fault for the next call (error statuses, a delay, a stall, a cut, a malformed event).

Reports the requests by status, any 500 (there must be none), the worker's resident memory
growth per 10,000 requests after a warm-up, a traceback or the upstream key in the log (there
must be none), and how long after the last request every upstream call had ended (the
emulator's `in_flight` back to 0).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

KEY = "sk-soak-secret-0123456789abcdef"
FAULTS = [{"status": 429, "retry_after": 1}, {"status": 500}, {"status": 503}, {"delay": 2},
          {"stall_after": 3, "stall": 2}, {"cut_after": 5}, {"malformed_after": 5}, {"fail_after": 4}]


# -- the driver (`--drive`), a process of its own on CPU 1 --------------------------------------
def drive(port: int, emulator_port: int, duration: float, concurrency: int) -> None:
    from gevent import monkey

    monkey.patch_all()
    import random
    import socket

    import gevent

    statuses: collections.Counter = collections.Counter()
    chat = json.dumps({"model": "gpt-4", "messages": [{"role": "user", "content": "soak"}], "max_tokens": 40})
    chat_stream = json.dumps({"model": "gpt-4", "messages": [{"role": "user", "content": "soak"}],
                              "max_tokens": 40, "stream": True})
    kinds = [("GET", "/?prompt=soak&max_tokens=40", ""), ("GET", "/stream?prompt=soak&max_tokens=40", ""),
             ("GET", "/stream?prompt=soak&max_tokens=40&format=sse", ""),
             ("POST", "/v1/chat/completions", chat), ("POST", "/v1/chat/completions", chat_stream)]
    count = 0
    end = time.monotonic() + duration

    def arm() -> None:
        body = json.dumps(random.choice(FAULTS)).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{emulator_port}/_emulator/faults", data=body,
                                         headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=5).read()

    def one() -> None:
        nonlocal count
        method, path, body = random.choice(kinds)
        hang_up = random.choice(["before", "head", "middle"]) if random.random() < 0.2 else None
        message = (f"{method} {path} HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n"
                   f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}").encode()
        count += 1
        if count % 50 == 0:
            arm()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                sock.sendall(message)
                if hang_up == "before":
                    gevent.sleep(random.random() * 0.05)
                    statuses["hung up"] += 1
                    return
                data = sock.recv(65536)
                status = data[9:12].decode() if data.startswith(b"HTTP/1.1 ") else "none"
                if hang_up == "head":
                    statuses["hung up"] += 1
                    return
                if hang_up == "middle":
                    sock.recv(1024)
                    statuses["hung up"] += 1
                    return
                while sock.recv(65536):
                    pass
                statuses[status] += 1
        except OSError as exc:
            statuses[f"client error: {type(exc).__name__}"] += 1

    def loop() -> None:
        while time.monotonic() < end:
            one()

    gevent.joinall([gevent.spawn(loop) for _ in range(concurrency)])
    print(json.dumps({"requests": count, "statuses": dict(statuses)}))


# -- the measurement ------------------------------------------------------------------------------
def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _drive(server, emulator, seconds: float, concurrency: int) -> dict:
    result = subprocess.run(["taskset", "-c", "1", sys.executable, __file__, "--drive", str(server.port),
                             str(emulator.port), str(seconds), str(concurrency)],
                            check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=240, help="Seconds of load (default: %(default)s).")
    parser.add_argument("--concurrency", type=int, default=50, help="Requests in flight (default: %(default)s).")
    parser.add_argument("--drive", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        port, emulator_port, seconds, concurrency = args.drive
        return drive(int(port), int(emulator_port), float(seconds), int(concurrency))

    from flaskapp.loadtest.rig import get_json, start_emulator, start_gunicorn

    logs = Path(tempfile.mkdtemp(prefix="soak-"))
    emulator = start_emulator(logs, 0.02, 1000.0, 40, cpus={1})
    server = start_gunicorn(logs, f"{emulator.url}/v1", ["-k", "gevent", "-w", "1"], cpus={0},
                            extra_env={"OPENAI_API_KEY": KEY, "FLASKAPP_MAX_RETRIES": "0",
                                       "FLASKAPP_FIRST_TOKEN_TIMEOUT": "5", "FLASKAPP_IDLE_TIMEOUT": "1"})
    try:
        worker = server.worker_pids()[0]
        warm = _drive(server, emulator, min(20.0, args.duration / 10), args.concurrency)
        rss_before = rss_kib(worker)
        started = time.monotonic()
        soak = _drive(server, emulator, args.duration, args.concurrency)
        elapsed = time.monotonic() - started
        finished = time.monotonic()
        while get_json(f"{emulator.url}/_emulator/stats")["in_flight"] and time.monotonic() - finished < 30:
            time.sleep(0.05)
        drained = time.monotonic() - finished
        in_flight = get_json(f"{emulator.url}/_emulator/stats")["in_flight"]
        rss_after = rss_kib(worker)
        log = server.log_path.read_text(errors="replace")
    finally:
        server.stop()
        emulator.stop()

    requests = soak["requests"]
    print(f"{requests:,} requests in {elapsed:.0f} s after a warm-up of {warm['requests']:,}, "
          f"{args.concurrency} in flight, one gevent worker")
    for status, count in sorted(soak["statuses"].items()):
        print(f"  {status}: {count:,}")
    print(f"500s: {soak['statuses'].get('500', 0)}")
    print(f"worker RSS {rss_before:,} -> {rss_after:,} KiB: "
          f"{(rss_after - rss_before) / max(requests, 1) * 10_000:+.0f} KiB per 10,000 requests")
    print(f"upstream calls still open after the last request: {in_flight} "
          f"(all ended {drained:.2f} s after it)" if not in_flight else f"upstream calls still open: {in_flight}")
    print(f"worker restarts: {log.count('Booting worker') - 1}; tracebacks in the log: {log.count('Traceback')}; "
          f"the key in the log: {KEY in log or KEY[-10:] in log}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
