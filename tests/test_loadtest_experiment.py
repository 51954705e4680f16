"""The experiment and the command line, end to end: real emulator, real gunicorn, the app's views."""
from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from flaskapp.cli import experiment_command, loadtest_command
from flaskapp.loadtest.cli import main
from flaskapp.loadtest.experiment import Setup
from servers import start_emulator


@pytest.mark.parametrize("text, expected", [
    ("direct", Setup("direct", None)),
    ("gevent=-k gevent -w 1", Setup("gevent", ("-k", "gevent", "-w", "1"))),
    ("gthread=-k gthread --threads 4", Setup("gthread", ("-k", "gthread", "--threads", "4"))),
])
def test_setup_parse(text, expected):
    assert Setup.parse(text) == expected


@pytest.mark.parametrize("text", ["", "gevent", "=-k sync"])
def test_setup_parse_rejects(text):
    with pytest.raises(ValueError):
        Setup.parse(text)


def test_tiny_experiment_writes_report_plots_and_raw_records(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["experiment", "--out", str(out), "--setup", "direct", "--setup", "gevent=-k gevent -w 1",
                 "--concurrency", "1,5", "--min-requests", "2", "--ttft", "0.05",
                 "--tokens-per-second", "400", "--tokens", "20", "--cell-time-limit", "15", "--quiet"])
    assert code == 0
    cells = json.loads((out / "cells.json").read_text())
    assert [(c["setup"], c["kind"], c["concurrency"]) for c in cells] == [
        (setup, kind, c) for setup in ("direct", "gevent") for c in (1, 5) for kind in ("block", "stream")]
    for cell in cells:
        assert not cell["timed_out"] and cell["summary"]["errors_by_kind"] == {}, cell
        assert cell["summary"]["completed"] == max(cell["concurrency"], 2)
        assert cell["upstream_tokens"] == 20 * cell["summary"]["completed"]
        assert cell["summary"]["output_tokens"] == cell["upstream_tokens"]  # usage, or words of its words
    gevent = [c for c in cells if c["setup"] == "gevent"]
    assert all(c["server_cpu_s"] is not None for c in gevent)
    streams = [c for c in gevent if c["kind"] == "stream"]
    assert all(c["summary"]["chunks"] >= c["summary"]["completed"] for c in streams)
    report = (out / "report.md").read_text()
    assert "| gevent" in report and "| direct" in report and "Command: `" in report
    for png in ("scaling.png", "timeline-gevent-c5.png", "distributions-direct-c5.png"):
        assert (out / png).read_bytes().startswith(b"\x89PNG")
    raw = json.loads((out / "raw" / "gevent-stream-c5.json").read_text())
    assert len(raw) == 5 and {"ttft", "gaps", "total", "error", "inter_token_latency_ms"} <= set(raw[0])
    assert {r["token_source"] for r in raw} == {"words"}  # a plain-text stream reports no usage
    assert {r["number_output_tokens"] for r in raw} == {20}  # the emulator's tokens are words
    assert "gevent" in capsys.readouterr().out


def test_a_cell_that_cannot_finish_is_reported_as_timed_out(tmp_path):
    # One sync worker, five concurrent blocking requests of ~0.6 s each: they queue past the bound.
    out = tmp_path / "out"
    main(["experiment", "--out", str(out), "--setup", "sync=-k sync -w 1", "--kinds", "block",
          "--concurrency", "5", "--ttft", "0.5", "--tokens-per-second", "100", "--tokens", "10",
          "--cell-time-limit", "1.5", "--quiet", "--no-pin"])
    (cell,) = json.loads((out / "cells.json").read_text())
    assert cell["timed_out"] and cell["summary"]["errors_by_kind"].get("cancelled")
    assert "TIMED OUT" in (out / "report.md").read_text()


def _short_cell(out, limit: float, *extra: str) -> int:
    # Answers of 0.3 s (0.2 s to the first token, 10 tokens at 100/s), one at a time, at least 3 a cell.
    return main(["experiment", "--out", str(out), "--setup", "direct", "--kinds", "block", "--concurrency", "1",
                 "--ttft", "0.2", "--tokens-per-second", "100", "--tokens", "10", "--min-requests", "3",
                 "--cell-time-limit", str(limit), "--no-pin", *extra])


