"""The OpenAI-compatible endpoints, driven by the official `openai` client, unchanged."""
from __future__ import annotations

import json
import logging

import openai
import pytest

from servers import SECRET_KEY, raw_request, request

pytestmark = pytest.mark.usefixtures("clean_emulator")


@pytest.fixture
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="anything", max_retries=0, timeout=20)


def test_blocking_completion(client, server):
    completion = client.chat.completions.create(
        model="gpt-4", messages=[{"role": "user", "content": "hello"}], max_tokens=9)
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 9
    # The same answer the plain views give for the same conversation.
    _, _, text = request("GET", f"{server.url}/?prompt=hello&max_tokens=9&system=")
    assert completion.choices[0].message.content == text.decode()


def test_streamed_completion_with_usage(client):
    stream = client.chat.completions.create(
        model="gpt-4", messages=[{"role": "user", "content": "hello"}], stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    blocking = client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hello"}])
    assert text == blocking.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == 40 and not chunks[-1].choices
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_events_are_relayed_one_by_one_and_end_with_done(server):
    status, headers, body = request("POST", f"{server.url}/v1/chat/completions", body={
        "model": "gpt-4", "messages": [{"role": "user", "content": "x"}], "stream": True, "max_tokens": 5})
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = [e for e in body.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]" and len(events) == 1 + 5 + 1 + 1  # role, tokens, finish, done
    assert all(json.loads(e[6:])["object"] == "chat.completion.chunk" for e in events[:-1])


def test_models_lists_the_allow_list(client):
    assert [m.id for m in client.models.list()] == ["gpt-4"]


@pytest.mark.parametrize("kwargs, error, status", [
    ({"model": "gpt-9"}, openai.NotFoundError, 404),
    ({"max_tokens": 0}, openai.BadRequestError, 400),
    ({"temperature": 5}, openai.BadRequestError, 400),
    ({"messages": []}, openai.BadRequestError, 400),
])
def test_bad_requests_raise_the_sdk_errors(client, emulator, kwargs, error, status):
    arguments = {"model": "gpt-4", "messages": [{"role": "user", "content": "x"}], **kwargs}
    with pytest.raises(error) as caught:
        client.chat.completions.create(**arguments)
    assert caught.value.status_code == status
    assert caught.value.body["message"] and "code" in caught.value.body
    assert emulator.stats()["completions_started"] == 0


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_errors_before_the_first_byte_keep_their_status(client, emulator, stream):
    emulator.arm(status=429, retry_after=2)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "x"}], stream=stream)
    assert caught.value.response.headers["retry-after"] == "2"
    assert SECRET_KEY not in caught.value.response.text


def test_an_error_mid_stream_makes_the_sdk_raise(client, emulator):
    emulator.arm(cut_after=5)
    stream = client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "x"}], stream=True)
    received = []
    with pytest.raises(openai.APIError, match="dropped the stream"):
        for chunk in stream:
            received.append(chunk)
    assert received  # some text came first: a silently short answer would have ended the loop


def test_client_leaving_mid_stream_closes_the_upstream(server, emulator):
    body = json.dumps({"model": "gpt-4", "messages": [{"role": "user", "content": "x"}], "stream": True}).encode()
    sock = raw_request(server.port, "/v1/chat/completions", "POST", {"Content-Type": "application/json"}, body)
    assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    sock.close()
    assert emulator.wait_for(lambda s: s["streams_aborted"] == 1, timeout=1.5)["streams_aborted"] == 1


# -- unit: the Flask test client, no server --------------------------------------------------------

CHAT = {"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("body", [
    "[" * 1000 + "]" * 1000,  # deeper than Python's parser goes: a RecursionError, not a 500
    # Parses, and would be passed on: deep enough that writing it out for the upstream could fail.
    json.dumps(CHAT)[:-1] + ', "metadata": ' + "[" * 990 + "]" * 990 + "}",
], ids=["deeper than the parser goes", "passed on, past the limit"])
def test_json_nested_too_deeply_is_a_400(app, body):
    response = app.test_client().post("/v1/chat/completions", data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.json["error"]["message"] == "The request body is nested too deeply (more than 100 levels)."


@pytest.mark.parametrize("levels, status", [(100, 503), (101, 400)])  # 503: the app fixture's upstream is closed
def test_the_nesting_limit_is_100_levels(app, levels, status):
    body = json.dumps(CHAT)[:-1] + ', "metadata": ' + "[" * (levels - 1) + "]" * (levels - 1) + "}"
    assert app.test_client().post("/v1/chat/completions", data=body, content_type="application/json").status_code == status


def test_an_upstream_answer_nested_too_deeply_is_unreadable_not_a_500():
    import httpx2

    from flaskapp import create_app

    deep = b"[" * 5000 + b"]" * 5000
    app = create_app({"TESTING": True, "MAX_RETRIES": 0, "UPSTREAM_TRANSPORT": "httpx", "UPSTREAM_CLIENT_OPTIONS": {
        "api_key": SECRET_KEY, "base_url": "http://upstream.test/v1", "http_client": httpx2.Client(
            transport=httpx2.MockTransport(lambda request: httpx2.Response(200, content=deep)))}})
    response = app.test_client().post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 502 and response.json["error"]["type"] == "upstream_error"


def test_a_refused_model_is_named_in_the_request_log(app, caplog):
    caplog.set_level(logging.INFO, logger="flaskapp.requests")
    for model in ("gpt-9", "m" * 500):
        assert app.test_client().post("/v1/chat/completions", json={**CHAT, "model": model}).status_code == 404
    logged = [json.loads(r.getMessage()) for r in caplog.records if r.name == "flaskapp.requests"]
    assert [(line["model"], line["outcome"]) for line in logged] == [("gpt-9", "rejected"), ("m" * 100, "rejected")]
