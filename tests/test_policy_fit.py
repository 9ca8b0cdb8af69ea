"""policy/fit.py: the checks `eval --sim` and `deploy` share before a policy drives a robot."""

from __future__ import annotations

from shallowpi.policy.fit import missing_cameras, rate_mismatch, size_mismatch, trained_rate


def test_sizes_must_both_equal_the_joint_count():
    assert size_mismatch(7, 7, 7, "robot 'arm'") is None
    for state, action in [(6, 7), (7, 6), (14, 14)]:
        assert size_mismatch(state, action, 7, "robot 'arm'") == (
            f"the policy has state/action sizes {state}/{action} but robot 'arm' has 7 joints")


def test_every_camera_read_must_be_there_and_extra_ones_are_fine():
    assert missing_cameras(["wrist", "front"], ["front", "top", "wrist"], "the arm twin") is None
    assert missing_cameras(["front", "overhead", "side"], ["front", "wrist"], "the arm twin") == (
        "the policy reads camera(s) ['overhead', 'side'] that the arm twin lacks (it has ['front', 'wrist'])")


def test_every_recorded_rate_must_be_the_robots():
    assert rate_mismatch([30.0, 30], 30, "robot 'arm'") is None
    assert rate_mismatch([], 30, "robot 'arm'") is None  # nothing recorded: nothing to compare
    assert rate_mismatch([15, 30, 15], 30, "robot 'arm'") == (
        "the policy was trained on episodes recorded at 15, 30 Hz but robot 'arm' runs at 30 Hz")


def test_the_rate_a_checkpoint_records_is_read_back_and_older_ones_have_none():
    assert trained_rate({"fps": "15.0", "dataset": "gone.zarr"}) == 15.0
    assert trained_rate({"dataset": "gone.zarr"}) is None
