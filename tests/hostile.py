"""The hostile-upstream / hostile-client matrix: one row per way of being attacked.

For each case: how the upstream misbehaves (a mode of tests/hostile_upstream.py) or how
the client does, what each endpoint's client sees, the bound that holds it and the
setting behind that bound. tests/test_hostile.py runs every row end to end through
gunicorn; tests/test_faults.py renders the table into docs/faults.md.
"""
from __future__ import annotations

from dataclasses import dataclass

from hostile_upstream import ANSWER
from http_checks import ENDPOINTS, Aborted, Answered, Dropped, ErrorChunk, ErrorEvent, Expect, Headers, Rejected

# -- the matrix ---------------------------------------------------------------------------------

# Small caps and timeouts, so that each case takes a couple of seconds.
SETTINGS = {"max_retries": 0, "first_token_timeout": 3, "idle_timeout": 1, "request_timeout": 2,
            "stream_timeout": 2, "max_answer_bytes": 1_000_000, "client_timeout": 1}
STREAMS = ("text", "sse", "openai_stream")
BLOCKING = ("blocking", "openai")
UPSTREAM_ERROR = Rejected(502, "upstream_error")


@dataclass(frozen=True)
class Case:
    name: str
    expect: dict[str, Expect]  # endpoint (http_checks.ENDPOINTS) -> what its client sees
    bound: str  # what holds the case
    setting: str  # the FLASKAPP_* setting behind that bound, if any
    mode: str = "answer"  # the upstream's (hostile_upstream.MODES)
    client: str = "fetch"  # how the client behaves (tests/test_hostile.py)
    upstream_called: bool = True
    settings: tuple[tuple[str, object], ...] = ()  # the server's, beyond SETTINGS
    max_peak_rss_mib: float | None = None  # the worker's peak RSS may grow by at most this
    deadline: str | None = None  # the client's answer comes when this timeout (in SETTINGS) is up


def _each(names: tuple[str, ...], expect: Expect) -> dict[str, Expect]:
    return {name: expect for name in names}


def _in_stream(kind: str) -> dict[str, Expect]:
    return {"text": Aborted(kind), "sse": ErrorEvent(kind), "openai_stream": ErrorChunk(kind)}


