"""tools/bench/reproduce_report.py's picture: x ticks at the layer counts kept, the latency
axis from 0 ms, one colour a robot in both panels (measured solid, FLOP-ideal dashed)."""

from __future__ import annotations

import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench_scripts import load_bench


@pytest.fixture(scope="module")
def reproduce_report():
    return load_bench("reproduce_report")


def _row(row: str, layers: int, p50: float, gflops: float, successes: int) -> dict:
    task = {"successes": successes, "episodes": 200, "interval95": [successes / 200 - 0.05, successes / 200 + 0.04]}
    return {"row": row, "model": row, "layers": layers, "p50_ms": p50, "gflops": gflops, "tasks": {"cube": task}}


def test_the_plot_ticks_whole_layers_starts_latency_at_zero_and_keeps_a_colour_a_robot(reproduce_report):
    results = [
        # one depth only (a --rows shallow4 run): matplotlib ticked 3.80, 3.85, ... around it
        {"robot": "arm", "rows": [_row("shallow4", 4, 18.4, 0.19, 185), _row("task4", 4, 18.4, 0.19, 187)]},
        {"robot": "humanoid", "rows": [_row("teacher", 18, 59.2, 0.83, 169), _row("shallow6", 6, 21.8, 0.30, 173)]},
    ]
    fig = reproduce_report.figure(results)
    success, latency = fig.axes
    for ax in (success, latency):
        assert list(ax.get_xticks()) == [4, 6, 18]
    assert latency.get_ylim()[0] == 0
    colours = {}
    for ax in (success, latency):
        for line in ax.get_lines():
            if not line.get_label().startswith("_"):
                colours.setdefault(line.get_label().split()[0], set()).add(matplotlib.colors.to_hex(line.get_color()))
    assert len(colours["arm"]) == len(colours["humanoid"]) == 1 and colours["arm"] != colours["humanoid"]
    styles = {line.get_label(): line.get_linestyle() for line in latency.get_lines()}
    assert styles == {"arm measured p50": "-", "humanoid measured p50": "-", "humanoid FLOP-ideal": "--"}
    plt.close(fig)


def test_the_data_curve_labels_come_from_its_data_and_its_title_names_the_robot():
    """tools/bench/distill_data_curve.py wrote "% of 200 unseen seeds" and "teacher (18
    layers, 120 a task)" whatever its runs held."""
    curve = load_bench("distill_data_curve")

    def point(episodes: int, row: str, successes: int) -> dict:
        return {"episodes": episodes, "row": row, "task": "cube", "successes": successes, "n": 50,
                "interval95": [successes / 50 - 0.1, successes / 50 + 0.08]}

    table = [point(10, "shallow6", 30), point(10, "task6", 25), point(30, "shallow6", 40), point(30, "task6", 38)]
    teacher = {"row": "teacher", "layers": 12, "tasks": {"cube": {"successes": 45, "episodes": 60}}}
    fig = curve.figure(table, teacher, 80, "humanoid")
    (ax,) = fig.axes
    assert ax.get_ylabel() == "closed-loop success, % of 50 unseen seeds"
    labels = ax.get_legend_handles_labels()[1]
    assert labels[0] == "teacher (12 layers, 80 a task), 95 % interval"
    assert fig._suptitle.get_text().startswith("humanoid: ")
    assert list(ax.get_xticks()) == [10, 30]
    plt.close(fig)
