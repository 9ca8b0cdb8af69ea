"""The joint vocabulary every stage shares: the kinds of joint, and the one rule for a joint
whose kind nobody wrote down.

A robot file may give a joint's `kind:`; the recorder stores each joint's kind beside its
name. Where neither says (a robot file without `kind:`, a store recorded before kinds were
stored, a dataset imported from lerobot, whose joints read `gripper.pos`), the joint's name
decides, here and nowhere else, so that the spec, the store and the policy agree.
"""

from __future__ import annotations

# revolute: rad; linear: m (a lead screw turned by a servo); gripper: opening 0 (closed) .. 1
JOINT_KINDS = ("revolute", "linear", "gripper")
# The unit a position of each measured kind is in (speeds are these per second); a gripper's
# opening is a fraction of its calibrated travel and has none.
METRIC_UNITS = {"revolute": "rad", "linear": "m"}


def named_gripper(name: str) -> bool:
    """Whether a joint's name says it is a gripper: "gripper" anywhere in it, in any case
    (`gripper`, `left_gripper`, lerobot's `gripper.pos`, `Gripper_L`)."""
    return "gripper" in name.lower()
