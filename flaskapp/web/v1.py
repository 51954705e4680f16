"""OpenAI-compatible endpoints: point any OpenAI client's base URL at `http://host:8000/v1`.

`POST /v1/chat/completions`, `/v1/completions`, `/v1/embeddings` and `/v1/responses`
check what this deployment enforces (model allow-list, token limits, body size) and
relay the rest of the request unchanged. Streamed answers pass the upstream's own
events through byte for byte: a chunk is never parsed into objects and serialized
again just to be passed on. Route errors under /v1 use OpenAI's codes.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable

from flask import Blueprint, Request, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from ..errors import ApiError, InvalidRequest, RouteError, unreadable
from ..ops.requestlog import RequestRecord
from ..ops.policy import policy
from ..runtime.embedded import EMULATOR_MARKER
from ..upstream.events import CompletionParser, ResponsesParser
from .admission import admit
from .handlers import error_response
from .params import check_sampling, load_json, request_body
from .relay import CHAT_EVENTS, RESPONSE_EVENTS, Output, Relay, complete

bp = Blueprint("openai", __name__, url_prefix="/v1")

JSON = "application/json"


class ModelNotFound(ApiError):
    status, type, code = 404, "invalid_request_error", "model_not_found"


class UnknownUrl(RouteError):
    code = "unknown_url"


class MethodNotAllowedHere(RouteError):
    code = "method_not_allowed"


@bp.post("/chat/completions")
@policy()  # a key, the rate limit, the log
def chat_completions() -> Response:
    body, record = admit(_checked_body)
    upstream = current_app.extensions["upstream"]
    if body.get("stream"):
        return Relay.open(upstream, body, request.environ, record, CHAT_EVENTS).response()
    return _blocking(upstream, body, record, None)


@bp.post("/completions")
@policy()  # a key, the rate limit, the log
def completions() -> Response:
    body, record = admit(_checked_completion)
    return _streamed_or_whole(body, record, "/completions", CompletionParser, CHAT_EVENTS)


@bp.post("/embeddings")
@policy()  # a key, the rate limit, the log
def embeddings() -> Response:
    body, record = admit(_checked_embedding)
    return _blocking(current_app.extensions["upstream"], body, record, "/embeddings")


@bp.post("/responses")
@policy()  # a key, the rate limit, the log
def responses() -> Response:
    body, record = admit(_checked_response)
    return _streamed_or_whole(body, record, "/responses", ResponsesParser, RESPONSE_EVENTS)


def _streamed_or_whole(body: dict[str, Any], record: RequestRecord, path: str, parser: Callable[[], Any],
                       events: Output) -> Response:
    """A relayed endpoint other than chat: its own upstream path, event parser and passthrough."""
    upstream = current_app.extensions["upstream"]
    if body.get("stream"):
        return Relay.open(upstream, body, request.environ, record, events, path=path, parser=parser()).response()
    return _blocking(upstream, body, record, path)


def _blocking(upstream: Any, body: dict[str, Any], record: RequestRecord, path: str | None) -> Response:
    answer = complete(upstream, body, request.environ, path)
    try:
        parsed = json.loads(answer)  # a 200 whose body no SDK could parse is the upstream's failure
    except (ValueError, RecursionError):
        raise unreadable() from None
    usage = parsed.get("usage") if isinstance(parsed, dict) else None
    if isinstance(usage, dict):
        if "input_tokens" in usage:  # the Responses API's names for them
            usage = {"prompt_tokens": usage.get("input_tokens"), "completion_tokens": usage.get("output_tokens")}
        record.count_usage(usage)
    return Response(answer, content_type=JSON)


@bp.get("/models")
@policy()  # a key, the rate limit, the log
def models() -> Response:
    # This deployment's allow-list, not everything the upstream serves.
    return jsonify({"object": "list", "data": [
        {"id": model, "object": "model", "created": 0, "owned_by": "flaskapp"}
        for model in current_app.config["ALLOWED_MODELS"]]})


@bp.get("/models/<path:model>")
@policy()  # a key, the rate limit, the log
def model(model: str) -> Response:
    if model not in current_app.config["ALLOWED_MODELS"]:
        raise _model_not_found(model)
    return jsonify({"id": model, "object": "model", "created": 0, "owned_by": "flaskapp"})


def _model_not_found(model: str) -> ModelNotFound:
    return ModelNotFound(f"The model `{model[:100]}` does not exist or you do not have access to it.",
                         param="model")


def _route_error(kind: Callable[[str, int], RouteError]) -> Callable[[HTTPException], Response]:
    def handle(exc: HTTPException) -> Response:
        if request.path == "/v1" or request.path.startswith("/v1/"):
            # OpenAI's own words and codes, which its SDKs and tools recognise.
            error = kind(f"Invalid URL ({request.method} {request.path[:200]})", exc.code or 404)
        else:  # as handlers.py answers every other route error
            error = RouteError(exc.description or exc.name, exc.code or 404)
        response = error_response(error)
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response
    return handle


bp.app_errorhandler(NotFound)(_route_error(UnknownUrl))
bp.app_errorhandler(MethodNotAllowed)(_route_error(MethodNotAllowedHere))


@bp.record_once
def _mark_emulator_answers(state: Any) -> None:
    # Answers from the built-in emulator must never pass for a real model's. The embedded
    # emulator says so before any app is made: an app without it has no step to run.
    if os.environ.get(EMULATOR_MARKER):
        state.app.after_request(_say_emulator)


def _say_emulator(response: Response) -> Response:
    response.headers["X-Flaskapp-Upstream"] = "emulator"
    return response


def _common(incoming: Request, config: Any, record: RequestRecord) -> dict[str, Any]:
    """What every model-calling /v1 body needs: a JSON object, an allowed model, a boolean `stream`."""
    body = load_json(request_body(incoming))
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("you must provide a model parameter", param="model")
    record.model = model[:100]  # before the allow-list: a refused model is logged too
    if model not in config["ALLOWED_MODELS"]:
        raise _model_not_found(model)
    if not isinstance(body.get("stream", False), bool):
        raise InvalidRequest("'stream' must be a boolean.", param="stream")
    return body


def _require_text(body: dict[str, Any], name: str) -> None:
    value = body.get(name)
    if not (isinstance(value, str) or (isinstance(value, list) and value)):
        raise InvalidRequest(f"'{name}' must be a string or a non-empty array.", param=name)


def _checked_completion(incoming: Request, config: Any, record: RequestRecord) -> dict[str, Any]:
    body = _common(incoming, config, record)
    _require_text(body, "prompt")
    check_sampling(body, config)
    return body


def _checked_embedding(incoming: Request, config: Any, record: RequestRecord) -> dict[str, Any]:
    body = _common(incoming, config, record)
    if "stream" in body:
        raise InvalidRequest("Embeddings are never streamed: remove 'stream'.", param="stream")
    _require_text(body, "input")
    return body


def _checked_response(incoming: Request, config: Any, record: RequestRecord) -> dict[str, Any]:
    body = _common(incoming, config, record)
    _require_text(body, "input")
    limit, tokens = config["MAX_TOKENS_LIMIT"], body.get("max_output_tokens")
    if tokens is not None and (type(tokens) is not int or not 1 <= tokens <= limit):
        raise InvalidRequest(f"'max_output_tokens' must be an integer between 1 and {limit}.",
                             param="max_output_tokens")
    check_sampling({"temperature": body.get("temperature")}, config)
    return body


def _checked_body(incoming: Request, config: Any, record: RequestRecord) -> dict[str, Any]:
    body = _common(incoming, config, record)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        raise InvalidRequest("'messages' must be a non-empty array of objects with a 'role'.",
                             param="messages")
    check_sampling(body, config)
    return body
