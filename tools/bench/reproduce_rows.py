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
    failed_from_teacher: bool = False  # distill.failed_episodes=teacher (a recipe with successful_only)

    def describe(self) -> str:
        if self.layers is None:
            return "teacher"
        if not self.trained:
            return f"{self.layers} layers, cut, not trained"
        terms = [n for n, w in (("task", self.task), ("output", self.output), ("attention", self.attention)) if w]
        failed = ", failed demonstrations through the teacher" if self.failed_from_teacher else ""
        return f"{self.layers} layers, " + " + ".join(terms) + failed

    def distill_settings(self) -> list[str]:
        """The `platform distill` overrides that make this row's student (loss weights, and
        what the failed demonstrations train)."""
        failed = "teacher" if self.failed_from_teacher else "skip"
        return [f"distill.weights.task={self.task}", f"distill.weights.output={self.output}",
                f"distill.weights.attention={self.attention}", f"distill.failed_episodes={failed}"]


ROWS = {r.name: r for r in [
    Row("teacher"),
    Row("shallow9", 9), Row("shallow6", 6), Row("shallow4", 4), Row("shallow3", 3),
    Row("task6", 6, output=0, attention=0), Row("task4", 4, output=0, attention=0),
    Row("kd6", 6, attention=0),
    Row("cut6", 6, trained=False),
    Row("shallow6f", 6, failed_from_teacher=True),
]}
ROBOT_ROWS = {"arm": list(ROWS), "humanoid": ["teacher", "shallow6", "task6", "shallow6f"],
              "bimanual": ["teacher", "shallow6", "task6"]}


def leaves_out_failed(policy: str, settings: list[str]) -> bool:
    """Whether the recipe trains on the demonstrations not marked failed only
    (policy.train.successful_only, as `platform train` and `distill` compose it from the
    preset and the `--set` overrides): only then are there failed ones for shallow6f.
    SystemExit (one line) for overrides the config refuses."""
    from shallowpi.config import compose
    from shallowpi.errors import ConfigError

    try:
        cfg = compose([f"policy={policy}", *settings])
    except ConfigError as exc:
        raise SystemExit(f"--set: {exc}") from None
    return bool(cfg.policy.get("train", {}).get("successful_only", False))


def robot_rows(robot: str, failed_left_out: bool) -> list[str]:
    """The rows `robot` gets: ROBOT_ROWS[robot], less the rows that learn the failed
    demonstrations from the teacher when the recipe keeps every demonstration
    (`failed_left_out` False, see leaves_out_failed: the arm's recipe)."""
    return [name for name in ROBOT_ROWS[robot] if failed_left_out or not ROWS[name].failed_from_teacher]
