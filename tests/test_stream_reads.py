"""A stream over the lean transport reads its body's socket itself, and takes the common read
(one whole chunk, one content event in the stream's frame) in a few byte comparisons. Whatever
the reads, its writes, its errors and what it counts are those of the general path (the chunked
decoder, then the event parser), read for read (unit tests, scripted reads)."""
from __future__ import annotations

import json
import random

import pytest

from flaskapp.errors import UpstreamError
from flaskapp.runtime.guard import Guard
from flaskapp.upstream.client import UpstreamSettings
from flaskapp.upstream.events import ChunkParser
from flaskapp.upstream.stream import ChatStream
from flaskapp.web.relay import CHAT_EVENTS, SSE_BODY, TEXT_BODY
from scripted import chunked_body

KEY = b"sk-proj-0123456789abcdef"
TOP = b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4","choices":'


def event(delta: bytes, finish: bytes = b"null", top: bytes = TOP, padding: bytes | None = None) -> bytes:
    # OpenAI's own events end with `"obfuscation"`: random padding, a different length each time.
    end = b"}" if padding is None else b',"obfuscation":"%s"}' % padding
    return top + b'[{"index":0,"delta":%s,"logprobs":null,"finish_reason":%s}]%s\n\n' % (delta, finish, end)


def content(text: str, padding: bytes | None = None) -> bytes:
    return event(b'{"content":%s}' % json.dumps(text).encode(), padding=padding)


def chunk(data: bytes, size: bytes | None = None) -> bytes:
    return (size if size is not None else b"%x" % len(data)) + b"\r\n" + data + b"\r\n"


OPENING = chunk(event(b'{"role":"assistant","content":""}'))
ENDING = chunk(event(b"{}", b'"stop"') + b"data: [DONE]\n\n") + b"0\r\n\r\n"


def outcome(reads: list[bytes], output, itself: bool, **settings) -> tuple:
    """What a client is sent and what the stream counted, reading the body itself or not."""
    body = chunked_body(reads)
    stream = ChatStream(iter(body), close=body.close, guard=Guard(), settings=UpstreamSettings(**settings),
                        body=body if itself else None)
    writes, error = [], None
    try:
        for write in stream.writes(output.encoding, KEY):
            writes.append(write)
    except UpstreamError as exc:
        error = exc.message
    parser = stream.parser
    return writes, error, stream.written, parser.chunks, parser.finish_reason, parser.complete, body.complete


def assert_same(reads: list[bytes], **settings) -> list[bytes]:
    for output in (TEXT_BODY, SSE_BODY, CHAT_EVENTS):
        itself = outcome(reads, output, True, **settings)
        assert itself == outcome(reads, output, False, **settings), output.content_type
    return outcome(reads, TEXT_BODY, True, **settings)[0]


def test_a_stream_of_whole_chunks_is_written_read_for_read():
    reads = [OPENING, chunk(content("Hello")), chunk(content(" there")), chunk(content("!")), ENDING]
    assert assert_same(reads) == [b"Hello", b" there", b"!"]


class CountingParser(ChunkParser):
    __slots__ = ("fed",)

    def __init__(self) -> None:
        super().__init__()
        self.fed = 0

    def feed(self, data: bytes) -> list[bytes]:
        self.fed += 1
        return super().feed(data)


@pytest.mark.parametrize("padding", [None, b"xYz"], ids=["plain", "padded as OpenAI's"])
def test_after_the_first_content_each_token_read_is_taken_without_the_parser(padding):
    reads = [OPENING] + [chunk(content(f" word{i}", padding)) for i in range(10)] + [ENDING]
    body = chunked_body(reads)
    parser = CountingParser()
    stream = ChatStream(iter(body), close=body.close, guard=Guard(), settings=UpstreamSettings(), parser=parser,
                        body=body)
    assert len(list(stream.writes(TEXT_BODY.encoding))) == 10
    assert parser.fed == 3 and parser.chunks == 10  # the opening, the first content, the end


