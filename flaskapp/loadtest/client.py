"""The concurrent HTTP driver: C requests in flight at once, each timed from send to last byte.

Why raw asyncio protocols and a minimal HTTP/1.1 reader rather than aiohttp or httpx:
the driver must hold 500-2,000 live streams on one core without becoming the thing
measured. A `Protocol.data_received` callback is stamped with the clock the moment
the event loop hands it bytes, and parses chunked framing in a few bytes operations,
with no per-chunk `await`, task switch or header object. aiohttp's reader would add
a coroutine round-trip per chunk and hide whether the final zero-length chunk came
(which is how a text stream that failed mid-way shows: "truncated"). The reader only
has to understand what our own servers send: HTTP/1.1 with Content-Length, chunked
transfer or read-until-close; one connection per request (`Connection: close`), as
independent users would. uvloop is used when installed: the same callbacks, a faster loop.
No gevent here, so nothing needs monkey-patching and ssl imports are harmless.

What is recorded per request, and how: `exchange.py`.
"""
from __future__ import annotations

import asyncio
import ssl
import time

from .exchange import STREAMING_KINDS, Exchange, Record
from .target import KINDS, Target

__all__ = ["KINDS", "STREAMING_KINDS", "Record", "Target", "fetch"]


async def fetch(target: Target, kind: str, run_start: float, timeout: float,
                request: bytes | None = None, records: list[Record] | None = None,
                tls: ssl.SSLContext | None = None) -> Record:
    """Make one request and return its record; never raises except when cancelled.

    The record is appended to `records` (when given) as the request starts, so a request
    cancelled by the end of a run is still counted, as `cancelled`. `tls`: the context of
    an https:// target, made once per run (`target.tls_context()`), not once per request.
    """
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    record = Record(kind=kind, start=t0 - run_start)
    if records is not None:
        records.append(record)
    done = loop.create_future()
    payload = request or target.request_bytes(kind)
    if tls is None and target.https:
        tls = target.tls_context()
    host, port = target.address
    secure = {"ssl": tls, "server_hostname": host} if tls is not None else {}
    transport = None
    try:
        async with asyncio.timeout(timeout):
            transport, _ = await loop.create_connection(
                lambda: Exchange(record, payload, t0, done), host, port, **secure)
            await done
    except TimeoutError:
        record.error, record.total = "timeout", time.perf_counter() - t0
    except asyncio.CancelledError:
        record.error, record.total = "cancelled", time.perf_counter() - t0
        raise
    except (OSError, ssl.SSLError) as exc:  # a certificate refused is a connect error too
        record.error = "connect" if transport is None else "reset"
        record.detail, record.total = str(exc)[:200], time.perf_counter() - t0
    finally:
        if transport is not None and not transport.is_closing():
            transport.abort()
    return record
