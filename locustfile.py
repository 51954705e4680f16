"""Locust users for the blocking and streaming views and the OpenAI-compatible API, measured in tokens.

For load that outgrows one machine; on one machine `python -m flaskapp.loadtest` drives
more streams per core. Users are `FastHttpUser`s (geventhttpclient: Locust's advice for
high load). Each request is one Locust request event, timed from send to the last byte
(a failure when the stream broke), plus one event per request for each token figure,
never one per chunk:

    POST   /v1/chat/completions stream   send to last byte (end-to-end latency)
    TTFT   /v1/chat/completions stream   send to the first token
    ITL    /v1/chat/completions stream   this request's inter-token latency:
                                         (last token - first token) / (output tokens - 1)

(likewise for `GET /`, `GET /stream`, `GET /stream sse` and `POST /v1/chat/completions`;
blocking answers have no ITL row). Output tokens come from the server's `usage` (the
/v1 kinds ask with `stream_options.include_usage`; the `event: done` of the SSE stream),
else are counted as words of a plain-text answer; an event's response_length is the body
bytes. They appear in Locust's tables, charts and CSV files with percentiles.

Run on one machine (headless, 100 users, 20 started per second, for one minute):

    locust -f locustfile.py --host http://127.0.0.1:8000 --headless -u 100 -r 20 -t 1m

Run distributed: one master, and as many workers as there are cores on the load machines
(each worker is one process, one core). The master only aggregates; the workers need
the same locustfile.py and reach the master on port 5557:

    locust -f locustfile.py --master --host http://APP:8000 --headless -u 2000 -r 200 -t 2m \\
        --expect-workers 4
    locust -f locustfile.py --worker --master-host MASTER    # on each load machine, once per core

Options of this file (given to the master; Locust passes them on to the workers):
`--kinds block,stream,stream-sse,openai-block,openai-stream`, `--prompt TEXT`,
`--max-tokens N`, `--model NAME`.

Locust is gevent-based and patches the standard library itself before loading this file,
so nothing here imports the app or patches anything; the file stands alone, for workers.
"""
from __future__ import annotations

import json
import time
from typing import Iterator

from locust import FastHttpUser, constant, events, task

KINDS = ("block", "stream", "stream-sse", "openai-block", "openai-stream")
NAMES = {"block": "GET /", "stream": "GET /stream", "stream-sse": "GET /stream sse",
         "openai-block": "POST /v1/chat/completions", "openai-stream": "POST /v1/chat/completions stream"}


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    parser.add_argument("--kinds", default="block,stream", include_in_web_ui=True,
                        help="Comma-separated kinds each user takes in turn: " + ", ".join(KINDS) + ".")
    parser.add_argument("--prompt", default="Write a short story about a lighthouse keeper.",
                        include_in_web_ui=True, help="The prompt sent with every request.")
    parser.add_argument("--max-tokens", type=int, default=0, include_in_web_ui=True,
                        help="Ask for at most this many tokens (0: leave it to the server).")
    parser.add_argument("--model", default="gpt-4", include_in_web_ui=True,
                        help="The model to ask for; it must be on the server's allow-list.")


def reads(response) -> Iterator[bytes]:
    """The body as the network delivers it: one piece per socket read, whatever its size.

    FastResponse.iter_content(n) waits for n bytes (or the whole body), which would time
    a token by when the next ones came, and ends quietly on a closed connection, which
    would make a cut stream look complete. So this reads the socket itself and feeds
    geventhttpclient's parser (written against geventhttpclient 2.6, locust 2.47: the
    parser keeps the decoded body in `_body_buffer` and sets `message_complete`).
    """
    raw = response._response
    while True:
        if raw._body_buffer:
            piece = bytes(raw._body_buffer)
            del raw._body_buffer[:]
            yield piece
        elif raw.message_complete:
            return
        elif raw._sock is None:
            raise ConnectionError("the connection was released before the body ended")
        else:
            data = raw._sock.recv(raw.block_size)
            if not data:
                raise ConnectionError("the connection closed before the body ended")
            raw.feed(data)


