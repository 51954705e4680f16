"""The lean HTTP/1.1 transport against a scripted server on a loopback socket (no gevent)."""
from __future__ import annotations

import socket
import threading

import httpx2
import pytest

from flaskapp.transport import LeanTransport

HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: upstream\r\nContent-Length: 2\r\n\r\n"


class ScriptedServer:
    """Answers each accepted connection's requests with the next scripted list of byte writes."""

    def __init__(self, answers: list[list[bytes]], close_after: bool = False) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.answers, self.close_after, self.connections = answers, close_after, 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while self.answers:
            conn, _ = self.listener.accept()
            self.connections += 1
            with conn:
                while self.answers:
                    if not conn.recv(65536):
                        break
                    for piece in self.answers.pop(0):
                        conn.sendall(piece)
                    if self.close_after:
                        break

    @property
    def origin(self) -> tuple[str, str, int]:
        return ("http", "127.0.0.1", self.port)


def send(transport: LeanTransport, server: ScriptedServer):
    return transport.send(server.origin, HEAD, b"{}", {"connect": 2, "write": 2, "read": 2})


def test_chunked_body_is_decoded_and_the_connection_reused():
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    server = ScriptedServer([[chunked], [chunked]])
    transport = LeanTransport()
    for _ in range(2):
        status, _, headers, body = send(transport, server)
        assert status == 200 and b"".join(body) == b"hello world"
        body.close()
    assert server.connections == 1  # kept alive


def test_chunks_split_anywhere_across_reads():
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    payload = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    server = ScriptedServer([[head + payload[:3], payload[3:9], payload[9:]]])
    status, _, _, body = send(LeanTransport(), server)
    assert b"".join(body) == b"hello world"


def test_content_length_body():
    server = ScriptedServer([[b"HTTP/1.1 429 Too Many\r\nRetry-After: 3\r\nContent-Length: 4\r\n\r\nslow"]])
    status, reason, headers, body = send(LeanTransport(), server)
    assert (status, reason, b"".join(body)) == (429, b"Too Many", b"slow")
    assert (b"Retry-After", b"3") in headers


def test_a_body_cut_short_raises():
    server = ScriptedServer([[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel"]], close_after=True)
    _, _, _, body = send(LeanTransport(), server)
    with pytest.raises(httpx2.RemoteProtocolError):
        b"".join(body)


def test_a_kept_alive_connection_the_server_closed_is_replaced():
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    server = ScriptedServer([[answer], [answer]], close_after=True)
    transport = LeanTransport()
    for _ in range(2):
        _, _, _, body = send(transport, server)
        assert b"".join(body) == b"ok"
        body.close()
    assert server.connections == 2


def test_connection_refused_is_a_connect_error():
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    with pytest.raises(httpx2.ConnectError):
        LeanTransport().send(("http", "127.0.0.1", port), HEAD, b"{}", {"connect": 2})


def test_https_upstreams_are_spoken_to_over_tls(tmp_path):
    # OpenAI itself is HTTPS: the lean path must verify the certificate and stream over TLS.
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost"], check=True, capture_output=True)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with server_context.wrap_socket(conn, server_side=True) as tls:
            tls.recv(65536)
            tls.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            tls.sendall(b"7\r\nsecured\r\n0\r\n\r\n")

    threading.Thread(target=serve, daemon=True).start()
    transport = LeanTransport(ssl_context=ssl.create_default_context(cafile=str(cert)))
    status, _, _, body = transport.send(("https", "localhost", port), HEAD, b"{}",
                                        {"connect": 5, "write": 5, "read": 5})
    assert status == 200 and b"".join(body) == b"secured"
    listener.close()
