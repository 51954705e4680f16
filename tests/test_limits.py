"""Rate limits: one budget per gateway key (or address), 429 with Retry-After, logged and counted."""
from __future__ import annotations

import json
import logging

import pytest
from prometheus_client import REGISTRY

from flaskapp.config import ConfigError
from gateway import bearer, make_app


@pytest.fixture
def client():
    return make_app(API_KEYS="key-one,key-two", RATE_LIMIT="3/minute").test_client()


def test_past_the_limit_a_caller_gets_429_with_retry_after(client):
    statuses = [client.get("/v1/models", headers=bearer("key-one")).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    response = client.get("/v1/models", headers=bearer("key-one"))
    assert response.status_code == 429
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    error = response.get_json()["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
    assert "3 per 1 minute" in error["message"]


def test_each_key_has_its_own_budget_across_all_routes(client):
    client.get("/v1/models", headers=bearer("key-one"))
    client.post("/v1/chat/completions", headers=bearer("key-one"), json={})  # a 400 counts too
    client.get("/no-such-route", headers=bearer("key-one"))  # a 404 costs nothing and counts nothing
    client.get("/", headers=bearer("key-one"))
    assert client.get("/v1/models", headers=bearer("key-one")).status_code == 429
    assert client.get("/v1/models", headers=bearer("key-two")).status_code == 200


def test_without_keys_the_budget_is_per_client_address():
    client = make_app(RATE_LIMIT="2/minute").test_client()
    here, there = {"REMOTE_ADDR": "10.0.0.1"}, {"REMOTE_ADDR": "10.0.0.2"}
    assert [client.get("/v1/models", environ_base=here).status_code for _ in range(3)] == [200, 200, 429]
    assert client.get("/v1/models", environ_base=there).status_code == 200


def test_probes_scrapes_and_preflights_are_never_limited(client):
    for _ in range(5):
        assert client.get("/healthz").status_code == 200
        assert client.get("/metrics", headers=bearer("key-one")).status_code == 200
        assert client.options("/v1/chat/completions").status_code == 200
    assert client.get("/v1/models", headers=bearer("key-one")).status_code == 200


def test_a_rejection_is_logged_as_rejected_and_counted(client, caplog):
    def rate_limited() -> float:
        return REGISTRY.get_sample_value("flaskapp_rate_limited_total", {"route": "/v1/models"}) or 0.0

    before = rate_limited()
    caplog.set_level(logging.INFO, logger="flaskapp.requests")
    for _ in range(4):
        client.get("/v1/models", headers=bearer("key-one"))
    assert rate_limited() == before + 1
    line = json.loads(caplog.records[-1].getMessage())
    assert line["status"] == 429 and line["outcome"] == "rejected" and line["error"] == "rate_limit_error"


def test_no_limit_by_default():
    client = make_app().test_client()
    assert all(client.get("/v1/models").status_code == 200 for _ in range(50))


@pytest.mark.parametrize("name, value, message", [
    ("RATE_LIMIT", "lots", "FLASKAPP_RATE_LIMIT"),
    ("RATE_LIMIT_STORAGE_URI", "bogus://user:s3cret@host", "cannot use a bogus: storage"),
])
def test_bad_limit_settings_fail_at_start_up(name, value, message):
    with pytest.raises(ConfigError, match=message) as caught:
        make_app(**{"RATE_LIMIT": "5/second", name: value})
    assert "s3cret" not in str(caught.value)
