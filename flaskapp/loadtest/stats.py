"""Statistics of a load run as small pure functions, in the field's terms: tokens, not chunks.

Per request (a `client.Record`, or its dict from a JSON file):

    ttft_s                       send to the first token (blocking kinds: to the whole body)
    inter_token_latency_s        (last token - first token) / (output tokens - 1): the pace once
                                 started, as guidellm and genai-perf define it
    time_per_output_token_s      (last token - send) / output tokens, first token included
    end_to_end_latency_s         send to the last byte
    number_output_tokens         from the server's `usage` when it reports one, counted otherwise
                                 (record.token_source says which: usage, words or chunks)
    request_output_throughput_token_per_s   output tokens / end-to-end latency

Over a run: the distribution of each over requests (p50, p90, p95, p99, min, max, mean,
stddev; guidellm weights its inter-token figures by tokens instead, which moves the mean
only when answers differ in length),
`inter_chunk_latency_s` (every gap between reads carrying text: what a reader sees),
requests_per_s and output_throughput_token_per_s (completed requests' tokens / wall time).
Latencies are over successful requests only; errors are counted by kind.

`field_names` gives llmperf's and guidellm's names for each per-request figure, so the
JSON records can be set beside theirs.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Any, Iterable, Sequence

PERCENTILES = (50, 90, 95, 99)


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


def stddev(values: Sequence[float]) -> float | None:
    """Population standard deviation (as numpy's default and guidellm's); None if empty."""
    if not values:
        return None
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def distribution(values: Sequence[float]) -> dict[str, float | None]:
    """p50, p90, p95, p99, min, max, mean and stddev of `values` (all None when there are none)."""
    summary: dict[str, float | None] = {f"p{q}": percentile(values, q) for q in PERCENTILES}
    summary["min"] = min(values) if values else None
    summary["max"] = max(values) if values else None
    summary["mean"] = sum(values) / len(values) if values else None
    summary["stddev"] = stddev(values)
    return summary


def _get(record: Any, name: str, default: Any = None) -> Any:
    if isinstance(record, dict):
        return record.get(name, default)
    return getattr(record, name, default)


def output_tokens(record: Any) -> int | None:
    """The request's output tokens: the server's usage, else counted words or chunks."""
    tokens = _get(record, "tokens")
    return tokens if tokens is not None else _get(record, "chunks")


def request_metrics(record: Any) -> dict[str, float | None]:
    """The per-request token figures of one record (None where a figure does not apply)."""
    ttft, total = _get(record, "ttft"), _get(record, "total")
    last = _get(record, "last_token", total if ttft is not None and ttft == total else None)
    tokens = output_tokens(record)
    itl = tpot = throughput = None
    if tokens and ttft is not None and last is not None and tokens > 1 and last > ttft:
        itl = (last - ttft) / (tokens - 1)
    if tokens and last is not None:
        tpot = last / tokens
    if tokens is not None and total:
        throughput = tokens / total
    return {"ttft_s": ttft, "inter_token_latency_s": itl, "time_per_output_token_s": tpot,
            "end_to_end_latency_s": total, "number_output_tokens": tokens,
            "request_output_throughput_token_per_s": throughput}


def field_names() -> dict[str, dict[str, str]]:
    """Our per-request figure -> its name in llmperf (seconds) and guidellm (milliseconds)."""
    return {
        "ttft_s": {"llmperf": "ttft_s", "guidellm": "time_to_first_token_ms"},
        "inter_token_latency_s": {"llmperf": "inter_token_latency_s", "guidellm": "inter_token_latency_ms"},
        "time_per_output_token_s": {"guidellm": "time_per_output_token_ms"},
        "end_to_end_latency_s": {"llmperf": "end_to_end_latency_s", "guidellm": "request_latency"},
        "number_output_tokens": {"llmperf": "number_output_tokens", "guidellm": "output_tokens"},
        "request_output_throughput_token_per_s": {"llmperf": "request_output_throughput_token_per_s",
                                                  "guidellm": "output_tokens_per_second"},
    }


def field_record(record: Any) -> dict[str, Any]:
    """One request's figures under our names and as llmperf and guidellm write them (guidellm's in ms)."""
    metrics = request_metrics(record)
    out: dict[str, Any] = {}
    for ours, names in field_names().items():
        value = metrics[ours]
        out[ours] = value
        if "llmperf" in names:
            out[names["llmperf"]] = value
        if "guidellm" in names:
            ms = names["guidellm"].endswith("_ms")
            out[names["guidellm"]] = value * 1000 if ms and value is not None else value
    out["error_code"] = _get(record, "status") if _get(record, "error") else None
    out["error_msg"] = _get(record, "error")
    return out


def errors_by_kind(records: Iterable[Any]) -> dict[str, int]:
    """How many requests ended in each error kind, most frequent first."""
    counts = Counter(_get(r, "error") for r in records if _get(r, "error"))
    return dict(counts.most_common())


def tally(records: Sequence[Any], planned: int | None = None) -> dict[str, int | None]:
    """Where the requests of a run stand: the one count the progress line and the tables both show.

    completed: ended without error; failed: ended with one (`cancelled` included);
    in_flight: started, not ended; not_started: planned but never sent.
    """
    ended = [r for r in records if _get(r, "total") is not None or _get(r, "error")]
    failed = sum(1 for r in ended if _get(r, "error"))
    return {"planned": planned, "started": len(records), "completed": len(ended) - failed, "failed": failed,
            "in_flight": len(records) - len(ended),
            "not_started": max(0, planned - len(records)) if planned is not None else None}


def token_sources(records: Iterable[Any]) -> dict[str, int]:
    """How the output tokens of the requests were known: usage, words or chunks."""
    return dict(Counter(_get(r, "token_source") or "chunks" for r in records).most_common())


def summarize(records: Sequence[Any], wall_time: float, planned: int | None = None) -> dict[str, Any]:
    """One kind's run: counts, the per-request figures' distributions and the run's throughputs."""
    ok = [r for r in records if not _get(r, "error")]
    metrics = [request_metrics(r) for r in ok]

    def over(name: str) -> dict[str, float | None]:
        return distribution([m[name] for m in metrics if m[name] is not None])

    tokens = sum(m["number_output_tokens"] or 0 for m in metrics)
    chunks = sum(_get(r, "chunks") or 0 for r in ok)
    rate = (lambda amount: amount / wall_time if wall_time > 0 else 0.0)
    return {
        "requests": len(records),
        "planned": planned if planned is not None else len(records),
        "completed": len(ok),
        "errors": len(records) - len(ok),
        "errors_by_kind": errors_by_kind(records),
        "wall_time_s": wall_time,
        **{name: over(name) for name in ("ttft_s", "inter_token_latency_s", "time_per_output_token_s",
                                          "end_to_end_latency_s", "number_output_tokens",
                                          "request_output_throughput_token_per_s")},
        "inter_chunk_latency_s": distribution([g for r in ok for g in _get(r, "gaps") or ()]),
        # Every request that saw its first token, however it ended (a stream cut by a time bound too).
        "ttft_all_s": distribution([_get(r, "ttft") for r in records if _get(r, "ttft") is not None]),
        "first_tokens": sum(1 for r in records if _get(r, "ttft") is not None),
        "requests_per_s": rate(len(ok)),
        "output_throughput_token_per_s": rate(tokens),
        "output_throughput_chunks_per_s": rate(chunks),
        "output_tokens": tokens,
        "token_source": token_sources(ok),
        "chunks": chunks,
        "bytes": sum(_get(r, "bytes") or 0 for r in ok),
    }


