"""Reading the upstream's chat-completion SSE bytes, and writing ours — without model objects.

Building the `openai` client's pydantic objects for every chunk is most of the CPU a
naive relay spends. Here a standard content chunk (one `data:` line, choice 0's delta
holding the content) is recognised by a few byte searches and its text kept as the JSON string literal it
arrived as (`b'" word"'`), which both outputs can use as is; anything unusual (escapes,
finish reasons, usage, errors, other choices, multi-line events) takes the slow, exact
path through `json.loads`.

A stream's content events differ only in their content: once `feed` has taken one, the
parser holds its frame (`lane`: the bytes before and after the literal), and a reader may
take a later event with that frame and a plain literal (`PLAIN_LITERAL`) as content
without feeding it (upstream/stream.py), as `_standard` would read it. OpenAI's events
also differ in their `obfuscation` (random padding, on by default): the frame then leaves
a gap for that one value, which may be any text with no escape, quote or line break.

Bytes are taken in whole events only (up to the last blank line, `\\n\\n` or `\\n\\r\\n`):
the rest waits, as a list of pieces so that a long event costs linear time, and past
`MAX_EVENT_BYTES` it is a malformed event.
"""
from __future__ import annotations

import functools
import json
import re
from typing import Callable

from .. import jsontext

MAX_EVENT_BYTES = 1024 * 1024  # an incomplete event longer than this is not a chat-completion chunk

_CONTENT = b'"content":"'
_NOT_FINISHED = b'"finish_reason":null'
_CHOICE_0 = b'"index":0,"delta":{'
_CHOICE_0_LENGTH = len(_CHOICE_0)
# Choice 0 finished, its delta empty, and the last choice (the array closes after it); OpenAI's
# own adds its null logprobs. A byte search: within a JSON string the quotes would be escaped.
_FINISHED = re.compile(rb'"index":0,"delta":\{\},(?:"logprobs":null,)?"finish_reason":"([a-z_]{1,40})"\}\]')

# A content literal a frame may hold: no escapes, no quote, no line break, not empty (b'""'
# is a role-only chunk's: no content). What `_standard` takes between the same bytes.
PLAIN_LITERAL = re.compile(rb'"[^"\\\n]+"')
_TEXT = rb'[^"\\\n]*'  # the inside of a string with no escapes: no quote, no line break
_PADDING = b',"obfuscation":"'


@functools.lru_cache(maxsize=64)
def _gap(middle: bytes) -> Callable[..., re.Match | None]:
    """The `fullmatch` of a padded frame's varying part: a plain literal (group 1), `middle`, and
    the padding's plain text. One per distinct `middle` (an upstream's events have one or two)."""
    return re.compile(b"(" + PLAIN_LITERAL.pattern + b")" + re.escape(middle) + _TEXT).fullmatch

_PLAIN_TEXT = re.compile(_TEXT)

# Nothing it writes can contain itself (request bodies parsed by json.loads, or made here).
compact_json = jsontext.encoder()
_decode = json.JSONDecoder().decode


def _load(payload: bytes) -> object:
    """`json.loads` of an event's UTF-8 payload, without its search for another encoding first
    (SSE is UTF-8). Bytes that are not UTF-8 raise UnicodeDecodeError, a ValueError, as there."""
    return _decode(payload.decode("utf-8", "surrogatepass"))


class MalformedChunk(ValueError):
    """The upstream sent an event that is not a chat-completion chunk (the message quotes none of it)."""


def _end_of_events(data: bytes) -> int:
    """Where the last complete event in `data` ends, or -1."""
    if data[-2:] == b"\n\n":
        return len(data)  # the common case: reads end where events do
    lf, crlf = data.rfind(b"\n\n"), data.rfind(b"\n\r\n")
    return max(lf + 2 if lf >= 0 else -1, crlf + 3 if crlf >= 0 else -1)


