"""The lean HTTP/1.1 transport against a scripted server on a loopback socket (no gevent),
and the upstream's lean path over it, against an upstream that misbehaves on purpose."""
from __future__ import annotations

import hashlib
import random
import socket
import threading
import time

import httpx2
import pytest

from flaskapp import errors
from flaskapp.config import ConfigError
from flaskapp.runtime.guard import Guard
from flaskapp.upstream.httpbody import MAX_LINE, READ_SIZE
from flaskapp.upstream.http11 import ConnectionPool, MalformedResponse
from flaskapp.upstream.client import Upstream, UpstreamSettings
from scripted import chunked_body

HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: upstream\r\nContent-Length: 2\r\n\r\n"


class ScriptedServer:
    """Answers each accepted connection's requests with the next scripted list of byte writes
    (or of callables given the connection, for answers that take their time)."""

    def __init__(self, answers: list[list], close_after: bool = False) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.answers, self.close_after, self.connections = answers, close_after, 0
        self.requests: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while self.answers:
            conn, _ = self.listener.accept()
            self.connections += 1
            with conn:
                try:
                    while self.answers:
                        request = conn.recv(65536)
                        if not request:
                            break
                        self.requests.append(request)
                        for piece in self.answers.pop(0):
                            piece(conn) if callable(piece) else conn.sendall(piece)
                        if self.close_after:
                            break
                except OSError:
                    pass  # the client hung up on a hostile answer, as it should

    @property
    def origin(self) -> tuple[str, str, int]:
        return ("http", "127.0.0.1", self.port)


def send(transport: ConnectionPool, server: ScriptedServer):
    return transport.send(server.origin, HEAD, b"{}", {"connect": 2, "write": 2, "read": 2})


def test_chunked_body_is_decoded_and_the_connection_reused():
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    server = ScriptedServer([[chunked], [chunked]])
    transport = ConnectionPool()
    for _ in range(2):
        status, _, headers, body = send(transport, server)
        assert status == 200 and b"".join(body) == b"hello world"
        body.close()
    assert server.connections == 1  # kept alive


def test_chunks_split_anywhere_across_reads():
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    payload = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    server = ScriptedServer([[head + payload[:3], payload[3:9], payload[9:]]])
    status, _, _, body = send(ConnectionPool(), server)
    assert b"".join(body) == b"hello world"


def test_content_length_body():
    server = ScriptedServer([[b"HTTP/1.1 429 Too Many\r\nRetry-After: 3\r\nContent-Length: 4\r\n\r\nslow"]])
    status, reason, headers, body = send(ConnectionPool(), server)
    assert (status, reason, b"".join(body)) == (429, b"Too Many", b"slow")
    assert (b"Retry-After", b"3") in headers


def test_a_body_cut_short_raises():
    server = ScriptedServer([[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel"]], close_after=True)
    _, _, _, body = send(ConnectionPool(), server)
    with pytest.raises(httpx2.RemoteProtocolError):
        b"".join(body)


def test_a_kept_alive_connection_the_server_closed_is_replaced():
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    server = ScriptedServer([[answer], [answer]], close_after=True)
    transport = ConnectionPool()
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
        ConnectionPool().send(("http", "127.0.0.1", port), HEAD, b"{}", {"connect": 2})


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
    transport = ConnectionPool(ssl_context=ssl.create_default_context(cafile=str(cert)))
    status, _, _, body = transport.send(("https", "localhost", port), HEAD, b"{}",
                                        {"connect": 5, "write": 5, "read": 5})
    assert status == 200 and b"".join(body) == b"secured"
    listener.close()


# -- a hostile upstream -------------------------------------------------------------------

OK_HEAD = b"HTTP/1.1 200 OK\r\n"
COMPLETION = b'{"choices":[{"message":{"content":"ok"},"finish_reason":"stop"}]}'
ANSWER = OK_HEAD + b"Content-Length: %d\r\n\r\n%s" % (len(COMPLETION), COMPLETION)
CHAT = {"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}


def upstream_at(server: ScriptedServer, **settings) -> Upstream:
    return Upstream(UpstreamSettings(max_retries=0, **settings), api_key="sk-unit-secret",
                    base_url=f"http://127.0.0.1:{server.port}/v1")


def endless(piece: bytes, seconds: float = 4.0, pause: float = 0.0):
    """An answer part that sends `piece` over and over for `seconds` (or until the client leaves)."""
    def send(conn: socket.socket) -> None:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            conn.sendall(piece)
            if pause:
                time.sleep(pause)
    return send


def test_a_large_chunk_comes_out_as_it_arrives():
    # One 50 MB chunk: the first piece must be out before the rest is even sent (the old
    # decoder waited for the whole chunk, re-joining its buffer on every read: quadratic).
    size = 50 * 1024 * 1024
    data = bytes(range(256)) * (size // 256)
    first_piece_out = threading.Event()
    server = ScriptedServer([[OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % size + data[:1 << 20],
                              lambda conn: first_piece_out.wait(5),
                              data[1 << 20:], b"\r\n0\r\n\r\n"]])
    _, _, _, body = send(ConnectionPool(), server)
    pieces = iter(body)
    digest, received, largest = hashlib.sha256(), 0, 0
    first = next(pieces)
    first_piece_out.set()
    for piece in [first, *pieces]:
        digest.update(piece)
        received += len(piece)
        largest = max(largest, len(piece))
    assert received == size and digest.digest() == hashlib.sha256(data).digest()
    assert largest <= READ_SIZE  # each read one piece, never an accumulated buffer


def test_the_middle_of_a_large_chunk_is_passed_on_uncopied():
    size = 64 * READ_SIZE
    wire = b"%x\r\n" % size + b"x" * size + b"\r\n0\r\n\r\n"
    reads = [wire[i:i + READ_SIZE] for i in range(0, len(wire), READ_SIZE)]
    pieces = list(chunked_body(reads))
    assert b"".join(pieces) == b"x" * size
    assert sum(piece is read for piece, read in zip(pieces[1:-1], reads[1:-1])) == len(reads) - 2


def test_chunked_bodies_split_at_every_place_decode_the_same():
    random_ = random.Random(7)
    tokens = [b"data: %d\n\n" % i * random_.randint(1, 40) if i % 50 else b"y" * 40000 for i in range(300)]
    wire = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(token), token) for token in tokens) + b"0\r\nA: b\r\n\r\n"
    for attempt in range(40):
        cuts = sorted(random_.sample(range(1, len(wire)), 30_000 if attempt < 2 else 200))
        reads = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)])]
        body = chunked_body(reads)
        pieces = list(body)
        assert b"".join(pieces) == b"".join(tokens) and body.complete
        assert len(pieces) <= len(reads)  # at most one piece per read


