"""The error tree: statuses and types, the upstream-status table, the `openai` client's exceptions, immutability."""
from __future__ import annotations

import httpx2
import openai
import pytest

from flaskapp import errors


@pytest.mark.parametrize("error, status, kind", [
    (errors.InvalidRequest("x"), 400, "invalid_request_error"),
    (errors.ClientTimeout("x"), 408, "invalid_request_error"),
    (errors.RouteError("x", 405), 405, "invalid_request_error"),
    (errors.ClientClosedRequest("x"), 499, "client_closed_request"),
    (errors.UpstreamError("x"), 502, "upstream_error"),
    (errors.UpstreamRateLimited("x"), 429, "rate_limit_error"),
    (errors.UpstreamUnavailable("x"), 503, "upstream_unavailable"),
    (errors.UpstreamTimeout("x"), 504, "upstream_timeout"),
])
def test_each_error_has_its_status_type_and_openai_shaped_body(error, status, kind):
    assert error.status == status and error.type == kind
    assert error.body() == {"error": {"type": kind, "message": "x", "param": None, "code": error.code}}


def test_outcomes_follow_the_tree():
    assert errors.InvalidRequest("x").outcome == errors.REJECTED
    assert errors.ClientClosedRequest("x").outcome == errors.CLIENT_DISCONNECTED
    assert all(error.outcome == errors.UPSTREAM_ERROR for error in
               (errors.UpstreamError("x"), errors.UpstreamTimeout("x"), errors.UpstreamRateLimited("x")))


@pytest.mark.parametrize("status, kind, answered, retryable", [
    (429, errors.UpstreamRateLimited, 429, True),
    (401, errors.UpstreamError, 502, False),
    (403, errors.UpstreamError, 502, False),
    (400, errors.UpstreamError, 502, False),
    (404, errors.UpstreamError, 502, False),
    (422, errors.UpstreamError, 502, False),
    (302, errors.UpstreamError, 502, False),
    (500, errors.UpstreamError, 502, True),
    (502, errors.UpstreamUnavailable, 503, True),
    (503, errors.UpstreamUnavailable, 503, True),
    (504, errors.UpstreamUnavailable, 503, True),
])
def test_upstream_statuses_map_onto_the_tree(status, kind, answered, retryable):
    error = errors.from_status(status, retry_after="7")
    assert type(error) is kind and error.status == answered and error.retryable is retryable
    assert error.retry_after == ("7" if status == 429 else None)  # only a rate limit passes it on


def _response(status: int) -> httpx2.Response:
    return httpx2.Response(status, headers={"retry-after": "2"},
                           request=httpx2.Request("POST", "http://upstream.test/v1/chat/completions"))


@pytest.mark.parametrize("exc, kind, retryable", [
    (openai.APITimeoutError(request=httpx2.Request("POST", "http://x")), errors.UpstreamTimeout, False),
    (openai.APIConnectionError(request=httpx2.Request("POST", "http://x")), errors.UpstreamUnavailable, True),
    (openai.RateLimitError("Incorrect API key sk-abc", response=_response(429), body=None),
     errors.UpstreamRateLimited, True),
    (openai.AuthenticationError("Incorrect API key sk-abc", response=_response(401), body=None),
     errors.UpstreamError, False),
    (openai.OpenAIError("sk-abc"), errors.UpstreamError, False),
], ids=["timeout", "connection", "429", "401", "other"])
def test_the_openai_clients_exceptions_map_onto_the_tree_without_their_messages(exc, kind, retryable):
    error = errors.from_openai(exc)
    assert type(error) is kind and error.retryable is retryable
    assert "sk-" not in error.message  # upstream messages may quote the key
    if kind is errors.UpstreamRateLimited:
        assert error.retry_after == "2"


def test_malformed_and_too_large_are_502s():
    assert errors.malformed().status == 502 and not errors.malformed().retryable
    assert errors.too_large(100).status == 502 and "100 bytes" in errors.too_large(100).message


@pytest.mark.parametrize("name", ["status", "type", "retryable", "message", "retry_after", "param", "new"])
def test_errors_are_immutable(name):
    error = errors.from_status(503)
    with pytest.raises(AttributeError, match="immutable"):
        setattr(error, name, None)
    assert error.status == 503 and error.retryable


def test_raising_and_chaining_still_work():
    try:
        try:
            raise ValueError("inner")
        except ValueError as inner:
            raise errors.unreachable() from inner
    except errors.UpstreamError as caught:
        assert isinstance(caught.__cause__, ValueError) and caught.__traceback__ is not None
        caught.add_note("noted")
