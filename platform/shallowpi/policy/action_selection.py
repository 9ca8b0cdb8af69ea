"""Which action the robot sends at each control tick, given the action chunks a policy predicts.

One module for `platform eval --sim` and the executor, so evaluation measures the loop the
robot runs. Three strategies:

replan    Execute the newest chunk; ask for the next one every K sent actions (π0's way:
          open loop within a chunk, closed loop across chunks). With no inference delay
          this is the synchronous loop; with one it is asynchronous replanning: the new
          chunk takes over where the robot has got to when it arrives.
ensemble  Temporal ensembling (ACT, Zhao et al. 2023): a new chunk every K actions (K = 1 in
          ACT), and the action for a step is the average of every chunk's prediction for
          it, weighted w_i = exp(-m * i) with i = 0 the oldest prediction.
rtc       Real-time chunking (Black et al. 2025, "Real-Time Execution of Action Chunking
          Flow Policies"): replanning whose requests carry what the next chunk must agree
          with: the current chunk's remaining actions, how many of them will run before
          the next chunk can arrive (frozen), and soft weights over the rest of the overlap
          for guided inpainting. The inpainting itself is the sampler's job.

Two clocks. A *tick* is one control period, whether the robot moves or holds. A *step*
counts the actions actually sent: it stops while the robot holds because no action is
available. A chunk predicted from the observation taken at step o holds the actions for
steps o, o+1, ..., o+H-1 (its first action is the one to send right after that
observation, as in training). When the chunk arrives, the actions already sent since its
request are skipped: the chunk takes over at index `step - o`, the count of actions
consumed, never an index from a latency estimate (lerobot 0.6.1 indexes by its estimate,
and skips actions, or jumps, when the two disagree). In particular the first chunk, which
arrives while the robot holds, starts at its index 0.

The loop, once per tick (the executor's inference runs elsewhere; eval's is immediate or
delayed by a set number of ticks):

    if <the chunk for `request` has arrived>:
        selector.deliver(request, chunk)         # chunk [H, A], robot units
    if selector.wants_chunk():                   # nothing pending and a chunk is due
        request = selector.request()             # -> inference on the current observation
        (with no delay: deliver its chunk here)
    action = selector.next_action()              # [A], or None: hold position

Deliver before asking: a chunk that arrives on the tick the next one is due must be in
place when `wants_chunk` decides.

At most one request is pending at a time. Not thread-safe: call it from the control loop
only. Pure numpy: the robot's core install (Python 3.10, no torch) imports it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from shallowpi.errors import ConfigError, refuse_unknown_keys


class Strategy(str, Enum):
    """How each tick's action comes from the chunks: replan, ensemble or rtc (module docstring)."""

    REPLAN = "replan"
    ENSEMBLE = "ensemble"
    RTC = "rtc"


