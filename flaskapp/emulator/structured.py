"""Structured answers: JSON that satisfies a JSON Schema, for tool calls and JSON mode.

Values are deterministic (the same schema and request, the same JSON) and of the type
the schema asks: every property it lists (so every required one), the first `enum` or
`const` value, `anyOf`/`oneOf`'s first branch, local `$ref`s (`#/$defs/...`, as pydantic
writes them), formats a parser checks (date, date-time, email, uri, uuid), and the
bounds of numbers, strings and arrays. The JSON is streamed in word-sized fragments.
"""
from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from .text import token_pool

_DEPTH = 6  # below this, only required properties: a recursive schema still ends
_FORMATS = {"date": "2025-01-01", "date-time": "2025-01-01T12:00:00Z", "time": "12:00:00",
            "email": "user@example.com", "uri": "https://example.com/", "url": "https://example.com/",
            "uuid": "00000000-0000-4000-8000-000000000000", "hostname": "example.com",
            "ipv4": "192.0.2.1"}
_FRAGMENT = re.compile(r"\w+|\W+")
# JSON mode without a schema (`json_object`): an object with some prose in it.
JSON_OBJECT = {"type": "object", "properties": {"answer": {"type": "string", "minLength": 60}},
               "required": ["answer"]}


def fragments(text: str) -> list[str]:
    """Word and punctuation runs, as a tokenizer would split JSON; their concatenation is `text`."""
    return _FRAGMENT.findall(text)


class _Writer:
    def __init__(self, seed: int, key: object, root: dict) -> None:
        self.tokens = token_pool(seed)[0]
        self.root = root
        digest = hashlib.blake2b(repr((seed, key)).encode(), digest_size=8).digest()
        self.state = int.from_bytes(digest, "big")

    def _next(self, bound: int) -> int:
        self.state = (self.state * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        return (self.state >> 33) % max(bound, 1)

    def phrase(self, length: int) -> str:
        start = self._next(len(self.tokens))
        words = (self.tokens[(start + i) % len(self.tokens)].strip(" \n.,") for i in range(length))
        return " ".join(word for word in words if word) or "text"

    def resolve(self, schema: Any) -> dict:
        seen = 0
        while isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and seen < 32:
            target: Any = self.root
            for part in schema["$ref"].removeprefix("#").strip("/").split("/"):
                target = target.get(part.replace("~1", "/").replace("~0", "~"), {}) \
                    if isinstance(target, dict) and part else target
            schema, seen = target, seen + 1
        return schema if isinstance(schema, dict) else {}

    def value(self, schema: Any, depth: int = 0) -> Any:
        schema = self.resolve(schema)
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return schema["enum"][0]
        for key in ("anyOf", "oneOf"):
            branches = [b for b in schema.get(key) or [] if self.resolve(b).get("type") != "null"]
            if branches:
                return self.value(branches[0], depth)
        if isinstance(schema.get("allOf"), list):
            merged: dict = {}
            for part in schema["allOf"]:
                part = self.resolve(part)
                merged = {**merged, **part, "properties": {**merged.get("properties", {}),
                                                           **part.get("properties", {})},
                          "required": [*merged.get("required", []), *part.get("required", [])]}
            return self.value({k: v for k, v in {**schema, **merged}.items() if k != "allOf"}, depth)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind is None:
            kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
        return getattr(self, f"_{kind}", self._string)(schema, depth)

    def _object(self, schema: dict, depth: int) -> dict:
        properties = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        required = [name for name in schema.get("required") or [] if isinstance(name, str)]
        names = list(properties) if depth < _DEPTH else []
        names += [name for name in required if name not in names]
        return {name: self.value(properties.get(name, {}), depth + 1) for name in names}

    def _array(self, schema: dict, depth: int) -> list:
        least = schema.get("minItems") if isinstance(schema.get("minItems"), int) else 0
        most = schema.get("maxItems") if isinstance(schema.get("maxItems"), int) else None
        count = max(least, 0 if depth >= _DEPTH else 2)
        if most is not None:
            count = min(count, most)
        if isinstance(schema.get("prefixItems"), list):
            head = [self.value(item, depth + 1) for item in schema["prefixItems"]]
            return head + [self.value(schema.get("items") or {}, depth + 1)
                           for _ in range(max(0, count - len(head)))]
        return [self.value(schema.get("items") or {}, depth + 1) for _ in range(count)]

    def _string(self, schema: dict, depth: int) -> str:
        if schema.get("format") in _FORMATS:
            return _FORMATS[schema["format"]]
        text = self.phrase(3 + self._next(4))
        least, most = schema.get("minLength"), schema.get("maxLength")
        if isinstance(least, int):
            while len(text) < least:
                text += " " + self.phrase(4)
        if isinstance(most, int):
            text = text[:most]
        return text

    def _number(self, schema: dict, depth: int, integer: bool = False) -> float | int:
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        high = schema.get("maximum", schema.get("exclusiveMaximum"))
        low = low if isinstance(low, (int, float)) and not isinstance(low, bool) else None
        high = high if isinstance(high, (int, float)) and not isinstance(high, bool) else None
        base = low if low is not None else (high - 100 if high is not None else 0)
        value = base + (1 if "exclusiveMinimum" in schema else 0) + self._next(100) + (0 if integer else 0.5)
        if high is not None and value > high:
            value = (base + high) / 2 if low is not None else high - (1 if "exclusiveMaximum" in schema else 0)
        if isinstance(schema.get("multipleOf"), (int, float)) and schema["multipleOf"] > 0:
            value = (value // schema["multipleOf"]) * schema["multipleOf"]
        return int(value) if integer else float(value)

    def _integer(self, schema: dict, depth: int) -> int:
        return int(self._number(schema, depth, integer=True))

    def _boolean(self, schema: dict, depth: int) -> bool:
        return self._next(2) == 0

    def _null(self, schema: dict, depth: int) -> None:
        return None


def value_for(schema: Any, seed: int, key: object) -> Any:
    """A deterministic value satisfying `schema`; `key` (the request) varies it between prompts."""
    root = schema if isinstance(schema, dict) else {}
    return _Writer(seed, key, root).value(root)


def json_for(schema: Any, seed: int, key: object) -> str:
    return json.dumps(value_for(schema, seed, key))
