"""Fixtures: the app from its factory for unit tests; real emulator + gunicorn for integration."""
from __future__ import annotations

import pytest

from flaskapp import create_app
from servers import Emulator, Process, start_emulator, start_gunicorn, upstream_env

from servers import SECRET_KEY  # must never appear in a response or a log


@pytest.fixture
def app():
    return create_app({"TESTING": True, "MAX_RETRIES": 0, "UPSTREAM_CLIENT_OPTIONS": {
        "api_key": SECRET_KEY, "base_url": "http://127.0.0.1:9/v1"}})


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture(scope="module")
def emulator(tmp_path_factory) -> Emulator:
    """One emulator per test module: first token after 0.2 s, 200 tokens/s, 40 tokens."""
    emulator = start_emulator(tmp_path_factory.mktemp("emulator"), 0.2, 200.0, 40)
    yield emulator
    emulator.stop()


@pytest.fixture(autouse=False)
def clean_emulator(emulator: Emulator) -> Emulator:
    emulator.reset()
    return emulator


@pytest.fixture(scope="module")
def server(tmp_path_factory, emulator: Emulator) -> Process:
    """Real gunicorn, one gevent worker, pointed at the module's emulator."""
    server = start_gunicorn(tmp_path_factory.mktemp("gunicorn"), upstream_env(
        emulator, max_retries=0, first_token_timeout=3, idle_timeout=2))
    yield server
    server.stop()
