"""The experiment and the command line, end to end: real emulator, real gunicorn, the app's views."""
from __future__ import annotations

import json

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
    gevent = [c for c in cells if c["setup"] == "gevent"]
    assert all(c["server_cpu_s"] is not None for c in gevent)
    streams = [c for c in gevent if c["kind"] == "stream"]
    assert all(c["summary"]["chunks"] >= c["summary"]["completed"] for c in streams)
    report = (out / "report.md").read_text()
    assert "| gevent" in report and "| direct" in report and "Command: `" in report
    for png in ("scaling.png", "timeline-gevent-c5.png", "distributions-direct-c5.png"):
        assert (out / png).read_bytes().startswith(b"\x89PNG")
    raw = json.loads((out / "raw" / "gevent-stream-c5.json").read_text())
    assert len(raw) == 5 and {"ttft", "gaps", "total", "error"} <= set(raw[0])
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


def test_loadtest_command_prints_tables_and_writes_records(tmp_path):
    emulator = start_emulator(tmp_path, 0.02, 500.0, 10)
    try:
        result = CliRunner().invoke(loadtest_command, [
            emulator.url, "-k", "openai-stream", "-k", "openai-block", "-c", "3", "-n", "6", "--quiet",
            "--json", str(tmp_path / "raw.json"), "--plot", str(tmp_path / "timeline.png")])
    finally:
        emulator.stop()
    assert result.exit_code == 0, result.output
    assert "== openai-stream: 6/6 completed" in result.output and "TTFT" in result.output
    assert len(json.loads((tmp_path / "raw.json").read_text())) == 12
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
