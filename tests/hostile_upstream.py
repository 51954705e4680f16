"""A hostile upstream: an OpenAI-compatible server that misbehaves on purpose.

`HostileUpstream` is a raw-socket HTTP/1.1 server on 127.0.0.1 (a thread per connection)
that answers every `POST /v1/chat/completions` the broken way its `mode` names: one small
function per mode in `MODES`. It records each call, when it ended, and whether our side
hung up, so a test can check that the upstream call ends. Its error messages quote the
upstream key, as OpenAI's "Incorrect API key provided: sk-..." does.
"""
from __future__ import annotations

import gzip
import json
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from servers import SECRET_KEY

KEY_MESSAGE = f"Incorrect API key provided: {SECRET_KEY}. You can find your API key at https://platform.openai.com."
SAFETY_BYTES = 300_000_000  # an "endless" answer stops here, so a broken build cannot eat the machine
SAFETY_SECONDS = 20.0  # and a dawdling one after this long


class Stopped(Exception):
    """The mode stops: our side (the service under test) hung up, or a safety limit was reached."""


@dataclass
class Call:
    request: dict
    opened: float = field(default_factory=time.monotonic)
    ended: float | None = None
    client_closed: bool = False  # the service hung up (rather than the mode finishing)
    safety_stop: bool = False  # the service let an endless answer run to SAFETY_BYTES or SAFETY_SECONDS


class Conn:
    """One upstream connection, as a mode sees it."""

    def __init__(self, sock: socket.socket, call: Call) -> None:
        self.sock, self.call, self.sent = sock, call, 0

    def send(self, data: bytes) -> None:
        if self.sent > SAFETY_BYTES or time.monotonic() - self.call.opened > SAFETY_SECONDS:
            self.call.safety_stop = True
            raise Stopped()
        try:
            self.sock.sendall(data)
        except OSError:
            self.call.client_closed = True
            raise Stopped() from None
        self.sent += len(data)

    def head(self, status: str = "200 OK", *headers: str, stream: bool = True) -> None:
        kind = "text/event-stream" if stream else "application/json"
        lines = [f"HTTP/1.1 {status}", f"Content-Type: {kind}", *headers]
        if not any(h.lower().startswith(("content-length", "transfer-encoding")) for h in headers):
            lines.append("Transfer-Encoding: chunked")
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode())

    def chunk(self, data: bytes) -> None:
        self.send(b"%x\r\n%s\r\n" % (len(data), data))

    def end(self) -> None:
        self.send(b"0\r\n\r\n")

    def pause(self, seconds: float) -> None:
        """Wait, noticing at once when the service hangs up."""
        if select.select([self.sock], [], [], seconds)[0]:
            try:
                hung_up = not self.sock.recv(65536, socket.MSG_PEEK)
            except OSError:  # reset
                hung_up = True
            if hung_up:
                self.call.client_closed = True
                raise Stopped()


# -- what the upstream says -----------------------------------------------------------------------

COMPACT = (",", ":")  # as OpenAI writes its JSON: the shape the service's fast path looks for

def event(content: str | None = None, index: int = 0, finish: str | None = None, role: bool = False) -> bytes:
    delta = {"role": "assistant"} if role else {"content": content} if content is not None else {}
    return b"data: " + json.dumps({"id": "chatcmpl-h", "object": "chat.completion.chunk", "model": "gpt-4",
                                   "choices": [{"index": index, "delta": delta, "finish_reason": finish}]},
                                  separators=COMPACT).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"
ANSWER = ["Hello", " from", " a", " hostile", " upstream."]
KEY_ERROR = b"data: " + json.dumps({"error": {
    "message": KEY_MESSAGE, "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}},
    separators=COMPACT).encode() + b"\n\n"


def completion(text: str) -> bytes:
    return json.dumps({"id": "chatcmpl-h", "object": "chat.completion", "model": "gpt-4", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 5, "total_tokens": 6}},
        separators=COMPACT).encode()


def answer_bytes(stream: bool) -> bytes:
    if stream:
        return b"".join(event(word) for word in ANSWER) + event(finish="stop") + DONE
    return completion("".join(ANSWER))


# -- the modes: one way of being broken each ------------------------------------------------------

Mode = Callable[[Conn, bool], None]  # (the connection, whether a stream was asked for)


def answer(conn: Conn, stream: bool) -> None:
    conn.head("200 OK", "Connection: close", stream=stream)  # every answer here ends its connection
    conn.chunk(answer_bytes(stream))
    conn.end()


def key_error_split(conn: Conn, stream: bool, content_first: bool = False) -> None:
    conn.head()
    if content_first:
        conn.chunk(event("Hello"))
        conn.pause(0.1)
    middle = KEY_ERROR.index(SECRET_KEY.encode()) + len(SECRET_KEY) // 2
    conn.chunk(KEY_ERROR[:middle])
    conn.pause(0.3)  # so it arrives in two reads
    conn.chunk(KEY_ERROR[middle:])
    conn.end()


def key_in_ending(conn: Conn, stream: bool) -> None:
    """A whole answer whose finish reason and usage, the events after its content, quote the key."""
    conn.head("200 OK", "Connection: close")
    conn.chunk(b"".join(event(word) for word in ANSWER))
    conn.pause(0.1)  # so the content is out before the ending comes
    conn.chunk(event(finish=KEY_MESSAGE) + b"data: " + json.dumps(
        {"id": "chatcmpl-h", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 5, "note": KEY_MESSAGE}},
        separators=COMPACT).encode() + b"\n\n" + DONE)
    conn.end()


