"""One system call per write to a client, for gunicorn's gevent worker.

A relayed stream is many small writes: one per upstream read, often a single token.
gevent's `sendall` prepares every one of them for a payload larger than the socket
buffer, which a token never is: a memoryview, a getsockopt(SO_SNDBUF) system call, a
clock read and three nested calls, costing more than the send itself. Here a write
that fits the buffer, nearly all of them, is one send(); only what is left over, on
a slow client, takes gevent's path, with its waiting and its timeout.
"""
from __future__ import annotations

from typing import Any

import gevent.socket


class ClientSocket(gevent.socket.socket):
    __slots__ = ()  # the same layout as gevent's socket, so a connection can become one

    def sendall(self, data: Any, flags: int = 0) -> None:
        try:
            sent = self._sock.send(data, flags)  # the real, non-blocking socket
        except BlockingIOError:
            sent = 0
        if sent < len(data):
            super().sendall(memoryview(data)[sent:], flags)


def install(worker: Any) -> None:
    """gunicorn's post_worker_init hook, for gevent workers: hand requests ClientSockets."""
    handle = worker.handle

    def handle_client(listener: Any, client: Any, address: Any) -> None:
        if type(client) is gevent.socket.socket:  # plain TCP; a TLS socket has its own sendall
            client.__class__ = ClientSocket
        handle(listener, client, address)

    worker.handle = handle_client  # the worker's servers are made after this hook, from it
