"""Reading the upstream's chat-completion SSE bytes, and writing ours — without model objects.

Building the `openai` client's pydantic objects for every chunk is most of the CPU a
naive relay spends. Here a standard content chunk is recognised by a few byte searches
and its text kept as the JSON string literal it arrived as (`b'" word"'`), which both
outputs can use as is; anything unusual (escapes, finish reasons, usage, errors) takes
the slow, exact path through `json.loads`.
"""
from __future__ import annotations

import json

_DELTA = b'"delta":{'
_CONTENT = b'"content":"'
_NOT_FINISHED = b'"finish_reason":null'


class MalformedChunk(ValueError):
    """The upstream sent an event that is not a chat-completion chunk."""


class ChunkParser:
    """Feed it the bytes as they arrive; it returns each completed chunk's content."""

    __slots__ = ("_pending", "finish_reason", "usage", "done", "error", "chunks")

    def __init__(self) -> None:
        self._pending = b""
        self.finish_reason: str | None = None
        self.usage: dict | None = None
        self.done = False  # `data: [DONE]` seen
        self.error: dict | None = None  # an error event the upstream sent mid-stream
        self.chunks = 0  # content chunks seen

    def feed(self, data: bytes) -> list[bytes]:
        """JSON string literals of the content completed by `data`, in order."""
        if self._pending:
            data, self._pending = self._pending + data, b""
        if data.find(b"\n") == len(data) - 2 and data[-1:] == b"\n":
            lines = [data[:-2]]  # the common case: one read, one event of one line
        else:
            lines = data.split(b"\n")
            self._pending = lines.pop()
        found = []
        for line in lines:
            if not line.startswith(b"data:"):
                continue  # blank separators, `: comments`, `event:` and `id:` fields
            start = line.find(_CONTENT, line.find(_DELTA))
            if start > 0 and _NOT_FINISHED in line:
                start += 10
                end = line.find(b'"', start + 1)
                literal = line[start:end + 1]
                if end > 0 and b"\\" not in literal:
                    if end > start + 1:  # not the empty "" of a role-only chunk
                        found.append(literal)
                    continue
            literal = self._parse(line)
            if literal:
                found.append(literal)
        self.chunks += len(found)
        return found

    def _parse(self, line: bytes) -> bytes | None:
        payload = line[5:].strip()
        if payload == b"[DONE]":
            self.done = True
            return None
        try:
            chunk = json.loads(payload)
        except ValueError:
            raise MalformedChunk(f"not JSON: {payload[:80]!r}") from None
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
                continue
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


def text_of(literal: bytes) -> bytes:
    """The UTF-8 text of one content literal."""
    if b"\\" not in literal:
        return literal[1:-1]  # a JSON string without escapes is its own UTF-8 text
    return json.loads(literal).encode("utf-8", "replace")


def sse_event(data: object, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"
