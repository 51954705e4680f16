"""`POST /v1/chat/completions`: prose, `n` choices, tool calls and JSON answers, streamed or not.

Each choice is a list of pre-encoded JSON strings (one per token), written into chunk
bytes built once per request, so a streamed token costs one bytes formatting.

When an answer ends: prose has the emulator's `--tokens` length, the model's natural
length, and ends with "stop"; a tool call or a JSON answer ends with its JSON ("tool_calls"
or "stop"). A request's `max_tokens` (or `max_completion_tokens`) below that length cuts
the answer there with "length", as OpenAI does (a cut JSON answer is not valid JSON).
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

from .pacing import answer, fault_response, paced, take_fault
from .structured import JSON_OBJECT, fragments, json_for
from .text import prose_pieces
from .wire import SSE_HEADERS, BadRequest, StartResponse, positive_int, read_json, required_model, words

if TYPE_CHECKING:
    from .app import Emulator

@dataclass
class Choice:
    index: int
    pieces: list[bytes]  # each token's JSON string
    finish_reason: str
    tool: dict | None = None  # {"id", "name"} when the answer is a tool call

    def text(self) -> str:
        return "".join(json.loads(piece) for piece in self.pieces)


def _tool(body: dict) -> dict | None:
    """The function to call (tool_choice's, else the first tool's), or None for prose."""
    tools, choice = body.get("tools"), body.get("tool_choice", "auto")
    if tools is None or choice == "none":
        return None
    if not isinstance(tools, list) or not tools or not all(
            isinstance(t, dict) and isinstance(t.get("function"), dict)
            and isinstance(t["function"].get("name"), str) for t in tools):
        raise BadRequest("'tools' must be a non-empty array of function tools.", param="tools")
    functions = [t["function"] for t in tools]
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        named = [f for f in functions if f["name"] == name]
        if not named:
            raise BadRequest(f"Invalid value for 'tool_choice': no function named {name!r} in 'tools'.",
                             param="tool_choice")
        return named[0]
    if choice not in ("auto", "required"):
        raise BadRequest("'tool_choice' must be 'none', 'auto', 'required' or a named function.",
                         param="tool_choice")
    return functions[0]


def _json_schema(body: dict) -> dict | None:
    """The schema a JSON answer must satisfy, or None for prose."""
    response_format = body.get("response_format")
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return JSON_OBJECT
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise BadRequest("'response_format.json_schema' needs a 'name'.", param="response_format")
        return spec.get("schema") if isinstance(spec.get("schema"), dict) else {"type": "object"}
    raise BadRequest("'response_format.type' must be 'text', 'json_object' or 'json_schema'.",
                     param="response_format")


def _choices(emulator: "Emulator", body: dict, messages: list, n: int, limit: int | None) -> list[Choice]:
    settings = emulator.settings
    tool, schema = _tool(body), _json_schema(body)
    choices = []
    for index in range(n):
        key = messages if index == 0 else (messages, index)  # choice 0: the answer n=1 gets
        if tool is not None or schema is not None:
            text = json_for(tool.get("parameters") if tool else schema, settings.seed, key)
            pieces = [json.dumps(piece).encode() for piece in fragments(text)]
            natural = "tool_calls" if tool else "stop"
        else:
            pieces = prose_pieces(settings.seed, key, settings.tokens if limit is None
                                  else min(limit, settings.tokens))
            natural = "stop"
        length = len(pieces) if tool or schema else settings.tokens
        if limit is not None and limit < length:
            pieces, natural = pieces[:limit], "length"
        call = {"id": f"call_{uuid.uuid4().hex[:24]}", "name": tool["name"]} if tool else None
        choices.append(Choice(index, pieces, natural, call))
    return choices


def chat(emulator: "Emulator", environ: dict, start_response: StartResponse) -> Iterable[bytes]:
    body = read_json(environ)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        raise BadRequest("'messages' must be a non-empty array of message objects.", param="messages")
    model = required_model(body)
    limit = positive_int(body, "max_completion_tokens", "max_tokens")
    n = positive_int(body, "n", default=1, most=128)
    choices = _choices(emulator, body, messages, n, limit)
    fault = take_fault(emulator, environ, streamed=bool(body.get("stream")))
    if fault.status:
        return fault_response(start_response, fault)

    prompt_tokens = sum(words(m.get("content")) for m in messages) + 4 * len(messages)
    completion_tokens = sum(len(c.pieces) for c in choices)
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
             "total_tokens": prompt_tokens + completion_tokens}
    completion_id, created = "chatcmpl-" + uuid.uuid4().hex[:24], int(time.time())
    if body.get("stream"):
        options = body.get("stream_options") or {}
        include_usage = bool(options.get("include_usage"))
        obfuscation = bool(options.get("include_obfuscation", emulator.settings.obfuscation))
        start_response("200 OK", list(SSE_HEADERS))
        return _stream(emulator, environ, fault, choices, model, completion_id, created,
                       usage if include_usage else None, obfuscation)

    def build() -> dict:
        return {"id": completion_id, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": c.index, "message": _message(c), "logprobs": None,
                             "finish_reason": c.finish_reason} for c in choices],
                "usage": usage}
    return answer(emulator, environ, start_response, fault,
                  max((len(c.pieces) for c in choices), default=0), build)


def _message(choice: Choice) -> dict:
    if choice.tool is None:
        return {"role": "assistant", "content": choice.text(), "refusal": None}
    return {"role": "assistant", "content": None, "refusal": None, "tool_calls": [
        {"id": choice.tool["id"], "type": "function",
         "function": {"name": choice.tool["name"], "arguments": choice.text()}}]}


# OpenAI's stream obfuscation: random characters in each chunk, of varying length, so that
# chunk sizes do not tell the tokens. Here a slice of a fixed alphabet, its length by the token's.
_PADDING = b"ZGFlRK2aBvkJ0wmdEACq7XnYpT3sHuVc"


def _stream(emulator: "Emulator", environ: dict, fault, choices: list[Choice], model: str,
            completion_id: str, created: int, usage: dict | None, obfuscation: bool = False) -> Iterable[bytes]:
    top = (f'data: {{"id":"{completion_id}","object":"chat.completion.chunk","created":{created},'
           f'"model":{json.dumps(model)},"choices":').encode()
    heads = [top + b'[{"index":%d,"delta":' % c.index for c in choices]
    # Every chunk's end; with obfuscation, its padding is written between `end` and `close`.
    end, close = (b',"finish_reason":null}],"obfuscation":"', b'"}\n\n') if obfuscation else \
        (b',"finish_reason":null}]}\n\n', b"")
    running = end + _PADDING[:7] + close if obfuscation else end
    opening, prefixes, suffixes = [], [], []
    for head, choice in zip(heads, choices):
        if choice.tool is None:
            opening.append(head + b'{"role":"assistant","content":""}' + running)
            prefixes.append(head + b'{"content":')
            suffixes.append(b'}' + running)
        else:
            call = {"index": 0, "id": choice.tool["id"], "type": "function",
                    "function": {"name": choice.tool["name"], "arguments": ""}}
            opening.append(head + b'{"role":"assistant","content":null,"tool_calls":[%s]}'
                           % json.dumps(call).encode() + running)
            prefixes.append(head + b'{"tool_calls":[{"index":0,"function":{"arguments":')
            suffixes.append(b'}}]}' + running)

    if obfuscation:  # each token's chunk padded by its own length: sizes vary, and tell nothing
        suffixes = [suffix[:-len(running)] + end for suffix in suffixes]

        def padded(piece: bytes) -> bytes:
            return b"%s%s" % (_PADDING[:(-len(piece)) % 16 + 1], close)
    else:
        def padded(piece: bytes) -> bytes:
            return b""

    if len(choices) == 1 and not obfuscation:  # the common case, kept lean: one formatting per token
        pieces, prefix, suffix = choices[0].pieces, prefixes[0], suffixes[0]

        def render(start: int, stop: int) -> bytes:
            return b"".join([b"%s%s%s" % (prefix, pieces[i], suffix) for i in range(start, stop)])
    else:
        lanes = list(zip(prefixes, (c.pieces for c in choices), suffixes))

        def render(start: int, stop: int) -> bytes:
            return b"".join([b"%s%s%s%s" % (prefix, pieces[i], suffix, padded(pieces[i]))
                             for i in range(start, stop) for prefix, pieces, suffix in lanes
                             if i < len(pieces)])

    def epilogue() -> bytes:
        ending = b"}]%s}\n\n" % (b',"obfuscation":"%s"' % _PADDING[:5] if obfuscation else b"")
        tail = b"".join(head + b'{},"finish_reason":"%s"' % c.finish_reason.encode() + ending
                        for head, c in zip(heads, choices))
        if usage is not None:
            tail += top + b'[],"usage":' + json.dumps(usage).encode() + b"}\n\n"
        return tail + b"data: [DONE]\n\n"

    total = max((len(c.pieces) for c in choices), default=0)
    return paced(emulator, environ, fault, total, b"".join(opening), render, epilogue, width=len(choices))