def test_a_cell_sizes_itself_to_its_limit_instead_of_timing_out(tmp_path, capsys):
    # 3 answers of 0.3 s one after another cannot fit in 0.6 s: the physical limit itself used to
    # be reported TIMED OUT. The cell sends what fits, finishes, and the report says it was cut.
    out = tmp_path / "out"
    assert _short_cell(out, 0.6) == 0
    (cell,) = json.loads((out / "cells.json").read_text())
    assert not cell["timed_out"] and cell["sized_down"], cell
    assert (cell["requests"], cell["wanted_requests"], cell["summary"]["completed"]) == (1, 3, 1)
    assert cell["summary"]["errors_by_kind"] == {}
    assert "direct block c=1 sent 1 of 3" in (out / "report.md").read_text()
    progress = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[direct block c=1]")]
    assert len(progress) == 1 and "completed 1 of 1  failed 0" in progress[0]


def test_a_limit_that_cannot_hold_one_request_is_refused_before_anything_starts(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        _short_cell(tmp_path / "out", 0.3)
    assert exit_.value.code == 2 and not (tmp_path / "out").exists()
    assert "cannot hold one request" in capsys.readouterr().err


def test_the_table_and_the_progress_line_agree_on_a_timed_out_cell(tmp_path, capsys):
    # One sync worker, five blocking requests of 0.6 s: two finish within 1.5 s, the rest are cut.
    out = tmp_path / "out"
    main(["experiment", "--out", str(out), "--setup", "sync=-k sync -w 1", "--kinds", "block",
          "--concurrency", "5", "--ttft", "0.5", "--tokens-per-second", "100", "--tokens", "10",
          "--cell-time-limit", "1.5", "--no-pin"])
    (cell,) = json.loads((out / "cells.json").read_text())
    summary = cell["summary"]
    err = capsys.readouterr().err.splitlines()
    (last,) = [line for line in err if line.startswith("[sync block c=5]")]  # written once
    assert f"completed {summary['completed']} of 5  failed {summary['errors']}  in flight 0" in last
    row = next(line for line in err if line.startswith("sync "))
    assert f" {summary['completed']}/5 TIMED OUT " in row and 0 < summary["completed"] < 5


def test_capacity_is_searched_and_reported(tmp_path):
    out = tmp_path / "out"
    main(["experiment", "--out", str(out), "--setup", "direct", "--kinds", "stream", "--concurrency", "1",
          "--min-requests", "1", "--ttft", "0.05", "--tokens-per-second", "400", "--tokens", "10", "--quiet",
          "--no-pin", "--slo-ttft-p99", "1.0", "--sweep-duration", "0.3", "--sweep-start", "5", "--sweep-steps", "2"])
    capacity = json.loads((out / "capacity.json").read_text())["direct"]
    (stream,) = capacity
    assert [step["rate_per_s"] for step in stream["steps"]] == [5, 10] and stream["rate_per_s"] == 10
    report = (out / "report.md").read_text()
    # Both steps met the objective: the search found a floor, not the ceiling, and says so.
    assert "## Capacity" in report and re.search(r"\| direct \| +stream \| +at least 10 \|", report)


def test_loadtest_command_prints_tables_and_writes_records(tmp_path):
    emulator = start_emulator(tmp_path, 0.02, 500.0, 10)
    try:
        result = CliRunner().invoke(loadtest_command, [
            emulator.url, "-k", "openai-stream", "-k", "openai-block", "-c", "3", "-n", "6", "--quiet",
            "--json", str(tmp_path / "raw.json"), "--plot", str(tmp_path / "timeline.png")])
    finally:
        emulator.stop()
    assert result.exit_code == 0, result.output
    assert "== openai-stream: completed 6/6" in result.output and "inter-token latency" in result.output
    assert "tokens/request p50 10 (from usage)" in result.output
    raw = json.loads((tmp_path / "raw.json").read_text())
    assert len(raw) == 12
    # Side by side with llmperf's and guidellm's records: their names, their units.
    assert raw[0]["number_output_tokens"] == raw[0]["output_tokens"] == 10
    assert raw[0]["time_to_first_token_ms"] == pytest.approx(1000 * raw[0]["ttft_s"])
    assert (tmp_path / "timeline-distributions.png").exists()


def test_click_commands_hand_help_to_argparse():
    result = CliRunner().invoke(experiment_command, ["--help"])
    assert result.exit_code == 0 and "--cell-time-limit" in result.output


def test_a_set_up_that_will_not_start_is_reported_and_the_rest_still_run(tmp_path):
    out = tmp_path / "out"
    main(["experiment", "--out", str(out), "--setup", "broken=-k no.such.Worker", "--setup", "direct",
          "--kinds", "stream", "--concurrency", "1", "--min-requests", "1", "--ttft", "0.01",
          "--tokens-per-second", "1000", "--tokens", "5", "--quiet", "--no-pin"])
    (cell,) = json.loads((out / "cells.json").read_text())
    assert cell["setup"] == "direct" and cell["summary"]["completed"] == 1
    assert "would not start" in (out / "report.md").read_text()


def test_the_peer_apps_run_on_the_same_rig(tmp_path):
    # The README compares our hot path with these (benchmarks/peers/): keep the command working.
    peer = "-c benchmarks/peers/gunicorn.conf.py -w 1 --pythonpath benchmarks/peers/"
    out = tmp_path / "out"
    main(["experiment", "--out", str(out), "--setup", f"plain={peer}plain", "--setup", f"raw={peer}raw",
          "--setup", f"fastapi={peer}fastapi -k uvicorn_worker.UvicornWorker", "--kinds", "block,stream",
          "--concurrency", "3", "--ttft", "0.01", "--tokens-per-second", "1000", "--tokens", "10", "--quiet", "--no-pin"])
    cells = json.loads((out / "cells.json").read_text())
    assert [(c["setup"], c["kind"]) for c in cells] == [
        (setup, kind) for setup in ("plain", "raw", "fastapi") for kind in ("block", "stream")]
    for cell in cells:
        assert cell["summary"]["completed"] == 3 and cell["summary"]["errors_by_kind"] == {}, cell
        assert cell["upstream_tokens"] == 30 and cell["server_cpu_s"] is not None


def test_server_cpu_is_read_to_the_nanosecond_not_in_10_ms_ticks():
    # A cell of a few requests costs a few milliseconds of worker CPU: ticks rounded that to 0 or 10 ms.
    import os
    import time

    from flaskapp.loadtest.rig import process_cpu
    before, clock = process_cpu(os.getpid()), time.process_time()
    while time.process_time() - clock < 0.003:
        pass
    spent = process_cpu(os.getpid()) - before
    assert 0.002 < spent < 0.009  # three milliseconds, give or take: not 0, not a whole tick


def test_run_at_a_rate_and_search_a_capacity_from_the_command_line(tmp_path, capsys):
    emulator = start_emulator(tmp_path, 0.05, 400.0, 10)
    try:
        assert main(["run", emulator.url, "-k", "openai-stream", "--rate", "20", "-d", "0.5", "--quiet"]) == 0
        at_rate = capsys.readouterr().out
        # An objective no server meets (first token within 10 ms of a 50 ms upstream): no capacity, said so.
        code = main(["run", emulator.url, "-k", "openai-stream", "--slo-ttft-p99", "0.01", "--sweep-duration",
                     "0.2", "--sweep-start", "4", "--sweep-steps", "2", "--quiet",
                     "--json", str(tmp_path / "capacity.json")])
    finally:
        emulator.stop()
    assert "completed 10/10" in at_rate and "open loop: 20 requests/s (constant)" in at_rate
    assert code == 1 and "capacity: below the lowest rate tried" in capsys.readouterr().out
    (search,) = json.loads((tmp_path / "capacity.json").read_text())
    assert [s["rate_per_s"] for s in search["steps"]] == [4, 2] and search["rate_per_s"] is None


def test_run_refuses_a_rate_without_a_duration(capsys):
    with pytest.raises(SystemExit):
        main(["run", "http://127.0.0.1:9", "--rate", "5"])
    assert "--duration" in capsys.readouterr().err


def test_a_timed_out_cells_row_says_at_least_the_bound_where_its_percentiles_were_cut():
    from flaskapp.loadtest.client import Record
    from flaskapp.loadtest.report import cell_row
    from flaskapp.loadtest.stats import summarize
    done = [Record(kind="block", start=0.0, ttft=2.5, total=2.5, chunks=1, status=200) for _ in range(2)]
    cut = [Record(kind="block", start=0.0, total=5.0, error="cancelled") for _ in range(8)]
    cell = {"setup": "sync", "kind": "block", "concurrency": 10, "timed_out": True, "time_limit_s": 5.0,
            "summary": summarize(done + cut, 5.0, planned=10)}
    row = cell_row(cell)
    # Not the 2,500 ms of the two that finished: the other eight took at least the 5 s bound.
    assert row[3:6] == ["2/10 TIMED OUT", ">=5000", ">=5000"] and row[8:10] == [">=5000", ">=5000"]