class ChunkParser:
    """Feed it the bytes as they arrive; it returns each completed chunk's content."""

    __slots__ = ("_pending", "_pending_bytes", "_tail", "taken", "finish_reason", "usage", "done", "error",
                 "chunks", "_frame", "lane")

    def __init__(self) -> None:
        self._pending: list[bytes] = []  # an incomplete event's pieces, joined once it completes
        self._pending_bytes = 0
        self._tail = b""  # the pending bytes' last two, for a boundary split across reads
        self.taken = b""  # the whole events the last `feed` took, as they came (for the /v1 relay)
        self.finish_reason: str | None = None
        self.usage: dict | None = None
        self.done = False  # `data: [DONE]` seen
        self.error: dict | None = None  # an error event the upstream sent mid-stream
        self.chunks = 0  # content chunks seen
        # A content event's bytes before its literal, its bytes after the literal (where it is
        # padded: after the padding), and, where it is padded, the match of the literal, the bytes
        # up to the padding and the padding (`_gap`; None: no padding).
        self._frame: tuple[bytes, bytes, Callable[..., re.Match | None] | None] | None = None
        self.lane: tuple[bytes, bytes, Callable[..., re.Match | None] | None] | None = None  # while nothing waits

    def feed(self, data: bytes) -> list[bytes]:
        """JSON string literals of choice 0's content in the events `data` completes, in order."""
        if self._pending or not data.endswith(b"\n\n"):  # not the common case: reads end where events do
            data = self._take(data)
        self.taken = data
        if data.find(b"\n") == len(data) - 2 and data.startswith(b"data:"):
            # The common case: one event of one `data:` line (its blank line changes no search).
            literal = _standard(data)
            if literal is None and not self._ending(data):
                literal = self._parse(data[5:-2])
            elif literal and self._frame is None:
                self._learn(data, literal)
            if literal:
                self.chunks += 1
                return [literal]
            return []
        found: list[bytes] = []
        for event in data.split(b"\n\n"):
            if event.find(b"\n") >= 0 or not event.startswith(b"data:"):
                if event:  # CRLF lines, several data lines, other fields, comments
                    self._fields(event, found)
                continue
            literal = _standard(event)
            if literal is None and not self._ending(event):
                literal = self._parse(event[5:])
            if literal:
                found.append(literal)
        self.chunks += len(found)
        return found

    def finish(self) -> bytes:
        """At the end of the stream: an unterminated last event whose lines are whole, as if ended."""
        data = b"".join(self._pending)
        self._pending, self._pending_bytes, self._tail, self.lane = [], 0, b"", self._frame
        return data + b"\n" if data[-1:] == b"\n" else b""

    def _take(self, data: bytes) -> bytes:
        """The whole events completed by `data`, with what was pending; the rest waits."""
        if self._pending:
            if _end_of_events(self._tail + data[:2]) < 0 and _end_of_events(data) < 0:
                self._hold(data)
                return b""
            self._pending.append(data)
            data = b"".join(self._pending)
            self._pending, self._pending_bytes, self._tail, self.lane = [], 0, b"", self._frame
        end = _end_of_events(data)
        if end == len(data):
            return data
        self._hold(data[end:] if end > 0 else data)
        return data[:end] if end > 0 else b""

    def _hold(self, data: bytes) -> None:
        self._pending_bytes += len(data)
        if self._pending_bytes > MAX_EVENT_BYTES:
            raise MalformedChunk(f"an event longer than {MAX_EVENT_BYTES} bytes")
        self._pending.append(data)
        self._tail = (self._tail + data)[-2:]
        self.lane = None

    def _learn(self, event: bytes, literal: bytes) -> None:
        """The frame of a content event `_standard` read: where it found the literal, found again,
        and the gap for the padding where the event has some."""
        start = event.find(_CONTENT, event.find(_CHOICE_0)) + 10
        if not (event.startswith(literal, start) and PLAIN_LITERAL.fullmatch(literal)):
            return
        after = event[start + len(literal):]
        gap = after.find(_PADDING)
        if gap >= 0:
            gap += len(_PADDING)
            close = after.find(b'"', gap)
            if close >= 0 and _PLAIN_TEXT.fullmatch(after, gap, close):
                self._frame = self.lane = (event[:start], after[close:], _gap(after[:gap]))
                return
        self._frame = self.lane = (event[:start], after, None)

    def _fields(self, event: bytes, found: list[bytes]) -> None:
        """Events the common case does not take: their data lines joined by newlines, as SSE says."""
        values = []
        for line in event.split(b"\n"):
            line = line.rstrip(b"\r")
            if line.startswith(b"data:"):
                values.append(line)
            elif not line and values:  # a blank line: CRLF events reach here undivided
                self._dispatch(values, found)
                values = []
        if values:
            self._dispatch(values, found)

    def _dispatch(self, lines: list[bytes], found: list[bytes]) -> None:
        literal = _standard(lines[0]) if len(lines) == 1 else None
        if literal is None:
            literal = self._parse(b"\n".join([line[6:] if line[5:6] == b" " else line[5:] for line in lines]))
        if literal:
            found.append(literal)

    def _ending(self, line: bytes) -> bool:
        """Whether `line` was `[DONE]`, or choice 0's finish reason (a word) with an empty delta,
        the last choice, and no usage or error beside it: read here by byte searches, as every
        stream ends with them. False: not one of those (or not certainly), for `_parse`."""
        if line.startswith(b"data: [DONE]") and not line[12:].strip():
            self.done = True
            return True
        finished = _FINISHED.search(line)
        if (finished is None or line.find(b'"usage":{') >= 0 or line.find(b'"error"') >= 0
                or not line.rstrip().endswith(b"}")):
            return False
        self.finish_reason = finished.group(1).decode()
        return True

    def _parse(self, payload: bytes) -> bytes | None:
        payload = payload.strip()
        if payload == b"[DONE]":
            self.done = True
            return None
        try:
            chunk = _load(payload)
        except (ValueError, RecursionError):
            raise MalformedChunk("not JSON, or nested too deep") from None
        if not isinstance(chunk, dict):
            raise MalformedChunk("not a JSON object")
        if "error" in chunk:
            error = chunk["error"]
            self.error = error if isinstance(error, dict) else {"message": str(error)}
            return None
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            raise MalformedChunk("no 'choices' list")
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # with n > 1, `/stream` reads choice 0 only
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])
            delta = choice.get("delta") or {}
            content = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(content, str) and content:
                return json.dumps(content).encode()
        return None

    @property
    def complete(self) -> bool:
        """Whether the upstream said it had finished (a truncated stream never is)."""
        return self.error is None and (self.done or self.finish_reason is not None)


