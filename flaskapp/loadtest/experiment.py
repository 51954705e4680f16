"""The experiment: every server set-up, kind and concurrency as a bounded cell, written up as a report.

For each set-up the emulator and (unless it is `direct`) gunicorn are started afresh;
each cell sends a burst of requests at one concurrency, bounded in time and sized to
that bound (`schedule.plan_cell`), and records the gunicorn workers' CPU time (the
kernel's nanosecond run time) and the emulator's token count before and after, so the
report shows server CPU per request and relayed upstream tokens per CPU-second. With a
service-level objective, each set-up's streaming kinds are then swept at open-loop
rates for its capacity: the highest rate that meets the objective.
The `direct` set-up sends the OpenAI-shaped requests straight to the emulator: the
physical limit of the rig, with nothing relaying.
"""
from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import plots, report
from .capacity import find_capacity
from .client import STREAMING_KINDS, Target
from .rig import Server, get_json, pin_self, start_emulator, start_gunicorn
from .runner import Progress, run, run_kind
from .schedule import Slo, plan_cell
from .stats import efficiency, field_record, summarize

DEFAULT_SETUPS = ("direct", "gevent=-k gevent -w 1", "sync=-k sync -w 2", "gthread=-k gthread -w 2 --threads 4")


@dataclass(frozen=True)
class Setup:
    name: str
    gunicorn_args: tuple[str, ...] | None  # None: straight to the emulator

    @classmethod
    def parse(cls, text: str) -> "Setup":
        """`direct`, or `NAME=GUNICORN ARGS` such as `gevent=-k gevent -w 1`."""
        name, sep, args = text.partition("=")
        name = name.strip()
        if not name or (not sep and name != "direct"):
            raise ValueError(f"a set-up is 'direct' or NAME=GUNICORN ARGS, not {text!r}")
        return cls(name, None if name == "direct" and not sep else tuple(shlex.split(args)))


@dataclass
class ExperimentConfig:
    out: Path
    setups: list[Setup] = field(default_factory=lambda: [Setup.parse(s) for s in DEFAULT_SETUPS])
    kinds: tuple[str, ...] = ("block", "stream")
    concurrency: tuple[int, ...] = (1, 10, 100, 500)
    rounds: int = 1  # requests per cell = max(rounds x concurrency, min_requests)
    min_requests: int = 3
    cell_time_limit: float = 15.0
    ttft: float = 0.5
    tokens_per_second: float = 50.0
    tokens: int = 100
    max_tokens: int | None = None
    model: str = "gpt-4"
    slo: Slo | None = None  # with one, each set-up's capacity is searched
    sweep_duration: float = 10.0
    sweep_start: float = 1.0
    sweep_steps: int = 8
    pin: bool = True
    loop: str = "auto"
    progress: bool = True
    command: str = ""
    api_key: str | None = None  # gateway key sent by the load generator
    server_env: dict[str, str] = field(default_factory=dict)  # FLASKAPP_* settings for gunicorn
    failed_setups: dict[str, str] = field(default_factory=dict)  # filled in: set-ups that would not start
    capacities: dict[str, list[dict]] = field(default_factory=dict)  # filled in: set-up -> capacity searches

    @property
    def ideal_request_s(self) -> float:
        """One answer's time at the emulator's pace: first token, then every token."""
        return self.ttft + (self.max_tokens or self.tokens) / self.tokens_per_second


def _wire_kind(kind: str, direct: bool) -> str:
    return f"openai-{kind}" if direct and kind in ("block", "stream") else kind


def _cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(after[pid] - before.get(pid, 0.0) for pid in after)


