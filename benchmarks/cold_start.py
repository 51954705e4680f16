"""Cold start: the first burst on a fresh worker against a burst on the same worker once warm.

    python benchmarks/cold_start.py [--servers 5] [--streams 100] [--tokens 20] [--workers 1]

Starts the emulator (CPU 1; first token after 20 ms, then a token every 20 ms) and, `--servers`
times, a fresh flaskapp as documented (`gunicorn -c gunicorn.conf.py wsgi:app`, gevent,
`--workers` workers, CPU 0). The moment `/healthz` first answers (a request waiting on the
listening socket from the start, answered as soon as a worker accepts), `--streams` text
streams are fired at once and each first byte is recorded; when they are done, a second
burst of as many on the same, now warm, server. The driver is the load tester's (asyncio,
flaskapp/loadtest), on CPU 1.

Prints first-byte p50/p99 of the fresh and the warm bursts per server and over all of them,
and the difference, as a markdown table.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flaskapp.loadtest import rig  # noqa: E402
from flaskapp.loadtest.client import fetch  # noqa: E402
from flaskapp.loadtest.exchange import Record  # noqa: E402
from flaskapp.loadtest.runner import run  # noqa: E402
from flaskapp.loadtest.stats import percentile  # noqa: E402
from flaskapp.loadtest.target import Target  # noqa: E402

TOKEN_INTERVAL = 0.02


def spawn(logs: Path, upstream: str, workers: int) -> rig.Server:
    """gunicorn as rig.start_gunicorn starts it, but not waited for: the caller watches it come up."""
    sock = rig.free_listener()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "FLASKAPP_", "GUNICORN_", "WEB_CONCURRENCY"))}
    env.update({"OPENAI_BASE_URL": upstream, "OPENAI_API_KEY": "sk-cold-start"})
    port = sock.getsockname()[1]
    log_path = logs / f"gunicorn-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "-b",
                                    f"fd://{sock.fileno()}", "-k", "gevent", "-w", str(workers), "wsgi:app"],
                                   cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   pass_fds=[sock.fileno()], start_new_session=True,
                                   preexec_fn=lambda: os.sched_setaffinity(0, {0}))
    sock.close()
    return rig.Server("gunicorn", process, port, log_path)


async def first_answer(server: rig.Server, started: float) -> float:
    """Seconds from the server's start until /healthz first answers 200."""
    target = Target(server.url)
    probe = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nConnection: close\r\n\r\n".encode()
    while True:
        record = await fetch(target, "block", started, 30.0, request=probe)
        if record.status == 200:
            return time.perf_counter() - started
        if server.process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {server.process.returncode}:\n{server.log_tail()}")
        await asyncio.sleep(0.005)


async def burst(target: Target, streams: int) -> list[Record]:
    started = time.perf_counter()
    request = target.request_bytes("stream")
    return list(await asyncio.gather(*(fetch(target, "stream", started, 60.0, request=request)
                                       for _ in range(streams))))


async def fresh_and_warm(server: rig.Server, started: float, streams: int, tokens: int, pause: float) -> dict:
    boot = await first_answer(server, started)
    await asyncio.sleep(pause)
    target = Target(server.url, prompt="cold start", max_tokens=tokens)
    fresh = await burst(target, streams)
    warm = await burst(target, streams)
    return {"boot": boot, "fresh": fresh, "warm": warm}


def first_bytes(records: list[Record]) -> list[float]:
    failed = [r for r in records if not r.ok or r.ttft is None]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(records)} streams failed: {failed[0].error} {failed[0].detail}")
    return [r.ttft for r in records]


def row(name: str, fresh: list[float], warm: list[float]) -> str:
    f50, f99, w50, w99 = (percentile(fresh, 50), percentile(fresh, 99), percentile(warm, 50), percentile(warm, 99))
    return (f"| {name} | {f50 * 1000:.1f} ms | {f99 * 1000:.1f} ms | {w50 * 1000:.1f} ms | {w99 * 1000:.1f} ms "
            f"| {(f99 - w99) * 1000:+.1f} ms |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", type=int, default=5, help="Fresh servers, one after another (default: %(default)s).")
    parser.add_argument("--streams", type=int, default=100, help="Streams per burst (default: %(default)s).")
    parser.add_argument("--tokens", type=int, default=20, help="Tokens per answer, one each 20 ms (default: %(default)s).")
    parser.add_argument("--workers", type=int, default=1, help="gunicorn workers, all on CPU 0 (default: %(default)s).")
    parser.add_argument("--pause", type=float, default=0.0,
                        help="Seconds between /healthz's first answer and the fresh burst (default: %(default)s: none), "
                             "to tell what a first burst pays from what the worker still does after it first answers.")
    args = parser.parse_args()

    logs = Path(tempfile.mkdtemp(prefix="cold-start-"))
    emulator = rig.start_emulator(logs, TOKEN_INTERVAL, 1 / TOKEN_INTERVAL, args.tokens, cpus={1})
    rig.pin_self({1})
    lines, all_fresh, all_warm = [], [], []
    try:
        for number in range(1, args.servers + 1):
            started = time.perf_counter()
            server = spawn(logs, f"{emulator.url}/v1", args.workers)
            try:
                result = run(lambda: fresh_and_warm(server, started, args.streams, args.tokens, args.pause))
            finally:
                server.stop()
            fresh, warm = first_bytes(result["fresh"]), first_bytes(result["warm"])
            all_fresh += fresh
            all_warm += warm
            lines.append(row(f"server {number} (first answer after {result['boot']:.2f} s)", fresh, warm))
            print(lines[-1], file=sys.stderr, flush=True)
    finally:
        emulator.stop()
    print(f"\n{args.servers} fresh servers, {args.workers} gevent worker(s) on CPU 0; bursts of {args.streams} "
          f"text streams, {args.tokens} tokens at {TOKEN_INTERVAL * 1000:.0f} ms (first token after "
          f"{TOKEN_INTERVAL * 1000:.0f} ms); first byte from each stream's own send\n")
    print("| server | fresh p50 | fresh p99 | warm p50 | warm p99 | p99 fresh − warm |\n|---|---:|---:|---:|---:|---:|")
    print("\n".join(lines))
    print(row(f"all {args.servers}", all_fresh, all_warm))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
