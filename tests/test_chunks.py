"""Reading upstream chat-completion events without building objects per chunk."""
import json

import pytest

from flaskapp.chunks import ChunkParser, MalformedChunk, sse_event, text_of


def chunk(delta: dict, finish_reason=None, **extra) -> bytes:
    body = {"id": "c1", "object": "chat.completion.chunk", "model": "gpt-4",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}], **extra}
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


def texts(literals: list[bytes]) -> list[str]:
    return [text_of(literal).decode() for literal in literals]


def test_content_chunks_become_their_text_in_order():
    parser = ChunkParser()
    data = chunk({"role": "assistant", "content": ""}) + chunk({"content": "Hello"}) + chunk({"content": " world"})
    assert texts(parser.feed(data)) == ["Hello", " world"]
    assert parser.chunks == 2 and not parser.complete


@pytest.mark.parametrize("content", ['say "hi"', "line\nbreak", "tab\there", "naïve – ünïcode ✓", "back\\slash", "😀"])
def test_escapes_and_unicode_survive(content):
    literal, = ChunkParser().feed(chunk({"content": content}))
    assert text_of(literal).decode() == content
    assert json.loads(literal) == content


def test_events_split_across_reads_are_reassembled():
    data = chunk({"content": "one"}) + chunk({"content": " two"})
    parser = ChunkParser()
    found = []
    for i in range(0, len(data), 7):
        found += parser.feed(data[i:i + 7])
    assert texts(found) == ["one", " two"]


def test_finish_reason_usage_and_done_complete_the_stream():
    parser = ChunkParser()
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    parser.feed(chunk({"content": "a"}) + chunk({}, "length")
                + b'data: {"id":"c1","choices":[],"usage":' + json.dumps(usage).encode() + b"}\n\n"
                + b"data: [DONE]\n\n")
    assert parser.finish_reason == "length" and parser.usage == usage and parser.done and parser.complete


def test_crlf_comments_and_other_fields_are_ignored():
    parser = ChunkParser()
    data = b": keep-alive\r\n\r\nid: 7\r\n" + chunk({"content": "x"}).replace(b"\n", b"\r\n")
    assert texts(parser.feed(data)) == ["x"]


def test_an_error_event_is_reported_not_relayed():
    parser = ChunkParser()
    assert parser.feed(b'data: {"error": {"message": "overloaded", "type": "server_error"}}\n\n') == []
    assert parser.error["type"] == "server_error" and not parser.complete


@pytest.mark.parametrize("line", [b'data: {"id": "broken", "choices": [{"delta": {"content": \n\n',
                                  b"data: [1, 2]\n\n", b'data: {"id": "x"}\n\n'])
def test_malformed_events_raise(line):
    with pytest.raises(MalformedChunk):
        ChunkParser().feed(line)


def test_sse_event_is_one_json_data_line():
    assert sse_event({"a": "b\nc"}, event="done") == b'event: done\ndata: {"a":"b\\nc"}\n\n'
