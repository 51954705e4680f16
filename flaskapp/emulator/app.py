"""An OpenAI-compatible server that costs almost nothing per token: settings, stats, routes.

It is a plain WSGI application (no framework on the per-token path) served by gevent's
pywsgi: one greenlet per connection. Each endpoint family has its module (`chat`,
`completions`, `embeddings`, `responses`); what they share, a call's pacing and faults,
is `pacing`; HTTP and the error body are `wire`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

from .chat import chat
from .completions import completions
from .embeddings import NATIVE_DIMENSIONS, embeddings
from .faults import NO_FAULT, FaultQueue
from .responses import responses
from .text import token_pool
from .wire import BadRequest, StartResponse, error_response, json_response, read_json


@dataclass
class EmulatorSettings:
    ttft: float = 1.0  # seconds before the first token
    tokens_per_second: float = 50.0
    tokens: int = 500  # answer length (the model's natural length) when max_tokens asks no fewer
    seed: int = 0
    api_key: str | None = None  # when set, requests must carry it as a bearer token
    obfuscation: bool = False  # pad streamed chat chunks as OpenAI does by default (a request may say otherwise)
    models: tuple[str, ...] = ("gpt-4", "gpt-4o", "gpt-4o-mini", "gpt-3.5-turbo",
                               "gpt-3.5-turbo-instruct", *NATIVE_DIMENSIONS)


@dataclass
class Stats:
    """Counted over every endpoint: a streamed call is a stream, any other a completion."""
    requests: int = 0
    streams_started: int = 0
    streams_completed: int = 0
    streams_aborted: int = 0  # the caller hung up before the end, or a fault ended it
    completions_started: int = 0
    completions_completed: int = 0
    completions_aborted: int = 0
    tokens_sent: int = 0
    in_flight: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    endpoints: dict[str, int] = field(default_factory=dict)  # model calls by path


Endpoint = Callable[["Emulator", dict, StartResponse], Iterable[bytes]]
MODEL_CALLS: dict[str, Endpoint] = {
    "/v1/chat/completions": chat,
    "/v1/completions": completions,
    "/v1/embeddings": embeddings,
    "/v1/responses": responses,
}


class Emulator:
    """The WSGI application. `stats` and `faults` are public so tests and the CLI can read them."""

    def __init__(self, settings: EmulatorSettings | None = None) -> None:
        self.settings = settings or EmulatorSettings()
        self.stats = Stats()
        self.faults = FaultQueue()
        self.tokens, self.token_json = token_pool(self.settings.seed)

    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        self.stats.requests += 1
        try:
            return self._route(environ, start_response)
        except BadRequest as exc:
            return error_response(start_response, exc)

    def _route(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO", ""), environ["REQUEST_METHOD"]
        endpoint = MODEL_CALLS.get(path)
        if endpoint is not None:
            if method != "POST":
                raise BadRequest(f"Invalid method for URL ({method} {path})", 405,
                                 error_type="invalid_request_error")
            self._authorize(environ)
            self.stats.endpoints[path] = self.stats.endpoints.get(path, 0) + 1
            return endpoint(self, environ, start_response)
        if path == "/v1/models" and method == "GET":
            self._authorize(environ)
            return json_response(start_response, 200, {
                "object": "list", "data": [self._model(m) for m in self.settings.models]})
        if path.startswith("/v1/models/") and method == "GET":
            self._authorize(environ)
            model = path.removeprefix("/v1/models/")
            if model not in self.settings.models:
                raise BadRequest(f"The model '{model}' does not exist or you do not have access to it.",
                                 404, code="model_not_found", error_type="invalid_request_error")
            return json_response(start_response, 200, self._model(model))
        if path == "/_emulator/stats" and method == "GET":
            return json_response(start_response, 200, self.stats.__dict__)
        if path == "/_emulator/faults" and method == "POST":
            values = read_json(environ)
            try:
                fault = self.faults.arm(values) if values else self.faults.clear()
            except (TypeError, ValueError) as exc:
                raise BadRequest(str(exc)) from None
            return json_response(start_response, 200, {"armed": (fault or NO_FAULT).__dict__})
        if path == "/_emulator/reset" and method == "POST":
            self.stats = Stats()
            self.faults.clear()
            return json_response(start_response, 200, {"reset": True})
        if path in ("/healthz", "/"):
            return json_response(start_response, 200, {"status": "ok"})
        raise BadRequest(f"Invalid URL ({method} {path})", 404, error_type="invalid_request_error")

    @staticmethod
    def _model(model: str) -> dict:
        return {"id": model, "object": "model", "created": 0, "owned_by": "emulator"}

    def _authorize(self, environ: dict) -> None:
        expected = self.settings.api_key
        if expected and environ.get("HTTP_AUTHORIZATION", "") != f"Bearer {expected}":
            raise BadRequest("Incorrect API key provided.", 401)
