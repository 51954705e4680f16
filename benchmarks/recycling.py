"""max_requests recycling under load: how long new requests wait with it, against without it.

    python benchmarks/recycling.py [--rate 100] [--tokens 100] [--duration 45] [--workers 1 2]
                                   [--max-requests 1000] [--jitter 100]

Starts the emulator (first token after 20 ms, then a token every 20 ms) and flaskapp as
documented (`gunicorn -c gunicorn.conf.py wsgi:app`, gevent), then for each worker count runs
the same load twice: without recycling, and with `--max-requests/--max-requests-jitter`. The
load is open-loop: text streams of `--tokens` tokens start at `--rate` a second, whatever is
in flight (100/s x 2 s answers: about 200 streams in flight), from the load tester's asyncio
driver (flaskapp/loadtest). One worker runs on CPU 0 with the emulator and the driver on CPU 1;
two workers (one per core, the default here) run on both.

Reports, per run, what a new request waits for: first-byte latency (p50, p99, max) and the
longest stall (the longest time in which no request got its first byte: arrivals are steady,
so anything well over 1/rate is the service not answering), the workers recycled (from
gunicorn's log) and any failed request.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flaskapp.loadtest import rig  # noqa: E402
from flaskapp.loadtest.exchange import Record  # noqa: E402
from flaskapp.loadtest.runner import run, run_rate  # noqa: E402
from flaskapp.loadtest.stats import percentile  # noqa: E402
from flaskapp.loadtest.target import Target  # noqa: E402

TOKEN_INTERVAL = 0.02


def first_bytes(records: list[Record]) -> list[float]:
    """Each answered request's first-byte time, counted from its own start."""
    return [r.ttft for r in records if r.ttft is not None]


def longest_stall(records: list[Record]) -> float:
    """The longest time between two successive first bytes (on the run's clock)."""
    arrivals = sorted(r.start + r.ttft for r in records if r.ttft is not None)
    return max((after - before for before, after in zip(arrivals, arrivals[1:])), default=0.0)


def one_run(logs: Path, upstream: str, workers: int, recycle: list[str], args: argparse.Namespace) -> dict:
    cpus = {0} if workers == 1 else {0, 1}
    server = rig.start_gunicorn(logs, upstream, ["-k", "gevent", "-w", str(workers), *recycle], cpus=cpus)
    try:
        target = Target(f"{server.url}", prompt="recycling", max_tokens=args.tokens)
        result = run(lambda: run_rate(target, "stream", args.rate, args.duration, timeout=60.0,
                                      time_limit=args.duration + 60.0))
    finally:
        server.stop()
    log = server.log_path.read_text(errors="replace")
    waits = first_bytes(result.records)
    failed = [r for r in result.records if not r.ok]
    return {
        "workers": workers, "recycling": " ".join(recycle) or "off", "requests": len(result.records),
        "failed": len(failed), "first_failure": failed[0].error if failed else "",
        "recycled": log.count("Autorestarting worker"), "in_flight": result.concurrency,
        "p50": percentile(waits, 50), "p99": percentile(waits, 99), "max": max(waits, default=None),
        "stall": longest_stall(result.records),
    }


def table(rows: list[dict]) -> str:
    lines = ["| workers | recycling | requests | failed | workers recycled | most in flight | first byte p50 "
             "| p99 | max | longest stall | p99 vs off |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    off = {row["workers"]: row for row in rows if row["recycling"] == "off"}
    for row in rows:
        base = off.get(row["workers"])
        delta = f"{row['p99'] - base['p99']:+.3f} s" if base and row is not base else ""
        lines.append(f"| {row['workers']} | {row['recycling']} | {row['requests']} | {row['failed']} "
                     f"| {row['recycled']} | {row['in_flight']} | {row['p50']:.3f} s | {row['p99']:.3f} s "
                     f"| {row['max']:.3f} s | {row['stall']:.3f} s | {delta} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    load = parser.add_argument_group("load")
    load.add_argument("--rate", type=float, default=100.0, help="Streams started a second (default: %(default)s).")
    load.add_argument("--tokens", type=int, default=100,
                      help="Tokens per answer, one each 20 ms (default: %(default)s, 2 s answers).")
    load.add_argument("--duration", type=float, default=45.0, help="Seconds of arrivals per run (default: %(default)s).")
    server = parser.add_argument_group("server")
    server.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Worker counts (default: 1 2).")
    server.add_argument("--max-requests", type=int, default=1000, help="gunicorn's --max-requests (default: %(default)s).")
    server.add_argument("--jitter", type=int, default=100, help="gunicorn's --max-requests-jitter (default: %(default)s).")
    args = parser.parse_args()

    logs = Path(tempfile.mkdtemp(prefix="recycling-"))
    emulator = rig.start_emulator(logs, TOKEN_INTERVAL, 1 / TOKEN_INTERVAL, args.tokens, cpus={1})
    rig.pin_self({1})
    recycle = ["--max-requests", str(args.max_requests), "--max-requests-jitter", str(args.jitter)]
    rows = []
    try:
        for workers in args.workers:
            for setting in ([], recycle):
                row = one_run(logs, f"{emulator.url}/v1", workers, setting, args)
                rows.append(row)
                print(f"  {workers} worker(s), recycling {row['recycling']}: p99 {row['p99']:.3f} s, "
                      f"max {row['max']:.3f} s, stall {row['stall']:.3f} s, recycled {row['recycled']}, "
                      f"failed {row['failed']} {row['first_failure']}", file=sys.stderr, flush=True)
    finally:
        emulator.stop()
    print(f"\nOpen-loop text streams: {args.rate:g}/s for {args.duration:g} s, {args.tokens} tokens at "
          f"{TOKEN_INTERVAL * 1000:.0f} ms (first token after {TOKEN_INTERVAL * 1000:.0f} ms); logs in {logs}\n")
    print(table(rows))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
