"""flaskapp.loadtest.plots: each plot writes a PNG, whatever the records hold."""
from __future__ import annotations

from flaskapp.loadtest.client import Record
from flaskapp.loadtest.plots import (censored, plot_distributions, plot_scaling, plot_timeline, scaling_figure,
                                     timeline_figure)
from flaskapp.loadtest.stats import summarize

PNG = b"\x89PNG\r\n\x1a\n"


def records(kind: str, count: int, ttft: float, total: float) -> list[Record]:
    made = [Record(kind=kind, start=i * 0.01, ttft=ttft, total=total + i * 0.01, chunks=5, status=200)
            for i in range(count)]
    made.append(Record(kind=kind, start=0.0, total=0.3, status=0, error="timeout"))
    return made


def test_timeline_and_distributions_write_pngs(tmp_path):
    groups = {"block": records("block", 20, 2.5, 2.5), "stream": records("stream", 20, 0.5, 2.5)}
    assert plot_timeline(groups, tmp_path / "timeline.png").read_bytes().startswith(PNG)
    assert plot_distributions(groups, tmp_path / "dist.png").read_bytes().startswith(PNG)


def test_an_empty_group_still_plots(tmp_path):
    assert plot_timeline({"stream": []}, tmp_path / "t.png").read_bytes().startswith(PNG)
    assert plot_distributions({"stream": []}, tmp_path / "d.png").read_bytes().startswith(PNG)


def test_scaling_plot_from_cells(tmp_path):
    cells = [{"setup": "gevent", "kind": kind, "concurrency": c,
              "summary": summarize(records(kind, 5, 0.5, 2.5), 3.0)}
             for kind in ("block", "stream") for c in (1, 10)]
    assert plot_scaling(cells, tmp_path / "s.png").read_bytes().startswith(PNG)


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_the_timeline_legend_covers_no_bar():
    # The blocking bar ends, with its first-text mark, at the bottom right: where the legend once sat.
    groups = {"block": records("block", 5, 2.5, 2.5), "stream": records("stream", 5, 0.5, 2.5)}
    fig = timeline_figure(groups, "t")
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent()
    assert not _overlaps(legend, ax.get_window_extent())


def _cell(setup: str, kind: str, concurrency: int, completed: int, planned: int) -> dict:
    made = records(kind, completed, 0.5, 2.5)[:-1]
    made += [Record(kind=kind, start=0.0, total=5.0, error="cancelled")] * (planned - completed)
    return {"setup": setup, "kind": kind, "concurrency": concurrency, "time_limit_s": 5.0,
            "summary": summarize(made, 5.0, planned=planned)}


def test_scaling_shows_what_did_not_finish_at_the_limit():
    # sync blocking at C=10: 2 of 10 finished. Its p99 is not the 2.5 s of those two.
    cells = [_cell("sync", "block", 1, 1, 1), _cell("sync", "block", 10, 2, 10),
             _cell("gevent", "block", 1, 1, 1), _cell("gevent", "block", 10, 10, 10)]
    assert [censored(c) for c in cells] == [False, True, False, False]
    fig = scaling_figure(cells)
    ttft_axes = fig.axes[0]
    texts = [t.get_text() for t in ttft_axes.texts]
    assert texts == ["2/10"]
    sync_line = next(line for line in ttft_axes.lines if line.get_label() == "sync block")
    assert list(sync_line.get_ydata()) == [0.5, 5.0]  # the censored point at the 5 s limit, not the 0.5 s of the two
    assert any("did not get there" in t.get_text() for t in fig.legends[0].get_texts())
