"""`POST /v1/responses`: the Responses API, streamed as typed events or answered as a Response.

A stream sends `response.created` and `response.in_progress` at once, then after the time
to first token one message item: `output_item.added`, `content_part.added`, one
`output_text.delta` per token, `output_text.done`, `content_part.done`, `output_item.done`,
and `response.completed` with usage. Every event is `event: <type>` plus JSON data with
that `type` and a `sequence_number`. An answer cut by `max_output_tokens` (below the
emulator's `--tokens`) ends `incomplete` (`response.incomplete`, reason
"max_output_tokens"), as OpenAI's does; the fail fault ends a stream with `response.failed`.
"""
from __future__ import annotations

import json
import time
import uuid
from typing import TYPE_CHECKING, Iterable

from .pacing import FAILURE_MESSAGE, answer, fault_response, paced, take_fault
from .text import answer_tokens
from .wire import SSE_HEADERS, BadRequest, StartResponse, positive_int, read_json, required_model, words

if TYPE_CHECKING:
    from .app import Emulator


def _input(body: dict) -> tuple[object, int]:
    """What the answer is keyed on, and the prompt's length in tokens."""
    value, instructions = body.get("input"), body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise BadRequest("'instructions' must be a string.", param="instructions")
    if isinstance(value, str):
        texts = [value]
    elif isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        texts = [item.get("content", item.get("output")) for item in value]
    else:
        raise BadRequest("'input' must be a string or a non-empty array of input items.", param="input")
    return (instructions, value), sum(map(words, texts)) + words(instructions)


def _event(kind: str, sequence: int, **fields: object) -> bytes:
    data = json.dumps({"type": kind, "sequence_number": sequence, **fields})
    return f"event: {kind}\ndata: {data}\n\n".encode()


def responses(emulator: "Emulator", environ: dict, start_response: StartResponse) -> Iterable[bytes]:
    body = read_json(environ)
    model = required_model(body)
    key, input_tokens = _input(body)
    limit = positive_int(body, "max_output_tokens")
    fault = take_fault(emulator, environ)
    if fault.status:
        return fault_response(start_response, fault)

    settings, tokens, token_json = emulator.settings, emulator.tokens, emulator.token_json
    count = settings.tokens if limit is None else min(limit, settings.tokens)
    complete = limit is None or limit >= settings.tokens
    indices = answer_tokens(settings.seed, key, count)
    response_id, item_id = "resp_" + uuid.uuid4().hex, "msg_" + uuid.uuid4().hex
    created = int(time.time())
    usage = {"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
             "output_tokens": count, "output_tokens_details": {"reasoning_tokens": 0},
             "total_tokens": input_tokens + count}

    def text() -> str:
        return "".join(tokens[i] for i in indices).lstrip()

    def item(status: str, content: list) -> dict:
        return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}

    def part(value: str) -> dict:
        return {"type": "output_text", "text": value, "annotations": [], "logprobs": []}

    def response(status: str, output: list, **extra: object) -> dict:
        return {"id": response_id, "object": "response", "created_at": created, "status": status,
                "model": model, "output": output, "instructions": body.get("instructions"),
                "max_output_tokens": limit, "parallel_tool_calls": True, "tool_choice": "auto",
                "tools": [], "temperature": body.get("temperature", 1.0), "top_p": body.get("top_p", 1.0),
                "metadata": body.get("metadata") or {}, "error": None, "incomplete_details": None,
                "usage": None, **extra}

    def finished() -> dict:
        status = "completed" if complete else "incomplete"
        return response(status, [item(status, [part(text())])], usage=usage,
                        incomplete_details=None if complete else {"reason": "max_output_tokens"})

    if not body.get("stream"):
        return answer(emulator, environ, start_response, fault, count, finished)

    early = (_event("response.created", 0, response=response("in_progress", []))
             + _event("response.in_progress", 1, response=response("in_progress", [])))
    prologue = (_event("response.output_item.added", 2, output_index=0, item=item("in_progress", []))
                + _event("response.content_part.added", 3, item_id=item_id, output_index=0,
                         content_index=0, part=part("")))
    first = 4  # the first delta's sequence number
    before_number = (b'event: response.output_text.delta\n'
                     b'data: {"type":"response.output_text.delta","sequence_number":')
    before_delta = (b',"item_id":"%s","output_index":0,"content_index":0,"logprobs":[],"delta":'
                    % item_id.encode())
    pieces = [token_json[i] for i in indices]
    if pieces:
        pieces[0] = json.dumps(tokens[indices[0]].lstrip()).encode()

    def render(start: int, stop: int) -> bytes:
        return b"".join([b"%s%d%s%s}\n\n" % (before_number, first + i, before_delta, pieces[i])
                         for i in range(start, stop)])

    def epilogue() -> bytes:
        done, whole = first + count, finished()
        value = whole["output"][0]["content"][0]["text"]
        return (_event("response.output_text.done", done, item_id=item_id, output_index=0,
                       content_index=0, text=value, logprobs=[])
                + _event("response.content_part.done", done + 1, item_id=item_id, output_index=0,
                         content_index=0, part=part(value))
                + _event("response.output_item.done", done + 2, output_index=0, item=whole["output"][0])
                + _event(f"response.{whole['status']}", done + 3, response=whole))

    def failure(sent: int) -> bytes:
        error = {"code": "server_error", "message": FAILURE_MESSAGE}
        return _event("response.failed", first + sent, response=response("failed", [], error=error))

    malformed = b'event: response.output_text.delta\ndata: {"type": "response.output_text.delta", \n\n'
    start_response("200 OK", list(SSE_HEADERS))
    return paced(emulator, environ, fault, count, prologue, render, epilogue,
                 malformed=malformed, failure=failure, early=early)
