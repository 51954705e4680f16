"""The emulator's structured answers: JSON values that satisfy the schema they were written for."""
from __future__ import annotations

import json

import pytest

from flaskapp.emulator.structured import fragments, json_for, value_for

ADDRESS = {"type": "object", "properties": {"street": {"type": "string"}, "zip": {"type": "string",
                                                                                   "minLength": 5,
                                                                                   "maxLength": 5}},
           "required": ["street", "zip"]}


@pytest.mark.parametrize("schema, check", [
    ({"type": "string"}, lambda v: isinstance(v, str) and v),
    ({"type": "integer", "minimum": 3, "maximum": 5}, lambda v: isinstance(v, int) and 3 <= v <= 5),
    ({"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 2}, lambda v: v == 1),
    ({"type": "number", "minimum": -1.5, "maximum": -1.0}, lambda v: isinstance(v, float) and -1.5 <= v <= -1.0),
    ({"type": "number", "multipleOf": 5}, lambda v: v % 5 == 0),
    ({"type": "boolean"}, lambda v: isinstance(v, bool)),
    ({"type": "null"}, lambda v: v is None),
    ({"enum": ["red", "green"]}, lambda v: v == "red"),
    ({"const": 42}, lambda v: v == 42),
    ({"type": ["null", "integer"]}, lambda v: isinstance(v, int)),
    ({"anyOf": [{"type": "null"}, {"type": "boolean"}]}, lambda v: isinstance(v, bool)),
    ({"type": "array", "items": {"type": "integer"}, "minItems": 4}, lambda v: len(v) == 4
     and all(isinstance(i, int) for i in v)),
    ({"type": "array", "items": {"type": "string"}, "maxItems": 1}, lambda v: len(v) == 1),
    ({"type": "string", "format": "date-time"}, lambda v: v.endswith("Z") and "T" in v),
    ({"type": "string", "format": "email"}, lambda v: "@" in v),
    ({"type": "string", "minLength": 80}, lambda v: len(v) >= 80),
    (ADDRESS, lambda v: set(v) == {"street", "zip"} and len(v["zip"]) == 5),
    ({"type": "object", "properties": {"home": {"$ref": "#/$defs/Address"}}, "required": ["home"],
      "$defs": {"Address": ADDRESS}}, lambda v: set(v["home"]) == {"street", "zip"}),
    ({"allOf": [{"properties": {"a": {"type": "integer"}}, "required": ["a"]},
                {"properties": {"b": {"type": "boolean"}}, "required": ["b"]}]},
     lambda v: isinstance(v["a"], int) and isinstance(v["b"], bool)),
    ({"type": "object", "required": ["undescribed"]}, lambda v: "undescribed" in v),
])
def test_values_satisfy_their_schema(schema, check):
    value = value_for(schema, 0, "request")
    assert check(value), value
    assert json.loads(json_for(schema, 0, "request")) == value


def test_a_recursive_schema_ends():
    tree = {"$ref": "#/$defs/Node", "$defs": {"Node": {"type": "object", "properties": {
        "name": {"type": "string"}, "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}}},
        "required": ["name"]}}}
    value = value_for(tree, 0, "request")
    assert isinstance(value["name"], str) and isinstance(value["children"], list)


def test_values_are_deterministic_and_vary_with_the_request():
    schema = {"type": "object", "properties": {"q": {"type": "string"}, "n": {"type": "integer"}}}
    assert value_for(schema, 0, "one") == value_for(schema, 0, "one")
    assert value_for(schema, 0, "one") != value_for(schema, 0, "two")


def test_fragments_rebuild_the_text():
    text = json.dumps({"city": "São Paulo", "days": [1, 2.5], "ok": True, "quote": 'a "b"\n'})
    pieces = fragments(text)
    assert "".join(pieces) == text and len(pieces) > 10
