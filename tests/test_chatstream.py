"""The stream's own bounds, with the real guard on gevent's loop and a silent fake upstream."""
import socket
import time

import gevent
import pytest

from flaskapp.upstream.stream import ChatStream
from flaskapp.errors import UpstreamTimeout
from flaskapp.runtime.guard import ClientGone, SocketGuard
from flaskapp.upstream.client import UpstreamSettings
from flaskapp.web.relay import TEXT_BODY

EVENT = b'data: {"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}\n\n'


def one_event_then_silence(seconds: float):
    yield EVENT
    gevent.sleep(seconds)  # then the stream ends, unfinished: an UpstreamError, not a timeout


@pytest.fixture
def client_socket():
    ours, theirs = socket.socketpair()
    yield ours
    ours.close()
    theirs.close()


@pytest.mark.parametrize("settings, said", [
    ({"stream_timeout": 0.3}, "The answer took more than 0.3 s"),
    ({"idle_timeout": 0.3}, "the next chunk after more than 0.3 s"),
])
def test_a_silent_upstream_is_cut_at_the_sooner_deadline(client_socket, settings, said):
    # The guard's timer was set for the first token's deadline (30 s); the stream's deadline
    # and the idle one are sooner, and must hold while the upstream is silent.
    settings = {"first_token_timeout": 30.0, "idle_timeout": 30.0, **settings}
    guard = SocketGuard(client_socket, deadline=time.monotonic() + 30.0)
    stream = ChatStream(one_event_then_silence(3.0), close=lambda: None, guard=guard, settings=UpstreamSettings(**settings))
    items = stream.writes(TEXT_BODY.encoding)
    try:
        assert next(items) == b"Hi"
        with pytest.raises(UpstreamTimeout, match=said):
            next(items)
    finally:
        guard.close()


def always_ready():
    while True:  # an upstream whose bytes are always there: reading never blocks
        yield EVENT


def guarded_stream(client_socket, reads, **settings) -> tuple[SocketGuard, ChatStream]:
    guard = SocketGuard(client_socket, deadline=time.monotonic() + 30.0)
    return guard, ChatStream(reads, close=lambda: None, guard=guard, settings=UpstreamSettings(**settings))


@pytest.mark.parametrize("fair_slice, others_run", [(0.001, True), (0.0, False)])
def test_a_stream_that_never_blocks_lets_the_workers_others_run(client_socket, fair_slice, others_run):
    ticks = []
    other = gevent.spawn(lambda: [ticks.append(1) or gevent.sleep(0) for _ in range(10_000)])
    guard, stream = guarded_stream(client_socket, always_ready(), fair_slice=fair_slice)
    try:
        items, until = stream.writes(TEXT_BODY.encoding), time.monotonic() + 0.1
        while time.monotonic() < until:
            next(items)
        assert bool(ticks) is others_run
    finally:
        other.kill()
        guard.close()


def test_the_client_leaving_during_the_interval_pause_ends_the_stream():
    ours, theirs = socket.socketpair()
    guard, stream = guarded_stream(ours, always_ready(), stream_interval=5.0)
    try:
        items = stream.writes(TEXT_BODY.encoding)
        next(items)
        gevent.spawn_later(0.1, theirs.close)
        with pytest.raises(ClientGone):
            next(items)  # pausing up to 5 s before the next read
    finally:
        guard.close()
        ours.close()


def test_a_client_gone_while_the_stream_was_written_ends_it_at_the_next_read(client_socket):
    ours, theirs = socket.socketpair()
    guard, stream = guarded_stream(ours, always_ready())
    try:
        items = stream.writes(TEXT_BODY.encoding)
        next(items)
        theirs.close()
        gevent.sleep(SocketGuard.WATCH_AFTER + 0.1)  # the watcher sees it while the request is not awaiting
        with pytest.raises(ClientGone):
            next(items)
    finally:
        guard.close()
        ours.close()
