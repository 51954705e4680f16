"""Fault injection for the emulator: what a test can ask the fake upstream to do wrong.

A fault comes from the `X-Emulator-Fault` request header (`status=429,retry_after=2`)
or is armed for the next requests through `POST /_emulator/faults` (a JSON object with
the same fields and a `count`). Fields:

    status        answer with this HTTP status and an OpenAI-style error body
    retry_after   with `status`, the Retry-After header to send
    delay         seconds to wait before the first token (or before the blocking answer)
    stall_after   tokens to send before stalling ...
    stall         ... for this many seconds (then carry on)
    cut_after     tokens to send before dropping the connection without finishing
                  (a blocking answer: half its body, short of its Content-Length)
    malformed_after  tokens to send before one event that is not JSON
                  (a blocking answer: a 200 whose body is not JSON)
    fail_after    tokens to send before the stream ends with the protocol's in-stream error
                  (chat and completions: `data: {"error": ...}`; Responses: `response.failed`);
                  a blocking call answers 500 after its time
    only          "stream" or "blocking": an armed fault waits for a request of that kind
                  (the others pass untouched and do not use up its count)
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, fields

_INT_FIELDS = ("status", "stall_after", "cut_after", "malformed_after", "fail_after", "count")
_FLOAT_FIELDS = ("retry_after", "delay", "stall")


@dataclass(frozen=True)
class Fault:
    status: int | None = None
    retry_after: float | None = None
    delay: float | None = None
    stall_after: int | None = None
    stall: float = 0.0
    cut_after: int | None = None
    malformed_after: int | None = None
    fail_after: int | None = None
    only: str | None = None  # "stream" or "blocking"

    @classmethod
    def from_mapping(cls, values: dict) -> "Fault":
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known - {"count"}
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(sorted(unknown))}")
        cast = {}
        for name, value in values.items():
            if name == "count":
                continue
            if name in _INT_FIELDS:
                cast[name] = int(value)
            elif name in _FLOAT_FIELDS:
                cast[name] = float(value)
            elif name == "only":
                if value not in ("stream", "blocking"):
                    raise ValueError("'only' must be 'stream' or 'blocking'")
                cast[name] = value
        return cls(**cast)

    @classmethod
    def from_header(cls, header: str) -> "Fault":
        pairs = (item.split("=", 1) for item in header.split(",") if item.strip())
        return cls.from_mapping({key.strip(): value.strip() for key, value in pairs})


NO_FAULT = Fault()


class FaultQueue:
    """Faults armed for the next requests; `count=0` keeps a fault until cleared."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fault = NO_FAULT
        self._remaining = 0  # -1: forever

    def arm(self, values: dict) -> Fault:
        fault = Fault.from_mapping(values)
        count = int(values.get("count", 1))
        with self._lock:
            self._fault, self._remaining = fault, (-1 if count == 0 else count)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._fault, self._remaining = NO_FAULT, 0

    def take(self, streamed: bool) -> Fault:
        with self._lock:
            if self._remaining == 0:
                return NO_FAULT
            if self._fault.only and self._fault.only != ("stream" if streamed else "blocking"):
                return NO_FAULT
            if self._remaining > 0:
                self._remaining -= 1
            return self._fault