def _standard(line: bytes) -> bytes | None:
    """The content literal of a standard chunk's `data:` line (b"" for none), found by byte searches:
    choice 0 first, its delta holding content, not finished. None: not one, parse it."""
    # (`find` rather than `in`: on CPython 3.11 `in` on bytes costs twice as much.)
    choice = line.find(_CHOICE_0)
    if choice < 0:
        return None
    start = choice + _CHOICE_0_LENGTH
    if not line.startswith(_CONTENT, start):  # the usual delta holds content alone, and first
        start = line.find(_CONTENT, start)
        if start < 0 or line.find(b"}", choice, start) >= 0:
            return None
    start += 10  # the literal's opening quote
    end = line.find(b'"', start + 1)
    if end < 0 or line.find(b"\\", start, end) >= 0:
        return None
    # Not finished: the marker lies outside the literal, which holds no quote; usually after it.
    if line.find(_NOT_FINISHED, end) < 0 and line.find(_NOT_FINISHED, 0, start) <= 0:
        return None
    return line[start:end + 1] if end > start + 1 else b""  # "": a role-only chunk


def text_of(literal: bytes) -> bytes:
    """The UTF-8 text of one content literal."""
    if b"\\" not in literal:
        return literal[1:-1]  # a JSON string without escapes is its own UTF-8 text
    return json.loads(literal).encode("utf-8", "replace")


def sse_event(data: object, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + compact_json(data).encode() + b"\n\n"


class CompletionParser(ChunkParser):
    """Legacy `/completions` chunks: complete only at `data: [DONE]`, as the protocol says."""

    @property
    def complete(self) -> bool:
        return self.error is None and self.done

    def _parse(self, payload: bytes) -> bytes | None:
        literal = super()._parse(payload)
        if literal is None and not self.done and self.error is None:
            self.chunks += payload.find(b'"text":"') >= 0 and payload.find(b'"text":""') < 0
        return literal


# Responses events that end a stream: whole, or cut short by the model's own limits.
_RESPONSE_ENDS = frozenset(("response.completed", "response.incomplete"))
_RESPONSE_ERRORS = frozenset(("error", "response.failed"))


class ResponsesParser(ChunkParser):
    """Responses API events (`event: <type>` and typed JSON data), checked whole as they pass.

    Complete only at `response.completed` or `response.incomplete`; an `error` or
    `response.failed` event is the upstream's error (its text never goes out).
    """

    def __init__(self) -> None:
        super().__init__()
        self.sequence = -1  # the last event's sequence_number

    @property
    def complete(self) -> bool:
        return self.error is None and self.done

    def _ending(self, line: bytes) -> bool:
        return False  # no chat-completion shapes here: every event is parsed whole

    def _parse(self, payload: bytes) -> bytes | None:
        try:
            event = _load(payload)
        except (ValueError, RecursionError):
            raise MalformedChunk("not JSON, or nested too deep") from None
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            raise MalformedChunk("not a typed Responses event")
        kind = event["type"]
        if type(event.get("sequence_number")) is int:
            self.sequence = event["sequence_number"]  # our own error event, if one comes, follows it
        if kind in _RESPONSE_ERRORS:
            response = event.get("response")
            error = response.get("error") if isinstance(response, dict) else None
            code = (error if isinstance(error, dict) else event).get("code")
            self.error = {"code": code if isinstance(code, str) else None}  # a word at most goes on
            return None
        if kind in _RESPONSE_ENDS:
            self.done = True
            self.finish_reason = kind[9:]
            response = event.get("response")
            if isinstance(response, dict) and isinstance(response.get("usage"), dict):
                usage = response["usage"]  # the record counts chat's names
                self.usage = {**usage, "prompt_tokens": usage.get("input_tokens"),
                              "completion_tokens": usage.get("output_tokens")}
        elif kind == "response.output_text.delta" and isinstance(event.get("delta"), str) and event["delta"]:
            return json.dumps(event["delta"]).encode()
        return None
