"""Locust users for the blocking and streaming views, with time to first byte and inter-chunk times as metrics.

For load that outgrows one machine; on one machine `python -m flaskapp.loadtest` drives
more streams per core. Each streaming request fires, besides Locust's own request
event (which for a streamed body only times the response headers), events of its own:

    TTFB         GET /stream        send to the first byte of text
    INTER-CHUNK  GET /stream        one event per gap between chunks as they arrive
    END-TO-END   GET /stream        send to the last byte; a failure when the stream broke

(the same for `/` with TTFB and END-TO-END, and for `/stream?format=sse`). They appear in
Locust's tables, charts and CSV files as separate rows, with percentiles.

Run on one machine (headless, 100 users, 20 started per second, for one minute):

    locust -f locustfile.py --host http://127.0.0.1:8000 --headless -u 100 -r 20 -t 1m

Run distributed: one master, and as many workers as there are cores on the load machines
(each worker is one process, one core). The master only aggregates; the workers need
the same locustfile.py and reach the master on port 5557:

    locust -f locustfile.py --master --host http://APP:8000 --headless -u 2000 -r 200 -t 2m \\
        --expect-workers 4
    locust -f locustfile.py --worker --master-host MASTER    # on each load machine, once per core

Options of this file (given to the master; Locust passes them on to the workers):
`--kinds block,stream,stream-sse`, `--prompt TEXT`, `--max-tokens N`.

Locust is gevent-based and patches the standard library itself before loading this file,
so nothing here imports the app or patches anything.
"""
from __future__ import annotations

import time

from locust import HttpUser, constant, events, task
from requests.exceptions import ChunkedEncodingError, ConnectionError as RequestsConnectionError


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    parser.add_argument("--kinds", default="block,stream", include_in_web_ui=True,
                        help="Comma-separated kinds each user picks from: block, stream, stream-sse.")
    parser.add_argument("--prompt", default="Write a short story about a lighthouse keeper.",
                        include_in_web_ui=True, help="The prompt sent with every request.")
    parser.add_argument("--max-tokens", type=int, default=0, include_in_web_ui=True,
                        help="Ask for at most this many tokens (0: leave it to the server).")


class PromptUser(HttpUser):
    """One simulated user: sends one request after another, with no pause, like the load tester."""

    wait_time = constant(0)

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.kinds = [k.strip() for k in (options.kinds if options else "block,stream").split(",") if k.strip()]
        self.prompt = options.prompt if options else "Write a short story."
        self.max_tokens = options.max_tokens if options else 0
        self.turn = 0

    @task
    def prompt_request(self) -> None:
        kind = self.kinds[self.turn % len(self.kinds)]
        self.turn += 1
        params = {"prompt": self.prompt}
        if self.max_tokens:
            params["max_tokens"] = self.max_tokens
        if kind == "stream-sse":
            params["format"] = "sse"
        path = "/" if kind == "block" else "/stream"
        self._timed_request(f"GET {path}" + (" sse" if kind == "stream-sse" else ""), path, params,
                            sse=kind == "stream-sse")

    def _fire(self, request_type: str, name: str, seconds: float, length: int = 0,
              exception: Exception | None = None) -> None:
        self.environment.events.request.fire(request_type=request_type, name=name, response_time=seconds * 1000,
                                             response_length=length, exception=exception, context={})

    def _timed_request(self, name: str, path: str, params: dict, sse: bool) -> None:
        sent = time.perf_counter()
        last = None
        length = 0
        error: Exception | None = None
        tail = b""
        try:
            with self.client.get(path, params=params, stream=True, name=name, catch_response=True) as response:
                if response.status_code != 200:
                    response.failure(f"HTTP {response.status_code}")
                    error = RuntimeError(f"http_{response.status_code}")
                else:
                    # chunk_size=None: each piece as the server flushed it, not re-blocked.
                    for piece in response.iter_content(chunk_size=None):
                        now = time.perf_counter()
                        if last is None:
                            self._fire("TTFB", name, now - sent, len(piece))
                        else:
                            self._fire("INTER-CHUNK", name, now - last, len(piece))
                        last, length = now, length + len(piece)
                        if sse:
                            tail = (tail + piece)[-4096:]
                    if sse and b"event: error" in tail:
                        error = RuntimeError("stream_error")
                    elif sse and b"event: done" not in tail:
                        error = RuntimeError("truncated")
                    if error:
                        response.failure(str(error))
                    else:
                        response.success()
        except ChunkedEncodingError:  # the incomplete chunked transfer of a stream that failed mid-way
            error = RuntimeError("truncated")
        except RequestsConnectionError as exc:
            error = exc
        self._fire("END-TO-END", name, time.perf_counter() - sent, length, error)
