"""Reading upstream chat-completion events without building objects per chunk."""
import json

import pytest

from flaskapp.upstream.events import MAX_EVENT_BYTES, ChunkParser, MalformedChunk, sse_event, text_of


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


def test_only_whole_events_are_taken_and_the_rest_waits():
    parser = ChunkParser()
    one, two, three = chunk({"content": "one"}), chunk({"content": "two"}), chunk({"content": "three"})
    data = one + two + three
    cut = len(one + two) + 9  # two whole events and part of the third
    assert texts(parser.feed(data[:cut])) == ["one", "two"] and parser.taken == one + two
    assert parser.feed(data[cut:cut + 5]) == [] and parser.taken == b""
    assert texts(parser.feed(data[cut + 5:])) == ["three"] and parser.taken == three


@pytest.mark.parametrize("boundary", [b"\n\n", b"\r\n\r\n"])
def test_an_event_boundary_split_across_reads_is_found(boundary):
    event = b'data: {"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}' + boundary
    for cut in range(len(event) - len(boundary), len(event)):
        parser = ChunkParser()
        assert parser.feed(event[:cut]) == [] and parser.taken == b""
        assert parser.feed(event[cut:]) == [b'"x"'] and parser.taken == event


def test_a_long_line_is_held_in_pieces_and_joined_once():
    # Joining the pending bytes on every read made a 10 MB line cost seconds of CPU.
    parser = ChunkParser()
    head = b'data: {"choices":[{"index":0,"delta":{"content":"'
    piece = b"a" * 16384
    reads = [head] + [piece] * 60 + [b'"},"finish_reason":null}]}\n\n']
    for data in reads[:-1]:
        assert parser.feed(data) == []
    assert isinstance(parser._pending, list) and len(parser._pending) == len(reads) - 1
    literal, = parser.feed(reads[-1])
    assert len(literal) == 60 * 16384 + 2 and parser._pending == []


