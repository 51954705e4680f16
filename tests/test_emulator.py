"""The emulator answers what the official `openai` SDK sends: a real emulator process, the real SDK.

Chat with `n`, tool calls and JSON answers, legacy completions, embeddings, the Responses
API, `models.retrieve`, finish reasons, and a fault on each endpoint.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys

import openai
import pytest
from pydantic import BaseModel

from servers import ROOT, Emulator, raw_request, request

TOKENS = 20  # the emulator's natural answer length in these tests
MESSAGES = [{"role": "user", "content": "Why stream?"}]
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1, "maximum": 7},
                   "unit": {"enum": ["celsius", "fahrenheit"]}, "hourly": {"type": "boolean"},
                   "hours": {"type": "array", "items": {"type": "number"}},
                   "where": {"type": "object", "properties": {"lat": {"type": "number"}},
                             "required": ["lat"]}},
    "required": ["city", "days", "unit", "hourly", "hours", "where"]}}}
SEARCH = {"type": "function", "function": {"name": "search", "parameters": {
    "type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}}


EMULATOR = {"ttft": 0.05, "tokens_per_second": 2000.0, "tokens": TOKENS}  # conftest's `emulator`


@pytest.fixture(scope="module")
def client(emulator: Emulator) -> openai.OpenAI:
    with openai.OpenAI(base_url=emulator.base_url, api_key="sk-anything", max_retries=0, timeout=10) as client:
        yield client


def fault(spec: str) -> dict:
    return {"extra_headers": {"X-Emulator-Fault": spec}}


def check_weather(arguments: str) -> None:
    values = json.loads(arguments)
    assert isinstance(values["city"], str) and values["city"]
    assert isinstance(values["days"], int) and 1 <= values["days"] <= 7
    assert values["unit"] in ("celsius", "fahrenheit")
    assert isinstance(values["hourly"], bool)
    assert all(isinstance(h, (int, float)) for h in values["hours"])
    assert isinstance(values["where"]["lat"], (int, float))


def accumulate(chunks) -> tuple[dict[int, str], dict[int, str]]:
    """Each choice's text and finish reason from streamed chat chunks."""
    texts: dict[int, str] = {}
    reasons: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason:
                reasons[choice.index] = choice.finish_reason
    return texts, reasons


# -- chat: n choices -------------------------------------------------------------------
def test_chat_n_choices(client):
    answer = client.chat.completions.create(model="gpt-4", messages=MESSAGES, n=2)
    assert [c.index for c in answer.choices] == [0, 1]
    assert answer.choices[0].message.content != answer.choices[1].message.content
    assert [c.finish_reason for c in answer.choices] == ["stop", "stop"]
    assert answer.usage.completion_tokens == 2 * TOKENS


def test_chat_n_choices_streamed_as_the_blocking_answer(client):
    blocking = client.chat.completions.create(model="gpt-4", messages=MESSAGES, n=2)
    chunks = list(client.chat.completions.create(model="gpt-4", messages=MESSAGES, n=2, stream=True,
                                                 stream_options={"include_usage": True}))
    texts, reasons = accumulate(chunks)
    assert texts == {c.index: c.message.content for c in blocking.choices}
    assert reasons == {0: "stop", 1: "stop"}
    assert chunks[-1].usage.completion_tokens == 2 * TOKENS
    # One choice per chunk, each carrying its index, as OpenAI streams them.
    assert all(len(chunk.choices) == 1 for chunk in chunks[:-1])


@pytest.mark.parametrize("n", [1, 2])
def test_obfuscation_pads_each_chunk_as_openai_does_when_asked(client, n):
    plain = list(client.chat.completions.create(model="gpt-4", messages=MESSAGES, n=n, stream=True))
    padded = list(client.chat.completions.create(model="gpt-4", messages=MESSAGES, n=n, stream=True,
                                                 stream_options={"include_obfuscation": True}))
    assert accumulate(padded) == accumulate(plain)  # the same answer
    paddings = [chunk.obfuscation for chunk in padded]
    assert all(paddings) and len(set(map(len, paddings))) > 1  # in every chunk, of varying length
    assert all(chunk.obfuscation is None for chunk in plain)


