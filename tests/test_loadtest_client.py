"""flaskapp.loadtest.client and runner: the HTTP driver against the real emulator and scripted servers."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from flaskapp.loadtest.client import Target
from flaskapp.loadtest.runner import run, run_kind, run_rate

TTFT, TOKENS_PER_SECOND, TOKENS = 0.05, 400.0, 20


EMULATOR = {"ttft": TTFT, "tokens_per_second": TOKENS_PER_SECOND, "tokens": TOKENS}  # conftest's `emulator`


def load(url: str, kind: str, concurrency: int = 1, requests: int | None = None, **options):
    return run(lambda: run_kind(Target(url), kind, concurrency, requests=requests or concurrency, **options))


def test_openai_stream_records_ttft_gaps_and_every_token(emulator):
    result = load(emulator.url, "openai-stream", concurrency=5)
    assert [r.error for r in result.records] == [None] * 5
    for record in result.records:
        assert record.status == 200
        assert record.chunks == TOKENS  # one SSE event with text per token; role and [DONE] not counted
        assert (record.tokens, record.token_source) == (TOKENS, "usage")  # asked with include_usage
        assert record.ttft <= record.last_token <= record.total
        assert TTFT <= record.ttft < record.total
        assert record.total >= TTFT + (TOKENS - 1) / TOKENS_PER_SECOND
        assert len(record.gaps) >= 1 and all(gap >= 0 for gap in record.gaps)
    assert not result.timed_out


def test_openai_block_is_one_chunk_whose_first_byte_is_its_last(emulator):
    (record,) = load(emulator.url, "openai-block").records
    assert record.error is None and record.chunks == 1 and record.gaps == []
    assert record.ttft == record.total >= TTFT + TOKENS / TOKENS_PER_SECOND
    assert (record.tokens, record.token_source) == (TOKENS, "usage")  # from the JSON body's usage


def test_duration_keeps_sending_until_it_passes(emulator):
    result = run(lambda: run_kind(Target(emulator.url), "openai-block", 2, duration=0.3))
    assert len(result.records) >= 4 and all(r.ok for r in result.records)


@pytest.mark.parametrize("fault, kind, error", [
    ({"status": 500}, "openai-stream", "http_500"),
    ({"status": 429}, "openai-block", "http_429"),
    ({"cut_after": 3}, "openai-stream", "truncated"),
    ({"malformed_after": 2, "cut_after": 3}, "openai-stream", "truncated"),
])
def test_failures_get_their_error_kind(emulator, fault, kind, error):
    emulator.arm(**fault, count=1)
    (record,) = load(emulator.url, kind).records
    assert record.error == error
    if error.startswith("http_"):
        assert record.status == fault["status"] and "error" in record.detail


def test_a_slow_request_times_out(emulator):
    emulator.arm(delay=2.0, count=1)
    (record,) = load(emulator.url, "openai-stream", timeout=0.2).records
    assert record.error == "timeout" and 0.15 <= record.total < 1.9  # not the 2 s delay


def test_the_time_limit_cancels_what_is_in_flight(emulator):
    emulator.arm(delay=2.0, count=2)
    result = load(emulator.url, "openai-stream", concurrency=2, requests=4, time_limit=0.3)
    assert result.timed_out and result.wall_time < 1.9  # ended before the 2 s delay
    assert [r.error for r in result.records] == ["cancelled", "cancelled"]


def test_a_closed_port_is_a_connect_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: refused
        (record,) = load(f"http://127.0.0.1:{port}", "stream").records
    assert record.error == "connect"


def scripted_server(pieces: list[bytes], pause: float = 0.02) -> tuple[str, threading.Thread]:
    """A one-connection server that reads the request and writes `pieces` one by one, then closes."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        connection, _ = listener.accept()
        with connection, listener:
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection.recv(65536)
            for piece in pieces:
                connection.sendall(piece)
                time.sleep(pause)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}", thread


HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize("pieces, chunks, error", [
    ([HEAD, b"5\r\nHello\r\n", b"6\r\n world\r\n", b"0\r\n\r\n"], 2, None),
    # framing split across reads at every awkward place
    ([HEAD[:20], HEAD[20:] + b"5\r", b"\nHel", b"lo\r", b"\n6;ext=1\r\n world", b"\r\n0\r\n\r\n"], 2, None),
    ([HEAD, b"5\r\nHello\r\n"], 1, "truncated"),  # no last chunk: the stream failed mid-way
    ([HEAD[:30]], 0, "reset"),
    ([b"garbage\r\n\r\n"], 0, "protocol"),
])
def test_text_stream_framing(pieces, chunks, error):
    url, thread = scripted_server(pieces)
    (record,) = load(url, "stream", timeout=5.0).records
    thread.join(5)
    assert (record.chunks, record.error) == (chunks, error)
    if chunks == 2:
        # Body bytes: no status line, headers or chunk framing.
        assert record.bytes == len(b"Hello world") and len(record.gaps) == 1
        assert (record.tokens, record.token_source) == (2, "words")


@pytest.mark.parametrize("pieces, words", [
    ([b"One tw", b"o three ", b"four"], 4),  # a word split by a read is one word
    ([b"One ", b"two"], 2),
    ([b"  ", b"one\n", b"\ttwo  "], 2),
])
def test_a_plain_text_answer_counts_its_words_across_reads(pieces, words):
    url, thread = scripted_server([HEAD, *(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces), b"0\r\n\r\n"])
    (record,) = load(url, "stream", timeout=5.0).records
    thread.join(5)
    assert (record.error, record.tokens, record.token_source) == (None, words, "words")


SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


@pytest.mark.parametrize("events, chunks, error", [
    ([b'data: {"text": "A"}\n\n', b'data: {"text": " b"}\n\nevent: done\ndata: {}\n\n'], 2, None),
    ([b'data: {"text": "A"}\n\n', b"event: error\ndata: {\"type\": \"upstream\"}\n\n"], 1, "stream_error"),
    ([b'data: {"text": "A"}\n\n'], 1, "truncated"),  # framing complete but no `event: done`
])
def test_sse_stream_events(events, chunks, error):
    url, thread = scripted_server([SSE_HEAD, *map(chunk, events), b"0\r\n\r\n"])
    (record,) = load(url, "stream-sse", timeout=5.0).records
    thread.join(5)
    assert (record.chunks, record.error) == (chunks, error)


def test_sse_stream_takes_its_tokens_from_the_done_events_usage():
    done = b'event: done\ndata: {"finish_reason":"stop","usage":{"completion_tokens":7},"chunks":2}\n\n'
    url, thread = scripted_server([SSE_HEAD, chunk(b'data: {"text": "A"}\n\n'), chunk(b'data: {"text": " b"}\n\n'),
                                   chunk(done), b"0\r\n\r\n"])
    (record,) = load(url, "stream-sse", timeout=5.0).records
    thread.join(5)
    assert (record.error, record.chunks, record.tokens, record.token_source) == (None, 2, 7, "usage")


def test_open_loop_starts_requests_on_schedule_whatever_is_in_flight(emulator):
    # Each answer takes over 0.4 s; 20 a second for 0.5 s start 10 without waiting for any.
    emulator.arm(delay=0.4, count=10)
    result = run(lambda: run_rate(Target(emulator.url), "openai-stream", rate=20, duration=0.5))
    starts = sorted(r.start for r in result.records)
    assert len(starts) == 10 and all(r.ok for r in result.records)
    assert starts[-1] < 0.45 + 0.2  # the tenth was due at 0.45 s, long before the first finished
    assert result.concurrency >= 5 and result.planned == 10 and result.rate == 20


