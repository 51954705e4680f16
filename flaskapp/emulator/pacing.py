"""One model call's timing and faults, shared by every endpoint.

A call takes its fault (the `X-Emulator-Fault` header, else the next armed one), waits
the time to first token, then sends its tokens paced against a deadline: everything due
by now goes out in one write, so a busy process catches up instead of drifting. Endpoints
only say how a range of token positions is written (`render`); the loop here knows the
stall, cut and malformed faults and the stats. Long waits watch the caller's socket, so
a caller that hangs up is counted as aborted within milliseconds, not at the next write.
"""
from __future__ import annotations

import json
import socket
import time
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import gevent
from gevent.socket import wait_read

from .faults import NO_FAULT, Fault
from .wire import JSON_HEADERS, BadRequest, StartResponse, error_body, status_line

if TYPE_CHECKING:
    from .app import Emulator

# What every protocol's parser chokes on: a data line whose JSON never ends.
MALFORMED_EVENT = b'data: {"id": "broken", "choices": [{"delta": {"content": \n\n'
FAILURE_MESSAGE = "Emulated failure while generating the answer."
# Chat's and legacy completions' in-stream error, as OpenAI sends it (and the SDKs raise).
FAILURE_EVENT = b'data: %s\n\n' % error_body(500, FAILURE_MESSAGE, code="server_error")


class ClientGone(Exception):
    """The caller closed its connection while we were waiting."""


def take_fault(emulator: "Emulator", environ: dict, streamed: bool) -> Fault:
    header = environ.get("HTTP_X_EMULATOR_FAULT")
    try:
        fault = Fault.from_header(header) if header else emulator.faults.take(streamed)
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"bad X-Emulator-Fault: {exc}") from None
    if fault is not NO_FAULT:
        kind = next(k for k, v in fault.__dict__.items() if k != "only" and v != getattr(NO_FAULT, k))
        emulator.stats.faults[kind] = emulator.stats.faults.get(kind, 0) + 1
    return fault


def fault_response(start_response: StartResponse, fault: Fault) -> Iterable[bytes]:
    """The error answer of a `status` fault, as OpenAI sends it (with Retry-After when asked)."""
    headers = list(JSON_HEADERS)
    if fault.retry_after is not None:
        headers.append(("Retry-After", f"{fault.retry_after:g}"))
    start_response(status_line(fault.status), headers)
    return [error_body(fault.status, f"Emulated upstream failure ({fault.status}).")]


def wait(sock: socket.socket | None, seconds: float) -> None:
    """Sleep, but notice at once if the caller hangs up meanwhile."""
    if seconds <= 0:
        return
    if sock is None or seconds < 0.05:
        gevent.sleep(seconds)
        return
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            wait_read(sock.fileno(), timeout=remaining)
        except socket.timeout:
            return
        try:
            peeked = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            continue
        except OSError:
            raise ClientGone() from None
        if not peeked:
            raise ClientGone()
        # The caller sent more bytes (a pipelined request): nothing to watch any more.
        gevent.sleep(max(0.0, deadline - time.monotonic()))
        return


def paced(emulator: "Emulator", environ: dict, fault: Fault, total: int,
          prologue: bytes, render: Callable[[int, int], bytes], epilogue: Callable[[], bytes],
          width: int = 1, malformed: bytes = MALFORMED_EVENT,
          failure: Callable[[int], bytes] = lambda sent: FAILURE_EVENT,
          early: bytes = b"") -> Iterator[bytes]:
    """A stream's body: `early` at once, `prologue` after the time to first token, `render(start,
    stop)` for the token positions due, `epilogue()` at the end; `failure(sent)` ends a stream
    the fail fault stops. `width` tokens are sent per position (n choices)."""
    stats, sock = emulator.stats, environ.get("emulator.socket")
    settings = emulator.settings
    stats.streams_started += 1
    stats.in_flight += 1
    interval = 1.0 / settings.tokens_per_second
    stall_at = -1 if fault.stall_after is None else fault.stall_after
    cut_at = -1 if fault.cut_after is None else fault.cut_after
    malformed_at = -1 if fault.malformed_after is None else fault.malformed_after
    fail_at = -1 if fault.fail_after is None else fault.fail_after
    finished = False
    try:
        if early:
            yield early
        wait(sock, settings.ttft if fault.delay is None else fault.delay)
        start = time.monotonic()
        if prologue:
            yield prologue
        sent = 0
        while sent < total:
            if sent == stall_at:
                wait(sock, fault.stall)
                start += fault.stall
                stall_at = -1
            if sent == cut_at:
                sock.shutdown(socket.SHUT_RDWR)
                return
            if sent == fail_at:
                yield failure(sent)
                return
            if sent == malformed_at:
                malformed_at = -1
                yield malformed
                continue
            due = min(total, int((time.monotonic() - start) / interval) + 1)
            for stop in (stall_at, cut_at, malformed_at, fail_at):
                if sent < stop < due:
                    due = stop
            if due <= sent:
                gevent.sleep(start + sent * interval - time.monotonic())
                continue
            stats.tokens_sent += (due - sent) * width
            chunk = render(sent, due)
            sent = due
            yield chunk
        if sent == fail_at:  # a failure asked for after the last token still comes
            yield failure(sent)
            return
        yield epilogue()
        finished = True
    except ClientGone:
        pass
    finally:
        stats.in_flight -= 1
        if finished:
            stats.streams_completed += 1
        else:
            stats.streams_aborted += 1


def answer(emulator: "Emulator", environ: dict, start_response: StartResponse, fault: Fault,
           tokens: int, build: Callable[[], object]) -> Iterable[bytes]:
    """A blocking call's JSON answer, `build()`, after the time its `tokens` would take to stream.

    A cut fault sends a body shorter than its Content-Length; a malformed one, a 200 that is not JSON.
    """
    stats, sock, settings = emulator.stats, environ.get("emulator.socket"), emulator.settings
    stats.completions_started += 1
    stats.in_flight += 1
    ttft = settings.ttft if fault.delay is None else fault.delay
    try:
        wait(sock, ttft + tokens / settings.tokens_per_second + fault.stall)
    except ClientGone:
        stats.completions_aborted += 1
        return []
    finally:
        stats.in_flight -= 1
    if fault.fail_after is not None:
        stats.completions_aborted += 1
        start_response(status_line(500), list(JSON_HEADERS))
        return [error_body(500, FAILURE_MESSAGE, code="server_error")]
    body = json.dumps(build()).encode()
    stats.tokens_sent += tokens
    if fault.malformed_after is not None:
        body = body[: len(body) // 2]
        start_response("200 OK", list(JSON_HEADERS))
        stats.completions_completed += 1
        return [body]
    start_response("200 OK", [*JSON_HEADERS, ("Content-Length", str(len(body)))])
    if fault.cut_after is not None and sock is not None:
        stats.completions_aborted += 1
        return _cut(sock, body[: len(body) // 2])
    stats.completions_completed += 1
    return [body]


def _cut(sock: socket.socket, head: bytes) -> Iterator[bytes]:
    yield head
    sock.shutdown(socket.SHUT_RDWR)