def _wait_idle(emulator: Server, timeout: float = 10.0) -> None:
    """Let the previous cell's leftovers drain so they are not billed to the next cell."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and get_json(emulator.url + "/_emulator/stats")["in_flight"]:
        time.sleep(0.1)


def run_cell(config: ExperimentConfig, setup: Setup, emulator: Server, server: Server | None,
             kind: str, concurrency: int) -> tuple[dict[str, Any], list]:
    direct = server is None
    wire_kind = _wire_kind(kind, direct)
    target = Target(emulator.url if direct else server.url, max_tokens=config.max_tokens, model=config.model,
                    api_key=None if direct else config.api_key)
    plan = plan_cell(concurrency, config.rounds, config.min_requests, config.ideal_request_s,
                     config.cell_time_limit)
    requests = plan.requests
    _wait_idle(emulator)
    tokens_before = get_json(emulator.url + "/_emulator/stats")["tokens_sent"]
    workers_before = server.worker_cpu() if server else {}
    emulator_before = emulator.own_cpu()
    progress = Progress(f"{setup.name} {kind} c={concurrency}", enabled=config.progress)
    result = run(lambda: run_kind(target, wire_kind, concurrency, requests=requests,
                                  timeout=config.cell_time_limit, time_limit=config.cell_time_limit,
                                  progress=progress), loop=config.loop)
    server_cpu = _cpu_delta(workers_before, server.worker_cpu()) if server else None
    tokens = get_json(emulator.url + "/_emulator/stats")["tokens_sent"] - tokens_before
    summary = summarize(result.records, result.wall_time, planned=requests)
    cell = {"setup": setup.name, "kind": kind, "wire_kind": wire_kind, "concurrency": concurrency,
            "requests": requests, "wanted_requests": plan.wanted, "sized_down": plan.sized_down,
            "time_limit_s": config.cell_time_limit, "timed_out": result.timed_out, "summary": summary,
            "server_cpu_s": server_cpu, "emulator_cpu_s": emulator.own_cpu() - emulator_before,
            "client_cpu_s": result.client_cpu, "upstream_tokens": tokens,
            **efficiency(server_cpu, summary["completed"], tokens)}
    return cell, result.records


def run_experiment(config: ExperimentConfig) -> list[dict[str, Any]]:
    """Run every cell, writing raw records as it goes, then the report and plots; returns the cells."""
    out = Path(config.out)
    (out / "raw").mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)
    available = sorted(os.sched_getaffinity(0))
    server_cpus = rest_cpus = None
    if config.pin and len(available) >= 2:
        server_cpus, rest_cpus = {available[0]}, set(available[1:])
        pin_self(rest_cpus)  # the load generator shares the emulator's core, never the server's
    try:
        cells, records = _run_cells(config, out, server_cpus, rest_cpus)
    finally:
        pin_self(set(available))  # a caller (a test, `flask experiment`) gets its CPUs back
    write_report(config, cells, records)
    return cells


def _run_cells(config: ExperimentConfig, out: Path, server_cpus: set[int] | None,
               rest_cpus: set[int] | None) -> tuple[list[dict[str, Any]], dict]:
    cells: list[dict[str, Any]] = []
    records: dict[tuple[str, str, int], list] = {}
    for setup in config.setups:
        emulator = start_emulator(out / "logs", config.ttft, config.tokens_per_second, config.tokens, rest_cpus)
        server = None
        try:
            def start_server() -> Server | None:
                if setup.gunicorn_args is None:
                    return None
                return start_gunicorn(out / "logs", emulator.url + "/v1", list(setup.gunicorn_args),
                                      server_cpus, config.server_env)
            try:
                server = start_server()
            except RuntimeError as exc:  # one broken set-up should not cost the others' results
                config.failed_setups[setup.name] = str(exc).splitlines()[0]
                print(f"{setup.name}: {exc}", file=sys.stderr, flush=True)
                continue
            for concurrency in config.concurrency:
                for kind in config.kinds:
                    cell, cell_records = run_cell(config, setup, emulator, server, kind, concurrency)
                    cells.append(cell)
                    records[(setup.name, kind, concurrency)] = cell_records
                    name = f"{setup.name}-{kind}-c{concurrency}.json"
                    (out / "raw" / name).write_text(json.dumps([{**asdict(r), **field_record(r)}
                                                                for r in cell_records]))
                    print(report.table(report.CELL_HEADERS, [report.cell_row(cell)]).splitlines()[-1],
                          file=sys.stderr, flush=True)
                    if cell["timed_out"] and server is not None:
                        # Connections still queued in the server would be billed to the next cell.
                        server.stop()
                        server = None
                        server = start_server()
            if config.slo:
                config.capacities[setup.name] = _capacities(config, emulator, server)
        finally:
            if server is not None:
                server.stop()
            emulator.stop()
    return cells, records


def _capacities(config: ExperimentConfig, emulator: Server, server: Server | None) -> list[dict]:
    """The capacity search of each streaming kind of a set-up (open loop, Poisson arrivals)."""
    found = []
    direct = server is None
    target = Target(emulator.url if direct else server.url, max_tokens=config.max_tokens, model=config.model,
                    api_key=None if direct else config.api_key)
    for kind in config.kinds:
        wire_kind = _wire_kind(kind, direct)
        if wire_kind not in STREAMING_KINDS:
            continue
        capacity = find_capacity(target, wire_kind, config.slo, start_rate=config.sweep_start,
                                 duration=config.sweep_duration, max_steps=config.sweep_steps,
                                 timeout=config.cell_time_limit, loop=config.loop, progress=config.progress,
                                 before_step=lambda: _wait_idle(emulator)).as_dict()
        capacity["kind"] = kind
        found.append(capacity)
    return found


def write_report(config: ExperimentConfig, cells: list[dict[str, Any]], records: dict) -> Path:
    out = Path(config.out)
    (out / "cells.json").write_text(json.dumps(cells, indent=1))
    if config.capacities:
        (out / "capacity.json").write_text(json.dumps(config.capacities, indent=1))
    pngs = [plots.plot_scaling(cells, out / "scaling.png")]
    for setup in dict.fromkeys(c["setup"] for c in cells):
        for concurrency in config.concurrency:
            groups = {kind: records[(setup, kind, concurrency)] for kind in config.kinds
                      if records.get((setup, kind, concurrency))}
            if groups:
                pngs.append(plots.plot_timeline(groups, out / f"timeline-{setup}-c{concurrency}.png",
                                                f"{setup}, {concurrency} concurrent: send to last byte, | first text"))
        top = max(config.concurrency)
        groups = {kind: records.get((setup, kind, top), []) for kind in config.kinds}
        pngs.append(plots.plot_distributions(groups, out / f"distributions-{setup}-c{top}.png",
                                             f"{setup}, {top} concurrent"))
    ideal_first = config.ttft
    ideal_total = config.ideal_request_s
    timed_out = [c for c in cells if c["timed_out"]]
    sized_down = [c for c in cells if c.get("sized_down")]
    lines = [
        "# Blocking vs streaming under load", "",
        f"Command: `{config.command}`" if config.command else "",
        "",
        f"Machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{'gunicorn pinned to one core, emulator and load generator on the other' if config.pin else 'no CPU pinning'}.",
        f"Emulator: first token after {config.ttft:g} s, {config.tokens_per_second:g} tokens/s, "
        f"{config.max_tokens or config.tokens} tokens: ideal first text {ideal_first:.2f} s, ideal total {ideal_total:.2f} s.",
        f"Each cell: a burst of max({config.rounds} x C, {config.min_requests}) requests, "
        f"bounded at {config.cell_time_limit:g} s, and sized to fit: a cell sends only as many waves of C "
        f"requests as take at most 80 % of its bound at the emulator's pace.", "",
        "Set-ups: " + "; ".join(f"`{s.name}`" + (f" = `gunicorn {' '.join(s.gunicorn_args)}`" if s.gunicorn_args
                                                   is not None else " = straight to the emulator (openai-block / "
                                                   "openai-stream), the physical limit") for s in config.setups), "",
        report.cells_table(cells, markdown=True), "",
        "Latencies in ms: TTFT = time to first token (blocking: the whole body), over every request that saw "
        "one; e2e and ITL over completed requests; >= marks a percentile the cell's bound cut off (more "
        "requests than the rest of that percentile never got there: it is at least the bound). "
        "ITL = inter-token latency, (last token - first token) / (output tokens - 1) per request (none for "
        "blocking answers); e2e = send to last byte. completed = completed/planned, as the progress lines "
        "count them (requests the bound cut off are errors `cancelled`; those it left unsent, `not sent`). "
        "tokens/s = output tokens of completed requests per second of the cell; output tokens are the "
        "server's `usage` on the OpenAI kinds and the SSE stream, counted words on the plain-text kinds "
        "(`raw/*.json`: `token_source`). CPU s = gunicorn workers' CPU time in the cell "
        "(the kernel's per-thread run time, /proc/<pid>/task/*/schedstat, in nanoseconds); CPU ms/req = that "
        "per completed request; tokens/CPU-s = upstream tokens the emulator sent in the cell per worker "
        "CPU-second.", "",
    ]
    if config.failed_setups:
        lines += ["Set-ups that would not start (see `logs/`): " + "; ".join(
            f"{name}: {why}" for name, why in config.failed_setups.items()), ""]
    if sized_down:
        lines += ["Sized to the bound (fewer requests than asked, so that the cell can finish): " + ", ".join(
            f"{c['setup']} {c['kind']} c={c['concurrency']} sent {c['requests']} of {c['wanted_requests']}"
            for c in sized_down), ""]
    if timed_out:
        lines += ["Timed out (the cell's bound ended it; in-flight requests counted as `cancelled`): "
                  + ", ".join(f"{c['setup']} {c['kind']} c={c['concurrency']}" for c in timed_out), ""]
    busiest = max(cells, key=lambda c: c["client_cpu_s"] / max(c["summary"]["wall_time_s"], 1e-9), default=None)
    if busiest:
        share = 100 * busiest["client_cpu_s"] / max(busiest["summary"]["wall_time_s"], 1e-9)
        lines += [f"Load generator: at most {share:.0f} % of one core in any cell "
                  f"({busiest['setup']} {busiest['kind']} c={busiest['concurrency']}), so it was not the bottleneck"
                  if share < 80 else f"Load generator: {share:.0f} % of one core in {busiest['setup']} "
                  f"{busiest['kind']} c={busiest['concurrency']}: it may have been the bottleneck there.", ""]
    if config.capacities:
        lines += _capacity_lines(config)
    top = max(config.concurrency)
    lines += ["![p99 latency against concurrency](scaling.png)", "",
              "Cells where more than 1 % of requests did not complete are drawn as triangles at the cell's bound, "
              "labelled completed/planned: their p99 is at least that.", ""]
    lines += [f"![{setup} at {top} concurrent](timeline-{setup}-c{top}.png)"
              for setup in dict.fromkeys(c["setup"] for c in cells)
              if (out / f"timeline-{setup}-c{top}.png").exists()]
    lines += ["", "All plots: " + ", ".join(f"[{p.name}]({p.name})" for p in pngs), "",
              "Raw per-request records: `raw/*.json`; cell summaries: `cells.json`; server logs: `logs/`."]
    if config.capacities:
        lines[-1] += " Capacity searches, step by step: `capacity.json`."
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _capacity_lines(config: ExperimentConfig) -> list[str]:
    rows = [report.capacity_row(setup, capacity)
            for setup, found in config.capacities.items() for capacity in found]
    return ["## Capacity", "",
            f"The highest open-loop rate (Poisson arrivals, {config.sweep_duration:g} s a step) at which each "
            f"set-up meets the objective: {config.slo.describe()}. The rate doubles from {config.sweep_start:g} "
            f"requests/s until a step misses, then the bracket is bisected; steps marked x missed.", "",
            report.table(report.CAPACITY_HEADERS, rows, markdown=True), ""]