WHOLE = Answered("".join(ANSWER))
TIMEOUT = Rejected(504, "upstream_timeout")
BODIES = ("post_blocking", "openai")  # the endpoints that read a request body
KEY_SAFE = "only whole events are read or relayed; the upstream's error text is never passed on"
CASES = [
    Case("an error event quoting the key, in two reads, before any content", _each(STREAMS, UPSTREAM_ERROR),
         KEY_SAFE, "—", mode="key_error_split"),
    Case("an error event quoting the key, in two reads, after some content", _in_stream("upstream_error"),
         KEY_SAFE, "—", mode="key_error_split_after_content"),
    Case("a finish reason and usage quoting the key, after the whole answer",
         {"text": WHOLE, "sse": ErrorEvent("upstream_error"), "openai_stream": ErrorChunk("upstream_error")},
         "every byte written is searched for the key, the closing `done` event too", "—", mode="key_in_ending"),
    Case("one 40 MB HTTP chunk", {**_each(BLOCKING, UPSTREAM_ERROR), **_in_stream("upstream_error")},
         "chunks decoded as they arrive, in linear time; the answer cut at the size cap",
         "`FLASKAPP_MAX_ANSWER_BYTES`", mode="big_chunk"),
    Case("one 10 MB SSE line", _each(STREAMS, UPSTREAM_ERROR),
         "events split in linear time; an event past 1 MiB is malformed",
         "— (`MAX_EVENT_BYTES`, upstream/events.py)", mode="long_line"),
    Case("a blocking answer dripping a byte a second", _each(BLOCKING, TIMEOUT),
         "the whole call's deadline, not each read's", "`FLASKAPP_REQUEST_TIMEOUT`", mode="drip",
         deadline="request_timeout"),
    Case("an endless blocking answer", _each(BLOCKING, UPSTREAM_ERROR),
         "the answer-size cap (memory stays bounded), else the whole call's deadline",
         "`FLASKAPP_MAX_ANSWER_BYTES`, `FLASKAPP_REQUEST_TIMEOUT`", mode="endless", max_peak_rss_mib=64),
    Case("302 with a body", _each(BLOCKING + STREAMS, UPSTREAM_ERROR),
         "only a 2xx is an answer", "—", mode="redirect"),
    Case("100 Continue, then 200", _each(BLOCKING + STREAMS, WHOLE),
         "interim 1xx responses are skipped", "—", mode="continue_first"),
    Case("a gzip body nobody asked for", _each(BLOCKING + STREAMS, UPSTREAM_ERROR),
         "a content encoding we did not ask for is refused, never relayed raw", "—", mode="gzipped"),
    Case("two conflicting Content-Length headers", _each(BLOCKING + STREAMS, UPSTREAM_ERROR),
         "ambiguous framing is refused, as RFC 9112 says", "—", mode="two_lengths"),
    Case("a stream past the time cap, after the first byte", _in_stream("upstream_timeout"),
         "the whole stream's deadline", "`FLASKAPP_STREAM_TIMEOUT`", mode="slow_tokens",
         deadline="stream_timeout"),
    Case("a stream past the time cap, before the first byte", _each(STREAMS[:2], TIMEOUT),
         "the whole stream's deadline", "`FLASKAPP_STREAM_TIMEOUT`", mode="slow_no_content",
         deadline="stream_timeout"),
    Case("a stream past the size cap, after the first byte", _in_stream("upstream_error"),
         "the answer-size cap", "`FLASKAPP_MAX_ANSWER_BYTES`", mode="endless"),
    Case("a stream past the size cap, before the first byte", _each(STREAMS[:2], UPSTREAM_ERROR),
         "the answer-size cap", "`FLASKAPP_MAX_ANSWER_BYTES`", mode="endless_no_content"),
    Case("two choices (`n=2`) interleaved", _each(STREAMS[:2], WHOLE),
         "only choice 0's text goes into `/stream`", "—", mode="two_choices"),
    Case("an event whose data spans two `data:` lines (valid SSE)", _each(STREAMS, WHOLE),
         "the lines are joined, as SSE says", "—", mode="multi_line"),
    # The client misbehaving, in front of an upstream that answers well.
    Case("a request body that never comes", _each(BODIES, Rejected(408, "invalid_request_error")),
         "a body that stalls is timed out, and the connection closed", "`FLASKAPP_CLIENT_TIMEOUT`",
         client="stall_body", upstream_called=False, deadline="client_timeout"),
    Case("a client that never reads a long stream", _each(("sse", "openai_stream"), Dropped()),
         "a client that takes no byte for the timeout is dropped, and its upstream call ends",
         "`FLASKAPP_CLIENT_TIMEOUT`", mode="endless", client="never_read",
         settings=(("stream_timeout", 60), ("max_answer_bytes", 1_000_000_000))),
    Case("a chunked body past the size limit", _each(BODIES, Rejected(413, "invalid_request_error")),
         "a body is never cut to fit", "`FLASKAPP_MAX_CONTENT_LENGTH`", client="chunked_past_max",
         upstream_called=False),
    Case("JSON nested 1,000 deep", _each(BODIES, Rejected(400, "invalid_request_error")),
         "JSON nested past 100 levels is refused, never a `RecursionError`", "—", client="deep_json",
         upstream_called=False),
    Case("`HEAD /`", {"head": Headers(200)}, "no upstream call for a HEAD", "—", client="head",
         upstream_called=False),
]


def hostile_table() -> list[str]:
    """docs/faults.md's rows: the case, what each endpoint's client sees, the bound, the setting."""
    lines = ["| case | what the client sees | what holds it | setting |", "|---|---|---|---|"]
    for case in CASES:
        seen: dict[str, list[str]] = {}
        for name, expect in case.expect.items():
            seen.setdefault(expect.describe(), []).append(ENDPOINTS[name].name)
        cells = "; ".join(f"{', '.join(names)}: {what}" for what, names in seen.items())
        lines.append(f"| {case.name} | {cells} | {case.bound} | {case.setting} |")
    return lines
