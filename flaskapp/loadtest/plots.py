"""PNG plots of load runs: a request timeline (the seed's experiment at a glance) and latency distributions."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # files only: no display, and safe in a server or CI process
import matplotlib.pyplot as plt  # noqa: E402

from .stats import bounded  # noqa: E402

COLOURS = {"block": "#d95f02", "openai-block": "#d95f02",
           "stream": "#1b9e77", "stream-sse": "#1b9e77", "openai-stream": "#1b9e77"}
OTHER = "#7570b3"
MAX_BARS = 2000  # beyond this a timeline is sampled evenly: the picture would not change


def _get(record: Any, name: str) -> Any:
    return record[name] if isinstance(record, dict) else getattr(record, name)


def _sample(records: Sequence[Any], limit: int) -> list[Any]:
    if len(records) <= limit:
        return list(records)
    step = len(records) / limit
    return [records[int(i * step)] for i in range(limit)]


def plot_timeline(groups: dict[str, Sequence[Any]], path: Path, title: str = "") -> Path:
    """Each request a bar from send to last byte, its first text marked; one colour per kind.

    `groups` maps a label (usually a kind) to its records; groups are stacked bottom-up
    in order, each with its own time origin, so runs made one after another compare side by side.
    """
    return _save(timeline_figure(groups, title), path)


def timeline_figure(groups: dict[str, Sequence[Any]], title: str = ""):
    """The figure of `plot_timeline`; its legend sits right of the axes, where it can cover no bar."""
    labels = list(groups)
    count = sum(min(len(v), MAX_BARS) for v in groups.values())
    fig, ax = plt.subplots(figsize=(10, max(3.0, min(12.0, 1.5 + count * 0.06))))
    y = 0
    handles = {}
    for label in labels:
        records = sorted(_sample(groups[label], MAX_BARS), key=lambda r: _get(r, "start"))
        colour = COLOURS.get(_get(records[0], "kind"), OTHER) if records else OTHER
        first = min((_get(r, "start") for r in records), default=0.0)
        rows, starts, ends, colours, marks_x, marks_y = [], [], [], [], [], []
        for record in records:
            start = _get(record, "start") - first
            failed = bool(_get(record, "error"))
            rows.append(y)
            starts.append(start)
            ends.append(start + (_get(record, "total") or 0.0))
            colours.append("#999999" if failed else colour)
            if _get(record, "ttft") is not None and not failed:
                marks_x.append(start + _get(record, "ttft"))
                marks_y.append(y)
            y += 1
        if rows:
            # One collection per group: thousands of separate artists would take seconds to draw.
            handles[label] = ax.hlines(rows, starts, ends, colors=colours,
                                       linewidth=max(0.5, min(6.0, 300 / max(count, 1))))
            ax.plot(marks_x, marks_y, marker="|", color="black", markersize=4, linestyle="none")
        y += max(1, count // 50)  # a gap between groups
    ax.set_xlabel("seconds since the group's first request was sent")
    ax.set_ylabel("request")
    ax.set_yticks([])
    ax.set_title(title or "Requests: bar = send to last byte, | = first text")
    if handles:
        ax.legend(list(handles.values()), [f"{label} (| first text, grey failed)" for label in handles],
                  loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    return fig


def plot_distributions(groups: dict[str, Sequence[Any]], path: Path, title: str = "") -> Path:
    """Empirical CDFs of TTFT and end-to-end latency for each group (successful requests)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for metric, ax, label in (("ttft", axes[0], "TTFT (s)"), ("total", axes[1], "end-to-end latency (s)")):
        for name, records in groups.items():
            values = sorted(_get(r, metric) for r in records
                            if not _get(r, "error") and _get(r, metric) is not None)
            if not values:
                continue
            fractions = [(i + 1) / len(values) for i in range(len(values))]
            colour = COLOURS.get(_get(records[0], "kind"), None)
            ax.step(values, fractions, where="post", label=name, color=colour if len(groups) <= 2 else None)
        ax.set_xlabel(label)
        ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("fraction of requests")
    if axes[1].get_legend_handles_labels()[0]:
        axes[1].legend(fontsize="small", loc="lower right")
    fig.suptitle(title or "Latency distributions")
    return _save(fig, path)


