"""CPU per call of the `openai` client's own request machinery, with no network at all.

    python benchmarks/sdk_overhead.py

Each call goes to an in-process fake transport that answers a one-token stream, so what
is measured is what the client does around the request: argument transformation,
option models, URL and header merging, httpx's request and response objects.
"""
from __future__ import annotations

import json
import time

import httpx2
import openai

BODY = b'data: {"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}\n\ndata: [DONE]\n\n'
ARGUMENTS = {"model": "gpt-4", "messages": [{"role": "system", "content": "Be brief."},
                                            {"role": "user", "content": "hello"}],
             "stream": True, "stream_options": {"include_usage": True}}


def answer(request: httpx2.Request) -> httpx2.Response:
    return httpx2.Response(200, content=BODY, headers={"content-type": "text/event-stream"})


def per_call(call, count: int = 2000) -> float:
    for _ in range(200):
        call()
    started = time.process_time()
    for _ in range(count):
        call()
    return (time.process_time() - started) / count * 1e6


def main() -> None:
    http = httpx2.Client(transport=httpx2.MockTransport(answer))
    client = openai.OpenAI(api_key="sk-fake", base_url="http://upstream.test/v1", http_client=http, max_retries=0)

    def create() -> None:
        with client.chat.completions.with_streaming_response.create(**ARGUMENTS) as response:
            response.http_response.read()

    def post() -> None:
        client.post("/chat/completions", body=ARGUMENTS, cast_to=httpx2.Response, stream=True).read()

    def plain_httpx() -> None:
        with http.stream("POST", "http://upstream.test/v1/chat/completions", content=json.dumps(ARGUMENTS),
                         headers={"authorization": "Bearer sk-fake"}) as response:
            response.read()

    for name, call in (("chat.completions.with_streaming_response.create()", create),
                       ("client.post(..., cast_to=httpx2.Response, stream=True)", post),
                       ("httpx2 alone (no openai client)", plain_httpx)):
        print(f"{name:<58} {per_call(call):7.0f} µs of CPU per call")


if __name__ == "__main__":
    main()
