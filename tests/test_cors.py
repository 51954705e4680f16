"""CORS: off unless origins are configured; then only those origins, and preflights need no key."""
from __future__ import annotations

import pytest

from flaskapp.config import ConfigError
from gateway import make_app

ORIGIN = "https://app.example.com"
PREFLIGHT = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "authorization, content-type"}


def test_off_by_default():
    client = make_app().test_client()
    response = client.get("/v1/models", headers={"Origin": ORIGIN})
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Access-Control-Allow-Origin" not in client.options("/v1/chat/completions", headers=PREFLIGHT).headers


def test_configured_origins_may_call_and_preflight_without_a_key():
    client = make_app(CORS_ORIGINS=f"{ORIGIN}, https://other.example.com", API_KEYS="gw-key",
                      RATE_LIMIT="1/minute").test_client()
    for _ in range(2):  # a preflight spends no rate limit either
        preflight = client.options("/v1/chat/completions", headers=PREFLIGHT)
        assert preflight.status_code == 200
        assert preflight.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
        assert "authorization" in preflight.headers["Access-Control-Allow-Headers"].lower()
        assert "Access-Control-Allow-Credentials" not in preflight.headers  # bearer keys, never cookies
    response = client.get("/v1/models", headers={"Origin": ORIGIN, "Authorization": "Bearer gw-key"})
    assert response.status_code == 200 and response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "X-Request-ID" in response.headers["Access-Control-Expose-Headers"]
    # The errors a browser must read carry the header too.
    assert client.get("/v1/models", headers={"Origin": ORIGIN}).headers["Access-Control-Allow-Origin"] == ORIGIN


def test_other_origins_get_no_cors_headers():
    client = make_app(CORS_ORIGINS=ORIGIN).test_client()
    response = client.get("/v1/models", headers={"Origin": "https://evil.example.com"})
    assert "Access-Control-Allow-Origin" not in response.headers


@pytest.mark.parametrize("value", ["app.example.com", "ftp://files.example.com"])
def test_an_origin_must_be_a_url_or_star(value):
    with pytest.raises(ConfigError, match="FLASKAPP_CORS_ORIGINS"):
        make_app(CORS_ORIGINS=value)
