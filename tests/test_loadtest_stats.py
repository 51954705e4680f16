"""flaskapp.loadtest.stats: the pure functions behind every table."""
from __future__ import annotations

import pytest

from flaskapp.loadtest.client import Record
from flaskapp.loadtest.stats import (cpu_seconds, distribution, efficiency, errors_by_kind, field_record,
                                     percentile, request_metrics, schedstat_seconds, stddev, summarize,
                                     summarize_by_kind, tally, bounded)


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
    assert distribution([]) == {"p50": None, "p90": None, "p95": None, "p99": None, "min": None, "max": None,
                                "mean": None, "stddev": None}


def test_distribution_reports_min_max_mean_and_stddev():
    result = distribution([1.0, 2.0, 6.0])
    assert (result["min"], result["max"], result["mean"], result["p50"]) == (1.0, 6.0, 3.0, 2.0)
    assert result["stddev"] == pytest.approx((14 / 3) ** 0.5)
    assert result["p95"] == pytest.approx(5.6)


@pytest.mark.parametrize("values, expected", [
    ([], None), ([4.0], 0.0), ([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0], 2.0)])
def test_stddev_is_the_population_one(values, expected):
    assert stddev(values) == expected


def _record(kind="stream", error=None, ttft=0.5, total=2.5, chunks=10, gaps=(0.2, 0.2), nbytes=100,
            tokens=None, last_token=None):
    return Record(kind=kind, start=0.0, headers=ttft, ttft=ttft, total=total, gaps=list(gaps),
                  bytes=nbytes, chunks=chunks, status=200 if error is None else 500, error=error,
                  tokens=tokens, token_source="usage" if tokens is not None else None,
                  last_token=total if last_token is None else last_token)


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
    assert summary["output_throughput_token_per_s"] == 5.0  # no usage: the chunks stand in for tokens
    assert summary["request_output_throughput_token_per_s"]["max"] == 5.0
    assert summary["token_source"] == {"chunks": 2}


def test_token_figures_of_a_stream_use_the_servers_token_count():
    # 101 tokens: first at 0.5 s, last at 2.5 s, body ends at 2.6 s.
    metrics = request_metrics(_record(ttft=0.5, last_token=2.5, total=2.6, chunks=40, tokens=101))
    assert metrics["inter_token_latency_s"] == pytest.approx(0.02)  # (2.5 - 0.5) / (101 - 1)
    assert metrics["time_per_output_token_s"] == pytest.approx(2.5 / 101)
    assert metrics["number_output_tokens"] == 101
    assert metrics["request_output_throughput_token_per_s"] == pytest.approx(101 / 2.6)


def test_a_blocking_answer_has_no_inter_token_latency():
    metrics = request_metrics({"kind": "block", "ttft": 2.5, "total": 2.5, "chunks": 1, "tokens": 100})
    assert metrics["inter_token_latency_s"] is None and metrics["time_per_output_token_s"] == 0.025


def test_field_record_carries_llmperf_and_guidellm_names_and_units():
    record = field_record(_record(ttft=0.5, last_token=2.5, total=2.6, tokens=101))
    assert record["ttft_s"] == 0.5 and record["time_to_first_token_ms"] == 500.0
    assert record["inter_token_latency_s"] == pytest.approx(0.02)
    assert record["inter_token_latency_ms"] == pytest.approx(20.0)
    assert record["end_to_end_latency_s"] == record["request_latency"] == 2.6
    assert record["number_output_tokens"] == record["output_tokens"] == 101
    assert record["time_per_output_token_ms"] == pytest.approx(2500 / 101)
    assert record["request_output_throughput_token_per_s"] == record["output_tokens_per_second"]
    assert record["error_code"] is None and record["error_msg"] is None


def test_tally_is_what_progress_and_tables_both_say():
    records = [_record(), _record(error="cancelled"), Record(kind="stream", start=0.0)]
    assert tally(records, planned=5) == {"planned": 5, "started": 3, "completed": 1, "failed": 1,
                                         "in_flight": 1, "not_started": 2}


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


def _cut_run() -> dict:
    # 10 planned: 6 completed, 2 streams cut by the bound after their first token, 1 cut before it, 1 never sent.
    records = [_record(ttft=0.5, total=2.0) for _ in range(6)]
    records += [_record(error="cancelled", ttft=0.7, total=5.0) for _ in range(2)]
    records += [Record(kind="stream", start=0.0, total=5.0, error="cancelled")]
    return summarize(records, 5.0, planned=10)


@pytest.mark.parametrize("metric, stat, expected", [
    ("ttft_s", "p50", (0.5, False)),  # 8 of 10 saw a first token: the median is among them
    ("ttft_s", "p90", (5.0, True)),  # 2 of 10 never did: the 90th percentile is at least the bound
    ("end_to_end_latency_s", "p50", (2.0, False)),
    ("end_to_end_latency_s", "p90", (5.0, True)),  # 4 of 10 never completed
    ("end_to_end_latency_s", "max", (5.0, True)),
])
def test_bounded_percentiles_count_what_never_got_there_as_at_least_the_bound(metric, stat, expected):
    assert bounded(_cut_run(), metric, stat, limit=5.0) == expected


def test_bounded_of_a_finished_run_is_its_own_statistic():
    summary = summarize([_record(ttft=0.5, total=2.0), _record(ttft=0.7, total=2.2)], 3.0)
    assert bounded(summary, "ttft_s", "p99", 5.0) == (pytest.approx(0.698), False)


def test_schedstat_seconds_reads_nanoseconds():
    assert schedstat_seconds("1234567890 5550 12\n") == pytest.approx(1.23456789)


@pytest.mark.parametrize("cpu, completed, tokens, expected", [
    (2.0, 100, 10_000, {"cpu_ms_per_request": 20.0, "tokens_per_cpu_s": 5000.0}),
    (None, 100, 10_000, {"cpu_ms_per_request": None, "tokens_per_cpu_s": None}),
    (0.0, 100, 10_000, {"cpu_ms_per_request": None, "tokens_per_cpu_s": None}),
    (1.0, 0, 0, {"cpu_ms_per_request": None, "tokens_per_cpu_s": 0.0}),
])
def test_efficiency(cpu, completed, tokens, expected):
    assert efficiency(cpu, completed, tokens) == expected
