"""The encoder made once writes what json.dumps writes."""
import json

import pytest

from flaskapp.jsontext import encoder


@pytest.mark.parametrize("value", [
    "text", 1, 1.5, 0.0004, 10**30, None, True, float("nan"), float("-inf"), [], {},
    [1, {"a": "é\n\u2028😀", "b": [[[]]]}], {3: "int key", 1.5: "float key", None: "null key"},
    {"model": "gpt-4", "messages": [{"role": "user", "content": 'say "hi"\\'}], "max_tokens": 1, "stream": True},
])
def test_the_text_is_json_dumps_compact(value):
    assert encoder()(value) == json.dumps(value, separators=(",", ":"))
    assert encoder(default=str)(value) == json.dumps(value, separators=(",", ":"), default=str)


def test_a_value_json_cannot_write_is_refused_or_given_to_default():
    with pytest.raises(TypeError):
        encoder()({"raw": b"bytes"})
    assert encoder(default=str)({"raw": b"bytes"}) == '{"raw":"b\'bytes\'"}'
