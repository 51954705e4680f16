"""Per-request cost: flaskapp's worker CPU per request beside a Flask hello-world under the same worker.

    python benchmarks/per_request.py [--requests 2000] [--repeats 3] [--concurrency 50] [--app-root DIR]
                                     [--also DIR] [--gunicorn-args ARGS] [--only-flaskapp]

Starts the emulator (CPU 1; first token at once, one-token answers) and, on CPU 0, one
gunicorn gevent worker under flaskapp's `gunicorn.conf.py` for each app in turn: the
hello-world (`benchmarks/peers/hello`: a plain view and a one-piece `stream_with_context`
view, and the same two calling the model as barely as a relay can: the floor under
flaskapp's views) and flaskapp (`/healthz`, `/` and `/stream` with one-token answers). A gevent driver
on CPU 1 sends `--requests` requests per path, `--concurrency` in flight, each on its own
connection (`Connection: close`, as a burst of new clients arrives). The worker's CPU is
read from the kernel's nanosecond run time (/proc/<pid>/schedstat); each figure is the
median of `--repeats` runs. Every server is up for the whole run and each repeat measures
every path in turn, so a drift in the machine's speed touches every row alike. `--app-root`
measures flaskapp from another checkout; `--also DIR` measures another checkout beside it,
in the same run (before and after).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HELLO = [("hello `/` (plain view)", "/"), ("hello `/stream` (one-piece stream)", "/stream"),
         ("hello `/relay/whole`, one token (bare model call)", "/relay/whole?prompt=hi&max_tokens=1"),
         ("hello `/relay`, one token (bare streamed model call)", "/relay?prompt=hi&max_tokens=1")]
FLASKAPP = [("flaskapp `/healthz`", "/healthz"), ("flaskapp `/`, one token", "/?prompt=hi&max_tokens=1"),
            ("flaskapp `/stream`, one token", "/stream?prompt=hi&max_tokens=1")]
RATIOS = {"flaskapp `/`, one token": "hello `/` (plain view)",
          "flaskapp `/stream`, one token": "hello `/stream` (one-piece stream)",
          "flaskapp `/healthz`": "hello `/` (plain view)",
          "hello `/relay/whole`, one token (bare model call)": "hello `/` (plain view)",
          "hello `/relay`, one token (bare streamed model call)": "hello `/stream` (one-piece stream)"}


# -- the driver (`--drive`), a process of its own on CPU 1 --------------------------------
def drive(port: int, path: str, requests: int, concurrency: int) -> None:
    from gevent import monkey

    monkey.patch_all()
    import socket

    from gevent.pool import Pool

    message = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
    failures = []

    def one() -> None:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(message)
            head = sock.recv(65536)
            while sock.recv(65536):
                pass
        if not head.startswith(b"HTTP/1.1 200"):
            failures.append(head[:40])

    pool = Pool(concurrency)
    for _ in range(requests):
        pool.spawn(one)
    pool.join()
    if failures:
        sys.exit(f"{len(failures)} of {requests} requests failed: {failures[0]!r}")


# -- the measurement ------------------------------------------------------------------------
def run_time(pid: int) -> float:
    """Seconds this process has run on a CPU (the kernel's nanosecond count, all threads)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def _cost(port: int, pid: int, path: str, requests: int, concurrency: int) -> float:
    before = run_time(pid)
    subprocess.run(["taskset", "-c", "1", sys.executable, __file__, "--drive", str(port), path,
                    str(requests), str(concurrency)], check=True)
    return (run_time(pid) - before) / requests


def _serve(logs: Path, app_root: Path, upstream: str, hello: bool, extra: tuple[str, ...] = ()):
    from flaskapp.loadtest import rig

    sock = rig.free_listener()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "FLASKAPP_", "GUNICORN_"))}
    env.update({"OPENAI_BASE_URL": upstream, "OPENAI_API_KEY": "sk-per-request", "WEB_CONCURRENCY": "1"})
    command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "-b", f"fd://{sock.fileno()}",
               "-k", "gevent", "-w", "1", *extra]
    if hello:
        command += ["--pythonpath", str(ROOT / "benchmarks" / "peers" / "hello")]
    log_path = logs / f"{'hello' if hello else 'flaskapp'}.log"
    with open(log_path, "wb") as log:
        # Run from the app's checkout, so that its gunicorn.conf.py and flaskapp are the ones loaded.
        process = subprocess.Popen([*command, "wsgi:app"], cwd=app_root, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, pass_fds=[sock.fileno()], start_new_session=True,
                                   preexec_fn=lambda: os.sched_setaffinity(0, {0}))
    server = rig.Server("gunicorn", process, sock.getsockname()[1], log_path)
    sock.close()
    server.wait_ready()
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="Requests per path and run (default: %(default)s).")
    parser.add_argument("--repeats", type=int, default=3, help="Runs per path; the median is shown (default: %(default)s).")
    parser.add_argument("--concurrency", type=int, default=50, help="Requests in flight (default: %(default)s).")
    parser.add_argument("--app-root", type=Path, default=ROOT,
                        help="The flaskapp checkout to measure (default: this one).")
    parser.add_argument("--gunicorn-args", default="",
                        help="More gunicorn arguments for flaskapp's server, e.g. '--log-level warning' "
                             "(no request log: what its line costs).")
    parser.add_argument("--also", type=Path, action="append", default=[], metavar="DIR",
                        help="Measure flaskapp from this checkout too, in the same run (before/after).")
    parser.add_argument("--only-flaskapp", action="store_true", help="Skip the hello-world (no ratios).")
    parser.add_argument("--drive", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        port, path, requests, concurrency = args.drive
        return drive(int(port), path, int(requests), int(concurrency))

    from flaskapp.loadtest.rig import start_emulator

    logs = Path(tempfile.mkdtemp(prefix="per-request-"))
    emulator = start_emulator(logs, 0.0, 1000.0, 1, cpus={1})
    upstream = f"{emulator.url}/v1"
    # (server, its rows): every server up at once, their paths measured in turn in each repeat,
    # so that a drift of the machine's speed touches every row alike.
    servers: list[tuple[Any, list[tuple[str, str]]]] = []
    runs: dict[str, list[float]] = {}
    try:
        if not args.only_flaskapp:
            servers.append((_serve(logs, ROOT, upstream, True), HELLO))
        extra = tuple(args.gunicorn_args.split())
        servers.append((_serve(logs, args.app_root.resolve(), upstream, False, extra), FLASKAPP))
        for other in args.also:
            rows = [(f"{name} [{other.name}]", path) for name, path in FLASKAPP]
            RATIOS.update({f"{name} [{other.name}]": base for name, base in RATIOS.items() if name.startswith("flaskapp")})
            servers.append((_serve(logs, other.resolve(), upstream, False, extra), rows))
        for server, rows in servers:
            for _, path in rows:
                _cost(server.port, server.worker_pids()[0], path, min(args.requests, 500), args.concurrency)  # warm up
        for _ in range(args.repeats):
            for server, rows in servers:
                for name, path in rows:
                    cost = _cost(server.port, server.worker_pids()[0], path, args.requests, args.concurrency)
                    runs.setdefault(name, []).append(cost)
    finally:
        for server, _ in servers:
            server.stop()
        emulator.stop()
    results = {name: statistics.median(costs) for name, costs in runs.items()}
    for name, costs in runs.items():
        print(f"  {name}: " + ", ".join(f"{cost * 1000:.3f}" for cost in costs) + " ms")

    print(f"\n{args.requests} requests x {args.repeats} per path, {args.concurrency} in flight, "
          f"Connection: close; worker CPU (CPU 0), median\n")
    print(f"| request | worker CPU per request | vs Flask hello-world |\n|---|---:|---:|")
    for name, cost in results.items():
        base = RATIOS.get(name)
        ratio = f"{cost / results[base]:.2f}×" if base in results else ("1" if not base else "")
        print(f"| {name} | {cost * 1000:.3f} ms | {ratio} |")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