@dataclass
class ActionSelectionConfig:
    """How actions are chosen from chunks (configs/config.yaml, `action_selection`).

    strategy        replan | ensemble | rtc (module docstring)
    replan_every    K: ask for a new chunk every K sent actions (RTC's execution horizon s);
                    None: half the chunk for replan and rtc, 1 for ensemble
    ensemble_coeff  ACT's m: weight exp(-m * i) for the i-th oldest prediction of a step;
                    m > 0 favours older predictions (smoother), m < 0 newer ones
    delay_window    the inference delay estimate is the largest of the last N measured
    initial_delay   the estimate in ticks before anything is measured
    rtc_fade        rtc: the soft mask decays over at most this many actions after the
                    frozen prefix, then 0 (the new chunk's own plan); None: over the whole
                    overlap, the paper's W
    """

    strategy: Strategy | str = Strategy.REPLAN
    replan_every: int | None = None
    ensemble_coeff: float = 0.01
    delay_window: int = 10
    initial_delay: int = 0
    rtc_fade: int | None = None

    def __post_init__(self) -> None:
        try:
            self.strategy = Strategy(self.strategy)
        except ValueError:
            choices = ", ".join(s.value for s in Strategy)
            raise ConfigError(
                f"unknown action selection strategy '{self.strategy}'; choose one of: {choices}"
            ) from None
        if self.replan_every is not None and self.replan_every < 1:
            raise ConfigError(f"replan every must be at least 1 action, got {self.replan_every}")
        if not math.isfinite(self.ensemble_coeff):
            raise ConfigError(f"the ensembling coefficient must be finite, got {self.ensemble_coeff}")
        if self.delay_window < 1:
            raise ConfigError(f"the delay window must hold at least 1 measurement, got {self.delay_window}")
        if self.initial_delay < 0:
            raise ConfigError(f"the initial inference delay must be >= 0 ticks, got {self.initial_delay}")
        if self.rtc_fade is not None and self.rtc_fade < 1:
            raise ConfigError(f"rtc_fade must be at least 1 action (or null: the whole overlap), got {self.rtc_fade}")

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> ActionSelectionConfig:
        """From configs/config.yaml's `action_selection` (a DictConfig or a dict)."""
        refuse_unknown_keys("action_selection", section, cls)
        return cls(**{key: section[key] for key in section})

    def every(self, chunk_len: int) -> int:
        """K for chunks of `chunk_len` actions: the set value, else the strategy's default."""
        if self.replan_every is not None:
            return self.replan_every
        return 1 if self.strategy is Strategy.ENSEMBLE else max(1, chunk_len // 2)


def rtc_weights(chunk_len: int, frozen: int, overlap: int) -> np.ndarray:
    """Real-time chunking's soft mask over the next chunk's indices: [chunk_len] in [0, 1].

    Index i < frozen: 1 (those actions run before the new chunk can arrive; it must match
    them). frozen <= i < overlap: c_i * (e^c_i - 1) / (e - 1) with
    c_i = (overlap - i) / (overlap - frozen + 1), decaying towards the overlap's end.
    i >= overlap: 0 (the current chunk has no action there to agree with). With overlap =
    H - s this is the paper's W (Black et al. 2025, eq. 5).
    """
    if not 0 <= frozen <= overlap <= chunk_len:
        raise ValueError(f"need 0 <= frozen ({frozen}) <= overlap ({overlap}) <= chunk length ({chunk_len})")
    weights = np.zeros(chunk_len)
    weights[:frozen] = 1.0
    c = (overlap - np.arange(frozen, overlap)) / (overlap - frozen + 1)
    weights[frozen:overlap] = c * np.expm1(c) / (math.e - 1)
    return weights


@dataclass(frozen=True)
class Guidance:
    """What the next chunk must agree with (rtc): the current chunk from the request's step on.

    target   [H, A] the current chunk's remaining actions, robot units, padded to H with its
             last one (rows >= overlap carry weight 0; padding with the last commanded pose
             rather than zeros keeps a sampler that ignores the weights from pulling the
             seam towards zero, which in normalised units is the dataset mean)
    weights  [H] `rtc_weights(H, frozen, overlap)`, the decay ended at frozen + rtc_fade if set
    frozen   d: how many of them are expected to run before the next chunk arrives (the
             delay estimate, capped by the overlap): committed
    overlap  how many of target's rows are real actions of the current chunk
    """

    target: np.ndarray
    weights: np.ndarray
    frozen: int
    overlap: int


@dataclass(frozen=True)
class ChunkRequest:
    """A chunk asked for from the observation taken now: chunk[j] is for step `step + j`.

    guidance is set for rtc once a chunk is executing, else None.
    """

    step: int
    tick: int
    guidance: Guidance | None = None


@dataclass(frozen=True)
class _Chunk:
    start: int  # the step its index 0 is for
    actions: np.ndarray  # [H, A]

    def at(self, step: int) -> np.ndarray | None:
        """The chunk's action [A] for control step `step`; None outside the chunk."""
        j = step - self.start
        return self.actions[j] if 0 <= j < len(self.actions) else None


class ActionSelector:
    """Bookkeeping of chunks, steps, ticks and inference delays for one episode (module
    docstring). Build a new one per episode."""

    def __init__(self, cfg: ActionSelectionConfig) -> None:
        self.cfg = cfg
        self.tick = 0  # control periods so far
        self.step = 0  # actions sent so far
        self.pending: ChunkRequest | None = None
        self._chunks: list[_Chunk] = []  # delivered, oldest first; rtc and replan keep one
        self._delays: deque[int] = deque(maxlen=cfg.delay_window)
        self._deliveries = 0

    # -- asking for chunks

    @property
    def chunk_len(self) -> int | None:
        """H, known once a chunk has arrived."""
        return len(self._chunks[-1].actions) if self._chunks else None

    def wants_chunk(self) -> bool:
        """Whether to start an inference now: none pending, and K actions sent since the
        newest chunk's observation or no more than the delay estimate d left in it (asked
        later, the next chunk arrives after this one ran out and the robot holds; this binds
        when K > H - d), or no chunk at all."""
        if self.pending is not None:
            return False
        if not self._chunks:
            return True
        newest = self._chunks[-1]
        H = len(newest.actions)
        due = min(self.cfg.every(H), H - self.delay_estimate)
        return self.step - newest.start >= due

    def request(self) -> ChunkRequest:
        """Record an inference started on the observation taken now. Raises RuntimeError
        if one is pending (one at a time: an rtc prefix depends on the chunk before)."""
        if self.pending is not None:
            raise RuntimeError(f"a chunk requested at tick {self.pending.tick} is still pending")
        guidance = self._guidance() if self.cfg.strategy is Strategy.RTC else None
        self.pending = ChunkRequest(self.step, self.tick, guidance)
        return self.pending

    def _guidance(self) -> Guidance | None:
        if not self._chunks:
            return None
        newest = self._chunks[-1]
        H = len(newest.actions)
        remaining = newest.actions[self.step - newest.start :]  # [overlap, A]
        if len(remaining) == 0:
            return None
        overlap = len(remaining)
        frozen = min(self.delay_estimate, overlap)
        target = np.concatenate([remaining, np.repeat(remaining[-1:], H - overlap, axis=0)])
        fade_end = overlap if self.cfg.rtc_fade is None else min(overlap, frozen + self.cfg.rtc_fade)
        return Guidance(target, rtc_weights(H, frozen, fade_end), frozen, overlap)

    def deliver(self, request: ChunkRequest, chunk: np.ndarray) -> int:
        """The chunk [H, A] for `request` has arrived. Returns the index it takes over at:
        the actions sent since the request (those are skipped). Records the measured delay
        in ticks, except the first chunk's (one-time costs such as allocation, caches and
        CUDA graph capture are not the steady state; counting them inflates the estimate).

        Raises RuntimeError for a request that is not the pending one, ValueError for a
        chunk that is not [H, A] or whose shape differs from the chunks before.
        """
        if request is not self.pending:
            raise RuntimeError(f"the chunk for the request at tick {request.tick} is not the pending one")
        actions = np.asarray(chunk, dtype=np.float64)
        if actions.ndim != 2 or len(actions) == 0:
            raise ValueError(f"a chunk must be [H, A] with H >= 1, got shape {actions.shape}")
        if self._chunks and actions.shape != self._chunks[-1].actions.shape:
            before = self._chunks[-1].actions.shape
            raise ValueError(f"chunk of shape {actions.shape} after chunks of {before}")
        if self._deliveries > 0:
            self._delays.append(self.tick - request.tick)
        self._deliveries += 1
        self.pending = None
        new = _Chunk(request.step, actions)
        if self.cfg.strategy is Strategy.ENSEMBLE:
            self._chunks.append(new)
        else:
            self._chunks = [new]
        return self.step - request.step

    def discard(self, request: ChunkRequest) -> None:
        """The chunk for `request` came back too late to act on (planned from a picture
        that old): forget it, and the chunks delivered before it, planned from older
        pictures still; `next_action()` holds until a chunk of a fresh observation
        arrives. Its delay is left out of the estimate, like the cold first chunk's: a
        hiccup of a second would set the estimate (the largest of the window) for the
        next `delay_window` chunks, under rtc freezing a second of each. Raises
        RuntimeError for a request that is not the pending one."""
        if request is not self.pending:
            raise RuntimeError(f"the chunk for the request at tick {request.tick} is not the pending one")
        self.pending = None
        self._chunks = []

    @property
    def delay_estimate(self) -> int:
        """Expected inference delay in ticks: the largest of the recent measurements, else
        the configured initial delay. Conservative by design: freezing too few actions lets
        the next chunk disagree with what the robot is already doing."""
        return max(self._delays) if self._delays else self.cfg.initial_delay

    @property
    def measured_delays(self) -> list[int]:
        """The delays (ticks) behind the estimate, oldest first."""
        return list(self._delays)

    # -- sending actions

    def next_action(self) -> np.ndarray | None:
        """The action [A] for this tick, or None when no chunk covers the current step (the
        caller holds position; the step does not advance). Advances the tick."""
        if self.cfg.strategy is Strategy.ENSEMBLE:
            action = self._ensembled(self.step)
        else:
            action = self._chunks[-1].at(self.step) if self._chunks else None
        self.tick += 1
        if action is not None:
            self.step += 1
        return action

    def _ensembled(self, step: int) -> np.ndarray | None:
        self._chunks = [c for c in self._chunks if c.start + len(c.actions) > step]  # drop used-up chunks
        predictions = [a for a in (c.at(step) for c in self._chunks) if a is not None]  # oldest first
        if not predictions:
            return None
        weights = np.exp(-self.cfg.ensemble_coeff * np.arange(len(predictions)))
        return np.tensordot(weights / weights.sum(), np.stack(predictions), axes=1)

    @property
    def queue_depth(self) -> int:
        """Actions left in the newest chunk from the current step on (0: about to hold)."""
        if not self._chunks:
            return 0
        newest = self._chunks[-1]
        return max(0, newest.start + len(newest.actions) - self.step)