@pytest.mark.parametrize("wire, problem", [
    (b"f" * (MAX_LINE * 4), "size line too long"),
    (b"-5\r\nhello\r\n0\r\n\r\n", "malformed chunk size"),
    (b"zz\r\nhello\r\n", "malformed chunk size"),
    (b"5\r\nhello!!\r\n0\r\n\r\n", "longer than its size"),
    (b"0\r\n" + b"X: y\r\n" * 10000, "trailers too large"),
], ids=["endless size line", "negative size", "not hex", "data past its size", "endless trailers"])
def test_broken_chunked_framing_is_refused(wire, problem):
    with pytest.raises(MalformedResponse, match=problem):
        list(chunked_body([wire[i:i + 1000] for i in range(0, len(wire), 1000)]))


@pytest.mark.parametrize("headers", [
    b"Content-Length: 2\r\nContent-Length: 20\r\n",
    b"Content-Length: 2, 20\r\n",
    b"Content-Length: +2\r\n",
    b"Content-Length: two\r\n",
    b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip, chunked\r\n",
], ids=["two lengths", "a list of two", "signed", "not a number", "length and chunked", "gzip coding"])
def test_ambiguous_framing_is_refused_and_the_connection_closed(headers):
    server = ScriptedServer([[OK_HEAD + headers + b"\r\n2\r\nok\r\n0\r\n\r\n"], [ANSWER]])
    transport = ConnectionPool()
    with pytest.raises(MalformedResponse):
        send(transport, server)
    _, _, _, body = send(transport, server)
    assert b"".join(body) == COMPLETION
    assert server.connections == 2  # the first connection was not reused


def test_identical_content_lengths_are_accepted():
    server = ScriptedServer([[OK_HEAD + b"Content-Length: 2\r\nContent-Length: 2\r\n\r\nok"]])
    _, _, _, body = send(ConnectionPool(), server)
    assert b"".join(body) == b"ok"


def test_an_endless_head_is_refused():
    server = ScriptedServer([[OK_HEAD, endless(b"X-Filler: " + b"a" * 1000 + b"\r\n")]])
    with pytest.raises(MalformedResponse, match="head too large"):
        send(ConnectionPool(), server)


def test_interim_responses_are_skipped():
    server = ScriptedServer([[b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
                              ANSWER]])
    upstream = upstream_at(server)
    assert upstream.complete(CHAT, Guard()) == COMPLETION


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
    b"HTTP/1.1 302 Found\r\nLocation: http://elsewhere/\r\nContent-Length: %d\r\n\r\n%s" % (
        len(COMPLETION), COMPLETION),
    b"HTTP/1.1 304 Not Modified\r\n\r\n",
    OK_HEAD + b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (len(COMPLETION), COMPLETION),
    OK_HEAD + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
], ids=["101", "302 with a body", "304", "gzip unasked", "conflicting lengths"])
@pytest.mark.parametrize("call", ["complete", "open_stream"])
def test_answers_that_are_not_a_plain_2xx_are_upstream_errors(answer, call):
    server = ScriptedServer([[answer]])
    with pytest.raises(errors.UpstreamError) as caught:
        getattr(upstream_at(server), call)(CHAT, Guard())
    assert caught.value.status == 502 and not caught.value.retryable