def plot_scaling(cells: Sequence[dict[str, Any]], path: Path, title: str = "") -> Path:
    """p99 TTFT and p99 end-to-end latency against concurrency, a line per set-up and kind."""
    return _save(scaling_figure(cells, title), path)


def censored(cell: dict[str, Any], metric: str = "end_to_end_latency_s") -> bool:
    """Whether more than 1 % of a cell's planned requests never got there: its p99 is not known."""
    return bounded(cell["summary"], metric, "p99", cell.get("time_limit_s"))[1]


def _reached(cell: dict[str, Any], metric: str) -> str:
    summary = cell["summary"]
    known = summary.get("first_tokens", summary["completed"]) if metric == "ttft_s" else summary["completed"]
    return f"{known}/{summary.get('planned', summary['requests'])}"


def scaling_figure(cells: Sequence[dict[str, Any]], title: str = ""):
    """The figure of `plot_scaling`, with what did not finish shown on it.

    A cell where more than 1 % of its requests never got there (no first token, or not
    completed: failed, cancelled by the cell's bound, never sent) has no true p99: it is
    drawn as a triangle at the cell's time limit (the p99 is at least that), labelled
    reached/planned, never as the p99 of the requests that happened to finish.
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    series: dict[str, list[dict]] = {}
    for cell in cells:
        series.setdefault(f"{cell['setup']} {cell['kind']}", []).append(cell)
    limits = [c["time_limit_s"] for c in cells if c.get("time_limit_s")]
    for metric, ax in (("ttft_s", axes[0]), ("end_to_end_latency_s", axes[1])):
        for index, (name, points) in enumerate(series.items()):
            colour = f"C{index % 10}"
            xs, ys, cut_x, cut_y = [], [], [], []
            for cell in points:
                p99, cut = bounded(cell["summary"], metric, "p99", cell.get("time_limit_s"))
                if cut:
                    bound = p99 if p99 is not None else cell["summary"][metric]["max"]
                    if bound is None:
                        continue
                    xs.append(cell["concurrency"]), ys.append(bound)
                    cut_x.append(cell["concurrency"]), cut_y.append(bound)
                    ax.annotate(_reached(cell, metric), (cell["concurrency"], bound), textcoords="offset points",
                                xytext=(4, -12 - 9 * index), fontsize="x-small", color=colour)
                elif p99 is not None:
                    xs.append(cell["concurrency"]), ys.append(p99)
            style = "--" if "block" in name else "-"
            ax.plot(xs, ys, style, color=colour, label=name)
            done = [(x, y) for x, y in zip(xs, ys) if (x, y) not in set(zip(cut_x, cut_y))]
            ax.plot([x for x, _ in done], [y for _, y in done], "o", color=colour)
            ax.plot(cut_x, cut_y, "^", color=colour, markerfacecolor="none", markersize=9)
        for limit in set(limits):
            ax.axhline(limit, color="grey", linestyle=":", linewidth=1)
        ax.set_xscale("log")
        ax.set_xlabel("concurrent requests")
        ax.set_ylabel(f"p99 {'TTFT' if metric == 'ttft_s' else 'end-to-end latency'} (s)")
        ax.grid(alpha=0.3)
    handles, labels = axes[1].get_legend_handles_labels()
    if any(censored(c, m) for c in cells for m in ("ttft_s", "end_to_end_latency_s")):
        handles.append(plt.Line2D([], [], marker="^", color="grey", markerfacecolor="none", linestyle="none"))
        labels.append("did not get there: p99 at least the cell's limit (first tokens or completed / planned)")
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=3, fontsize="x-small", frameon=False)
    fig.suptitle(title or "Latency p99 against concurrency")
    fig.set_layout_engine("tight", rect=(0, 0.08 + 0.03 * (len(labels) // 3), 1, 1))  # room for the legend
    return fig


def _save(fig, path: Path) -> Path:
    if not fig.get_layout_engine():
        fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