def test_an_event_longer_than_the_cap_is_malformed():
    parser = ChunkParser()
    parser.feed(b'data: {"choices":[{"index":0,"delta":{"content":"')
    with pytest.raises(MalformedChunk):
        for _ in range(10 * 1024 * 1024 // 16384):  # a 10 MB line
            parser.feed(b"a" * 16384)
    assert parser._pending_bytes <= MAX_EVENT_BYTES + 16384


def test_a_multi_line_data_event_is_one_payload():
    parser = ChunkParser()
    data = (b'data: {"choices":[{"index":0,\ndata: "delta":{"content":"hi"},\r\n'
            b'data: "finish_reason":null}]}\n\n')
    assert texts(parser.feed(data)) == ["hi"]
    assert texts(parser.feed(b"event: message\ndata: " + chunk({"content": " there"})[6:])) == [" there"]


def test_only_the_first_choice_is_read():
    def choice(index: int, content: str | None, finish=None) -> bytes:
        delta = {} if content is None else {"content": content}
        return (b'data: {"choices":[{"index":%d,"delta":%s,"finish_reason":%s}]}\n\n'
                % (index, json.dumps(delta).encode(), json.dumps(finish).encode()))

    parser = ChunkParser()
    data = choice(0, "A") + choice(1, "X") + choice(0, "B") + choice(1, "Y") + choice(1, None, "stop")
    assert texts(parser.feed(data)) == ["A", "B"] and parser.chunks == 2
    assert not parser.complete  # choice 1 finishing does not finish choice 0
    both = b'data: {"choices":[{"index":1,"delta":{"content":"X"},"finish_reason":null},' \
           b'{"index":0,"delta":{"content":"C"},"finish_reason":null}]}\n\n'
    assert texts(parser.feed(both)) == ["C"]
    for data in (choice(1, "Z"), choice(1, "Z")[:-2] + b"\r\n\r\n"):
        assert parser.feed(data) == []  # the fast path too


def test_json_nested_too_deep_is_malformed():
    with pytest.raises(MalformedChunk):
        ChunkParser().feed(b"data: " + b"[" * 100_000 + b"]" * 100_000 + b"\n\n")


def test_malformed_event_messages_quote_nothing_of_the_event():
    with pytest.raises(MalformedChunk) as caught:
        ChunkParser().feed(b"data: Incorrect API key provided: sk-secret\n\n")
    assert "sk-secret" not in str(caught.value)


def test_an_unterminated_last_event_counts_when_its_lines_are_whole():
    parser = ChunkParser()
    parser.feed(chunk({}, "stop") + b"data: [DONE]\n")
    assert parser.taken == chunk({}, "stop") and not parser.done
    parser.feed(parser.finish())
    assert parser.done
    parser = ChunkParser()
    parser.feed(b"data: [DO")
    assert parser.finish() == b""


@pytest.mark.parametrize("data, expected", [
    # Ollama sends the role in every delta: still choice 0's content.
    (b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":"x"},"finish_reason":null}]}\n\n', ["x"]),
    # llama.cpp puts finish_reason first.
    (b'data: {"choices":[{"finish_reason":null,"index":0,"delta":{"content":"y"}}]}\n\n', ["y"]),
    # Choice 0 without content, choice 1 with: nothing for /stream.
    (b'data: {"choices":[{"index":0,"delta":{},"finish_reason":null},'
     b'{"index":1,"delta":{"content":"X"},"finish_reason":null}]}\n\n', []),
    # CRLF lines, one event of two data lines and one of one.
    (b'data: {"choices":[{"index":0,\r\ndata: "delta":{"content":"a"},"finish_reason":null}]}\r\n\r\n'
     b'data: {"choices":[{"index":0,"delta":{"content":"b"},"finish_reason":null}]}\r\n\r\n', ["a", "b"]),
])
def test_other_servers_shapes(data, expected):
    assert texts(ChunkParser().feed(data)) == expected


@pytest.mark.parametrize("line", [
    b'data: {"choices":[{"index":0,"delta":{"content":"plain"},"finish_reason":null}]}',
    b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":"after role"},"finish_reason":null}]}',
    b'data: {"choices":[{"finish_reason":null,"index":0,"delta":{"content":"marker first"}}]}',
    b'data: {"choices":[{"index":0,"delta":{"content":"finished"},"finish_reason":"stop"}]}',
    b'data: {"choices":[{"index":0,"delta":{"content":"esc\\"aped"},"finish_reason":null}]}',
    b'data: {"choices":[{"index":0,"delta":{"content":""},"finish_reason":null}]}',
    b'data: {"choices":[{"index":0,"delta":{"tool_calls":[]},"finish_reason":null}],'
    b'"x":{"index":0,"delta":{"content":"not choice 0s"}}}',
    b'data: {"choices":[{"index":0,"delta":{"content":"finish_reason\\":null"}}]}',
    b'data: {"choices":[{"index":1,"delta":{"content":"choice 1"},"finish_reason":null}]}',
], ids=["standard", "after the role", "marker before", "finished", "escaped", "empty", "another object's delta",
        "marker inside the text", "choice 1"])
def test_the_byte_search_agrees_with_the_json_parse_wherever_it_answers(line):
    from flaskapp.upstream.events import _standard

    fast, exact = _standard(line), ChunkParser()._parse(line[5:])
    if fast is not None:  # None: the byte search leaves the line to the parse
        assert (json.loads(fast) if fast else None) == (json.loads(exact) if exact else None)
    assert ChunkParser().feed(line + b"\n\n") == ([exact] if exact else [])


@pytest.mark.parametrize("line", [
    # The ends of a stream as OpenAI, the emulator, vLLM and llama.cpp send them.
    b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","service_tier":"default",'
    b'"system_fingerprint":"fp","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],'
    b'"usage":null,"obfuscation":"x"}',
    b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},'
    b'"finish_reason":"length"}]}',
    b'data: {"id":"c","choices":[],"usage":{"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}',
    b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6,'
    b'"prompt_tokens_details":{"cached_tokens":0}},"obfuscation":"y"}',
    b'data: {"id":"c","choices":[{"index":0,"delta":{"content":""},"logprobs":null,"finish_reason":"stop",'
    b'"stop_reason":null}]}',
    b'data: {"choices":[{"finish_reason":"stop","index":0,"delta":{}}],"model":"m"}',
    b"data: [DONE]",
    # Shapes the byte search must leave to the parse.
    b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":1}}',
    b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"},{"index":1,"delta":{},"finish_reason":"stop"}]}',
    b'data: {"choices":[{"index":1,"delta":{},"finish_reason":"stop"},{"index":0,"delta":{},"finish_reason":"length"}]}',
    b'data: {"choices":[],"usage":{"prompt_tokens":1},"error":{"message":"late"}}',
    b'data: {"choices":[],"usage":{"prompt_tokens":1,}}',
    b'data: {"choices":[],"usage":{"prompt_tokens":1}',
    b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"Stop!"}]}',
    b"data: [DONE] and more",
], ids=["openai finish", "emulator finish", "emulator usage", "openai usage", "vllm finish", "llama.cpp finish",
        "done", "usage in the finish", "two choices", "choice 0 second", "error beside usage", "usage not JSON",
        "cut short", "not a word", "done and more"])
def test_the_ends_of_a_stream_read_by_byte_search_are_what_the_parse_reads(line):
    fast, exact = ChunkParser(), ChunkParser()
    taken = fast._ending(line)
    try:
        exact._parse(line[5:])
    except MalformedChunk:  # as for content (`_standard`), agreement is owed on JSON only; still
        assert not taken or fast.finish_reason.isidentifier()  # at most a word was taken
        return
    if taken:
        assert ((fast.finish_reason, fast.usage, fast.done, fast.error)
                == (exact.finish_reason, exact.usage, exact.done, exact.error))
    full = ChunkParser()  # and as a read of its own: no content, the same state
    assert full.feed(line + b"\n\n") == []
    assert (full.finish_reason, full.usage, full.done, full.error) == (exact.finish_reason, exact.usage, exact.done, exact.error)


def test_a_responses_stream_is_parsed_whole_even_where_it_looks_like_chat():
    from flaskapp.upstream.events import ResponsesParser

    with pytest.raises(MalformedChunk):
        ResponsesParser().feed(b"data: [DONE]\n\n")  # not a Responses event: never an end
