"""`ExecutorConfig`: how the executor turns chunks into actions and guards the robot
(configs/config.yaml `deploy:`), and `Strategy`, the four ways chunks become actions
(deploy/executor.py's docstring says what each does).

Robot-side: imports without torch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from shallowpi.errors import ConfigError, refuse_fractional, refuse_unknown_keys
from shallowpi.policy.action_selection import ActionSelectionConfig
from shallowpi.policy.action_selection import Strategy as Selection
from shallowpi.robots.catch_up import speed_problem


class Strategy(str, Enum):
    """How chunks become actions (deploy/executor.py's docstring)."""

    SYNC = "sync"
    ASYNC = "async"
    ENSEMBLE = "ensemble"
    RTC = "rtc"


SELECTION = {Strategy.SYNC: Selection.REPLAN, Strategy.ASYNC: Selection.REPLAN,
             Strategy.ENSEMBLE: Selection.ENSEMBLE, Strategy.RTC: Selection.RTC}


@dataclass
class ExecutorConfig:
    """configs/config.yaml `deploy:` (and `action_selection:` for K, m and the delay window).

    strategy          sync | async | ensemble | rtc (deploy/executor.py's docstring)
    selection         replan_every (K), ensemble_coeff (m), delay_window: the shared action
                      selection settings (policy/action_selection.py); its strategy and
                      initial delay are set from `strategy` and the warm-up
    max_frame_age_s   the watchdog holds when any camera's latest frame is older than this
                      (on a robot, a camera silent 4x as long, at least 1 s, is a fault:
                      commands/deploy_targets.camera_timeout_for)
    seam_ticks        largest jump allowed between the last command and the first action
                      of a newly arrived chunk, in ticks of each joint's top speed
                      (|jump| / (max_velocity / fps)): one unit for revolute, prismatic and
                      gripper joints alike (2.5: 0.25 rad at 3 rad/s and 30 fps, 17 mm of a
                      0.2 m/s lift); beyond it the jump is counted and the commands ramp to
                      the new chunk at top speed. At least 1 (a tick at top speed is no jump)
    clamp_tolerance   a command the robot changed by more than this (joint units) counts as
                      a clamp; smaller corrections are applied all the same, not counted (a
                      policy a hair past the limit its demonstrations sat on, every tick)
    warmup_runs       chunks computed before the robot moves (>= 2: the first is cold, the
                      last one's latency is the initial delay estimate)
    rtc_mask          rtc only: `soft` inpaints the whole overlap with the current chunk under
                      real-time chunking's decaying weights (1 on the frozen prefix, then
                      falling towards 0 across the overlap, 0 after it: the seam is a
                      cross-fade), `hard`
                      only the frozen prefix (the new chunk free from its first unfrozen
                      action on, which is where a change of plan shows as a jump)
    injected_delay_s  added to every inference (the delay experiment; 0 on a robot)
    max_inference_s   the inference watchdog: a chunk not back this many seconds after its
                      request (a stuck backend, a hung GPU), or still computing this long
                      after the episode's end, holds the robot and ends the episode as a
                      fault (wall time; the twin on simulated time computes
                      its chunks at the request and cannot hang this way)
    max_chunk_age_s   a chunk that arrives this long after it was asked for (a GPU hiccup,
                      a slow first run; its frame was up to max_frame_age_s older still) is
                      dropped, counted (stale_chunks) and asked again from a fresh
                      observation: a plan made from a picture
                      this old may not fit the scene any more, with the chunks before it
                      (realtime only; the robot holds meanwhile, as while any chunk is
                      awaited; no chunk fit to act on for max_inference_s is a fault)
    start_speed       before each episode on the robot, the fraction of its top speed at which
                      it goes to the pose the demonstrations started from (the checkpoint's
                      start_state; robots/catch_up.py), as the twin's episodes begin at its
                      home pose; null: each episode starts where the last one ended. Also the
                      speed at which an episode closes on a policy's first action more than
                      seam_ticks away (record.catch_up_speed's default, 0.25, when null)
    realtime          wall-clock ticks (a robot); False: the twin's simulated time, each
                      chunk arriving ceil(measured latency x fps) ticks after its request
    parity_tolerance  before anything connects, the backend computes the bundle's reference
                      chunks, plain and inpainted (deploy/reference.py); a difference from the
                      torch policy's above this many action standard deviations refuses the run
    fault_hold_s      on the robot with --yes (a run nobody attends), how long it holds its
                      pose with torque on after a fault that leaves it holding (a policy or
                      camera fault; a servo fault's sound buses) before `platform deploy` turns
                      torque off and exits 1; without --yes it holds until the operator ends
                      it (commands/deploy_holds.hold_until_the_operator_ends). Seconds, >= 0
    """

    strategy: Strategy | str = Strategy.RTC
    selection: ActionSelectionConfig = field(default_factory=ActionSelectionConfig)
    max_frame_age_s: float = 0.25
    seam_ticks: float = 2.5
    clamp_tolerance: float = 0.01
    warmup_runs: int = 3
    rtc_mask: str = "soft"
    injected_delay_s: float = 0.0
    max_inference_s: float = 5.0
    max_chunk_age_s: float = 1.0
    start_speed: float | None = 0.25
    realtime: bool = True
    parity_tolerance: float = 0.05
    fault_hold_s: float = 10.0

    def __post_init__(self) -> None:
        try:
            self.strategy = Strategy(self.strategy)
        except ValueError:
            raise ConfigError(f"unknown deploy strategy '{self.strategy}'; choose one of: "
                              f"{', '.join(s.value for s in Strategy)}") from None
        # NaN passes every comparison's refusal (nan < 0 is False): a NaN delay killed the
        # inference thread in time.sleep, an infinite watchdog never fires.
        for name in ("max_frame_age_s", "seam_ticks", "clamp_tolerance", "injected_delay_s", "max_inference_s",
                     "max_chunk_age_s", "parity_tolerance", "fault_hold_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"deploy.{name} must be a finite number, got {value!r}")
        refuse_fractional("deploy", self, ("warmup_runs",))  # range(3.0) failed at warm-up, after connect
        for name in ("max_frame_age_s", "clamp_tolerance", "max_inference_s", "max_chunk_age_s", "parity_tolerance"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"deploy.{name} must be positive, got {getattr(self, name)}")
        if not self.seam_ticks >= 1:
            raise ConfigError(f"deploy.seam_ticks must be at least 1 (a tick at top speed is the robot's own "
                              f"step), got {self.seam_ticks}")
        if self.rtc_mask not in ("soft", "hard"):
            raise ConfigError(f"deploy.rtc_mask must be soft or hard, got '{self.rtc_mask}'")
        for name in ("injected_delay_s", "fault_hold_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"deploy.{name} must be >= 0, got {getattr(self, name)}")
        if problem := speed_problem(self.start_speed, "deploy.start_speed"):
            raise ConfigError(problem)
        if self.warmup_runs < 2:  # the first run is the cold one; the last one is measured
            raise ConfigError(f"deploy.warmup_runs must be at least 2, got {self.warmup_runs}")

    @classmethod
    def from_config(cls, section: Mapping[str, Any], selection: Mapping[str, Any] | None = None) -> ExecutorConfig:
        """From configs/config.yaml's `deploy` and `action_selection` sections."""
        refuse_unknown_keys("deploy", section, cls, exclude=("selection",))  # its own section
        base = ActionSelectionConfig.from_config(selection or {})
        return cls(**dict(section), selection=base)

    def selection_for(self, initial_delay: int) -> ActionSelectionConfig:
        """The selector's settings: this strategy, an initial delay measured at warm-up
        (sync waits for every chunk, so its delay is 0 whatever inference takes)."""
        delay = 0 if self.strategy is Strategy.SYNC else initial_delay
        return dataclasses.replace(self.selection, strategy=SELECTION[self.strategy], initial_delay=delay)
