"""Unit: the parsers of the streams /v1 relays beyond chat (upstream/events.py)."""
from __future__ import annotations

import json

from flaskapp.upstream.events import ChunkParser, CompletionParser, ResponsesParser


def responses_event(kind: str, sequence: int, **fields: object) -> bytes:
    data = json.dumps({"type": kind, "sequence_number": sequence, **fields})
    return f"event: {kind}\ndata: {data}\n\n".encode()


def test_a_responses_stream_is_complete_only_at_its_end_event():
    parser = ResponsesParser()
    assert parser.feed(responses_event("response.created", 0, response={})) == []
    assert parser.feed(responses_event("response.output_text.delta", 1, delta="Hi")) == [b'"Hi"']
    assert not parser.complete and parser.chunks == 1 and parser.sequence == 1
    usage = {"input_tokens": 3, "output_tokens": 1, "total_tokens": 4}
    parser.feed(responses_event("response.completed", 2, response={"usage": usage}))
    assert parser.complete and parser.finish_reason == "completed"
    assert parser.usage["prompt_tokens"] == 3 and parser.usage["completion_tokens"] == 1


def test_an_incomplete_response_is_a_whole_stream():
    parser = ResponsesParser()
    parser.feed(responses_event("response.incomplete", 5, response={}))
    assert parser.complete


def test_responses_errors_keep_a_code_and_never_the_message():
    for event in (responses_event("error", 3, code="invalid_api_key", message="sk-secret"),
                  responses_event("response.failed", 3, response={"error": {"code": "server_error",
                                                                           "message": "sk-secret"}})):
        parser = ResponsesParser()
        parser.feed(event)
        assert not parser.complete and "sk-secret" not in json.dumps(parser.error)
        assert parser.error["code"] in ("invalid_api_key", "server_error")


def test_completions_need_done_where_chat_takes_a_finish_reason():
    finished = b'data: {"choices":[{"index":0,"text":"","finish_reason":"stop"}]}\n\n'
    chat, completion = ChunkParser(), CompletionParser()
    chat.feed(finished)
    completion.feed(b'data: {"choices":[{"index":0,"text":"Hi","finish_reason":null}]}\n\n' + finished)
    assert chat.complete and not completion.complete and completion.chunks == 1
    completion.feed(b"data: [DONE]\n\n")
    assert completion.complete
