"""Instructions per request: a measure of per-request cost that the machine's speed does not move.

    python benchmarks/instructions.py [--requests 400] [--path /stream?prompt=hi&max_tokens=1 ...]
                                      [--app-root DIR] [--hello] [--tokens 1] [--warm-up 300] [--obfuscation]

CPU time per request drifts by a fifth from one hour to the next here (benchmarks/per_request.py
measures it the way an operator would, and so has to run every server side by side). This
counts what the request path executes instead: the app is called in process, under gevent,
as gunicorn's worker would call it (one request at a time, a real client socket pair for
the guard, the emulator on CPU 1 as the upstream, its answers one token at once), and
valgrind counts the user-space instructions of two runs that differ only in `--requests`
requests per path. Their difference, per request, moves by about 0.1 % from run to run: a
change of a few thousand instructions shows. What it leaves out: gunicorn, the kernel's side
of each system call, and the processor's caches (the same instructions cost more in a busy
worker than in this loop). The log and metrics are written only when 64 KB of lines wait
and at the end, so no timer makes one run differ from another.

`--hello` measures the hello-world peer (`benchmarks/peers/hello`) instead, whose `/relay`
is the bare model call. `--tokens 100` makes the emulator's answers 100 tokens, 5 ms apart
(so that each read holds one), for the cost of a token: the difference from one-token
answers, over 99 (ask for them: `max_tokens=100`; fewer requests and a shorter warm-up
keep the run short). Needs valgrind (Debian: `apt-get install valgrind`).
"""
from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HELLO = ROOT / "benchmarks" / "peers" / "hello"
PATHS = ["/healthz", "/?prompt=hi&max_tokens=1", "/stream?prompt=hi&max_tokens=1"]
HELLO_PATHS = ["/", "/stream", "/relay/whole?prompt=hi&max_tokens=1", "/relay?prompt=hi&max_tokens=1"]


# -- the counted process (`--run`): the app, called in process --------------------------------
def run(app_root: Path, hello: bool, path: str, requests: int, upstream: str, warm_up: int) -> None:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="instructions-")
    os.environ["OPENAI_BASE_URL"], os.environ["OPENAI_API_KEY"] = upstream, "sk-instructions-0123456789"
    from gevent import monkey

    monkey.patch_all()
    import logging
    import socket

    if hello:
        sys.path.insert(0, str(HELLO))
        from wsgi import app  # type: ignore[import-not-found]
    else:
        sys.path.insert(0, str(app_root))
        from flaskapp import create_app
        from flaskapp.ops import logformat, metrics, requestlog

        app = create_app()
        # As under gunicorn: one batching handler for the request lines, written straight to it.
        handler = logformat.BufferedLines(open(os.devnull, "w"))
        handler.setFormatter(logformat.JsonLines())
        logger = logging.getLogger("flaskapp")
        logger.handlers, logger.propagate = [handler], False
        logger.setLevel(logging.INFO)
        logging.logThreads = False
        requestlog.write_directly()
        app.extensions["upstream"].warm()
        # Written by size and at the end only: no wall-clock timer makes two runs differ.
        logformat.BufferedLines.FLUSH_AFTER = metrics.FLUSH_AFTER = 1e9

    import gc

    gc.collect()  # as the worker's warm-up ends (runtime/warm.py): the start-up heap never scanned again
    gc.freeze()
    ours, _theirs = socket.socketpair()  # the client's socket, as gunicorn hands it on
    target, _, query = path.partition("?")
    statuses = []

    def one() -> None:
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": target, "QUERY_STRING": query, "SERVER_NAME": "127.0.0.1",
                   "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
                   "wsgi.input": io.BytesIO(), "wsgi.errors": sys.stderr, "wsgi.multithread": False,
                   "wsgi.multiprocess": False, "wsgi.run_once": False, "wsgi.version": (1, 0),
                   "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "127.0.0.1:8000", "gunicorn.socket": ours}
        body = app(environ, lambda status, headers, exc_info=None: statuses.append(status))
        for _ in body:
            pass
        getattr(body, "close", lambda: None)()

    for _ in range(warm_up + requests):
        one()
    if any(not status.startswith("200") for status in statuses):
        sys.exit(f"{path}: answered {sorted(set(statuses))}")


# -- the measurement ----------------------------------------------------------------------------
def count(app_root: Path, hello: bool, path: str, requests: int, upstream: str, warm_up: int) -> int:
    """User-space instructions of one `--run` process (valgrind's count)."""
    command = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
               sys.executable, __file__, "--run", path, "--requests", str(requests), "--upstream", upstream,
               "--app-root", str(app_root), "--warm-up", str(warm_up), *(["--hello"] if hello else [])]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(["taskset", "-c", "0", *command], capture_output=True, text=True, env=env)
    found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if done.returncode or not found:
        sys.exit(f"{path}: the counted run failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400, help="Counted requests per path (default: %(default)s).")
    parser.add_argument("--path", action="append", help="A path to measure (repeatable; default: the app's usual).")
    parser.add_argument("--app-root", type=Path, default=ROOT, help="The flaskapp checkout to measure.")
    parser.add_argument("--hello", action="store_true", help="Measure the hello-world peer instead.")
    parser.add_argument("--tokens", type=int, default=1, help="The emulator's answers' tokens (default: %(default)s).")
    parser.add_argument("--obfuscation", action="store_true",
                        help="The emulator pads every chunk, as OpenAI does by default.")
    parser.add_argument("--warm-up", type=int, default=300,
                        help="Requests before the counted ones, in each run (default: %(default)s).")
    parser.add_argument("--run", help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        return run(args.app_root.resolve(), args.hello, args.run, args.requests, args.upstream, args.warm_up)
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is needed: apt-get install valgrind")

    sys.path.insert(0, str(ROOT))
    from flaskapp.loadtest.rig import start_emulator

    pace = 1000.0 if args.tokens == 1 else 200.0  # a token a read: 5 ms apart, valgrind's run is slow
    emulator = start_emulator(Path(tempfile.mkdtemp(prefix="instructions-")), 0.0, pace, args.tokens, cpus={1},
                              obfuscation=args.obfuscation)
    try:
        print("| request | instructions per request |\n|---|---:|")
        for path in args.path or (HELLO_PATHS if args.hello else PATHS):
            counted = [count(args.app_root.resolve(), args.hello, path, n, f"{emulator.url}/v1", args.warm_up)
                       for n in (args.requests, 0)]
            print(f"| `{path}` | {(counted[0] - counted[1]) / args.requests:,.0f} |", flush=True)
    finally:
        emulator.stop()


if __name__ == "__main__":
    main()
