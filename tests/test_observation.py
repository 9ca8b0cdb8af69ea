"""The one observation type and the one place it gets lerobot's flat names."""

from __future__ import annotations

import numpy as np
import pytest

from shallowpi.data.features import robot_features
from shallowpi.robots.observation import Frame, Observation, lerobot_row


def observation() -> Observation:
    image = np.full((4, 6, 3), 7, np.uint8)
    return Observation(
        time_s=100.0,
        state=np.arange(3, dtype=np.float32),
        frames={"top": Frame(image, time_s=99.96, sequence=12), "wrist": Frame(image, time_s=100.0, sequence=3)},
    )


def test_frame_ages_are_on_the_observation_clock():
    obs = observation()
    ages = obs.frame_ages_s()
    assert ages["top"] == pytest.approx(0.04) and ages["wrist"] == 0.0
    assert obs.oldest_frame_s() == pytest.approx(0.04)
    assert Observation(1.0, np.zeros(2, np.float32)).oldest_frame_s() == 0.0  # no cameras


def test_lerobot_row_names_every_value_and_keeps_each_frame_age_on_the_episode_clock():
    obs = observation()
    row = lerobot_row(obs, time_s=0.5)  # the recorder's episode clock
    assert list(row.values) == ["observation.state", "observation.images.top", "observation.images.wrist"]
    assert row.values["observation.state"] is obs.state
    assert row.timestamp == 0.5
    assert row.capture_times == pytest.approx({"observation.images.top": 0.46, "observation.images.wrist": 0.5})
    # Unshifted, it is the robot's own clock.
    assert lerobot_row(obs).capture_times["observation.images.top"] == pytest.approx(99.96)
    # A store built by the one features builder takes the row as it is (plus the action).
    features = robot_features(["a", "b", "c"], {"top": (4, 6), "wrist": (4, 6)})
    assert set(features) == {*row.values, "action"}
    for key, value in row.values.items():
        features[key].check_value(key, value)