def test_target_builds_each_kind_of_request():
    target = Target("http://127.0.0.1:8000/base", prompt="hi there", max_tokens=7)
    assert target.request_bytes("block").startswith(b"GET /base/?prompt=hi%20there&max_tokens=7 HTTP/1.1\r\n")
    assert b"&format=sse" in target.request_bytes("stream-sse")
    assert b"Accept: text/event-stream" in target.request_bytes("stream-sse")
    request = target.request_bytes("openai-stream")
    assert request.startswith(b"POST /base/v1/chat/completions HTTP/1.1\r\n")
    assert request.endswith(b'"stream": true, "stream_options": {"include_usage": true}, "max_tokens": 7}')
    assert b'"model": "gpt-4o"' in Target("http://h:1", model="gpt-4o").request_bytes("openai-block")
    assert b"&model=gpt-4o" in Target("http://h:1", model="gpt-4o").request_bytes("stream")
    assert b"model=" not in target.request_bytes("stream")  # the service's default needs no asking
    assert b"Authorization" not in target.request_bytes("stream")
    assert b"Authorization: Bearer gk-1\r\n" in Target("http://h:1", api_key="gk-1").request_bytes("stream")
    assert Target("https://example.invalid").address == ("example.invalid", 443)
    with pytest.raises(ValueError):
        Target("ftp://example.invalid").request_bytes("block")


def self_signed_certificate(directory) -> tuple[str, str]:
    """A certificate for 127.0.0.1 signed by its own key: (cert file, key file)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def tls_server(cert: str, key: str, pieces: list[bytes]) -> tuple[str, threading.Thread]:
    """`scripted_server` behind TLS: one connection, the handshake, then `pieces`."""
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        with listener:
            raw, _ = listener.accept()
            try:
                with context.wrap_socket(raw, server_side=True) as connection:
                    connection.recv(65536)
                    for piece in pieces:
                        connection.sendall(piece)
            except (ssl.SSLError, OSError):
                pass  # the client refused the certificate

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return f"https://127.0.0.1:{listener.getsockname()[1]}", thread


def test_https_target_with_its_certificate_trusted(tmp_path):
    cert, key = self_signed_certificate(tmp_path)
    url, thread = tls_server(cert, key, [HEAD, b"5\r\nHello\r\n", b"6\r\n world\r\n", b"0\r\n\r\n"])
    result = run(lambda: run_kind(Target(url, cafile=cert), "stream", 1, requests=1, timeout=5.0))
    thread.join(5)
    (record,) = result.records
    assert (record.error, record.status, record.bytes, record.tokens) == (None, 200, 11, 2)


def test_https_target_whose_certificate_is_not_trusted_is_a_connect_error(tmp_path):
    cert, key = self_signed_certificate(tmp_path)
    url, thread = tls_server(cert, key, [HEAD, b"0\r\n\r\n"])
    (record,) = run(lambda: run_kind(Target(url), "stream", 1, requests=1, timeout=5.0)).records
    thread.join(5)
    assert record.error == "connect" and "CERTIFICATE" in record.detail.upper()


def test_the_last_progress_line_is_written_once(capsys):
    # In a log (not a terminal), the watcher's line as the run ends and the final one were the same line twice.
    from flaskapp.loadtest.client import Record
    from flaskapp.loadtest.runner import Progress
    progress = Progress("stream c=1")
    records = [Record(kind="stream", start=0.0, total=1.0)]
    progress.show(records, 1, 0.0)
    progress.show(records, 1, 0.0, final=True)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "completed 1 of 1  failed 0  in flight 0" in lines[0]


def test_https_target_with_checks_off_accepts_a_self_signed_certificate(tmp_path):
    cert, key = self_signed_certificate(tmp_path)
    url, thread = tls_server(cert, key, [HEAD, b"5\r\nHello\r\n", b"0\r\n\r\n"])
    (record,) = run(lambda: run_kind(Target(url, verify=False), "stream", 1, requests=1, timeout=5.0)).records
    thread.join(5)
    assert (record.error, record.bytes) == (None, 5)
