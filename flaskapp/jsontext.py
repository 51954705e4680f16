"""Compact JSON text from an encoder made once.

`json.dumps(value, separators=(",", ":"))`, and a `JSONEncoder`'s `encode`, make a new C
encoder for every call, which on a one-token request's path (its upstream body, its log
line) costs about as much as the encoding itself. `encoder()` makes it once.
"""
from __future__ import annotations

from json.encoder import JSONEncoder, c_make_encoder, encode_basestring_ascii
from typing import Any, Callable


def encoder(default: Callable[[Any], Any] | None = None) -> Callable[[Any], str]:
    """`JSONEncoder(separators=(",", ":"), default=default, check_circular=False).encode`, its C
    encoder made once where CPython has one. Only for values that cannot contain themselves."""
    fallback = JSONEncoder(separators=(",", ":"), default=default, check_circular=False)
    if c_make_encoder is None:  # another interpreter: the standard way
        return fallback.encode
    # JSONEncoder.iterencode's own call, without the markers a cycle check needs.
    encode = c_make_encoder(None, fallback.default, encode_basestring_ascii, None, ":", ",", False, False, True)
    return lambda value: "".join(encode(value, 0))
