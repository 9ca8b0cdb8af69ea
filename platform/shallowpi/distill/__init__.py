"""Shallow-π distillation: a k-layer student cut from the teacher's layers (18 -> 6 in both
towers by default), trained through the one training loop (train/) with a three-term
objective (ground-truth flow matching, output distillation against the frozen teacher on
the same noise and time, attention distillation of the action queries), then its report.

    student.py     which layers (uniform, first, greedy) and the surgery that copies them
    objective.py   DistillationObjective: task + output + attention, weighted, switchable
    settings.py    DistillConfig (configs/distill/)
    distiller.py   teacher checks (hash, features), split, selection, training, metadata
    report.py      runs/<name>/report.md: losses, action error, success in the twin, cost

The teacher's trainer, fine-tuning and offline evaluation live in train/, the closed-loop
evaluation in the twin in evaluate/.
"""
