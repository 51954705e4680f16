"""`POST /v1/completions`: legacy text completions, OpenAI's `text_completion` shape.

`prompt` is a string, a list of strings, a token array or a list of token arrays; each
prompt gets `n` choices, numbered prompt by prompt as OpenAI numbers them. Lengths and
finish reasons as chat's prose: `--tokens` ends with "stop", a lower `max_tokens` with "length".
"""
from __future__ import annotations

import json
import time
import uuid
from typing import TYPE_CHECKING, Iterable

from .pacing import answer, fault_response, paced, take_fault
from .text import answer_tokens
from .wire import SSE_HEADERS, BadRequest, StartResponse, positive_int, read_json, required_model, words

if TYPE_CHECKING:
    from .app import Emulator


def _prompts(body: dict) -> list[str | list[int]]:
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, int) and not isinstance(p, bool) for p in prompt):
            return [prompt]
        if all(isinstance(p, str) or (isinstance(p, list) and all(isinstance(t, int) for t in p))
               for p in prompt):
            return prompt
    raise BadRequest("'prompt' must be a string, an array of strings, or token arrays.", param="prompt")


def completions(emulator: "Emulator", environ: dict, start_response: StartResponse) -> Iterable[bytes]:
    body = read_json(environ)
    model = required_model(body)
    prompts = _prompts(body)
    limit = positive_int(body, "max_tokens")
    n = positive_int(body, "n", default=1, most=128)
    if len(prompts) * n > 128:
        raise BadRequest("At most 128 choices (prompts times 'n') per request.", param="n")
    fault = take_fault(emulator, environ, streamed=bool(body.get("stream")))
    if fault.status:
        return fault_response(start_response, fault)

    settings, token_json, tokens = emulator.settings, emulator.token_json, emulator.tokens
    count = settings.tokens if limit is None else min(limit, settings.tokens)
    finish_reason = "length" if limit is not None and limit < settings.tokens else "stop"
    lanes = [answer_tokens(settings.seed, prompt if j == 0 else (prompt, j), count)
             for prompt in prompts for j in range(n)]
    prompt_tokens = sum(len(p) if isinstance(p, list) else words(p) for p in prompts)
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": count * len(lanes),
             "total_tokens": prompt_tokens + count * len(lanes)}
    completion_id, created = "cmpl-" + uuid.uuid4().hex[:24], int(time.time())

    if not body.get("stream"):
        def build() -> dict:
            return {"id": completion_id, "object": "text_completion", "created": created, "model": model,
                    "choices": [{"text": "".join(tokens[i] for i in lane), "index": index,
                                 "logprobs": None, "finish_reason": finish_reason}
                                for index, lane in enumerate(lanes)],
                    "usage": usage}
        return answer(emulator, environ, start_response, fault, count, build)

    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    top = (f'data: {{"id":"{completion_id}","object":"text_completion","created":{created},'
           f'"model":{json.dumps(model)},').encode()
    head = top + b'"choices":[{"text":'
    tails = [b',"index":%d,"logprobs":null,"finish_reason":null}]}\n\n' % index for index in range(len(lanes))]

    def render(start: int, stop: int) -> bytes:
        return b"".join([b"%s%s%s" % (head, token_json[lane[i]], tail)
                         for i in range(start, stop) for lane, tail in zip(lanes, tails)])

    def epilogue() -> bytes:
        end = b"".join(head + b'"","index":%d,"logprobs":null,"finish_reason":"%s"}]}\n\n'
                       % (index, finish_reason.encode()) for index in range(len(lanes)))
        if include_usage:
            end += top + b'"choices":[],"usage":' + json.dumps(usage).encode() + b"}\n\n"
        return end + b"data: [DONE]\n\n"

    start_response("200 OK", list(SSE_HEADERS))
    return paced(emulator, environ, fault, count, b"", render, epilogue, width=len(lanes))
