"""Serving the emulator: a gevent pywsgi server, from the command line or from a test."""
from __future__ import annotations

import argparse
import logging
import os
import sys

# gevent's own sockets: the emulator cooperates without monkey-patching the process,
# so it also runs inside `flask emulator` where the standard library is already imported.
import gevent
from gevent import pywsgi, socket

from .app import Emulator, EmulatorSettings

log = logging.getLogger("flaskapp.emulator")


class _Handler(pywsgi.WSGIHandler):
    def handle(self):
        # As production servers do (uvicorn through asyncio, gunicorn, nginx): without it,
        # a response's second small write waits for the ACK of its first, which a caller on
        # a kept-alive connection delays by up to 40 ms.
        try:
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # not TCP (a Unix socket in a test)
        return super().handle()

    def get_environ(self):
        environ = super().get_environ()
        environ["emulator.socket"] = self.socket  # lets long waits notice a caller hanging up
        return environ


def make_server(listener: socket.socket | tuple[str, int], settings: EmulatorSettings,
                access_log: bool = False) -> pywsgi.WSGIServer:
    backlog = None
    if hasattr(listener, "accept"):
        listener.setblocking(False)  # gevent's accept loop expects a non-blocking listener
    else:
        backlog = 4096
    return pywsgi.WSGIServer(listener, Emulator(settings), handler_class=_Handler,
                             log=sys.stderr if access_log else None, backlog=backlog)


def build_parser(prog: str = "python -m flaskapp.emulator") -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog=prog,
        description="An OpenAI-compatible server (chat completions with n, tool calls and JSON "
                    "answers; legacy completions; embeddings; the Responses API) that writes "
                    "deterministic answers at a set pace.")
    where = parser.add_argument_group("where it listens")
    where.add_argument("--host", default=env("FLASKAPP_EMULATOR_HOST", "127.0.0.1"),
                       help="Address to bind (default: %(default)s).")
    where.add_argument("--port", type=int, default=int(env("FLASKAPP_EMULATOR_PORT", "8001")),
                       help="Port to bind; 0 picks a free one (default: %(default)s).")
    where.add_argument("--fd", type=int, default=None,
                       help="Serve on an already-listening socket inherited as this file descriptor.")
    timing = parser.add_argument_group("timing and text")
    timing.add_argument("--ttft", type=float, default=float(env("FLASKAPP_EMULATOR_TTFT", "1.0")),
                        help="Seconds before the first token (default: %(default)s).")
    timing.add_argument("--tokens-per-second", type=float,
                        default=float(env("FLASKAPP_EMULATOR_TOKENS_PER_SECOND", "50")),
                        help="Pace of the answer (default: %(default)s).")
    timing.add_argument("--tokens", type=int, default=int(env("FLASKAPP_EMULATOR_TOKENS", "500")),
                        help="Prose answers' natural length in tokens, ending with finish_reason \"stop\"; a request's "
                             "lower max_tokens cuts them with \"length\" (default: %(default)s).")
    timing.add_argument("--seed", type=int, default=int(env("FLASKAPP_EMULATOR_SEED", "0")),
                        help="Seed of the generated prose; same seed and prompt, same answer.")
    timing.add_argument("--api-key", default=env("FLASKAPP_EMULATOR_API_KEY"),
                        help="Require this bearer token (default: accept any).")
    timing.add_argument("--obfuscation", action="store_true", default=env("FLASKAPP_EMULATOR_OBFUSCATION", "") == "1",
                        help="Pad every streamed chat chunk with an `obfuscation` string, as OpenAI does unless a "
                             "request's stream_options.include_obfuscation is false (default: only for requests "
                             "that set it true).")
    parser.add_argument("--access-log", action="store_true", help="Log every request to stderr.")
    parser.add_argument("--exit-with-parent", action="store_true",
                        help="Exit when the process that started this one goes away (used by the embedded mode).")
    return parser


def settings_from_args(args: argparse.Namespace) -> EmulatorSettings:
    if args.ttft < 0 or args.tokens_per_second <= 0 or args.tokens < 1:
        raise SystemExit("emulator: --ttft must be >= 0, --tokens-per-second > 0, --tokens >= 1")
    return EmulatorSettings(ttft=args.ttft, tokens_per_second=args.tokens_per_second,
                            tokens=args.tokens, seed=args.seed, api_key=args.api_key, obfuscation=args.obfuscation)


def serve(args: argparse.Namespace) -> None:
    settings = settings_from_args(args)
    if args.fd is not None:
        listener = socket.socket(fileno=args.fd)
    else:
        listener = socket.create_server((args.host, args.port), backlog=4096)
    server = make_server(listener, settings, access_log=args.access_log)
    host, port = listener.getsockname()[:2]
    print(f"emulator: listening on http://{host}:{port}/v1 (first token after {settings.ttft:g} s, "
          f"{settings.tokens_per_second:g} tokens/s, {settings.tokens} tokens)", file=sys.stderr, flush=True)
    if args.exit_with_parent:
        gevent.spawn(_exit_with_parent, os.getppid(), server)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


def _exit_with_parent(parent: int, server: pywsgi.WSGIServer) -> None:
    # An orphan emulator would hold its port after gunicorn died by SIGKILL.
    while os.getppid() == parent:
        gevent.sleep(1.0)
    server.stop(timeout=1)


def main(argv: list[str] | None = None, prog: str = "python -m flaskapp.emulator") -> None:
    serve(build_parser(prog).parse_args(argv))
