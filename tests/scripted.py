"""A body read from scripted reads: the chunked decoder and the stream's own read loop,
without the network's timing (unit tests)."""
from __future__ import annotations

from flaskapp.upstream.httpbody import Body


class FakeSocket:
    """Hands out scripted reads, then the end of the stream."""

    def __init__(self, reads: list[bytes]) -> None:
        self.reads = list(reads)

    def recv(self, size: int) -> bytes:
        return self.reads.pop(0) if self.reads else b""

    def gettimeout(self) -> None:
        return None

    def settimeout(self, timeout: float | None) -> None:
        pass


class FakeConnection:
    def __init__(self, reads: list[bytes]) -> None:
        self.sock, self.buffer = FakeSocket(reads), b""
        self.wait_readable, self.recv_ready = None, self.sock.recv  # no event loop to wait on


def chunked_body(reads: list[bytes]) -> Body:
    return Body(FakeConnection(reads), [(b"Transfer-Encoding", b"chunked")], False, lambda connection: None)
