"""flaskapp.loadtest.stats: the pure functions behind every table."""
from __future__ import annotations

import pytest

from flaskapp.loadtest.client import Record
from flaskapp.loadtest.stats import (cpu_seconds, distribution, efficiency, errors_by_kind, percentile,
                                     summarize, summarize_by_kind)


@pytest.mark.parametrize("values, q, expected", [
    ([1.0], 50, 1.0),
    ([1.0], 99, 1.0),
    ([1.0, 2.0], 50, 1.5),
    ([3.0, 1.0, 2.0], 50, 2.0),  # order does not matter
    ([1.0, 2.0, 3.0, 4.0], 0, 1.0),
    ([1.0, 2.0, 3.0, 4.0], 100, 4.0),
    ([1.0, 2.0, 3.0, 4.0], 90, 3.7),
    (list(range(1, 101)), 99, 99.01),
    ([], 50, None),
])
def test_percentile_interpolates_between_ranks(values, q, expected):
    result = percentile(values, q)
    assert result == pytest.approx(expected) if expected is not None else result is None


@pytest.mark.parametrize("q", [-1, 100.5])
def test_percentile_rejects_out_of_range(q):
    with pytest.raises(ValueError):
        percentile([1.0], q)


def test_distribution_of_nothing_is_all_none():
    assert distribution([]) == {"p50": None, "p90": None, "p99": None, "max": None, "mean": None}


def test_distribution_reports_max_and_mean():
    result = distribution([1.0, 2.0, 6.0])
    assert result["max"] == 6.0 and result["mean"] == 3.0 and result["p50"] == 2.0


def _record(kind="stream", error=None, ttft=0.5, total=2.5, chunks=10, gaps=(0.2, 0.2), nbytes=100):
    return Record(kind=kind, start=0.0, headers=ttft, ttft=ttft, total=total, gaps=list(gaps),
                  bytes=nbytes, chunks=chunks, status=200 if error is None else 500, error=error)


def test_errors_by_kind_counts_most_frequent_first():
    records = [_record(error="timeout"), _record(error="http_500"), _record(error="http_500"), _record()]
    assert list(errors_by_kind(records).items()) == [("http_500", 2), ("timeout", 1)]


def test_summarize_uses_successes_for_latency_and_counts_errors():
    records = [_record(ttft=0.5, total=2.0), _record(ttft=1.5, total=3.0),
               _record(error="truncated", ttft=9.0, total=9.0)]
    summary = summarize(records, wall_time=4.0)
    assert (summary["requests"], summary["completed"], summary["errors"]) == (3, 2, 1)
    assert summary["errors_by_kind"] == {"truncated": 1}
    assert summary["ttft_s"]["max"] == 1.5
    assert summary["end_to_end_latency_s"]["p50"] == 2.5
    assert summary["inter_chunk_latency_s"]["p99"] == pytest.approx(0.2)
    assert summary["requests_per_s"] == 0.5
    assert summary["output_throughput_chunks_per_s"] == 5.0
    assert summary["request_output_throughput_chunks_per_s"]["max"] == 5.0


def test_summarize_accepts_records_as_dicts():
    records = [{"kind": "block", "error": None, "ttft": 1.0, "total": 1.0, "gaps": [], "chunks": 1, "bytes": 5}]
    assert summarize(records, 1.0)["completed"] == 1


def test_summarize_of_a_run_with_no_time_has_no_rates():
    assert summarize([], 0.0)["requests_per_s"] == 0.0


def test_summarize_by_kind_keeps_order_of_appearance():
    records = [_record(kind="stream"), _record(kind="block"), _record(kind="stream")]
    summaries = summarize_by_kind(records, 1.0)
    assert list(summaries) == ["stream", "block"]
    assert summaries["stream"]["requests"] == 2


@pytest.mark.parametrize("comm", ["gunicorn", "a b) (c", "x)"])
def test_cpu_seconds_reads_utime_and_stime_whatever_the_command_name(comm):
    # pid (comm) state ppid ... field 14 utime = 250 ticks, field 15 stime = 50 ticks
    fields = ["S", "1"] + ["0"] * 9 + ["250", "50"] + ["0"] * 30
    assert cpu_seconds(f"123 ({comm}) " + " ".join(fields), clock_ticks=100) == 3.0


@pytest.mark.parametrize("cpu, completed, tokens, expected", [
    (2.0, 100, 10_000, {"cpu_ms_per_request": 20.0, "tokens_per_cpu_s": 5000.0}),
    (None, 100, 10_000, {"cpu_ms_per_request": None, "tokens_per_cpu_s": None}),
    (0.0, 100, 10_000, {"cpu_ms_per_request": None, "tokens_per_cpu_s": None}),
    (1.0, 0, 0, {"cpu_ms_per_request": None, "tokens_per_cpu_s": 0.0}),
])
def test_efficiency(cpu, completed, tokens, expected):
    assert efficiency(cpu, completed, tokens) == expected
