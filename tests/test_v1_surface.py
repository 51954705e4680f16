"""The OpenAI-compatible surface beyond chat, end to end: the official `openai` SDK, real
gunicorn (one gevent worker) and the emulator, or a hostile upstream where the key is at stake.

Completions, embeddings and the Responses API (streamed and not), tool calls, JSON mode,
n=2, models.retrieve, /health, OpenAI's 404/405 shapes under /v1, upstream faults on each
new endpoint, a client leaving a Responses stream, and the embedded emulator saying so.
"""
from __future__ import annotations

import json
import time

import openai
import pytest

import hostile_upstream
from hostile_upstream import COMPACT, KEY_MESSAGE, Conn, HostileUpstream
from servers import SECRET_KEY, raw_request, request, upstream_env

EMULATOR = {"ttft": 0.05, "tokens_per_second": 500.0, "tokens": 20}
MODEL = "gpt-4"  # the default model, always allowed
MESSAGES = [{"role": "user", "content": "Why stream?"}]
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-client", max_retries=0, timeout=10) as client:
        yield client


@pytest.fixture(autouse=True)
def _clean(emulator) -> None:
    emulator.reset()


# -- the Responses API ---------------------------------------------------------------------------

def test_responses_blocking(client):
    response = client.responses.create(model=MODEL, input="Say hello")
    assert response.status == "completed" and response.output_text


def test_responses_streamed_as_typed_events(client):
    with client.responses.stream(model=MODEL, input="Say hello") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds and final.output_text


def test_responses_tool_call_streamed(client):
    tool = {"type": "function", "name": "get_weather", "parameters": WEATHER["function"]["parameters"]}
    with client.responses.stream(model=MODEL, input="Weather?", tools=[tool], tool_choice="required") as stream:
        final = stream.get_final_response()
    call = next(item for item in final.output if item.type == "function_call")
    assert call.name == "get_weather" and isinstance(json.loads(call.arguments)["city"], str)