NEAR_MISSES = {
    "an escaped quote": chunk(content('say "hi"')),
    "a line break escaped": chunk(content("a\nb")),
    "unicode escaped": chunk(content("caf\u00e9")),
    "an empty content": chunk(content("")),
    "another id": chunk(event(b'{"content":"x"}', top=TOP.replace(b"chatcmpl-1", b"chatcmpl-2"))),
    "a finish beside the content": chunk(event(b'{"content":"x"}', b'"length"')),
    "an upper-case size": chunk(content("xyz"), size=b"%X" % len(content("xyz"))),
    "a size with a leading zero": chunk(content("xyz"), size=b"0%x" % len(content("xyz"))),
    "a size with an extension": chunk(content("xyz"), size=b"%x;a=1" % len(content("xyz"))),
    "a size too small": chunk(content("xyz"), size=b"%x" % (len(content("xyz")) - 1)),
    "a size too large": chunk(content("xyz"), size=b"%x" % (len(content("xyz")) + 1)),
    "a size that is no number": chunk(content("xyz"), size=b"zz"),
    "an empty size": chunk(content("xyz"), size=b""),
    "two events in one chunk": chunk(content("a") + content("b")),
    "two chunks in one read": chunk(content("a")) + chunk(content("b")),
    "an event split over two chunks": chunk(content("abc")[:40]) + chunk(content("abc")[40:]),
    "the key as content": chunk(content("key: " + KEY.decode())),
    "a key-like word split": chunk(content(KEY.decode()[:10])),
    "an error event": chunk(b'data: {"error":{"type":"server_error","message":"boom"}}\n\n'),
    "the last chunk too": chunk(content("end")) + b"0\r\n\r\n",
}


@pytest.mark.parametrize("read", NEAR_MISSES.values(), ids=NEAR_MISSES.keys())
def test_a_read_the_frame_almost_fits_is_read_as_the_general_path_reads_it(read):
    reads = [OPENING, chunk(content("Hello")), read, chunk(content(" more")), ENDING]
    assert_same(reads)


PADDED_NEAR_MISSES = {
    "other padding": chunk(content("x", b"Zq09")),
    "no padding": chunk(content("x", b"")),
    "padding with an escape": chunk(content("x", b"a\\\"b")),
    "padding holding the unfinished marker": chunk(content("x", b'\\"finish_reason\\":null')),
    "no padding field": chunk(content("x")),
    "a quote in the content": chunk(content('a"b', b"pad")),
    "another id": chunk(event(b'{"content":"x"}', top=TOP.replace(b"chatcmpl-1", b"chatcmpl-2"), padding=b"p")),
    "a finish beside the content": chunk(event(b'{"content":"x"}', b'"length"', padding=b"p")),
    "padding cut short": chunk(content("x", b"pad"))[:-8] + b'"}\n\n\r\n',
}


def test_openai_padded_events_are_written_read_for_read():
    reads = [OPENING] + [chunk(content(f" word{i}", b"xYz9"[:i % 5])) for i in range(8)] + [ENDING]
    assert assert_same(reads) == [f" word{i}".encode() for i in range(8)]


@pytest.mark.parametrize("read", PADDED_NEAR_MISSES.values(), ids=PADDED_NEAR_MISSES.keys())
def test_a_read_a_padded_frame_almost_fits_is_read_as_the_general_path_reads_it(read):
    reads = [OPENING, chunk(content("Hello", b"abc")), read, chunk(content(" more", b"q")), ENDING]
    assert_same(reads)


def test_reads_split_anywhere_are_the_general_paths_too():
    wire = b"".join([OPENING] + [chunk(content(f" word{i}")) for i in range(30)] + [ENDING])
    randomly = random.Random(5)
    for _ in range(40):
        cuts = sorted(randomly.sample(range(1, len(wire)), randomly.randint(1, 60)))
        assert_same([wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)])])


@pytest.mark.parametrize("padding", [None, b"Pad1"], ids=["plain", "padded"])
def test_mutated_streams_are_the_general_paths_too(padding):
    # Each read a whole chunk, one byte of it changed: framing, frame, padding and literal alike.
    randomly = random.Random(11)
    reads = [OPENING] + [chunk(content(f" w{i}", padding)) for i in range(6)] + [ENDING]
    for _ in range(300):
        mutated = list(reads)
        at = randomly.randrange(1, len(mutated) - 1)
        position = randomly.randrange(len(mutated[at]))
        byte = randomly.choice(b'"\\\r\n0aAz{}:, ')
        mutated[at] = mutated[at][:position] + bytes([byte]) + mutated[at][position + 1:]
        assert_same(mutated)


def test_the_answer_cap_counts_the_same_bytes():
    reads = [OPENING, chunk(content("Hello")), chunk(content(" there")), ENDING]
    cap = len(event(b'{"role":"assistant","content":""}')) + len(content("Hello")) + 3
    assert assert_same(reads, max_answer_bytes=cap) == [b"Hello"]


def test_a_body_cut_short_is_the_same_error():
    assert_same([OPENING, chunk(content("Hello")), chunk(content(" there"))[:20]])
    assert_same([OPENING, chunk(content("Hello"))])