def test_prompt_tokens_count_text_parts(client):
    parts = [{"role": "user", "content": [{"type": "text", "text": "Why stream?"}]},
             {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
                                                                     "function": {"name": "f", "arguments": "{}"}}]},
             {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    answer = client.chat.completions.create(model="gpt-4", messages=parts)
    assert answer.usage.prompt_tokens == 3 + 4 * 3  # two words, one word, and 4 per message


# -- chat: tool calls ------------------------------------------------------------------
def test_tool_call(client):
    answer = client.chat.completions.create(model="gpt-4", messages=MESSAGES, tools=[WEATHER, SEARCH])
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function" and call.function.name == "get_weather"
    check_weather(call.function.arguments)
    again = client.chat.completions.create(model="gpt-4", messages=MESSAGES, tools=[WEATHER, SEARCH])
    assert again.choices[0].message.tool_calls[0].function.arguments == call.function.arguments


def test_tool_choice_names_the_function_or_none(client):
    named = client.chat.completions.create(model="gpt-4", messages=MESSAGES, tools=[WEATHER, SEARCH],
                                           tool_choice={"type": "function", "function": {"name": "search"}})
    call = named.choices[0].message.tool_calls[0]
    assert call.function.name == "search" and isinstance(json.loads(call.function.arguments)["query"], str)
    prose = client.chat.completions.create(model="gpt-4", messages=MESSAGES, tools=[WEATHER], tool_choice="none")
    assert prose.choices[0].message.tool_calls is None and prose.choices[0].finish_reason == "stop"
    assert prose.choices[0].message.content


def test_tool_call_streamed_as_openai_streams_deltas(client):
    chunks = list(client.chat.completions.create(model="gpt-4", messages=MESSAGES, tools=[WEATHER],
                                                 stream=True))
    deltas = [c.choices[0].delta.tool_calls for c in chunks if c.choices[0].delta.tool_calls]
    first, rest = deltas[0][0], [d[0] for d in deltas[1:]]
    assert first.id.startswith("call_") and first.type == "function"
    assert first.function.name == "get_weather" and first.function.arguments == ""
    assert len(rest) > 3 and all(d.index == 0 and d.id is None and d.function.name is None for d in rest)
    check_weather("".join(d.function.arguments for d in rest))
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tool_call_through_the_sdk_stream_helper(client):
    with client.chat.completions.stream(model="gpt-4", messages=MESSAGES, tools=[WEATHER]) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    check_weather(final.choices[0].message.tool_calls[0].function.arguments)


# -- chat: JSON answers ----------------------------------------------------------------
def test_json_object_mode(client):
    chunks = list(client.chat.completions.create(model="gpt-4", messages=MESSAGES, stream=True,
                                                 response_format={"type": "json_object"}))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert len(pieces) > 3  # streamed in pieces, not one blob
    assert isinstance(json.loads("".join(pieces)), dict)


class Step(BaseModel):
    explanation: str
    output: str


class Solution(BaseModel):
    steps: list[Step]
    final_answer: str
    confidence: float
    verified: bool


def test_json_schema_parsed_by_the_sdk(client):
    parsed = client.chat.completions.parse(model="gpt-4o", messages=MESSAGES, response_format=Solution)
    solution = parsed.choices[0].message.parsed
    assert isinstance(solution, Solution) and solution.steps and solution.final_answer


def test_json_schema_streamed(client):
    schema = {"type": "json_schema", "json_schema": {"name": "answer", "strict": True, "schema": {
        "type": "object", "properties": {"title": {"type": "string"}, "count": {"type": "integer"},
                                         "tags": {"type": "array", "items": {"type": "string"}}},
        "required": ["title", "count", "tags"], "additionalProperties": False}}}
    texts, reasons = accumulate(client.chat.completions.create(model="gpt-4", messages=MESSAGES,
                                                                 stream=True, response_format=schema))
    value = json.loads(texts[0])
    assert set(value) == {"title", "count", "tags"} and isinstance(value["count"], int)
    assert reasons == {0: "stop"}


# -- finish reasons --------------------------------------------------------------------
@pytest.mark.parametrize("max_tokens, tokens, reason", [
    (None, TOKENS, "stop"),            # the answer ends on its own: its natural length
    (5, 5, "length"),                  # cut by the request's limit
    (TOKENS, TOKENS, "stop"),          # the limit is exactly the natural length: ends on its own
    (TOKENS + 30, TOKENS, "stop"),     # a limit it never reaches
])
@pytest.mark.parametrize("stream", [False, True])
def test_finish_reason(client, max_tokens, tokens, reason, stream):
    extra = {} if max_tokens is None else {"max_tokens": max_tokens}
    if stream:
        chunks = list(client.chat.completions.create(model="gpt-4", messages=MESSAGES, stream=True,
                                                     stream_options={"include_usage": True}, **extra))
        assert accumulate(chunks)[1] == {0: reason}
        assert chunks[-1].usage.completion_tokens == tokens
    else:
        answer = client.chat.completions.create(model="gpt-4", messages=MESSAGES, **extra)
        assert answer.choices[0].finish_reason == reason and answer.usage.completion_tokens == tokens


def test_a_cut_tool_call_says_length(client):
    whole = client.chat.completions.create(model="gpt-4", messages=MESSAGES, tools=[WEATHER])
    cut = client.chat.completions.create(model="gpt-4", messages=MESSAGES, tools=[WEATHER], max_tokens=3)
    arguments = cut.choices[0].message.tool_calls[0].function.arguments
    assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 3
    assert whole.choices[0].message.tool_calls[0].function.arguments.startswith(arguments)


# -- legacy completions ----------------------------------------------------------------
def test_completions(client):
    answer = client.completions.create(model="gpt-3.5-turbo-instruct", prompt=["Once", "upon"], n=2,
                                       max_tokens=5)
    assert answer.object == "text_completion"
    assert [c.index for c in answer.choices] == [0, 1, 2, 3]
    assert all(c.finish_reason == "length" and len(c.text.split()) == 5 for c in answer.choices)
    assert answer.usage.completion_tokens == 20


def test_completions_streamed(client):
    blocking = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Once")
    chunks = list(client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Once", stream=True,
                                            stream_options={"include_usage": True}))
    assert all(c.object == "text_completion" for c in chunks)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == blocking.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.completion_tokens == TOKENS and not chunks[-1].choices