def bounded(summary: dict[str, Any], metric: str, stat: str, limit: float | None) -> tuple[float | None, bool]:
    """A latency statistic of a run whose unfinished requests are censored at `limit`: (value, censored).

    Requests that never reached the point measured (first token for "ttft_s", last byte for
    "end_to_end_latency_s") took at least the run's bound, so they are the slowest. When
    more of the planned requests than 1 - q/100 are such (any, for "max"), the q-th
    percentile is among them: (limit, True), "at least the bound". Otherwise the statistic
    of the requests that got there: TTFT over every request that saw its first token.
    """
    planned = summary.get("planned", summary["requests"])
    if metric == "ttft_s" and "first_tokens" in summary:
        known, values = summary["first_tokens"], summary["ttft_all_s"]
    else:
        known, values = summary["completed"], summary[metric]
    unknown = planned - known
    share = 0.0 if stat == "max" else 1 - float(stat[1:]) / 100
    if unknown > 0 and unknown > share * planned:
        return limit, True
    return values[stat], False


def summarize_by_kind(records: Sequence[Any], wall_time: float) -> dict[str, dict[str, Any]]:
    """`summarize` for each kind present, in order of first appearance."""
    kinds = list(dict.fromkeys(_get(r, "kind") for r in records))
    return {kind: summarize([r for r in records if _get(r, "kind") == kind], wall_time) for kind in kinds}


def cpu_seconds(stat_line: str, clock_ticks: int) -> float:
    """User plus system CPU seconds from a line of /proc/<pid>/stat (in clock ticks: 10 ms)."""
    # The command name (field 2) may hold spaces and parentheses; fields resume after the last ')'.
    fields = stat_line[stat_line.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / clock_ticks


def schedstat_seconds(schedstat_line: str) -> float:
    """CPU seconds on a CPU from a line of /proc/<pid>/task/<tid>/schedstat (kept in nanoseconds)."""
    return int(schedstat_line.split()[0]) / 1e9


def efficiency(cpu: float | None, completed: int, upstream_tokens: int) -> dict[str, float | None]:
    """Server cost of a run: CPU milliseconds per request and relayed upstream tokens per CPU-second."""
    if not cpu or cpu <= 0:
        return {"cpu_ms_per_request": None, "tokens_per_cpu_s": None}
    return {"cpu_ms_per_request": 1000 * cpu / completed if completed else None,
            "tokens_per_cpu_s": upstream_tokens / cpu}
