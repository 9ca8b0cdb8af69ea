"""π0-architecture policy: model (teacher and student sizes), tokenizer, normalizer, weights,
and action selection.

The model needs torch; `action_selection` needs only numpy and runs on the robot's core
install (Python 3.10, no torch). So the names below load on first use (PEP 562), not with
the package: `import shallowpi.policy.action_selection` never imports torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shallowpi.policy.config import GemmaConfig, PolicyConfig, VisionConfig, load_preset
    from shallowpi.policy.model import Pi0Model
    from shallowpi.policy.policy import Features, Policy

_HOME = {
    "Features": "shallowpi.policy.policy",
    "GemmaConfig": "shallowpi.policy.config",
    "Pi0Model": "shallowpi.policy.model",
    "Policy": "shallowpi.policy.policy",
    "PolicyConfig": "shallowpi.policy.config",
    "VisionConfig": "shallowpi.policy.config",
    "load_preset": "shallowpi.policy.config",
}

__all__ = [
    "Features",
    "GemmaConfig",
    "Pi0Model",
    "Policy",
    "PolicyConfig",
    "VisionConfig",
    "load_preset",
]


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOME[name]), name)