# -- embeddings ------------------------------------------------------------------------
def test_embeddings(client):
    answer = client.embeddings.create(model="text-embedding-3-small", input=["a cat", "a dog", "a cat"],
                                      dimensions=256)  # the SDK asks for base64
    vectors = [item.embedding for item in answer.data]
    assert [len(v) for v in vectors] == [256] * 3
    assert all(math.isclose(math.fsum(x * x for x in v), 1.0, rel_tol=1e-5) for v in vectors)
    assert vectors[0] == vectors[2] and vectors[0] != vectors[1]
    as_floats = client.embeddings.create(model="text-embedding-3-small", input="a cat", dimensions=256,
                                         encoding_format="float").data[0].embedding
    assert all(math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-7) for a, b in zip(as_floats, vectors[0]))
    assert answer.usage.prompt_tokens == 6


def test_embeddings_of_token_arrays_and_native_size(client):
    answer = client.embeddings.create(model="text-embedding-3-large", input=[[1, 2, 3], [4]])
    assert [len(d.embedding) for d in answer.data] == [3072, 3072]
    assert answer.usage.prompt_tokens == 4


# -- the Responses API -----------------------------------------------------------------
def test_responses(client):
    response = client.responses.create(model="gpt-4o", input="Why stream?", instructions="Be brief.")
    assert response.status == "completed" and response.object == "response"
    assert len(response.output_text.split()) == TOKENS
    assert response.usage.output_tokens == TOKENS
    assert response.usage.input_tokens == 4  # the emulator counts words: "Why stream?" "Be brief."
    assert response.usage.total_tokens == 4 + TOKENS


def test_responses_cut_by_max_output_tokens(client):
    response = client.responses.create(model="gpt-4o", input=MESSAGES, max_output_tokens=4)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert len(response.output_text.split()) == 4


def test_responses_streamed_as_typed_events(client):
    blocking = client.responses.create(model="gpt-4o", input=MESSAGES)
    events = list(client.responses.create(model="gpt-4o", input=MESSAGES, stream=True))
    types = [e.type for e in events]
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert types == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.content_part.added", *["response.output_text.delta"] * TOKENS,
                     "response.output_text.done", "response.content_part.done",
                     "response.output_item.done", "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(d.delta for d in deltas)
    assert text == events[-4].text == blocking.output_text
    assert isinstance(events[-1], openai.types.responses.ResponseCompletedEvent)
    assert events[-1].response.usage.output_tokens == TOKENS


