"""flaskapp.loadtest.plots: each plot writes a PNG, whatever the records hold."""
from __future__ import annotations

from flaskapp.loadtest.client import Record
from flaskapp.loadtest.plots import plot_distributions, plot_scaling, plot_timeline
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
