"""Settings are cast and checked at start-up, from FLASKAPP_* variables."""
import os
import runpy
from pathlib import Path

import pytest

from flaskapp import create_app
from flaskapp.config import ConfigError


def test_environment_settings_are_cast(monkeypatch):
    monkeypatch.setenv("FLASKAPP_IDLE_TIMEOUT", "2.5")
    monkeypatch.setenv("FLASKAPP_ALLOWED_MODELS", "gpt-4o, gpt-4o-mini")
    monkeypatch.setenv("FLASKAPP_MODEL", "llama3")
    app = create_app({"UPSTREAM_CLIENT_OPTIONS": {"api_key": "k"}})
    assert app.config["IDLE_TIMEOUT"] == 2.5
    assert app.config["ALLOWED_MODELS"] == ("llama3", "gpt-4o", "gpt-4o-mini")  # the model is always allowed


@pytest.mark.parametrize("name, value", [("IDLE_TIMEOUT", "soon"), ("MAX_TOKENS_LIMIT", "0"),
                                         ("MAX_RETRIES", "-1"), ("MODEL", " "), ("STREAM_INTERVAL", "-0.1"),
                                         ("STREAM_INTERVAL", "2")])
def test_bad_settings_fail_loudly_at_start_up(monkeypatch, name, value):
    monkeypatch.setenv(f"FLASKAPP_{name}", value)
    with pytest.raises(ConfigError, match=f"FLASKAPP_{name}"):
        create_app()


def test_a_stream_interval_must_be_shorter_than_the_idle_timeout(monkeypatch):
    monkeypatch.setenv("FLASKAPP_IDLE_TIMEOUT", "0.5")
    monkeypatch.setenv("FLASKAPP_STREAM_INTERVAL", "0.5")
    with pytest.raises(ConfigError, match="FLASKAPP_STREAM_INTERVAL: must be shorter than FLASKAPP_IDLE_TIMEOUT"):
        create_app()


@pytest.mark.parametrize("given, expected", [(None, len(os.sched_getaffinity(0))), ("3", 3)])
def test_gunicorn_runs_one_worker_per_core_unless_web_concurrency_says(monkeypatch, given, expected):
    if given is None:
        monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    else:
        monkeypatch.setenv("WEB_CONCURRENCY", given)
    settings = runpy.run_path(str(Path(__file__).resolve().parent.parent / "gunicorn.conf.py"))
    assert settings["workers"] == expected
