"""Fixtures: the app from its factory for unit tests; real emulator + gunicorn for integration.

`emulator` and `server` are one per test module. A module that needs another pace or other
settings says so in module constants, which the fixtures read:

    EMULATOR = {"ttft": 0.05, "tokens": 10_000}              # over DEFAULT_EMULATOR
    SERVER_SETTINGS = {"max_retries": 0, "api_keys": KEY}    # FLASKAPP_* settings, instead of the default

and `start_server(env)` starts any further gunicorn the module needs, stopped at its end.
"""
from __future__ import annotations

import signal
from typing import Callable, Iterator

import pytest

from flaskapp import create_app
from servers import Emulator, Process, start_emulator, start_gunicorn, upstream_env

from servers import SECRET_KEY  # must never appear in a response or a log

# First token after 0.2 s, 200 tokens/s, 40 tokens: short answers, still streamed.
DEFAULT_EMULATOR = {"ttft": 0.2, "tokens_per_second": 200.0, "tokens": 40}
DEFAULT_SERVER_SETTINGS = {"max_retries": 0, "first_token_timeout": 3, "idle_timeout": 2}


@pytest.fixture
def app():
    return create_app({"TESTING": True, "MAX_RETRIES": 0, "UPSTREAM_CLIENT_OPTIONS": {
        "api_key": SECRET_KEY, "base_url": "http://127.0.0.1:9/v1"}})


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture(scope="module")
def emulator(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """The module's emulator, at DEFAULT_EMULATOR's pace or the module's EMULATOR."""
    pace = {**DEFAULT_EMULATOR, **getattr(request.module, "EMULATOR", {})}
    emulator = start_emulator(tmp_path_factory.mktemp("emulator"), pace["ttft"], pace["tokens_per_second"],
                              pace["tokens"])
    yield emulator
    emulator.stop()


@pytest.fixture(autouse=False)
def clean_emulator(emulator: Emulator) -> Emulator:
    emulator.reset()
    return emulator


@pytest.fixture(scope="module")
def start_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Process]]:
    """Factory: `start_server(env, *gunicorn_args, name=..., workers=...)` starts gunicorn
    (one gevent worker unless told otherwise), stopped at the end of the module."""
    started: list[Process] = []

    def start(env: dict[str, str], *args: str, name: str = "gunicorn", **options) -> Process:
        server = start_gunicorn(tmp_path_factory.mktemp(name), env, *args, **options)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop(signal.SIGINT)  # quick: nothing of ours is in flight any more


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest, emulator: Emulator, start_server: Callable[..., Process]) -> Process:
    """Real gunicorn, one gevent worker, pointed at the module's emulator, with
    DEFAULT_SERVER_SETTINGS or the module's SERVER_SETTINGS."""
    settings = getattr(request.module, "SERVER_SETTINGS", DEFAULT_SERVER_SETTINGS)
    return start_server(upstream_env(emulator, **settings))
