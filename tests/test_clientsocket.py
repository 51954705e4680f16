"""The gevent worker's one-call client write: every byte still arrives, in order, however slow the reader."""
from __future__ import annotations

import socket as stdlib_socket

import gevent
import gevent.socket
import pytest

from flaskapp.clientsocket import ClientSocket, install


@pytest.fixture
def pair():
    writer, reader = gevent.socket.socketpair()
    writer.__class__ = ClientSocket
    yield writer, reader
    writer.close()
    reader.close()


def read_exactly(sock, size: int) -> bytes:
    received = bytearray()
    while len(received) < size:
        received += sock.recv(65536)
    return bytes(received)


class Recording:
    """Stands in for the real socket under a gevent socket, noting each call made on it."""

    def __init__(self, real, calls: list) -> None:
        self._real, self._calls = real, calls

    def __getattr__(self, name):
        self._calls.append(name)
        return getattr(self._real, name)


def test_a_small_write_is_one_send_and_no_other_call(pair, monkeypatch):
    writer, reader = pair
    calls: list[str] = []
    monkeypatch.setattr(writer, "_sock", Recording(writer._sock, calls))
    writer.sendall(b"5\r\nhello\r\n")
    assert calls == ["send"]  # gevent's own sendall also asks for the buffer size, every time
    assert reader.recv(64) == b"5\r\nhello\r\n"


def test_a_write_larger_than_the_buffer_waits_for_the_reader_and_arrives_whole(pair):
    writer, reader = pair
    writer.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_SNDBUF, 4096)
    payload = bytes(range(256)) * 16384  # 4 MiB: far past the buffer, so most goes by gevent's path
    reading = gevent.spawn(read_exactly, reader, len(payload))
    writer.sendall(payload)
    assert reading.get(timeout=10) == payload


def test_a_closed_reader_is_an_error_not_a_silent_loss(pair):
    writer, reader = pair
    reader.close()
    with pytest.raises(OSError):
        for _ in range(100):
            writer.sendall(b"x" * 65536)


def test_install_gives_plain_gevent_connections_the_fast_write_and_leaves_others_alone():
    handled = []
    worker = type("Worker", (), {"handle": lambda self, listener, client, address: handled.append(type(client))})()
    install(worker)
    plain, other = gevent.socket.socket(), stdlib_socket.socket()
    try:
        worker.handle(None, plain, None)
        worker.handle(None, other, None)
    finally:
        plain.close()
        other.close()
    assert handled == [ClientSocket, stdlib_socket.socket]
