"""Gateway keys: which endpoints need one, what a caller sees without one, and what is never shown."""
from __future__ import annotations

import logging

import pytest

from flaskapp.ops import auth
from flaskapp.config import ConfigError
from gateway import bearer, make_app

KEYS = ("gw-key-alpha-0123456789", "gw-key-beta-9876543210")


@pytest.fixture
def client():
    return make_app(API_KEYS=",".join(KEYS)).test_client()


@pytest.mark.parametrize("headers, message", [
    ({}, "needs an API key"),
    ({"Authorization": "Basic Z3c6a2V5"}, "needs an API key"),
    ({"Authorization": "Bearer "}, "needs an API key"),
    (bearer("gw-key-alpha-012345678"), "Incorrect API key"),  # one character short
    (bearer(KEYS[0] + "x"), "Incorrect API key"),
])
def test_a_missing_or_wrong_key_gets_401_json(client, headers, message):
    response = client.get("/v1/models", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    error = response.get_json()["error"]
    assert error["type"] == "authentication_error" and error["code"] == "invalid_api_key"
    assert message in error["message"]


@pytest.mark.parametrize("key", KEYS)
def test_every_configured_key_is_accepted(client, key):
    assert client.get("/v1/models", headers=bearer(key)).status_code == 200
    assert client.get("/v1/models", headers={"Authorization": f"bearer  {key} "}).status_code == 200


@pytest.mark.parametrize("method, path", [
    ("GET", "/"), ("POST", "/stream"), ("POST", "/v1/chat/completions"), ("GET", "/v1/models"),
    ("GET", "/metrics"), ("GET", "/no-such-route"),  # a 401 first: no key, no map of the routes
])
def test_every_endpoint_needs_a_key(client, method, path):
    assert client.open(path, method=method).status_code == 401


@pytest.mark.parametrize("path", ["/healthz", "/demo", "/static/demo.js"])
def test_probes_and_the_demo_page_need_no_key(client, path):
    assert client.get(path).status_code == 200


def test_readyz_needs_no_key(client):
    assert client.get("/readyz").status_code == 503  # the upstream here is a closed port: not ready, not 401


def test_with_no_keys_configured_nothing_needs_one():
    assert make_app().test_client().get("/v1/models").status_code == 200


def test_keys_are_compared_in_constant_time_against_every_key(client, monkeypatch):
    calls = []

    def spy(a, b):
        calls.append((len(a), len(b)))
        return a == b

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    for key in (KEYS[0], "wrong", "w" * 500):
        calls.clear()
        client.get("/v1/models", headers=bearer(key))
        # Every key, even after a match, and digests of one length whatever the guess.
        assert calls == [(32, 32)] * len(KEYS)


def test_keys_never_reach_a_log_or_a_response(client, caplog):
    caplog.set_level(logging.DEBUG)
    bodies = [client.get("/v1/models", headers=bearer(key)).get_data() for key in (*KEYS, "gw-key-guess-000")]
    bodies.append(client.get("/metrics", headers=bearer(KEYS[0])).get_data())
    for secret in (*KEYS, "gw-key-guess-000"):
        assert secret not in caplog.text
        assert all(secret.encode() not in body for body in bodies)
    assert '"status":401' in caplog.text  # the rejection itself is logged


def test_keys_come_from_a_file(tmp_path):
    key_file = tmp_path / "keys"
    key_file.write_text(f"# gateway keys, one a line\n{KEYS[0]}\n\n  {KEYS[1]}  \n")
    client = make_app(API_KEYS=f"@{key_file}").test_client()
    assert [client.get("/v1/models", headers=bearer(k)).status_code for k in KEYS] == [200, 200]
    assert client.get("/v1/models", headers=bearer("# gateway keys, one a line")).status_code == 401


@pytest.mark.parametrize("value, message", [
    ("@/no/such/file", "cannot read the key file"),
    ("good-key,bad key", "key 2 has a space"),
    ("good-key,caf\u00e9", "key 2 has a space or a character"),
])
def test_bad_key_settings_fail_at_start_up_without_showing_keys(value, message):
    with pytest.raises(ConfigError, match=message) as caught:
        make_app(API_KEYS=value)
    assert "good-key" not in str(caught.value) and "hidden" in str(caught.value)


def test_keys_are_hidden_in_the_config():
    app = make_app(API_KEYS=",".join(KEYS))
    assert KEYS[0] not in repr(app.config) and KEYS[0] not in str(app.config["API_KEYS"])
