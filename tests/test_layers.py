"""Imports point down the stages only (DESIGN.md): cli -> record/distill/deploy ->
train/evaluate -> robots/teleop/data/policy -> hardware; telemetry and tui beside them.

Every `import shallowpi.X` in the source, at module level or inside a function, is checked
against the stage of the importing module."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "platform" / "shallowpi"

# Higher imports lower (or its own tier). Base modules any stage may use.
TIERS = {
    "hardware": 0,
    "robots": 1, "teleop": 1, "data": 1, "policy": 1,
    "train": 2, "evaluate": 2,
    "record": 3, "distill": 3, "deploy": 3,
    "commands": 4, "cli": 4, "__main__": 4,
}
BASE = {"errors", "config", "joints", "durable_files", "deferred_signals", "torchrun_env", "terminal", "log_format", "__init__"}
# Beside the stages: only the recorder, executor and commands (tier >= 3) publish or show
# status; telemetry and tui import only each other and the base.
BESIDE = {"telemetry", "tui"}
# Known upward imports, scheduled for removal: none left (the scripted experts, which read
# the twin, moved beside it into robots/sim/experts.py).
KNOWN: set[tuple[str, str]] = set()


def _stage_imports() -> list[tuple[str, str, str]]:
    """(importing stage, imported stage, file) for every import of another stage."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        src = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            modules = []
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module] if node.module != "shallowpi" else [f"shallowpi.{a.name}" for a in node.names]
            for module in modules:
                parts = module.split(".")
                if parts[0] == "shallowpi" and len(parts) > 1 and parts[1] != src:
                    found.append((src, parts[1], str(path.relative_to(PACKAGE))))
    return found


def _allowed(src: str, dst: str) -> bool:
    if dst in BASE or (src, dst) in KNOWN:
        return True
    if src in BESIDE:
        return dst in BESIDE
    if dst in BESIDE:
        return TIERS[src] >= 3
    return TIERS[dst] <= TIERS[src]


def test_every_stage_is_known():
    stages = {p.name.removesuffix(".py") for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()}
    assert stages <= set(TIERS) | BASE | BESIDE, stages - set(TIERS) - BASE - BESIDE


def test_no_import_runs_upward():
    upward = sorted({f"{file}: {src} -> {dst}" for src, dst, file in _stage_imports() if not _allowed(src, dst)})
    assert not upward, "\n".join(upward)


def test_the_check_sees_lazy_imports():
    # commands import most stages inside functions; the scan must find those.
    assert ("commands", "train", "commands/train_cmd.py") in _stage_imports()
    assert not _allowed("policy", "train") and not _allowed("train", "distill") and not _allowed("data", "tui")
