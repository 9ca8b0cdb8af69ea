"""π0-architecture policy: model (teacher and student sizes), tokenizer, normalizer, weights."""

from shallowpi.policy.config import GemmaConfig, PolicyConfig, VisionConfig, load_preset
from shallowpi.policy.model import Pi0Model
from shallowpi.policy.policy import Features, Policy

__all__ = [
    "Features",
    "GemmaConfig",
    "Pi0Model",
    "Policy",
    "PolicyConfig",
    "VisionConfig",
    "load_preset",
]
