"""The distillation report's pictures say what they show: success.png (k/n above each bar,
"not run" where a model did not run, the robot and the episodes in the title, tasks in
the table's order, the legend clear of the bars) and loss_terms.png (each term in its own
unit, the run named)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from shallowpi.distill.report import TaskSuccess, loss_figure, success_figure


def test_the_success_plot_counts_each_bar_and_says_what_did_not_run():
    # the table's order (the twin's tasks), not alphabetical; the student did not run on push
    results = [TaskSuccess("push_block_left", "teacher", 20, 20), TaskSuccess("push_block_left", "student", 19, 20),
               TaskSuccess("cube_in_bowl", "teacher", 17, 20)]
    fig = success_figure(results, "arm", not_run=["cube_in_bowl", "handover"])
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["push_block_left", "cube_in_bowl", "handover"]
    texts = sorted(t.get_text() for t in ax.texts)
    assert texts == sorted(["20/20", "19/20", "17/20", "not run", "not run", "not run"])
    assert ax.get_title() == "closed loop in the arm twin, 20 episodes a task and model"
    # the legend above the axes: a 100 % bar's top and its count are not under it
    fig.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    assert legend.y0 >= ax.get_window_extent().y1
    plt.close(fig)


def test_the_loss_plot_gives_the_attention_term_its_own_unit_and_names_the_run(tmp_path: Path):
    run = tmp_path / "arm-student6"
    run.mkdir()
    rows = [{"step": s, "loss": 1.0 / (s + 1), "task": 0.8 / (s + 1), "output": 0.1 / (s + 1),
             "attention": 0.3 / (s + 1)} for s in range(5)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    fig, last = loss_figure(run / "metrics.jsonl")
    assert last == {k: rows[-1][k] for k in ("loss", "task", "output", "attention")}
    assert fig._suptitle.get_text() == "distillation losses: arm-student6"
    by_label = {line.get_label(): ax.get_ylabel() for ax in fig.axes for line in ax.get_lines()}
    assert by_label["task"] == by_label["output"] == "squared error per action element"
    assert by_label["attention"] == "KL(teacher || student) per action query, nats"
    plt.close(fig)
    # the attention term off: one panel, no KL axis
    (run / "metrics.jsonl").write_text("".join(json.dumps({k: v for k, v in r.items() if k != "attention"}) + "\n"
                                               for r in rows))
    fig, _ = loss_figure(run / "metrics.jsonl", run="named")
    assert [ax.get_ylabel() for ax in fig.axes] == ["squared error per action element"]
    assert fig._suptitle.get_text() == "distillation losses: named"
    plt.close(fig)