class Answer:
    """What one response's body says: tokens, when the first and last came, and whether it ended well."""

    def __init__(self, kind: str, sent: float) -> None:
        self.kind, self.sent = kind, sent
        self.sse = kind in ("stream-sse", "openai-stream")
        self.first = self.last = None
        self.chunks = self.words = 0
        self.usage_tokens: int | None = None
        self.in_word = self.finished = False
        self.error: str | None = None
        self.pending = b""
        self.body = b""

    def feed(self, piece: bytes, now: float) -> None:
        if self.kind == "openai-block":
            self.body += piece
            return
        if not self.sse:
            words = piece.split()
            self.words += len(words) - (1 if words and self.in_word and not piece[:1].isspace() else 0)
            self.in_word = not piece[-1:].isspace()
            self._text(now)
            return
        events_ = (self.pending + piece).split(b"\n\n")
        self.pending = events_.pop()
        for event in events_:
            self._event(event, now)

    def _text(self, now: float) -> None:
        self.chunks += 1
        self.first = self.first if self.first is not None else now
        self.last = now

    def _event(self, event: bytes, now: float) -> None:
        if self.kind == "openai-stream":
            if event.startswith(b"data: [DONE]"):
                self.finished = True
            elif event.startswith(b'data: {"error"'):
                self.error = "stream_error"
            else:
                if b'"content":' in event and b'"content":""' not in event and b'"content":null' not in event:
                    self._text(now)
                if b'"usage":{' in event or b'"usage": {' in event:
                    self._usage(event[6:])
        elif event.startswith(b"event: done"):
            self.finished = True
            self._usage(event.partition(b"data:")[2])
        elif event.startswith(b"event: error"):
            self.error = "stream_error"
        elif event.startswith(b"data:"):
            self._text(now)

    def _usage(self, data: bytes) -> None:
        try:
            tokens = (json.loads(data).get("usage") or {}).get("completion_tokens")
        except (ValueError, AttributeError):
            return
        if isinstance(tokens, int):
            self.usage_tokens = tokens

    def end(self, now: float) -> None:
        if self.kind == "openai-block" or self.kind == "block":
            self.first = self.last = now  # the whole answer at once
        if self.kind == "openai-block":
            self._usage(self.body)
        if self.error is None and self.sse and not self.finished:
            self.error = "truncated"

    @property
    def tokens(self) -> int:
        if self.usage_tokens is not None:
            return self.usage_tokens
        return self.chunks if self.sse else self.words

    def inter_token_latency(self) -> float | None:
        if self.first is None or self.last is None or self.tokens < 2 or self.last <= self.first:
            return None
        return (self.last - self.first) / (self.tokens - 1)


class PromptUser(FastHttpUser):
    """One simulated user: sends one request after another, with no pause, like the load tester."""

    wait_time = constant(0)

    def on_start(self) -> None:
        options = self.environment.parsed_options
        kinds = options.kinds if options else "block,stream"
        self.kinds = [k.strip() for k in kinds.split(",") if k.strip()]
        unknown = set(self.kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"--kinds takes some of {', '.join(KINDS)}, not {', '.join(sorted(unknown))}")
        self.prompt = options.prompt if options else "Write a short story."
        self.max_tokens = options.max_tokens if options else 0
        self.model = options.model if options else "gpt-4"
        self.turn = 0

    @task
    def prompt_request(self) -> None:
        kind = self.kinds[self.turn % len(self.kinds)]
        self.turn += 1
        if kind.startswith("openai"):
            body = {"model": self.model, "messages": [{"role": "user", "content": self.prompt}],
                    "stream": kind == "openai-stream"}
            if kind == "openai-stream":
                body["stream_options"] = {"include_usage": True}
            if self.max_tokens:
                body["max_tokens"] = self.max_tokens
            self._timed(kind, "POST", "/v1/chat/completions", json=body,
                        headers={"Authorization": "Bearer sk-locust"})
            return
        params = {"prompt": self.prompt}
        if self.max_tokens:
            params["max_tokens"] = str(self.max_tokens)
        if self.model != "gpt-4":
            params["model"] = self.model
        if kind == "stream-sse":
            params["format"] = "sse"
        self._timed(kind, "GET", "/" if kind == "block" else "/stream", params=params)

    def _fire(self, request_type: str, name: str, seconds: float) -> None:
        self.environment.events.request.fire(request_type=request_type, name=name, response_time=seconds * 1000,
                                             response_length=0, exception=None, context={})

    def _timed(self, kind: str, method: str, path: str, **options) -> None:
        name = NAMES[kind]
        sent = time.perf_counter()
        answer = Answer(kind, sent)
        length = 0
        with self.client.request(method, path, name=name, stream=True, catch_response=True,
                                 **options) as response:
            try:
                if response.status_code != 200:
                    answer.error = f"http_{response.status_code}"
                else:
                    for piece in reads(response):
                        length += len(piece)
                        answer.feed(piece, time.perf_counter() - sent)
                    answer.end(time.perf_counter() - sent)
            except (ConnectionError, OSError) as exc:  # a stream cut mid-way: no final chunk
                answer.error = f"truncated: {exc}"
            # The request's one event: send to the last byte, the body's bytes.
            response.request_meta["response_time"] = (time.perf_counter() - sent) * 1000
            response.request_meta["response_length"] = length
            if answer.error:
                response.failure(answer.error)
            else:
                response.success()
        if answer.error:
            return
        self._fire("TTFT", name, answer.first)
        itl = answer.inter_token_latency()
        if itl is not None:
            self._fire("ITL", name, itl)
