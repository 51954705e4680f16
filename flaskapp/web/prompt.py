"""The prompt views: `/` answers when the whole answer is ready, `/stream` as it is written."""
from __future__ import annotations

from flask import Blueprint, Response, current_app, request

from . import params
from ..ops.policy import policy
from .admission import admit
from .relay import SSE_BODY, STREAM_HEADERS, TEXT_BODY, Relay, complete
from ..upstream.client import parse_completion

bp = Blueprint("prompt", __name__)

TEXT, SSE = TEXT_BODY.content_type, SSE_BODY.content_type


def _wants_sse(chat: params.ChatParams) -> bool:
    if chat.format:
        return chat.format == "sse"
    # Only an explicit text/event-stream: curl's */* gets plain text.
    if "event-stream" not in request.environ.get("HTTP_ACCEPT", ""):
        return False  # most requests: no Accept header to parse
    return any(value == "text/event-stream" and quality > 0 for value, quality in request.accept_mimetypes)


def _head(content_type: str, headers: dict[str, str] | None = None) -> Response:
    # HEAD: the status and headers a GET would get, with no generation to throw away. No
    # Content-Length: only the answer would tell it, and 0 would be false.
    response = Response(content_type=content_type, headers=headers)
    response.automatically_set_content_length = False
    return response


@bp.route("/", methods=["GET", "POST"])
@policy()  # a key, the rate limit, the log
def blocking() -> Response:
    chat, record = admit(params.parse)
    if request.method == "HEAD":
        return _head(TEXT)
    completion = parse_completion(complete(current_app.extensions["upstream"], chat.chat_body(), request.environ))
    record.count_usage(completion.usage)
    return Response(completion.text, content_type=TEXT)


@bp.route("/stream", methods=["GET", "POST"])
@policy()  # a key, the rate limit, the log
def stream() -> Response:
    chat, record = admit(params.parse)
    if request.method == "HEAD":
        return _head(SSE if _wants_sse(chat) else TEXT, STREAM_HEADERS)
    output = SSE_BODY if _wants_sse(chat) else TEXT_BODY
    return Relay.open(current_app.extensions["upstream"], chat.chat_body(stream=True),
                      request.environ, record, output).response()
