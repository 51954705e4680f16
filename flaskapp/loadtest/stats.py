"""Statistics of a load run as small pure functions, named as LLM benchmarks (llmperf) name them.

    ttft_s                        time to first text: first body byte, or first SSE event with text
    inter_chunk_latency_s         time between successive reads that carried text, over all requests
    end_to_end_latency_s          send to last byte
    request_output_throughput     chunks per second of one request (chunks / end-to-end latency)
    output_throughput_chunks_per_s  all chunks received / wall time of the run
    requests_per_s                completed requests / wall time of the run

Latencies are over successful requests only; errors are counted by kind. A chunk is what
the server flushed: an HTTP chunk of a text stream, an SSE event carrying text, or the
whole body of a blocking response. Records are plain dicts or objects with the fields of
`client.Record`.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Any, Iterable, Sequence

PERCENTILES = (50, 90, 99)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation between ranks, as numpy's default; None if empty."""
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0 and 100, not {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def distribution(values: Sequence[float]) -> dict[str, float | None]:
    """p50, p90, p99, max and mean of `values` (all None when there are none)."""
    summary: dict[str, float | None] = {f"p{q}": percentile(values, q) for q in PERCENTILES}
    summary["max"] = max(values) if values else None
    summary["mean"] = sum(values) / len(values) if values else None
    return summary


def _get(record: Any, name: str) -> Any:
    return record[name] if isinstance(record, dict) else getattr(record, name)


def errors_by_kind(records: Iterable[Any]) -> dict[str, int]:
    """How many requests ended in each error kind, most frequent first."""
    counts = Counter(_get(r, "error") for r in records if _get(r, "error"))
    return dict(counts.most_common())


def summarize(records: Sequence[Any], wall_time: float) -> dict[str, Any]:
    """One kind's run: counts, latency distributions and throughputs."""
    ok = [r for r in records if not _get(r, "error")]
    chunks = sum(_get(r, "chunks") for r in ok)
    throughputs = [_get(r, "chunks") / _get(r, "total") for r in ok if _get(r, "total")]
    return {
        "requests": len(records),
        "completed": len(ok),
        "errors": len(records) - len(ok),
        "errors_by_kind": errors_by_kind(records),
        "wall_time_s": wall_time,
        "ttft_s": distribution([_get(r, "ttft") for r in ok if _get(r, "ttft") is not None]),
        "inter_chunk_latency_s": distribution([g for r in ok for g in _get(r, "gaps")]),
        "end_to_end_latency_s": distribution([_get(r, "total") for r in ok if _get(r, "total") is not None]),
        "request_output_throughput_chunks_per_s": distribution(throughputs),
        "requests_per_s": len(ok) / wall_time if wall_time > 0 else 0.0,
        "output_throughput_chunks_per_s": chunks / wall_time if wall_time > 0 else 0.0,
        "chunks": chunks,
        "bytes": sum(_get(r, "bytes") for r in ok),
    }


def summarize_by_kind(records: Sequence[Any], wall_time: float) -> dict[str, dict[str, Any]]:
    """`summarize` for each kind present, in order of first appearance."""
    kinds = list(dict.fromkeys(_get(r, "kind") for r in records))
    return {kind: summarize([r for r in records if _get(r, "kind") == kind], wall_time) for kind in kinds}


def cpu_seconds(stat_line: str, clock_ticks: int) -> float:
    """User plus system CPU seconds from a line of /proc/<pid>/stat."""
    # The command name (field 2) may hold spaces and parentheses; fields resume after the last ')'.
    fields = stat_line[stat_line.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / clock_ticks


def efficiency(cpu: float | None, completed: int, upstream_tokens: int) -> dict[str, float | None]:
    """Server cost of a run: CPU milliseconds per request and relayed upstream tokens per CPU-second."""
    if not cpu or cpu <= 0:
        return {"cpu_ms_per_request": None, "tokens_per_cpu_s": None}
    return {"cpu_ms_per_request": 1000 * cpu / completed if completed else None,
            "tokens_per_cpu_s": upstream_tokens / cpu}
