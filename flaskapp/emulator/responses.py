"""`POST /v1/responses`: the Responses API, streamed as typed events or answered as a Response.

A stream sends `response.created` and `response.in_progress` at once, then after the time
to first token one message item: `output_item.added`, `content_part.added`, one
`output_text.delta` per token, `output_text.done`, `content_part.done`, `output_item.done`,
and `response.completed` with usage. Every event is `event: <type>` plus JSON data with
that `type` and a `sequence_number`. With function `tools` the item is a `function_call`
(`function_call_arguments.delta` per fragment, then `.done`) whose arguments satisfy the
function's schema; `text.format` `json_object` or `json_schema` makes the text JSON.
An answer cut by `max_output_tokens` (below its natural length, as chat's) ends
`incomplete` (`response.incomplete`, reason "max_output_tokens"), as OpenAI's does; the
fail fault ends a stream with `response.failed`.
"""
from __future__ import annotations

import json
import time
import uuid
from typing import TYPE_CHECKING, Iterable

from .pacing import FAILURE_MESSAGE, answer, fault_response, paced, take_fault
from .structured import JSON_OBJECT, fragments, json_for
from .text import prose_pieces
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


def _tool(body: dict) -> dict | None:
    """The function tool to call (tool_choice's, else the first), or None for a message."""
    tools, choice = body.get("tools"), body.get("tool_choice", "auto")
    if tools is None or choice == "none":
        return None
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise BadRequest("'tools' must be an array of tools.", param="tools")
    functions = [t for t in tools if t.get("type") == "function" and isinstance(t.get("name"), str)]
    if isinstance(choice, dict):
        functions = [f for f in functions if f["name"] == choice.get("name")]
        if not functions:
            raise BadRequest("'tool_choice' names no function in 'tools'.", param="tool_choice")
    elif choice not in ("auto", "required"):
        raise BadRequest("'tool_choice' must be 'none', 'auto', 'required' or a function.", param="tool_choice")
    return functions[0] if functions else None


def _text_schema(body: dict) -> dict | None:
    """The schema of `text.format` (json_object, json_schema), or None for prose."""
    spec = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
    kind = spec.get("type") if isinstance(spec, dict) else "text"
    if kind == "json_object":
        return JSON_OBJECT
    if kind == "json_schema":
        return spec.get("schema") if isinstance(spec.get("schema"), dict) else {"type": "object"}
    if kind != "text":
        raise BadRequest("'text.format.type' must be 'text', 'json_object' or 'json_schema'.", param="text")
    return None


def responses(emulator: "Emulator", environ: dict, start_response: StartResponse) -> Iterable[bytes]:
    body = read_json(environ)
    model = required_model(body)
    key, input_tokens = _input(body)
    limit = positive_int(body, "max_output_tokens")
    tool, schema = _tool(body), _text_schema(body)
    fault = take_fault(emulator, environ, streamed=bool(body.get("stream")))
    if fault.status:
        return fault_response(start_response, fault)

    settings = emulator.settings
    if tool is not None or schema is not None:  # JSON: as long as the JSON is
        pieces = [json.dumps(f).encode() for f in fragments(
            json_for(tool.get("parameters") if tool else schema, settings.seed, key))]
        natural = len(pieces)
    else:
        pieces = prose_pieces(settings.seed, key, settings.tokens if limit is None
                              else min(limit, settings.tokens))
        natural = settings.tokens
    complete = limit is None or limit >= natural
    pieces = pieces if complete else pieces[:limit]
    count = len(pieces)
    response_id, created = "resp_" + uuid.uuid4().hex, int(time.time())
    item_id = ("fc_" if tool else "msg_") + uuid.uuid4().hex
    call_id = "call_" + uuid.uuid4().hex[:24]
    usage = {"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
             "output_tokens": count, "output_tokens_details": {"reasoning_tokens": 0},
             "total_tokens": input_tokens + count}

    def item(status: str, value: str | None) -> dict:
        if tool is not None:
            return {"id": item_id, "type": "function_call", "status": status, "call_id": call_id,
                    "name": tool["name"], "arguments": value or ""}
        return {"id": item_id, "type": "message", "status": status, "role": "assistant",
                "content": [] if value is None else [part(value)]}

    def part(value: str) -> dict:
        return {"type": "output_text", "text": value, "annotations": [], "logprobs": []}

    def response(status: str, output: list, **extra: object) -> dict:
        return {"id": response_id, "object": "response", "created_at": created, "status": status,
                "model": model, "output": output, "instructions": body.get("instructions"),
                "max_output_tokens": limit, "parallel_tool_calls": True,
                "tool_choice": body.get("tool_choice", "auto"), "tools": body.get("tools") or [],
                "temperature": body.get("temperature", 1.0), "top_p": body.get("top_p", 1.0),
                "metadata": body.get("metadata") or {}, "error": None, "incomplete_details": None,
                "usage": None, **extra}

    def finished() -> dict:
        status = "completed" if complete else "incomplete"
        value = "".join(json.loads(piece) for piece in pieces)
        return response(status, [item(status, value)], usage=usage,
                        incomplete_details=None if complete else {"reason": "max_output_tokens"})

    if not body.get("stream"):
        return answer(emulator, environ, start_response, fault, count, finished)

    early = (_event("response.created", 0, response=response("in_progress", []))
             + _event("response.in_progress", 1, response=response("in_progress", [])))
    prologue = _event("response.output_item.added", 2, output_index=0, item=item("in_progress", None))
    if tool is None:
        prologue += _event("response.content_part.added", 3, item_id=item_id, output_index=0,
                           content_index=0, part=part(""))
        delta_type, where = b"response.output_text.delta", b',"output_index":0,"content_index":0,"logprobs":[]'
    else:
        delta_type, where = b"response.function_call_arguments.delta", b',"output_index":0'
    first = 3 if tool else 4  # the first delta's sequence number
    before_number = b'event: %s\ndata: {"type":"%s","sequence_number":' % (delta_type, delta_type)
    before_delta = b',"item_id":"%s"%s,"delta":' % (item_id.encode(), where)

    def render(start: int, stop: int) -> bytes:
        return b"".join([b"%s%d%s%s}\n\n" % (before_number, first + i, before_delta, pieces[i])
                         for i in range(start, stop)])

    def epilogue() -> bytes:
        done, whole = first + count, finished()
        output = whole["output"][0]
        if tool is not None:
            ends = [_event("response.function_call_arguments.done", done, item_id=item_id, output_index=0,
                           name=tool["name"], arguments=output["arguments"])]
        else:
            value = output["content"][0]["text"]
            ends = [_event("response.output_text.done", done, item_id=item_id, output_index=0,
                           content_index=0, text=value, logprobs=[]),
                    _event("response.content_part.done", done + 1, item_id=item_id, output_index=0,
                           content_index=0, part=part(value))]
        after = done + len(ends)
        return b"".join([*ends, _event("response.output_item.done", after, output_index=0, item=output),
                         _event(f"response.{whole['status']}", after + 1, response=whole)])

    def failure(sent: int) -> bytes:
        error = {"code": "server_error", "message": FAILURE_MESSAGE}
        return _event("response.failed", first + sent, response=response("failed", [], error=error))

    malformed = b'event: %s\ndata: {"type": "%s", \n\n' % (delta_type, delta_type)
    start_response("200 OK", list(SSE_HEADERS))
    return paced(emulator, environ, fault, count, prologue, render, epilogue,
                 malformed=malformed, failure=failure, early=early)
