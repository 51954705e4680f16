"""Tables of summaries, as aligned text for a terminal or as Markdown for a report."""
from __future__ import annotations

from typing import Any, Sequence

LATENCIES = (("ttft_s", "TTFT"), ("inter_chunk_latency_s", "inter-chunk latency"),
             ("end_to_end_latency_s", "end-to-end latency"))


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


def kind_table(kind: str, summary: dict[str, Any], client_cpu: float | None = None) -> str:
    """The terminal report of one kind: latency percentiles, then rates, errors and own cost."""
    rows = [[label] + [milliseconds(summary[key][p]) for p in ("p50", "p90", "p99", "max")]
            for key, label in LATENCIES]
    lines = [f"== {kind}: {summary['completed']}/{summary['requests']} completed in "
             f"{summary['wall_time_s']:.2f} s",
             table(["(ms)", "p50", "p90", "p99", "max"], rows),
             f"requests/s {number(summary['requests_per_s'], 2)}   "
             f"chunks/s {number(summary['output_throughput_chunks_per_s'])}   "
             f"chunks {summary['chunks']}   bytes {summary['bytes']:,}",
             f"errors: {errors_text(summary['errors_by_kind'])}"]
    if client_cpu is not None and summary["wall_time_s"] > 0:
        lines.append(f"load generator CPU: {client_cpu:.2f} s "
                     f"({100 * client_cpu / summary['wall_time_s']:.0f} % of one core)")
    return "\n".join(lines)


CELL_HEADERS = ["set-up", "kind", "C", "done", "TTFT p50", "TTFT p99", "e2e p50", "e2e p99",
                "e2e max", "gap p99", "req/s", "chunks/s", "CPU s", "CPU ms/req", "tokens/CPU-s",
                "errors"]


def cell_row(cell: dict[str, Any]) -> list[str]:
    """One experiment cell as a row of CELL_HEADERS (latencies in ms)."""
    s = cell["summary"]
    done = f"{s['completed']}/{s['requests']}" + (" TIMED OUT" if cell.get("timed_out") else "")
    cpu = cell.get("server_cpu_s")
    return [cell["setup"], cell["kind"], str(cell["concurrency"]), done,
            milliseconds(s["ttft_s"]["p50"]), milliseconds(s["ttft_s"]["p99"]),
            milliseconds(s["end_to_end_latency_s"]["p50"]), milliseconds(s["end_to_end_latency_s"]["p99"]),
            milliseconds(s["end_to_end_latency_s"]["max"]), milliseconds(s["inter_chunk_latency_s"]["p99"]),
            number(s["requests_per_s"], 1), number(s["output_throughput_chunks_per_s"], 0),
            number(cpu, 2), number(cell.get("cpu_ms_per_request"), 2),
            number(cell.get("tokens_per_cpu_s"), 0), errors_text(s["errors_by_kind"])]


def cells_table(cells: Sequence[dict[str, Any]], markdown: bool = True) -> str:
    return table(CELL_HEADERS, [cell_row(c) for c in cells], markdown=markdown)
