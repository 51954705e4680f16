"""The gevent worker's client connections: a one-call write whose bytes all arrive, in order, however
slow the reader; and a timeout on a client that makes no progress, which ends its connection quietly."""
from __future__ import annotations

import socket as stdlib_socket

import socket
import time

import gevent
import gevent.socket
import pytest

from flaskapp.runtime.clientsocket import ClientSocket, install


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


def test_each_small_write_is_on_the_wire_when_it_returns_whole_and_in_order(pair):
    writer, reader = pair
    reader.settimeout(2)
    for index in range(200):
        token = b"%x\r\ntoken %d\r\n" % (len(b"token %d" % index), index)
        writer.sendall(token)
        assert reader.recv(64) == token  # nothing held back for a later write


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


class Worker:
    """gunicorn's GeventWorker, as far as install() touches it."""

    def __init__(self, client_timeout: float | None = 2.0) -> None:
        self.wsgi = type("App", (), {"config": {"CLIENT_TIMEOUT": client_timeout}})()
        self.handled: list = []
        self.served: list = []

    def handle(self, listener, client, address) -> None:
        client.setblocking(1)  # as GeventWorker.handle does, which clears a socket's timeout
        self.handled.append((type(client), client.gettimeout()))

    def handle_request(self, listener_name, req, sock, addr) -> None:
        self.served.append(req)
        if req == "timed out":
            raise socket.timeout("timed out")
        if req == "reset":
            raise ConnectionResetError

    def timeout_ctx(self):
        return gevent.Timeout(5, False)


def test_install_gives_plain_gevent_connections_the_fast_write_and_leaves_others_alone():
    worker = Worker()
    install(worker)
    plain, other = gevent.socket.socket(), stdlib_socket.socket()
    try:
        worker.handle(None, plain, None)
        worker.handle(None, other, None)
    finally:
        plain.close()
        other.close()
    (plain_class, plain_timeout), (other_class, _) = worker.handled
    assert issubclass(plain_class, ClientSocket) and other_class is stdlib_socket.socket
    assert plain_timeout == 2.0  # CLIENT_TIMEOUT survives the worker's setblocking(1)


def test_without_a_client_timeout_connections_block_as_gunicorn_makes_them():
    worker = Worker(client_timeout=None)
    install(worker)
    plain = gevent.socket.socket()
    try:
        worker.handle(None, plain, None)
    finally:
        plain.close()
    assert worker.handled[0][1] is None


def test_a_write_that_makes_no_progress_times_out(pair):
    writer, reader = pair
    writer.settimeout(0.3)
    with pytest.raises(socket.timeout):
        for _ in range(1000):  # the reader reads nothing: the buffers fill, then the wait times out
            writer.sendall(b"x" * 65536)


def test_a_slow_reader_that_keeps_reading_is_not_timed_out(pair):
    # The timeout is on progress, as nginx's send_timeout: not on the whole write.
    writer, reader = pair
    writer.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_SNDBUF, 4096)
    reader.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, 4096)
    writer.settimeout(0.3)
    payload = b"y" * 200_000

    def read_slowly() -> bytes:
        received = bytearray()
        while len(received) < len(payload):
            gevent.sleep(0.05)
            received += reader.recv(8192)
        return bytes(received)

    reading = gevent.spawn(read_slowly)
    started = time.monotonic()
    writer.sendall(payload)
    assert reading.get(timeout=30) == payload
    assert time.monotonic() - started > 0.3  # longer than the timeout in all, never without progress


def test_a_write_timeout_ends_the_connection_quietly_and_other_errors_pass_on():
    worker = Worker()
    install(worker)
    with pytest.raises(StopIteration):  # gunicorn's keep-alive loop: close, log at debug
        worker.handle_request("listener", "timed out", None, None)
    with pytest.raises(ConnectionResetError):
        worker.handle_request("listener", "reset", None, None)
    assert worker.served == ["timed out", "reset"]


def test_an_idle_connection_timing_out_ends_the_keepalive_wait_as_keepalive_does():
    # CLIENT_TIMEOUT shorter than keepalive: gunicorn reads the next request's head in
    # here, and with no request (no exception) its keep-alive loop ends, quietly.
    worker = Worker()
    install(worker)
    with worker.timeout_ctx():
        raise socket.timeout("timed out")
    with pytest.raises(ValueError), worker.timeout_ctx():
        raise ValueError


# -- ChunkedResponse: gunicorn's HTTP/1 response, one call per chunked piece ----------------
class Request:
    """gunicorn's request, as far as its Response reads it."""

    def __init__(self, method: str = "GET", version: tuple[int, int] = (1, 1)) -> None:
        self.method, self.version = method, version

    def should_close(self) -> bool:
        return False


def wire(response_class, req: Request, status: str, headers: list, pieces: list) -> bytes:
    """What a response of `response_class` sends for `pieces`, with the Date header taken out."""
    from gunicorn.config import Config

    writer, reader = gevent.socket.socketpair()
    writer.__class__ = ClientSocket
    try:
        response = response_class(req, writer, Config())
        response.start_response(status, headers)
        for piece in pieces:
            response.write(piece)
        response.close()
        writer.close()
        received = bytearray()
        while more := reader.recv(65536):
            received += more
    finally:
        writer.close()
        reader.close()
    return b"".join(line for line in bytes(received).splitlines(keepends=True) if not line.startswith(b"Date: "))


@pytest.fixture
def restored_gunicorn(monkeypatch):
    from gunicorn.http import wsgi

    monkeypatch.setattr(wsgi, "Response", wsgi.Response)  # install() replaces it: put back after the test
    return wsgi


def test_install_makes_the_workers_http1_responses_chunked_responses(restored_gunicorn):
    from flaskapp.runtime.clientsocket import ChunkedResponse

    install(Worker())
    assert restored_gunicorn.Response is ChunkedResponse


@pytest.mark.parametrize("req, status, headers, pieces", [
    (Request(), "200 OK", [("Content-Type", "text/plain")], [b"Hello", b" ", b"world" * 1000, b"", b"!"]),
    (Request(), "200 OK", [("Content-Length", "5")], [b"Hel", b"lo", b"extra"]),  # gunicorn keeps to the length
    (Request("HEAD"), "200 OK", [], [b"dropped"]),  # no body for HEAD
    (Request(version=(1, 0)), "200 OK", [], [b"not", b"chunked"]),
    (Request(), "204 No Content", [], []),
], ids=["chunked", "content-length", "head", "http-1.0", "no-content"])
def test_a_chunked_response_sends_what_gunicorns_own_sends(req, status, headers, pieces):
    from gunicorn.http import wsgi

    from flaskapp.runtime.clientsocket import ChunkedResponse

    expected = wire(wsgi.Response, req, status, headers, pieces)
    assert wire(ChunkedResponse, req, status, headers, pieces) == expected


def test_a_chunked_piece_is_one_send_not_gunicorns_five_calls(monkeypatch):
    from gunicorn import util

    from flaskapp.runtime.clientsocket import ChunkedResponse

    sent_by_gunicorn = []
    write = util.write
    monkeypatch.setattr(util, "write", lambda sock, data, chunked=False: (sent_by_gunicorn.append(data),
                                                                           write(sock, data, chunked)))
    body = wire(ChunkedResponse, Request(), "200 OK", [], [b"one", b"two", b"three"])
    assert body.endswith(b"3\r\none\r\n3\r\ntwo\r\n5\r\nthree\r\n0\r\n\r\n")
    assert len(sent_by_gunicorn) == 2  # the head, then the first piece with it; the rest are ours
