"""OpenAI-compatible endpoints: point any OpenAI client's base URL at `http://host:8000/v1`.

`POST /v1/chat/completions` checks what this deployment enforces (model allow-list,
token limits, body size) and relays the rest of the request unchanged. Streamed
answers pass the upstream's own events through byte for byte: a chunk is never parsed
into objects and serialized again just to be passed on.
"""
from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from ..ops import backpressure
from ..errors import ApiError, InvalidRequest, unreadable
from .params import load_json, request_body
from .relay import Relay, complete

bp = Blueprint("openai", __name__, url_prefix="/v1")

JSON = "application/json"


class ModelNotFound(ApiError):
    status, type, code = 404, "invalid_request_error", "model_not_found"


@bp.post("/chat/completions")
def chat_completions() -> Response:
    body = _checked_body(current_app.config)
    backpressure.admit(g.record)
    upstream = current_app.extensions["upstream"]
    if body.get("stream"):
        relay = Relay.open(upstream, body, request.environ, g.record, raw=True)
        return relay.response(relay.passthrough(), "text/event-stream; charset=utf-8")
    answer = complete(upstream, body, request.environ)
    try:
        json.loads(answer)  # a 200 whose body no SDK could parse is the upstream's failure
    except (ValueError, RecursionError):
        raise unreadable() from None
    return Response(answer, content_type=JSON)


@bp.get("/models")
def models() -> Response:
    # This deployment's allow-list, not everything the upstream serves.
    return jsonify({"object": "list", "data": [
        {"id": model, "object": "model", "created": 0, "owned_by": "flaskapp"}
        for model in current_app.config["ALLOWED_MODELS"]]})


def _checked_body(config: Any) -> dict[str, Any]:
    body = load_json(request_body(request), "We could not parse the JSON body of your request.")
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("you must provide a model parameter", param="model")
    g.record.model = model[:100]  # g.record: made by requestlog for every request; logged even if refused
    if model not in config["ALLOWED_MODELS"]:
        raise ModelNotFound(f"The model `{model[:100]}` does not exist or you do not have access to it.",
                            param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        raise InvalidRequest("'messages' must be a non-empty array of objects with a 'role'.",
                             param="messages")
    if not isinstance(body.get("stream", False), bool):
        raise InvalidRequest("'stream' must be a boolean.", param="stream")
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is not None and (type(value) is not int or not 1 <= value <= config["MAX_TOKENS_LIMIT"]):
            raise InvalidRequest(f"'{name}' must be an integer between 1 and {config['MAX_TOKENS_LIMIT']}.",
                                 param=name)
    temperature = body.get("temperature")
    if temperature is not None and (type(temperature) not in (int, float) or not 0 <= temperature <= 2):
        raise InvalidRequest("'temperature' must be a number between 0 and 2.", param="temperature")
    return body
