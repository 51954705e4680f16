"""`POST /v1/embeddings`: deterministic unit vectors, one per input.

A vector's components are drawn from a generator seeded by the input's text (or token
array), so the same input always gets the same vector and different inputs almost
orthogonal ones. `dimensions` keeps the first components, renormalised, as OpenAI's
shortened embeddings are. The answer comes after the time to first token (the delay
fault's when given); the cut and malformed faults apply to its body as to any blocking call.
"""
from __future__ import annotations

import base64
import hashlib
import math
import random
import struct
from typing import TYPE_CHECKING, Iterable

from .pacing import answer, fault_response, take_fault
from .wire import BadRequest, StartResponse, positive_int, read_json, required_model, words

if TYPE_CHECKING:
    from .app import Emulator

NATIVE_DIMENSIONS = {"text-embedding-3-large": 3072, "text-embedding-3-small": 1536,
                     "text-embedding-ada-002": 1536}
DEFAULT_DIMENSIONS = 1536
MAX_INPUTS = 2048


def _inputs(body: dict) -> list[str | list[int]]:
    value = body.get("input")
    if isinstance(value, str) and value:
        return [value]
    if isinstance(value, list) and value and len(value) <= MAX_INPUTS:
        if all(isinstance(t, int) and not isinstance(t, bool) for t in value):
            return [value]
        if all((isinstance(v, str) and v) or (isinstance(v, list) and v and all(
                isinstance(t, int) and not isinstance(t, bool) for t in v)) for v in value):
            return value
    raise BadRequest(f"'input' must be a non-empty string, an array of at most {MAX_INPUTS} "
                     "non-empty strings, or token arrays.", param="input")


def vector(seed: int, item: str | list[int], dimensions: int) -> list[float]:
    """The unit vector of one input: deterministic, its first `dimensions` components renormalised."""
    digest = hashlib.blake2b(repr((seed, item)).encode(), digest_size=16).digest()
    rng = random.Random(digest)
    values = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(math.fsum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def embeddings(emulator: "Emulator", environ: dict, start_response: StartResponse) -> Iterable[bytes]:
    body = read_json(environ)
    model = required_model(body)
    inputs = _inputs(body)
    native = NATIVE_DIMENSIONS.get(model, DEFAULT_DIMENSIONS)
    dimensions = positive_int(body, "dimensions", default=native, most=native)
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise BadRequest("'encoding_format' must be 'float' or 'base64'.", param="encoding_format")
    fault = take_fault(emulator, environ, streamed=False)
    if fault.status:
        return fault_response(start_response, fault)
    prompt_tokens = sum(len(i) if isinstance(i, list) else max(1, words(i)) for i in inputs)

    def build() -> dict:
        data = []
        for index, item in enumerate(inputs):
            values = vector(emulator.settings.seed, item, dimensions)
            embedding: object = values if encoding == "float" else \
                base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        return {"object": "list", "data": data, "model": model,
                "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}
    return answer(emulator, environ, start_response, fault, 0, build)
