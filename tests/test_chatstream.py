"""The stream's own bounds, with the real guard on gevent's loop and a silent fake upstream."""
import socket
import time

import gevent
import pytest

from flaskapp.upstream.stream import ChatStream
from flaskapp.errors import UpstreamTimeout
from flaskapp.runtime.guard import SocketGuard
from flaskapp.upstream.client import UpstreamSettings

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
    items = iter(stream)
    try:
        assert next(items) == [b'"Hi"']
        with pytest.raises(UpstreamTimeout, match=said):
            next(items)
    finally:
        guard.close()
