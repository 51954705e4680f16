"""The guard on gevent's loop: the client leaving or the deadline passing interrupts a request only while it
awaits the upstream; the deadline moves through the guard's own methods."""
from __future__ import annotations

import socket
import time

import gevent
import pytest

from flaskapp.runtime.guard import ClientGone, Guard, SocketGuard, UpstreamSilent


@pytest.fixture
def pair():
    ours, theirs = socket.socketpair()
    yield ours, theirs
    ours.close()
    theirs.close()


@pytest.fixture
def guarded(pair):
    guards = []

    def make(seconds: float = 30.0) -> SocketGuard:
        guards.append(SocketGuard(pair[0], deadline=time.monotonic() + seconds))
        return guards[-1]

    yield make
    for guard in guards:
        guard.close()


def test_the_client_leaving_interrupts_a_wait(pair, guarded):
    guard = guarded()
    gevent.spawn_later(0.1, pair[1].close)
    with pytest.raises(ClientGone):
        with guard.awaiting():
            gevent.sleep(5)
    assert guard.gone and not guard.waiting


def test_the_client_is_watched_only_once_the_request_has_lasted_a_moment(pair, guarded):
    guard = guarded()
    pair[1].close()  # gone at once: noticed when the watch starts, WATCH_AFTER in
    started = time.monotonic()
    with pytest.raises(ClientGone):
        with guard.awaiting():
            assert guard._readable is None  # a short request registers nothing with epoll
            gevent.sleep(5)
    assert SocketGuard.WATCH_AFTER - 0.02 < time.monotonic() - started < SocketGuard.WATCH_AFTER + 0.5


def test_the_client_leaving_outside_a_wait_interrupts_nothing_until_the_next_wait(pair, guarded):
    guard = guarded()
    pair[1].close()
    gevent.sleep(0.3)  # not awaiting: e.g. writing to the client
    assert guard.gone
    with pytest.raises(ClientGone):
        with guard.awaiting():
            pytest.fail("entered a wait for a client that had left")


def test_a_client_sending_more_is_still_there(pair, guarded):
    guard = guarded()
    pair[1].sendall(b"GET / HTTP/1.1\r\n\r\n")  # a pipelined request
    with guard.awaiting():
        gevent.sleep(0.3)
    assert not guard.gone


def test_the_deadline_interrupts_a_wait(guarded):
    guard = guarded(0.1)
    with pytest.raises(UpstreamSilent):
        with guard.awaiting():
            gevent.sleep(5)


def test_a_deadline_passing_outside_a_wait_interrupts_the_next_one(guarded):
    guard = guarded(0.05)
    gevent.sleep(0.2)  # past the deadline while not awaiting: nothing happens
    with pytest.raises(UpstreamSilent):
        with guard.awaiting():
            gevent.sleep(5)  # the timer looks again within RECHECK


def test_tighten_brings_a_far_deadline_forward(guarded):
    guard = guarded(30.0)
    guard.tighten(time.monotonic() + 0.1)
    with pytest.raises(UpstreamSilent):
        with guard.awaiting():
            gevent.sleep(5)
    guard.tighten(time.monotonic() + 60)
    assert guard.deadline < time.monotonic()  # never moved back


def test_awaiting_until_moves_the_deadline_either_way(guarded):
    guard = guarded(0.1)
    with guard.awaiting(until=time.monotonic() + 30):
        gevent.sleep(0.4)  # past the first deadline: not interrupted
    with pytest.raises(UpstreamSilent):
        with guard.awaiting(until=time.monotonic() + 0.1):
            gevent.sleep(5)


def test_expect_by_moves_the_deadline(guarded):
    guard = guarded(30.0)
    guard.expect_by(time.monotonic() + 0.1)
    with pytest.raises(UpstreamSilent):
        with guard.awaiting():
            gevent.sleep(5)


def test_a_closed_guard_interrupts_nothing(pair, guarded):
    guard = guarded(0.05)
    guard.close()
    pair[1].close()
    with guard.awaiting():
        gevent.sleep(0.3)


def test_the_no_op_guard_keeps_the_deadline_and_never_interrupts():
    guard = Guard()
    assert not guard.active
    with guard.awaiting(until=5.0):
        assert guard.waiting
    assert guard.deadline == 5.0 and not guard.waiting
    guard.tighten(9.0)
    assert guard.deadline == 5.0
    guard.expect_by(9.0)
    assert guard.deadline == 9.0