def test_responses_through_the_sdk_stream_helper(client):
    with client.responses.stream(model="gpt-4o", input="Why stream?") as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == final.output_text and final.status == "completed"


def test_responses_function_call(client):
    tool = {"type": "function", **WEATHER["function"]}
    response = client.responses.create(model="gpt-4o", input="Weather?", tools=[tool])
    [call] = response.output
    assert call.type == "function_call" and call.name == "get_weather" and call.call_id.startswith("call_")
    check_weather(call.arguments)
    events = list(client.responses.create(model="gpt-4o", input="Weather?", tools=[tool], stream=True))
    deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert len(deltas) > 3 and "".join(deltas) == done.arguments == call.arguments
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].type == "response.completed"


class Weather(BaseModel):
    city: str
    temperature: float
    sunny: bool


def test_responses_json_schema_parsed_by_the_sdk(client):
    parsed = client.responses.parse(model="gpt-4o", input="Weather?", text_format=Weather)
    assert isinstance(parsed.output_parsed, Weather)
    with client.responses.stream(model="gpt-4o", input="Weather?", text_format=Weather) as stream:
        for _ in stream:
            pass
        assert stream.get_final_response().output_parsed == parsed.output_parsed


# -- models ----------------------------------------------------------------------------
def test_models_retrieve(client):
    assert client.models.retrieve("gpt-4").id == "gpt-4"
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("gpt-nonexistent")
    assert caught.value.code == "model_not_found"
    assert caught.value.body["type"] == "invalid_request_error"


# -- faults ----------------------------------------------------------------------------
CALLS = {
    "chat": lambda c, **kw: c.chat.completions.create(model="gpt-4", messages=MESSAGES, **kw),
    "chat n=2": lambda c, **kw: c.chat.completions.create(model="gpt-4", messages=MESSAGES, n=2, **kw),
    "tool call": lambda c, **kw: c.chat.completions.create(model="gpt-4", messages=MESSAGES,
                                                           tools=[WEATHER], **kw),
    "completions": lambda c, **kw: c.completions.create(model="gpt-3.5-turbo-instruct", prompt="Hi", **kw),
    "responses": lambda c, **kw: c.responses.create(model="gpt-4o", input="Hi", **kw),
}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("call", CALLS)
def test_status_fault(client, call, stream):
    with pytest.raises(openai.RateLimitError) as caught:
        result = CALLS[call](client, stream=stream, **fault("status=429,retry_after=3"))
        list(result) if stream else None
    assert caught.value.response.headers["retry-after"] == "3"


def test_status_fault_on_embeddings(client):
    with pytest.raises(openai.RateLimitError):
        client.embeddings.create(model="text-embedding-3-small", input="x", **fault("status=429"))


@pytest.mark.parametrize("call", ["chat", "chat n=2", "tool call", "completions"])
def test_fail_fault_is_the_in_stream_error(client, call):
    with pytest.raises(openai.APIError, match="Emulated failure"):
        list(CALLS[call](client, stream=True, **fault("fail_after=2")))


def test_fail_fault_on_a_responses_stream_is_response_failed(client):
    events = list(client.responses.create(model="gpt-4o", input="Hi", stream=True, **fault("fail_after=3")))
    assert [e.type for e in events][-2:] == ["response.output_text.delta", "response.failed"]
    assert events[-1].response.status == "failed" and events[-1].response.error.code == "server_error"


@pytest.mark.parametrize("call", CALLS)
def test_cut_fault_ends_the_stream_without_its_end(client, call):
    with pytest.raises(openai.APIConnectionError):
        list(CALLS[call](client, stream=True, **fault("cut_after=3")))


def test_cut_and_malformed_faults_on_blocking_answers(emulator, client):
    with pytest.raises(openai.APIConnectionError):
        client.embeddings.create(model="text-embedding-3-small", input="x", **fault("cut_after=0"))
    status, _, body = request("POST", f"{emulator.base_url}/responses", body={"model": "m", "input": "Hi"},
                              headers={"X-Emulator-Fault": "malformed_after=0"})
    assert status == 200
    with pytest.raises(ValueError):
        json.loads(body)


def test_an_armed_fault_for_streams_only_waits_for_a_stream(emulator, client):
    emulator.reset()
    emulator.arm(status=503, only="stream")
    answer = client.chat.completions.create(model="gpt-4", messages=MESSAGES, max_tokens=3)
    assert answer.choices[0].message.content  # a blocking call passes and leaves the fault armed
    with pytest.raises(openai.InternalServerError):
        list(client.chat.completions.create(model="gpt-4", messages=MESSAGES, max_tokens=3, stream=True))
    emulator.reset()


