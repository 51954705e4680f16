"""What callers may ask of the prompt views, checked before any upstream call (Flask test client)."""
import json

import pytest


# The ranges are checked by the same function as /v1's (params.check_sampling): same words, a param.
RANGE = {"'max_tokens' must be an integer between 1 and 16384.": "max_tokens",
         "'temperature' must be a number between 0 and 2.": "temperature"}


@pytest.mark.parametrize("query, message", [
    ("max_tokens=abc", "'max_tokens' must be an integer."),
    ("max_tokens=0", "'max_tokens' must be an integer between 1 and 16384."),
    ("max_tokens=99999", "'max_tokens' must be an integer between 1 and 16384."),
    ("temperature=hot", "'temperature' must be a number."),
    ("temperature=nan", "'temperature' must be a finite number."),
    ("temperature=-1", "'temperature' must be a number between 0 and 2."),
    ("prompt=%20%20", "'prompt' must not be empty."),
    ("prompt=a%00b", "'prompt' must not contain NUL characters."),
    ("model=gpt-3", "Model 'gpt-3' is not allowed here. Allowed: gpt-4."),
    ("format=html", "'format' must be 'text' or 'sse'."),
])
@pytest.mark.parametrize("path", ["/", "/stream"])
def test_bad_query_strings(client, path, query, message):
    response = client.get(f"{path}?{query}")
    assert response.status_code == 400
    assert response.json["error"] == {"type": "invalid_request_error", "message": message,
                                      "param": RANGE.get(message), "code": None}


@pytest.mark.parametrize("body, message", [
    ("{", "The request body is not valid JSON."),
    ("[]", "The request body must be a JSON object."),
    ('{"prompt": ["a"]}', "'prompt' must be a string."),
    ('{"max_tokens": 1.5}', "'max_tokens' must be an integer."),
    ('{"max_tokens": "10"}', "'max_tokens' must be an integer."),
    ('{"temperature": true}', "'temperature' must be a number."),
    ('{"promt": "typo"}', "Unknown field(s): promt. Known: prompt, system, max_tokens, temperature, model."),
])
def test_bad_json_bodies(client, body, message):
    response = client.post("/", data=body, content_type="application/json")
    assert response.status_code == 400 and response.json["error"]["message"] == message


def test_oversized_body_and_wrong_method(client):
    assert client.post("/", data=json.dumps({"prompt": "x" * 300_000}), content_type="application/json").status_code == 413
    response = client.delete("/stream")
    assert response.status_code == 405 and response.json["error"]["type"] == "invalid_request_error"
    assert set(response.headers["Allow"].split(", ")) >= {"GET", "POST"}


def test_an_unreachable_upstream_is_a_503_not_a_500(client):
    # The app fixture points at a closed port.
    for path in ("/?prompt=hi", "/stream?prompt=hi"):
        response = client.get(path)
        assert response.status_code == 503
        assert response.json["error"]["type"] == "upstream_unavailable"


@pytest.mark.parametrize("body", [
    "[" * 1000 + "]" * 1000,  # deeper than Python's parser goes: a RecursionError, not a 500
    '{"prompt": ' + "[" * 200 + "]" * 200 + "}",  # parses, but past the limit
], ids=["deeper than the parser goes", "parses, past the limit"])
@pytest.mark.parametrize("path", ["/", "/stream"])
def test_json_nested_too_deeply_is_a_400(client, path, body):
    response = client.post(path, data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.json["error"]["message"] == "The request body is nested too deeply (more than 100 levels)."


@pytest.mark.parametrize("path, content_type", [
    ("/?prompt=hi", "text/plain; charset=utf-8"),
    ("/stream?prompt=hi", "text/plain; charset=utf-8"),
    ("/stream?prompt=hi&format=sse", "text/event-stream; charset=utf-8"),
])
def test_head_checks_the_input_and_calls_no_upstream(client, path, content_type):
    # The app fixture's upstream is a closed port: a GET is a 503, HEAD never gets that far.
    assert client.get(path).status_code == 503
    response = client.head(path)
    assert response.status_code == 200 and response.content_type == content_type
    assert "Content-Length" not in response.headers  # only the answer would tell it
    assert client.head(f"{path}&max_tokens=0").status_code == 400
