"""One way in for every view that calls the model: `/`, `/stream` and the `/v1` endpoints.

`admit()` parses and checks the request (its parser writes the model onto the record,
so a refused request is logged with the model it asked for), then takes the request's
backpressure slot, which the record holds and gives back when it is finished. HEAD
calls no upstream, so it takes no slot.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, TypeVar

from flask import Request, current_app, request

from ..ops import backpressure
from ..ops.requestlog import RequestRecord, current_record

Parsed = TypeVar("Parsed")
Parser = Callable[[Request, Mapping[str, Any], RequestRecord], Parsed]


def admit(parse: Parser[Parsed]) -> tuple[Parsed, RequestRecord]:
    """The checked request and its record; 4xx for bad input, 503 past `FLASKAPP_MAX_INFLIGHT`."""
    record = current_record()
    if record is None:  # a model-calling view must be logged: its route's policy is wrong
        raise RuntimeError(f"{request.endpoint} calls the model but its policy says logged=False")
    parsed = parse(request, current_app.config, record)
    if request.method != "HEAD":
        backpressure.admit(record)
    return parsed, record