def test_fail_fault_on_a_blocking_call_is_a_500(client):
    with pytest.raises(openai.InternalServerError):
        client.responses.create(model="gpt-4o", input="Hi", **fault("fail_after=1"))


def test_stats_count_every_endpoint(emulator, client):
    emulator.reset()
    client.embeddings.create(model="text-embedding-3-small", input="x")
    list(client.responses.create(model="gpt-4o", input="Hi", stream=True))
    stats = emulator.stats()
    assert stats["endpoints"] == {"/v1/embeddings": 1, "/v1/responses": 1}
    assert stats["completions_completed"] == 1 and stats["streams_completed"] == 1


@pytest.mark.parametrize("path, body, counter", [
    ("/v1/responses", {"model": "m", "input": "Hi", "stream": True}, "streams_aborted"),
    ("/v1/completions", {"model": "m", "prompt": "Hi", "stream": True}, "streams_aborted"),
    ("/v1/embeddings", {"model": "m", "input": "Hi"}, "completions_aborted"),
])
def test_a_caller_leaving_during_the_wait_is_counted_at_once(emulator, path, body, counter):
    emulator.reset()
    sock = raw_request(emulator.port, path, "POST", body=json.dumps(body).encode(),
                       headers={"Content-Type": "application/json", "X-Emulator-Fault": "delay=30"})
    assert emulator.wait_for(lambda s: s["in_flight"] == 1)["in_flight"] == 1
    stats, _ = emulator.after_hang_up(sock, lambda s: s[counter] == 1)
    assert stats[counter] == 1 and stats["in_flight"] == 0


# -- bad input -------------------------------------------------------------------------
@pytest.mark.parametrize("path, body, param", [
    ("/v1/chat/completions", {"model": "m", "messages": MESSAGES, "n": 0}, "n"),
    ("/v1/chat/completions", {"model": "m", "messages": MESSAGES, "tools": [{"type": "function"}]}, "tools"),
    ("/v1/chat/completions", {"model": "m", "messages": MESSAGES, "tools": [WEATHER],
                              "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ("/v1/chat/completions", {"model": "m", "messages": MESSAGES, "response_format": {"type": "xml"}},
     "response_format"),
    ("/v1/completions", {"model": "m", "prompt": {"text": "x"}}, "prompt"),
    ("/v1/completions", {"model": "m", "prompt": "x", "max_tokens": -1}, "max_tokens"),
    ("/v1/embeddings", {"model": "m", "input": ""}, "input"),
    ("/v1/embeddings", {"model": "text-embedding-3-small", "input": "x", "dimensions": 5000}, "dimensions"),
    ("/v1/embeddings", {"model": "m", "input": "x", "encoding_format": "hex"}, "encoding_format"),
    ("/v1/responses", {"model": "m", "input": 7}, "input"),
    ("/v1/responses", {"model": "m", "input": "x", "max_output_tokens": "many"}, "max_output_tokens"),
    ("/v1/responses", {"input": "x"}, "model"),
])
def test_bad_input_is_openais_400(emulator, path, body, param):
    status, _, raw = request("POST", emulator.url + path, body=body)
    error = json.loads(raw)["error"]
    assert status == 400 and error["param"] == param and error["type"] == "invalid_request_error"


@pytest.mark.parametrize("method, path, status", [
    ("POST", "/v1/nothing", 404), ("GET", "/v1/responses", 405), ("DELETE", "/v1/models/gpt-4", 404)])
def test_unknown_routes_are_openais_error(emulator, method, path, status):
    answer, _, raw = request(method, emulator.url + path)
    error = json.loads(raw)["error"]
    assert answer == status and error["type"] == "invalid_request_error"
    assert error["message"] == f"Invalid {'method for ' if status == 405 else ''}URL ({method} {path})"


# -- the command line ------------------------------------------------------------------
@pytest.mark.parametrize("command, prog", [
    ([sys.executable, "-m", "flaskapp.emulator", "--help"], "python -m flaskapp.emulator"),
    ([sys.executable, "-m", "flask", "--app", "wsgi", "emulator", "--help"], "flask emulator"),
])
def test_help_names_its_own_program(command, prog):
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: {prog} ")
