"""The floor: what relaying a token costs a gevent worker on this machine, before any framework.

    python benchmarks/floor.py [--concurrency 500] [--rounds 2] [--intervals 0,0.05,0.1] [--obfuscation]

Starts the emulator (CPU 1; 20 ms a token, 100 tokens, as the experiment's rig) and,
on CPU 0, each of two relays in turn:

- the floor: a bare gevent server (this file, `--serve`) that does only what any relay
  must — one `recv()` from a kept-alive upstream connection and one `send()` to the
  client per read, the upstream's chunked bytes passed on unparsed. No HTTP parsing
  beyond the request line, no Flask, no gunicorn, no checks;
- flask: Flask's own floor, the hello-world peer's bare relay (`benchmarks/peers/hello`,
  `HELLO_RELAY=1`) under the same gunicorn worker and `gunicorn.conf.py`: the same reads
  and writes, through gunicorn, WSGI and a `stream_with_context` generator, with nothing
  parsed or checked (interval 0 only);
- flaskapp: one gevent worker under `gunicorn.conf.py`, with FLASKAPP_STREAM_INTERVAL.

Each relay is driven by the load tester (CPU 1) at `--concurrency` streams, once with
one-token answers and once with full ones, at each interval (0: every read flushed at
once; above: at most one read per stream per interval). Prints the relay's CPU per
request, per relayed token (the difference between the two runs, over 99 tokens) and
the tokens it relays per CPU-second.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TOKENS = 100
HELLO = Path(__file__).resolve().parent / "peers" / "hello"


# -- the bare relay (`--serve`) ------------------------------------------------
def serve(fd: int, upstream_port: int, interval: float) -> None:
    from gevent import monkey

    monkey.patch_all()
    import socket

    import gevent
    from gevent.server import StreamServer

    idle: list[socket.socket] = []  # kept-alive upstream connections, as any pool keeps them
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"

    def relay(client: socket.socket, _address: object) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            if not (more := client.recv(65536)):
                return
            request += more
        target = request.split(b" ", 2)[1]
        if target.startswith(b"/healthz"):
            client.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            return
        max_tokens = TOKENS
        if b"max_tokens=" in target:
            max_tokens = int(target.split(b"max_tokens=")[1].split(b"&")[0])
        body = (b'{"model":"gpt-4","stream":true,"max_tokens":%d,'
                b'"messages":[{"role":"user","content":"hi"}]}' % max_tokens)
        if idle:
            upstream = idle.pop()
        else:
            upstream = socket.create_connection(("127.0.0.1", upstream_port))
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        upstream.sendall(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        data = upstream.recv(65536)
        data = data[data.index(b"\r\n\r\n") + 4:]  # the emulator's head: 200, chunked
        wait, read_event = upstream._wait, upstream._read_event
        client.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
                       b"Connection: close\r\n\r\n")
        while True:
            if data:
                client._sock.send(data)  # the upstream's chunks are valid chunks for the client too
            if data.endswith(b"0\r\n\r\n"):
                break
            if interval:
                gevent.sleep(interval)  # let tokens gather
            else:
                wait(read_event)  # the next token is not there yet: wait, rather than fail a read first
            try:
                data = upstream._sock.recv(65536)  # the real, non-blocking socket
            except BlockingIOError:  # a pause that ended before anything came
                wait(read_event)
                data = upstream._sock.recv(65536)
            if not data:
                upstream.close()
                return
        idle.append(upstream)

    server = StreamServer(socket.socket(fileno=fd), relay)
    server.serve_forever()


# -- the measurement -------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=500, help="Streams at once (default: %(default)s).")
    parser.add_argument("--rounds", type=int, default=2, help="Requests per run: rounds x concurrency.")
    parser.add_argument("--intervals", default="0,0.05,0.1",
                        help="Comma-separated least seconds between a stream's reads (default: %(default)s).")
    parser.add_argument("--tokens-per-second", type=float, default=50.0,
                        help="The emulator's pace (default: %(default)s, the experiment's 20 ms a token).")
    parser.add_argument("--obfuscation", action="store_true",
                        help="The emulator pads every chunk, as OpenAI does by default.")
    parser.add_argument("--serve", type=int, metavar="FD", help=argparse.SUPPRESS)
    parser.add_argument("--upstream-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--interval", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        return serve(args.serve, args.upstream_port, args.interval)

    from flaskapp.loadtest.rig import start_emulator, start_gunicorn

    logs = Path(tempfile.mkdtemp(prefix="floor-"))
    emulator = start_emulator(logs, 0.5, args.tokens_per_second, TOKENS, cpus={1}, obfuscation=args.obfuscation)
    print(f"{args.concurrency} streams, {1000 / args.tokens_per_second:g} ms a token; "
          "CPU of the relay only (CPU 0)\n")
    print(f"{'relay':<10} {'interval':>8} {'ms/request (1 token)':>21} {'µs/token':>9} {'ms/request':>11} "
          f"{'tokens/CPU-s':>13}")
    try:
        for interval in (float(value) for value in args.intervals.split(",")):
            for name in ("floor", "flask", "flaskapp") if not interval else ("floor", "flaskapp"):
                if name == "floor":
                    server = _start_floor(logs, emulator.port, interval)
                    pids = [server.process.pid]
                elif name == "flask":
                    server = start_gunicorn(logs, f"{emulator.url}/v1", ["-k", "gevent", "-w", "1", "--pythonpath",
                                                                          str(HELLO)], cpus={0},
                                            extra_env={"HELLO_RELAY": "1"})
                    pids = server.worker_pids()
                else:
                    server = start_gunicorn(logs, f"{emulator.url}/v1", ["-k", "gevent", "-w", "1"], cpus={0},
                                            extra_env={"FLASKAPP_STREAM_INTERVAL": str(interval),
                                                       "FLASKAPP_MAX_INFLIGHT": "20000"})
                    pids = server.worker_pids()
                try:
                    _load(server.url, args.concurrency, args.concurrency, TOKENS)  # warm up
                    one = _cost(server.url, pids, args.concurrency, args.rounds, 1)
                    full = _cost(server.url, pids, args.concurrency, args.rounds, TOKENS)
                finally:
                    server.stop()
                per_token = (full - one) / (TOKENS - 1)
                rate = f"{TOKENS / full:>13,.0f}" if full > 0 else f"{'—':>13}"  # a tiny run may use < 1 tick
                print(f"{name:<10} {interval * 1000:>6.0f} ms {one * 1000:>21.2f} {per_token * 1e6:>9.1f} "
                      f"{full * 1000:>11.2f} {rate}")
    finally:
        emulator.stop()


def _start_floor(logs: Path, upstream_port: int, interval: float):
    from flaskapp.loadtest import rig

    sock = rig.free_listener()
    command = [sys.executable, __file__, "--serve", str(sock.fileno()), "--upstream-port", str(upstream_port),
               "--interval", str(interval)]
    return rig._spawn("floor", command, sock, logs, None, {0})


def _cpu(pids: list[int]) -> float:
    from flaskapp.loadtest.rig import CLOCK_TICKS
    from flaskapp.loadtest.stats import cpu_seconds

    return sum(cpu_seconds(Path(f"/proc/{pid}/stat").read_text(), CLOCK_TICKS) for pid in pids)


def _load(url: str, concurrency: int, requests: int, max_tokens: int) -> None:
    import subprocess

    subprocess.run(["taskset", "-c", "1", sys.executable, "-m", "flaskapp.loadtest", "run", url, "-k", "stream",
                    "-c", str(concurrency), "-n", str(requests), "--max-tokens", str(max_tokens), "--quiet"],
                   check=True, stdout=subprocess.DEVNULL)


def _cost(url: str, pids: list[int], concurrency: int, rounds: int, max_tokens: int) -> float:
    """The relay's CPU seconds per request, for answers of `max_tokens` tokens."""
    before = _cpu(pids)
    _load(url, concurrency, concurrency * rounds, max_tokens)
    return (_cpu(pids) - before) / (concurrency * rounds)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