def big_chunk(conn: Conn, stream: bool) -> None:
    size = 40_000_000
    conn.head(stream=stream)
    if stream:
        one = event("word ")
        body = one * (size // len(one))
    else:
        body = completion("x" * size)
    conn.chunk(body)
    conn.end()


def long_line(conn: Conn, stream: bool) -> None:
    line = event("y" * 10_000_000)
    conn.head()
    for start in range(0, len(line), 65536):
        conn.chunk(line[start:start + 65536])
    conn.chunk(event(finish="stop") + DONE)
    conn.end()


def drip(conn: Conn, stream: bool) -> None:
    body = answer_bytes(stream)
    conn.head("200 OK", f"Content-Length: {len(body)}", stream=stream)
    for byte in range(len(body)):
        conn.send(body[byte:byte + 1])
        conn.pause(1.0)


def endless(conn: Conn, stream: bool, content: bool = True, every: float = 0.0) -> None:
    """Data until the service hangs up: content events (or role-only ones), or a JSON string."""
    conn.head(stream=stream)
    if not stream:
        conn.chunk(b'{"id": "chatcmpl-h", "choices": [{"index": 0, "message": {"content": "')
    piece = (event("word ") if content else event(role=True)) if stream else b"z" * 1000
    batch = piece * (1 if every else 65536 // len(piece))
    while True:
        conn.chunk(batch)
        if every:
            conn.pause(every)


def redirect(conn: Conn, stream: bool) -> None:
    body = answer_bytes(stream)  # a whole answer: relaying it as a 200 would be the bug
    conn.head("302 Found", "Location: http://127.0.0.1:9/elsewhere", f"Content-Length: {len(body)}",
              "Connection: close", stream=stream)
    conn.send(body)


def continue_first(conn: Conn, stream: bool) -> None:
    conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
    answer(conn, stream)


def gzipped(conn: Conn, stream: bool) -> None:
    conn.head("200 OK", "Content-Encoding: gzip", "Connection: close", stream=stream)
    conn.chunk(gzip.compress(answer_bytes(stream)))
    conn.end()


def two_lengths(conn: Conn, stream: bool) -> None:
    body = answer_bytes(stream)
    conn.head("200 OK", f"Content-Length: {len(body)}", f"Content-Length: {len(body) // 2}",
              "Connection: close", stream=stream)
    conn.send(body)


def two_choices(conn: Conn, stream: bool) -> None:
    conn.head("200 OK", "Connection: close")
    conn.chunk(b"".join(event(word, 0) + event(f" other{i}", 1) for i, word in enumerate(ANSWER)))
    conn.chunk(event(finish="stop", index=0) + event(finish="stop", index=1) + DONE)
    conn.end()


def multi_line(conn: Conn, stream: bool) -> None:
    conn.head("200 OK", "Connection: close")
    for word in ANSWER:  # each event's JSON split over two `data:` lines, as SSE allows
        line = event(word).removesuffix(b"\n\n")
        split = line.index(b'"choices"')
        conn.chunk(line[:split] + b"\ndata: " + line[split:] + b"\n\n")
    conn.chunk(event(finish="stop") + DONE)
    conn.end()


MODES: dict[str, Mode] = {
    "answer": answer,
    "key_error_split": key_error_split,
    "key_error_split_after_content": lambda conn, stream: key_error_split(conn, stream, content_first=True),
    "key_in_ending": key_in_ending,
    "big_chunk": big_chunk,
    "long_line": long_line,
    "drip": drip,
    "endless": endless,
    "endless_no_content": lambda conn, stream: endless(conn, stream, content=False),
    "slow_tokens": lambda conn, stream: endless(conn, stream, every=0.1),
    "slow_no_content": lambda conn, stream: endless(conn, stream, content=False, every=0.1),
    "redirect": redirect,
    "continue_first": continue_first,
    "gzipped": gzipped,
    "two_lengths": two_lengths,
    "two_choices": two_choices,
    "multi_line": multi_line,
}


class HostileUpstream:
    """Answers every call the way `mode` says; `calls` records each one."""

    def __init__(self) -> None:
        self.mode = "answer"
        self.calls: list[Call] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}/v1"

    def wait_ended(self, calls: list[Call], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while any(call.ended is None for call in calls) and time.monotonic() < deadline:
            time.sleep(0.02)
        return all(call.ended is not None for call in calls)

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        with sock:  # one call per connection: every answer here ends its connection
            body = _read_request(sock)
            if body is None:
                return
            call = Call(body)
            self.calls.append(call)
            try:
                MODES[self.mode](Conn(sock, call), bool(body.get("stream")))
            except Stopped:
                pass
            finally:
                call.ended = time.monotonic()


def _read_request(sock: socket.socket) -> dict | None:
    """The JSON body of the request on this connection; None if the service hangs up first."""
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            more = sock.recv(65536)
            if not more:
                return None
            data += more
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        while len(body) < length:
            more = sock.recv(65536)
            if not more:
                return None
            body += more
    except OSError:
        return None
    return json.loads(body)
