"""The fault matrix's tables: each upstream fault and client departure, and what a client
sees on each endpoint.

A library, not a test module: tests/test_faults.py runs every row end to end, and
tests/render_docs.py writes docs/faults.md and the README's matrix from the same rows.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from http_checks import Aborted, ErrorChunk, ErrorEvent, Expect, Rejected, endpoints

# -- what a client sees: the shapes the hostile matrix uses too (tests/http_checks.py) ----


# -- the endpoints -------------------------------------------------------------------------

# The endpoints every fault is run on: the hostile matrix's own, but for its POST / and HEAD /.
ENDPOINTS = {name: endpoint for name, endpoint in endpoints("fault").items()
             if name in ("blocking", "text", "sse", "openai", "openai_stream")}


# -- the faults ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Fault:
    name: str
    emulator: dict | None  # the emulator fault to arm; None: another upstream (see `upstream`)
    expect: dict[str, Expect]
    upstream: str = "emulator"  # "emulator", "refused" (a closed port) or "scripted"
    script: dict[str, str] = field(default_factory=dict)  # endpoint -> scripted upstream mode
    note: str = ""
    bugs: dict[str, str] = field(default_factory=dict)  # endpoint -> what happens instead, for now


def _same(expect: Expect) -> dict[str, Expect]:
    return {name: expect for name in ENDPOINTS}


def _mid_stream(kind: str, blocking: Expect) -> dict[str, Expect]:
    """A failure after the first byte: each streaming endpoint's in-stream error."""
    return {"blocking": blocking, "text": Aborted(kind), "sse": ErrorEvent(kind),
            "openai": blocking, "openai_stream": ErrorChunk(kind)}


UPSTREAM_ERROR = Rejected(502, "upstream_error")
UNAVAILABLE = Rejected(503, "upstream_unavailable")
TIMEOUT = Rejected(504, "upstream_timeout")

FAULTS = [
    Fault("upstream 400", {"status": 400}, _same(UPSTREAM_ERROR)),
    Fault("upstream 401", {"status": 401}, _same(UPSTREAM_ERROR),
          note="the upstream's message (which quotes the key) is never passed on"),
    Fault("upstream 403", {"status": 403}, _same(UPSTREAM_ERROR)),
    Fault("upstream 404", {"status": 404}, _same(UPSTREAM_ERROR)),
    Fault("upstream 429 with Retry-After", {"status": 429, "retry_after": 7},
          _same(Rejected(429, "rate_limit_error", "7")), note="the upstream's Retry-After is passed on"),
    Fault("upstream 429 without Retry-After", {"status": 429}, _same(Rejected(429, "rate_limit_error"))),
    Fault("upstream 500", {"status": 500}, _same(UPSTREAM_ERROR)),
    Fault("upstream 502", {"status": 502}, _same(UNAVAILABLE)),
    Fault("upstream 503", {"status": 503}, _same(UNAVAILABLE)),
    Fault("upstream refuses the connection", None, _same(UNAVAILABLE), upstream="refused"),
    Fault("no first token (upstream silent)", {"delay": 30}, _same(TIMEOUT),
          note="streams: FIRST_TOKEN_TIMEOUT; blocking calls: REQUEST_TIMEOUT"),
    Fault("upstream stalls mid-stream past the idle timeout", {"stall_after": 3, "stall": 30},
          _mid_stream("upstream_timeout", TIMEOUT),
          note="streams: IDLE_TIMEOUT; a blocking call sees a slow answer: REQUEST_TIMEOUT"),
    Fault("upstream cuts the answer mid-way", {"cut_after": 5},
          _mid_stream("upstream_unavailable", UNAVAILABLE),
          script={"blocking": "cut", "openai": "cut"},
          note="blocking: a JSON body shorter than its Content-Length"),
    Fault("upstream sends malformed SSE / JSON", {"malformed_after": 5},
          _mid_stream("upstream_error", UPSTREAM_ERROR),
          script={"blocking": "malformed", "openai": "malformed"},
          note="blocking: a 200 whose body is not JSON"),
]


# -- the client misbehaving ----------------------------------------------------------------------

@dataclass(frozen=True)
class Departure:
    name: str
    fault: dict  # the emulator fault that keeps the upstream busy
    endpoints: tuple[str, ...]
    wait_for_headers: bool  # the response has started before the client leaves


DEPARTURES = [
    Departure("client leaves before the first byte", {"delay": 30}, tuple(ENDPOINTS), False),
    Departure("client leaves mid-stream", {}, ("text", "sse", "openai_stream"), True),
    Departure("client leaves while the upstream stalls", {"stall_after": 3, "stall": 30},
              ("text", "sse", "openai_stream"), True),
]