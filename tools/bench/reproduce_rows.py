"""The rows of the Shallow-π reproduction's table (arXiv 2601.20262's ablation at the
twins' scale): which model each row is, and which rows each robot gets. reproduce.py makes
them; its docstring lists them with what each means."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    """One model of the table: the teacher (layers=None) or a student cut to `layers`."""

    name: str
    layers: int | None = None
    task: float = 1.0  # the distillation loss weights (distill.weights.*)
    output: float = 1.0
    attention: float = 1.0
    trained: bool = True

    def describe(self) -> str:
        if self.layers is None:
            return "teacher"
        if not self.trained:
            return f"{self.layers} layers, cut, not trained"
        terms = [n for n, w in (("task", self.task), ("output", self.output), ("attention", self.attention)) if w]
        return f"{self.layers} layers, " + " + ".join(terms)


ROWS = {r.name: r for r in [
    Row("teacher"),
    Row("shallow9", 9), Row("shallow6", 6), Row("shallow4", 4), Row("shallow3", 3),
    Row("task6", 6, output=0, attention=0), Row("task4", 4, output=0, attention=0),
    Row("kd6", 6, attention=0),
    Row("cut6", 6, trained=False),
]}
ROBOT_ROWS = {"arm": list(ROWS), "humanoid": ["teacher", "shallow6", "task6"],
              "bimanual": ["teacher", "shallow6", "task6"]}
