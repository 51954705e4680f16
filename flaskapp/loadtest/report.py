"""Tables of summaries, as aligned text for a terminal or as Markdown for a report."""
from __future__ import annotations

from typing import Any, Sequence

from .stats import bounded

LATENCIES = (("ttft_s", "TTFT"), ("inter_token_latency_s", "inter-token latency"),
             ("time_per_output_token_s", "time per output token"), ("end_to_end_latency_s", "end-to-end latency"),
             ("inter_chunk_latency_s", "inter-chunk gap"))
STATISTICS = ("p50", "p90", "p95", "p99", "min", "max", "mean", "stddev")


def milliseconds(value: float | None) -> str:
    if value is None:
        return "-"
    ms = value * 1000
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.1f}" if ms >= 1 else f"{ms:.2f}"


def number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], markdown: bool = False) -> str:
    """Rows under headers; the first column left-aligned, the rest right-aligned."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        padded = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        return ("| " + " | ".join(padded) + " |") if markdown else "  ".join(padded)

    rule = ("|" + "|".join(["-" * (widths[0] + 2)] + ["-" * (w + 1) + ":" for w in widths[1:]]) + "|"
            if markdown else "  ".join("-" * w for w in widths))
    return "\n".join([line(cells[0]), rule] + [line(row) for row in cells[1:]])


def errors_text(errors: dict[str, int]) -> str:
    return ", ".join(f"{kind} {count}" for kind, count in errors.items()) or "none"


def sources_text(sources: dict[str, int]) -> str:
    """How output tokens were known: 'usage', or 'words 10' / 'chunks 3, usage 2' when mixed or counted."""
    if list(sources) == ["usage"]:
        return "usage"
    return ", ".join(f"{name} {count}" for name, count in sources.items()) or "-"


def done_text(summary: dict[str, Any], timed_out: bool = False) -> str:
    """completed/planned, as the progress line counts them, and what happened to the rest."""
    planned = summary.get("planned", summary["requests"])
    text = f"{summary['completed']}/{planned}"
    if summary["requests"] < planned:
        text += f" ({planned - summary['requests']} not sent)"
    return text + (" TIMED OUT" if timed_out else "")


def kind_table(kind: str, summary: dict[str, Any], client_cpu: float | None = None,
               timed_out: bool = False) -> str:
    """The terminal report of one kind: latency statistics, then tokens, rates, errors and own cost."""
    rows = [[label] + [milliseconds(summary[key][stat]) for stat in STATISTICS]
            for key, label in LATENCIES if summary[key]["p50"] is not None]
    tokens = summary["number_output_tokens"]
    lines = [f"== {kind}: completed {done_text(summary, timed_out)} in {summary['wall_time_s']:.2f} s",
             table(["(ms)", *STATISTICS], rows),
             f"requests/s {number(summary['requests_per_s'], 2)}   "
             f"output tokens/s {number(summary['output_throughput_token_per_s'])}   "
             f"tokens/request p50 {number(tokens['p50'], 0)} (from {sources_text(summary['token_source'])})   "
             f"body bytes {summary['bytes']:,}",
             f"errors: {errors_text(summary['errors_by_kind'])}"]
    if client_cpu is not None and summary["wall_time_s"] > 0:
        lines.append(f"load generator CPU: {client_cpu:.2f} s "
                     f"({100 * client_cpu / summary['wall_time_s']:.0f} % of one core)")
    return "\n".join(lines)


CELL_HEADERS = ["set-up", "kind", "C", "completed", "TTFT p50", "TTFT p99", "ITL p50", "ITL p99",
                "e2e p50", "e2e p99", "req/s", "tokens/s", "CPU s", "CPU ms/req", "tokens/CPU-s", "errors"]


def _bounded_ms(cell: dict[str, Any], metric: str, stat: str) -> str:
    # A percentile the cell's bound cut off is "at least the bound", as scaling.png draws it.
    value, cut = bounded(cell["summary"], metric, stat, cell.get("time_limit_s"))
    return (">=" if cut and value is not None else "") + milliseconds(value)


def cell_row(cell: dict[str, Any]) -> list[str]:
    """One experiment cell as a row of CELL_HEADERS (latencies in ms)."""
    s = cell["summary"]
    cpu = cell.get("server_cpu_s")
    return [cell["setup"], cell["kind"], str(cell["concurrency"]), done_text(s, cell.get("timed_out", False)),
            _bounded_ms(cell, "ttft_s", "p50"), _bounded_ms(cell, "ttft_s", "p99"),
            milliseconds(s["inter_token_latency_s"]["p50"]), milliseconds(s["inter_token_latency_s"]["p99"]),
            _bounded_ms(cell, "end_to_end_latency_s", "p50"), _bounded_ms(cell, "end_to_end_latency_s", "p99"),
            number(s["requests_per_s"], 1), number(s["output_throughput_token_per_s"], 0),
            number(cpu, 3), number(cell.get("cpu_ms_per_request"), 2),
            number(cell.get("tokens_per_cpu_s"), 0), errors_text(s["errors_by_kind"])]


def cells_table(cells: Sequence[dict[str, Any]], markdown: bool = True) -> str:
    return table(CELL_HEADERS, [cell_row(c) for c in cells], markdown=markdown)


CAPACITY_HEADERS = ["set-up", "kind", "capacity (req/s)", "first failing rate", "objective", "steps"]


def capacity_row(setup: str, capacity: dict[str, Any]) -> list[str]:
    """One set-up's capacity figure: the highest rate that met the objective."""
    rate = capacity["rate_per_s"]
    steps = ", ".join(f"{step['rate_per_s']:g}{'' if step['met'] else ' x'}" for step in capacity["steps"])
    # Steps ran out before any rate missed: the ceiling was not found, only a floor.
    found = "below the lowest tried" if rate is None else f"{rate:g}"
    if rate is not None and capacity["failed_at_per_s"] is None:
        found = f"at least {rate:g}"
    return [setup, capacity["kind"], found,
            "-" if capacity["failed_at_per_s"] is None else f"{capacity['failed_at_per_s']:g}",
            capacity["slo"], steps]


def step_table(capacity: dict[str, Any], markdown: bool = False) -> str:
    """Each step of a capacity search: its rate, whether it met the objective, and its p99s."""
    rows = [[f"{step['rate_per_s']:g}", "yes" if step["met"] else "no", str(step["max_in_flight"]),
             done_text(step["summary"]), milliseconds(step["summary"]["ttft_s"]["p99"]),
             milliseconds(step["summary"]["inter_token_latency_s"]["p99"]),
             errors_text(step["summary"]["errors_by_kind"])] for step in capacity["steps"]]
    return table(["rate/s", "met", "max in flight", "completed", "TTFT p99", "ITL p99", "errors"], rows,
                 markdown=markdown)
