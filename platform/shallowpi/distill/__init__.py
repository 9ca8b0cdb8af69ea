"""Shallow-π distillation (to come): a k-layer student built from the teacher's layers
(18 -> 6 in both towers by default), trained through the one training loop (train/) with a
three-term objective: ground-truth flow matching, output distillation (student velocity vs
the frozen teacher's on the same noise and time) and attention distillation; then its report.

The teacher's trainer, fine-tuning and offline evaluation live in train/, the closed-loop
evaluation in the twin in evaluate/.
"""
