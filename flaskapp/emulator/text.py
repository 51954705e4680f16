"""Deterministic, prose-like answers for the emulator.

A pool of tokens is written once per seed from a small grammar; each request reads
a window of it starting at an offset derived from the request's messages, so the
same request gets the same answer from the streaming and the blocking call, and
different prompts get different (but equally readable) answers.
"""
from __future__ import annotations

import hashlib
import json
import random
from functools import lru_cache

_SUBJECTS = [
    "The streaming response", "A blocking call", "The user", "Each token", "The model",
    "A gevent worker", "The first byte", "The load balancer", "Every request", "The answer",
    "A patient reader", "The server", "Latency", "The experiment", "A long prompt",
]
_VERBS = [
    "arrives", "waits for", "reaches", "improves", "shapes", "measures", "hides",
    "reveals", "carries", "delays", "shortens", "feeds", "follows", "outpaces", "frames",
]
_OBJECTS = [
    "the perceived speed of the page", "every open connection", "the final paragraph",
    "a steady flow of words", "the person behind the screen", "the whole response",
    "the time to first token", "a thousand concurrent streams", "the next sentence",
    "the cost of waiting", "an idle socket", "the end of the answer", "a clear signal of progress",
]
_CLAUSES = [
    "while the rest is still being written", "long before the last word is ready",
    "as soon as the model produces it", "without holding a thread for every client",
    "when the network is slow", "because nobody likes a blank screen",
    "even under heavy load", "one small piece at a time",
]
_CONNECTORS = ["Meanwhile,", "In practice,", "As a result,", "Moreover,", "Still,", "In other words,"]

POOL_SIZE = 8192


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS)]
    if rng.random() < 0.5:
        words.append(rng.choice(_CLAUSES))
    text = " ".join(words) + "."
    if rng.random() < 0.3:
        first, rest = text.split(" ", 1)
        text = f"{rng.choice(_CONNECTORS)} {first.lower() if first != 'A' else 'a'} {rest}"
    return text


@lru_cache(maxsize=8)
def token_pool(seed: int) -> tuple[list[str], list[bytes]]:
    """Tokens (words with their leading space, like a BPE tokenizer's) and their JSON encodings."""
    rng = random.Random(seed)
    tokens: list[str] = []
    sentences_in_paragraph = 0
    while len(tokens) < POOL_SIZE:
        words = _sentence(rng).split(" ")
        if tokens and sentences_in_paragraph >= rng.randint(3, 6):
            words[0] = "\n\n" + words[0]
            sentences_in_paragraph = 0
        elif tokens:
            words[0] = " " + words[0]
        tokens.append(words[0])
        tokens.extend(" " + word for word in words[1:])
        sentences_in_paragraph += 1
    del tokens[POOL_SIZE:]
    return tokens, [json.dumps(token).encode() for token in tokens]


def answer_offset(seed: int, messages: object) -> int:
    """Where in the pool the answer to these messages starts (stable across processes)."""
    digest = hashlib.blake2b(repr((seed, messages)).encode(), digest_size=8).digest()
    offset = int.from_bytes(digest, "big") % POOL_SIZE
    tokens, _ = token_pool(seed)
    # Start at a sentence boundary so every answer begins like prose.
    while offset and not tokens[offset - 1].endswith("."):
        offset -= 1
    return offset


def answer_tokens(seed: int, messages: object, count: int) -> list[int]:
    """Indices into the pool of the `count` tokens answering these messages."""
    start = answer_offset(seed, messages)
    return [(start + i) % POOL_SIZE for i in range(count)]


def prose_pieces(seed: int, messages: object, count: int) -> list[bytes]:
    """The JSON string literals of a prose answer's `count` tokens; the first without its leading space."""
    tokens, token_json = token_pool(seed)
    indices = answer_tokens(seed, messages, count)
    pieces = [token_json[i] for i in indices]
    if pieces:  # the answer starts with its word, not the tokenizer's space
        pieces[0] = json.dumps(tokens[indices[0]].lstrip()).encode()
    return pieces


def answer_text(seed: int, messages: object, count: int) -> str:
    tokens, _ = token_pool(seed)
    return "".join(tokens[i] for i in answer_tokens(seed, messages, count)).lstrip()