def test_the_lean_path_asks_for_no_compression():
    server = ScriptedServer([[ANSWER]])
    upstream_at(server).complete(CHAT, Guard())
    head = server.requests[0].split(b"\r\n\r\n")[0].lower()
    assert head.count(b"accept-encoding:") == 1 and b"accept-encoding: identity\r\n" in head + b"\r\n"


@pytest.mark.parametrize("answer", [
    [OK_HEAD, endless(b"C", pause=0.05)],  # the head itself dripped
    [OK_HEAD + b"Content-Length: 1000\r\n\r\n", endless(b"x", pause=0.05)],
    [OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n", endless(b"1\r\nx\r\n", pause=0.05)],
    [OK_HEAD + b"\r\n", endless(b"x" * 1000, pause=0.001)],  # endless, until a close that never comes
], ids=["dripped head", "dripped body", "dripped chunks", "endless body"])
def test_a_blocking_call_ends_at_its_deadline_however_the_bytes_come(answer):
    # Each read arrives well within the read timeout; only a deadline on the whole call ends it.
    server = ScriptedServer([answer])
    with pytest.raises(errors.UpstreamTimeout) as caught:
        upstream_at(server, request_timeout=1.0).complete(CHAT, Guard())
    assert caught.value.status == 504


@pytest.mark.parametrize("answer", [
    [OK_HEAD + b"Content-Length: 1000000\r\n\r\n"],  # refused before a byte of it is read
    [OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n", endless(b"400\r\n" + b"x" * 1024 + b"\r\n", 2.0)],
    [OK_HEAD + b"\r\n", endless(b"x" * 1024, 2.0)],
], ids=["announced", "chunked", "until close"])
def test_a_blocking_answer_larger_than_the_cap_is_an_upstream_error(answer):
    server = ScriptedServer([answer])
    with pytest.raises(errors.UpstreamError, match="larger than 100000 bytes") as caught:
        upstream_at(server, max_answer_bytes=100_000).complete(CHAT, Guard())
    assert caught.value.status == 502


@pytest.mark.parametrize("variable, base_url", [
    ("HTTPS_PROXY", "https://api.example.com/v1"),
    ("https_proxy", "https://api.example.com/v1"),
    ("HTTP_PROXY", "http://model.internal:8000/v1"),
    ("ALL_PROXY", "https://api.example.com/v1"),
])
def test_a_proxy_for_the_upstream_stops_the_lean_path_at_start(monkeypatch, variable, base_url):
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv(variable, "http://user:hunter2@proxy.example:3128")
    with pytest.raises(ConfigError, match="FLASKAPP_UPSTREAM_TRANSPORT=httpx") as caught:
        Upstream(UpstreamSettings(), api_key="sk-unit", base_url=base_url)
    assert "hunter2" not in str(caught.value)
    Upstream(UpstreamSettings(transport="httpx"), api_key="sk-unit", base_url=base_url)  # it honours proxies
    monkeypatch.setenv("NO_PROXY", "localhost,.example.com,model.internal")
    Upstream(UpstreamSettings(), api_key="sk-unit", base_url=base_url)  # the host is exempt


def test_a_proxy_for_another_scheme_is_no_obstacle(monkeypatch):
    for name in ("HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    Upstream(UpstreamSettings(), api_key="sk-unit", base_url="https://api.example.com/v1")


def test_the_app_does_not_start_with_a_proxy_the_lean_path_would_ignore(monkeypatch):
    from flaskapp import create_app

    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", "https://api.example.com/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-unit")
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    with pytest.raises(ConfigError, match="HTTPS_PROXY"):
        create_app({"TESTING": True})
    assert create_app({"TESTING": True, "UPSTREAM_TRANSPORT": "httpx"})


@pytest.mark.parametrize("reads, pieces", [
    ([b"5\r\nhello\r\n", b"1\r\n!\r\n", b"0\r\n\r\n"], [b"hello", b"!"]),
    ([b"5;ext=1\r\nhello\r\n", b"0\r\n\r\n"], [b"hello"]),  # extensions: the general decoder's
    ([b"5\r\nhello\r\n", b"2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"], [b"hello", b"abcde"]),
    ([b"5\r\nhello\r\n", b"5\r\nwor", b"ld\r\n0\r\n\r\n"], [b"hello", b"wor", b"ld"]),
    ([b"A\r\n0123456789\r\n", b"0\r\n\r\n"], [b"0123456789"]),
], ids=["one chunk a read", "extension", "two chunks in one read", "a chunk split", "upper-case size"])
def test_reads_of_whole_chunks_come_out_one_piece_each(reads, pieces):
    body = chunked_body(reads)
    assert list(body) == pieces and body.complete


@pytest.mark.parametrize("read", [b"5\r\nhello!!\r\n", b"-5\r\nhello\r\n", b"5 \r\nhello\r\n\r\n"],
                         ids=["data past its size", "negative size", "a size padded to look whole"])
def test_a_read_that_only_looks_like_one_whole_chunk_is_decoded_exactly(read):
    with pytest.raises(MalformedResponse):
        list(chunked_body([read, b"0\r\n\r\n"]))
