"""OpenAI-compatible endpoints: point any OpenAI client's base URL at `http://host:8000/v1`.

`POST /v1/chat/completions` checks what this deployment enforces (model allow-list,
token limits, body size) and relays the rest of the request unchanged. Streamed
answers pass the upstream's own events through byte for byte: a chunk is never parsed
into objects and serialized again just to be passed on.
"""
from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Request, Response, current_app, jsonify, request

from ..errors import ApiError, InvalidRequest, unreadable
from ..ops.requestlog import RequestRecord
from ..ops.policy import policy
from .admission import admit
from .params import check_sampling, load_json, request_body
from .relay import Relay, complete

bp = Blueprint("openai", __name__, url_prefix="/v1")

JSON = "application/json"


class ModelNotFound(ApiError):
    status, type, code = 404, "invalid_request_error", "model_not_found"


@bp.post("/chat/completions")
@policy()  # a key, the rate limit, the log
def chat_completions() -> Response:
    body, record = admit(_checked_body)
    upstream = current_app.extensions["upstream"]
    if body.get("stream"):
        relay = Relay.open(upstream, body, request.environ, record, raw=True)
        return relay.response(relay.passthrough(), "text/event-stream; charset=utf-8")
    answer = complete(upstream, body, request.environ)
    try:
        parsed = json.loads(answer)  # a 200 whose body no SDK could parse is the upstream's failure
    except (ValueError, RecursionError):
        raise unreadable() from None
    if isinstance(parsed, dict) and isinstance(parsed.get("usage"), dict):
        record.count_usage(parsed["usage"])
    return Response(answer, content_type=JSON)


@bp.get("/models")
@policy()  # a key, the rate limit, the log
def models() -> Response:
    # This deployment's allow-list, not everything the upstream serves.
    return jsonify({"object": "list", "data": [
        {"id": model, "object": "model", "created": 0, "owned_by": "flaskapp"}
        for model in current_app.config["ALLOWED_MODELS"]]})


def _checked_body(incoming: Request, config: Any, record: RequestRecord) -> dict[str, Any]:
    body = load_json(request_body(incoming))
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("you must provide a model parameter", param="model")
    record.model = model[:100]  # before the allow-list: a refused model is logged too
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
    check_sampling(body, config)
    return body
