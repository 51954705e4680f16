"""Settings are cast and checked at start-up, from FLASKAPP_* variables."""
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
                                         ("MAX_RETRIES", "-1"), ("MODEL", " ")])
def test_bad_settings_fail_loudly_at_start_up(monkeypatch, name, value):
    monkeypatch.setenv(f"FLASKAPP_{name}", value)
    with pytest.raises(ConfigError, match=f"FLASKAPP_{name}"):
        create_app()