@pytest.mark.parametrize("body, param", [
    ({"model": MODEL, "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
    ({"model": MODEL, "input": "x", "stream": "yes"}, "stream"),
    ({"model": MODEL}, "input"),
    ({"model": "nope", "input": "x"}, "model"),
])
def test_responses_bad_input_is_a_4xx_before_any_upstream_call(server, emulator, body, param):
    status, _, raw = request("POST", f"{server.url}/v1/responses", body=body)
    error = json.loads(raw)["error"]
    assert status in (400, 404) and error["param"] == param and error["type"] == "invalid_request_error"
    assert emulator.stats()["in_flight"] == 0 and SECRET_KEY.encode() not in raw


def test_responses_upstream_429_keeps_its_status(client, emulator):
    emulator.arm(status=429, retry_after=1)
    with pytest.raises(openai.RateLimitError) as caught:
        client.responses.create(model=MODEL, input="x")
    assert caught.value.response.headers["retry-after"] == "1"


def test_responses_failure_mid_stream_is_our_error_event(client, emulator):
    emulator.arm(fail_after=3, only="stream")
    with client.responses.create(model=MODEL, input="x", stream=True) as stream:
        events = list(stream)
    assert any(e.type == "response.output_text.delta" for e in events)
    assert events[-1].type == "error" and events[-1].code == "upstream_error"
    assert "mid-stream" in events[-1].message


def test_responses_cut_short_is_never_a_whole_answer(client, emulator):
    emulator.arm(cut_after=3, only="stream")
    with client.responses.create(model=MODEL, input="x", stream=True) as stream:
        events = list(stream)
    assert events[-1].type == "error" and not any(e.type == "response.completed" for e in events)


def test_client_leaving_a_responses_stream_ends_the_upstream_call(server, emulator, start_server):
    body = json.dumps({"model": MODEL, "input": "x", "stream": True}).encode()
    emulator.arm(stall_after=2, stall=30)
    sock = raw_request(server.port, "/v1/responses", "POST", {"Content-Type": "application/json"}, body)
    assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    assert emulator.wait_for(lambda s: s["in_flight"] == 1)["in_flight"] == 1
    stats, _ = emulator.after_hang_up(sock, lambda s: s["in_flight"] == 0, timeout=1.0)
    assert stats["in_flight"] == 0 and stats["streams_aborted"] == 1


# -- chat completions: what the SDK asks beyond plain text --------------------------------------

@pytest.mark.parametrize("stream", [False, True])
def test_chat_tool_calls(client, stream):
    answer = client.chat.completions.create(model=MODEL, messages=MESSAGES, tools=[WEATHER],
                                            tool_choice="required", stream=stream)
    if stream:
        arguments = "".join(c.choices[0].delta.tool_calls[0].function.arguments or ""
                            for c in answer if c.choices and c.choices[0].delta.tool_calls)
    else:
        arguments = answer.choices[0].message.tool_calls[0].function.arguments
    assert isinstance(json.loads(arguments)["city"], str)


def test_chat_json_mode_and_n(client):
    answer = client.chat.completions.create(model=MODEL, messages=MESSAGES, n=2,
                                            response_format={"type": "json_object"})
    assert len(answer.choices) == 2
    assert all(isinstance(json.loads(choice.message.content), dict) for choice in answer.choices)


# -- completions and embeddings ----------------------------------------------------------------

def test_completions_blocking_and_streamed(client):
    assert client.completions.create(model=MODEL, prompt="Once", max_tokens=5).choices[0].text
    text = "".join(chunk.choices[0].text for chunk in
                   client.completions.create(model=MODEL, prompt="Once", stream=True) if chunk.choices)
    assert text


def test_completions_upstream_faults(client, emulator):
    emulator.arm(status=429)
    with pytest.raises(openai.RateLimitError):
        client.completions.create(model=MODEL, prompt="Once")
    emulator.arm(fail_after=3, only="stream")
    with pytest.raises(openai.APIError, match="mid-stream"):
        list(client.completions.create(model=MODEL, prompt="Once", stream=True))


def test_completions_token_limit_checked(server, emulator):
    status, _, raw = request("POST", f"{server.url}/v1/completions",
                             body={"model": MODEL, "prompt": "x", "max_tokens": 10**9})
    assert status == 400 and json.loads(raw)["error"]["param"] == "max_tokens"


def test_embeddings_with_dimensions(client):
    answer = client.embeddings.create(model=MODEL, input=["a", "b"], dimensions=8)
    assert [len(item.embedding) for item in answer.data] == [8, 8]


def test_embeddings_never_stream_and_keep_upstream_status(server, client, emulator):
    status, _, raw = request("POST", f"{server.url}/v1/embeddings", body={"model": MODEL, "input": "a", "stream": True})
    assert status == 400 and json.loads(raw)["error"]["param"] == "stream"
    emulator.arm(status=503)
    with pytest.raises(openai.InternalServerError) as caught:
        client.embeddings.create(model=MODEL, input="a")
    assert caught.value.status_code == 503


# -- models, probes and route errors -----------------------------------------------------------

def test_models_retrieve_and_missing(client):
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("no-such-model")
    assert caught.value.body["code"] == "model_not_found" and caught.value.body["type"] == "invalid_request_error"


def test_health_is_open_and_empty(server):
    status, _, body = request("GET", f"{server.url}/health")
    assert status == 200 and body == b""


def test_v1_404_and_405_in_openai_shape(server):
    status, _, raw = request("GET", f"{server.url}/v1/nope")
    assert status == 404 and json.loads(raw) == {"error": {
        "message": "Invalid URL (GET /v1/nope)", "type": "invalid_request_error", "param": None,
        "code": "unknown_url"}}
    status, headers, raw = request("GET", f"{server.url}/v1/responses")
    assert status == 405 and json.loads(raw)["error"]["code"] == "method_not_allowed"
    assert "POST" in headers["allow"]
    status, _, raw = request("GET", f"{server.url}/nope")  # outside /v1: as before
    assert status == 404 and json.loads(raw)["error"]["code"] is None


# -- the key never reaches the client ----------------------------------------------------------

def _responses_key_error(conn: Conn, stream: bool) -> None:
    conn.head()
    delta = {"type": "response.output_text.delta", "sequence_number": 0, "delta": "Hi"}
    conn.chunk(b"event: response.output_text.delta\ndata: " + json.dumps(delta).encode() + b"\n\n")
    conn.pause(0.1)
    error = {"type": "error", "sequence_number": 1, "code": "invalid_api_key", "message": KEY_MESSAGE, "param": None}
    conn.chunk(b"event: error\ndata: " + json.dumps(error, separators=COMPACT).encode() + b"\n\n")
    conn.end()


def _completions_key_error(conn: Conn, stream: bool) -> None:
    conn.head()
    chunk = {"id": "cmpl-h", "object": "text_completion", "choices": [{"index": 0, "text": "Hi", "finish_reason": None}]}
    conn.chunk(b"data: " + json.dumps(chunk, separators=COMPACT).encode() + b"\n\n")
    conn.pause(0.1)
    conn.chunk(hostile_upstream.KEY_ERROR)
    conn.end()


hostile_upstream.MODES["responses_key_error"] = _responses_key_error
hostile_upstream.MODES["completions_key_error"] = _completions_key_error


@pytest.fixture(scope="module")
def hostile(start_server):
    upstream = HostileUpstream()
    env = {"OPENAI_BASE_URL": upstream.base_url, "OPENAI_API_KEY": SECRET_KEY, "FLASKAPP_MAX_RETRIES": "0"}
    yield upstream, start_server(env, name="hostile")
    upstream.close()


@pytest.mark.parametrize("path, mode, body", [
    ("/v1/responses", "responses_key_error", {"model": MODEL, "input": "x", "stream": True}),
    ("/v1/completions", "completions_key_error", {"model": MODEL, "prompt": "x", "stream": True}),
])
def test_a_hostile_upstream_error_event_never_carries_the_key(hostile, path, mode, body):
    upstream, gateway = hostile
    upstream.mode = mode
    status, _, raw = request("POST", f"{gateway.url}{path}", body=body)
    assert status == 200 and b"Hi" in raw  # the text came first: the error is in-stream
    assert SECRET_KEY.encode() not in raw and b"Incorrect API key" not in raw
    assert b"invalid_api_key" in raw or b"mid-stream" in raw
    assert SECRET_KEY not in gateway.log()


# -- the embedded emulator says so -------------------------------------------------------------

def test_embedded_emulator_marks_its_answers(start_server):
    gateway = start_server({}, name="embedded")  # no OPENAI_*: the README's first command
    status, headers, _ = request("POST", f"{gateway.url}/v1/chat/completions",
                                 body={"model": MODEL, "messages": MESSAGES})
    assert status == 200 and headers["x-flaskapp-upstream"] == "emulator"
    status, _, raw = request("GET", f"{gateway.url}/readyz")
    assert status == 200 and json.loads(raw) == {"status": "ready", "upstream": "emulator"}
    line = next(line for line in gateway.log().splitlines() if "built-in emulator" in line)
    assert json.loads(line[line.index("{"):])["level"] == "WARNING"  # a start-up no operator should miss


def test_a_configured_upstream_is_not_marked(server):
    status, headers, _ = request("GET", f"{server.url}/v1/models")
    assert status == 200 and "x-flaskapp-upstream" not in headers
