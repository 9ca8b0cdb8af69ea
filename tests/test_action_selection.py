"""Action selection (policy/action_selection.py): replan boundaries, temporal ensembling
weights, and real-time chunking's bookkeeping (what is committed, the delay, the soft mask)
under every delay from 0 to K and under chunks that arrive late."""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest

from conftest import subprocess_env
from shallowpi.errors import ConfigError
from shallowpi.policy.action_selection import (
    ActionSelectionConfig,
    ActionSelector,
    ChunkRequest,
    rtc_weights,
)

A = 2  # action width in these tests


def plan(start: int, length: int) -> np.ndarray:
    """The chunk a perfectly consistent policy predicts at step `start`: [length, A], whose
    row j is the global trajectory at step start + j (value = step, and 1000 + step)."""
    steps = np.arange(start, start + length, dtype=np.float64)
    return np.stack([steps, 1000 + steps], axis=1)


def tagged(start: int, length: int) -> np.ndarray:
    """A chunk whose rows say which chunk and index they are: 100 * start + j."""
    rows = 100.0 * start + np.arange(length)
    return np.stack([rows, rows], axis=1)


def drive(selector: ActionSelector, chunk_of, ticks: int, delay_of=lambda n: 0):
    """The documented loop for `ticks` ticks; the n-th request's chunk (from `chunk_of(step)`)
    arrives `delay_of(n)` ticks after it. -> (actions or None per tick, requests, takeovers)."""
    actions, requests, takeovers = [], [], []
    pending = None  # (request, chunk, arrival tick)

    def arrive():
        nonlocal pending
        if pending is not None and selector.tick >= pending[2]:
            takeovers.append(selector.deliver(pending[0], pending[1]))
            pending = None

    for _ in range(ticks):
        arrive()
        if selector.wants_chunk():
            request = selector.request()
            pending = (request, chunk_of(request.step), selector.tick + delay_of(len(requests)))
            requests.append(request)
            arrive()
        actions.append(selector.next_action())
    return actions, requests, takeovers


# -- replanning ------------------------------------------------------------------------------


def test_replan_every_k_runs_each_chunk_from_its_first_action():
    selector = ActionSelector(ActionSelectionConfig("replan", replan_every=4))
    actions, requests, takeovers = drive(selector, lambda s: tagged(s, 6), ticks=14)
    assert [r.step for r in requests] == [0, 4, 8, 12]
    assert all(r.guidance is None for r in requests)  # only rtc guides
    # Step n runs index n % 4 of the chunk predicted at step 4 * (n // 4).
    assert [a[0] for a in actions] == [100 * (4 * (n // 4)) + n % 4 for n in range(14)]
    assert takeovers == [0, 0, 0, 0] and selector.step == selector.tick == 14
    assert selector.queue_depth == 6 - 2


@pytest.mark.parametrize(("strategy", "every", "chunk", "expected"), [
    ("replan", None, 10, 5),  # half the chunk
    ("rtc", None, 7, 3),
    ("ensemble", None, 10, 1),  # ACT queries every step
    ("replan", 3, 10, 3),
])
def test_default_k_per_strategy(strategy, every, chunk, expected):
    assert ActionSelectionConfig(strategy, replan_every=every).every(chunk) == expected


def test_k_longer_than_the_chunk_replans_when_the_chunk_is_used_up():
    selector = ActionSelector(ActionSelectionConfig("replan", replan_every=8))
    actions, requests, _ = drive(selector, lambda s: tagged(s, 3), ticks=7)
    assert [r.step for r in requests] == [0, 3, 6]
    assert all(a is not None for a in actions)


def test_async_replan_takes_over_where_the_robot_has_got_to():
    # A 2-tick inference: the robot holds for the first chunk (nothing to run yet), then
    # never again; each later chunk starts at index 2, the actions sent while it was computed.
    selector = ActionSelector(ActionSelectionConfig("replan", replan_every=4))
    actions, requests, takeovers = drive(selector, lambda s: plan(s, 8), ticks=20, delay_of=lambda n: 2)
    assert actions[:2] == [None, None]
    sent = [a for a in actions if a is not None]
    assert [a[0] for a in sent] == list(range(18))  # every step once, in order: no skips, no repeats
    assert [r.step for r in requests] == [0, 4, 8, 12, 16]
    assert takeovers == [0, 2, 2, 2]


# -- temporal ensembling ---------------------------------------------------------------------


def test_ensembling_weights_match_a_hand_computation():
    m = 0.5
    selector = ActionSelector(ActionSelectionConfig("ensemble", ensemble_coeff=m))
    # Chunk predicted at step s is constant 10 * (s + 1): at step 2 three predictions
    # overlap, from steps 0 (the oldest, weight 1), 1 (e^-0.5) and 2 (e^-1).
    actions, requests, _ = drive(selector, lambda s: np.full((3, A), 10.0 * (s + 1)), ticks=4)
    assert [r.step for r in requests] == [0, 1, 2, 3]  # K = 1
    w1, w2 = 0.6065306597126334, 0.36787944117144233  # e^-0.5, e^-1
    assert actions[0][0] == 10.0
    assert actions[1][0] == pytest.approx((10 + 20 * w1) / (1 + w1), rel=1e-12)
    assert actions[2][0] == pytest.approx((10 + 20 * w1 + 30 * w2) / (1 + w1 + w2), rel=1e-12)
    # Step 3: chunk 0 is used up (3 actions); chunks 1, 2, 3 remain, chunk 1 the oldest.
    assert actions[3][0] == pytest.approx((20 + 30 * w1 + 40 * w2) / (1 + w1 + w2), rel=1e-12)


def test_ensembling_coefficient_sign_decides_which_predictions_weigh_more():
    def third_action(m: float) -> float:
        selector = ActionSelector(ActionSelectionConfig("ensemble", ensemble_coeff=m))
        actions, _, _ = drive(selector, lambda s: np.full((3, A), 10.0 * (s + 1)), ticks=3)
        return actions[2][0]

    assert third_action(0.0) == pytest.approx(20.0)  # the plain mean of 10, 20, 30
    assert third_action(5.0) < 20.0 < third_action(-5.0)  # m > 0 trusts older, m < 0 newer


def test_ensembling_with_a_delay_uses_each_chunk_only_once_it_has_arrived():
    selector = ActionSelector(ActionSelectionConfig("ensemble", ensemble_coeff=0.0, replan_every=1))
    actions, requests, takeovers = drive(selector, lambda s: tagged(s, 6), ticks=5, delay_of=lambda n: 1)
    # Each chunk arrives a tick after its request; a new one is asked for once it has.
    assert [(r.step, r.tick) for r in requests] == [(0, 0), (1, 2), (2, 3), (3, 4)]
    assert actions[0] is None  # nothing has arrived: hold
    assert [a[0] for a in actions[1:]] == [
        0,  # step 0: chunk 0, index 0
        1,  # step 1: chunk 1 is still being computed
        (2 + 101) / 2,  # step 2: chunks 0 and 1 (m = 0: the plain mean)
        (3 + 102 + 201) / 3,  # step 3: chunks 0, 1, 2; chunk 3 is pending, not used
    ]
    assert takeovers == [0, 1, 1]


# -- real-time chunking ----------------------------------------------------------------------


def test_rtc_weights_match_the_paper_by_hand():
    # H = 8, s = 3 (overlap H - s = 5), d = 2: c_i = (5 - i) / 4 = 0.75, 0.5, 0.25 for
    # i = 2, 3, 4, and W_i = c_i (e^c_i - 1) / (e - 1), e.g. 0.75 * 1.117000 / 1.718282.
    expected = [1, 1, 0.487551, 0.188770, 0.041324, 0, 0, 0]
    np.testing.assert_allclose(rtc_weights(8, 2, 5), expected, atol=1e-6)
    np.testing.assert_array_equal(rtc_weights(6, 3, 3), [1, 1, 1, 0, 0, 0])  # all of it frozen
    assert rtc_weights(6, 0, 4)[0] == pytest.approx(0.570589, abs=1e-6)  # none frozen: c_0 = 0.8
    with pytest.raises(ValueError, match="frozen"):
        rtc_weights(6, 4, 3)


@pytest.mark.parametrize("d", range(0, 5))  # K = 4: every delay from none to a whole K
def test_rtc_bookkeeping_for_every_delay_up_to_k(d):
    H, K = 10, 4
    selector = ActionSelector(ActionSelectionConfig("rtc", replan_every=K))
    actions, requests, takeovers = drive(selector, lambda s: plan(s, H), ticks=40, delay_of=lambda n: d)
    # The robot holds only while the first chunk is computed, then runs every step once.
    assert actions[:d] == [None] * d and all(a is not None for a in actions[d:])
    assert [a[0] for a in actions[d:]] == list(range(40 - d))
    # Each chunk takes over at the actions sent meanwhile: none for the first (it starts at
    # its index 0, no jump), d for the rest.
    assert takeovers[0] == 0 and set(takeovers[1:]) == {d}
    # Requests every K steps; the first has nothing to agree with.
    assert [r.step for r in requests] == list(range(0, 4 * len(requests), K))
    assert requests[0].guidance is None
    # The second request knows no delay yet (the first chunk's is not counted: cold start),
    # later ones freeze the measured d: exactly the actions that run during inference.
    assert requests[1].guidance.frozen == 0
    sent = [a for a in actions if a is not None]
    assert len(requests) >= 8
    for r in requests[2:-1]:  # the last one's frozen actions would run after the 40 ticks
        g = r.guidance
        assert g.frozen == d and g.overlap == H - K
        np.testing.assert_array_equal(g.weights, rtc_weights(H, d, H - K))
        # The target is what the current chunk will do from this step on, padded with its
        # last action (never zeros); the frozen rows are what the robot then ran.
        np.testing.assert_array_equal(g.target[: H - K], plan(r.step, H - K))
        np.testing.assert_array_equal(g.target[H - K :], np.repeat(plan(r.step + H - K - 1, 1), K, axis=0))
        ran = np.array(sent[r.step : r.step + g.frozen]).reshape(-1, A)
        np.testing.assert_array_equal(ran, g.target[: g.frozen])
    assert selector.delay_estimate == d


@pytest.mark.parametrize("fade", [1, 3, 100])
def test_rtc_fade_ends_the_soft_mask_that_many_actions_after_the_frozen_ones(fade):
    """rtc_fade caps the decay of the paper's W: weights as for an overlap of frozen + fade
    (zero after it, the new chunk's own plan), the target still the whole overlap."""
    H, K, d = 12, 4, 2
    selector = ActionSelector(ActionSelectionConfig("rtc", replan_every=K, rtc_fade=fade))
    _, requests, _ = drive(selector, lambda s: plan(s, H), ticks=30, delay_of=lambda n: d)
    g = requests[3].guidance
    assert g.frozen == d and g.overlap == H - K
    end = min(H - K, d + fade)
    np.testing.assert_array_equal(g.weights, rtc_weights(H, d, end))
    assert np.all(g.weights[:d] == 1) and np.all(g.weights[end:] == 0) and np.all(g.weights[d:end] > 0)
    np.testing.assert_array_equal(g.target[: H - K], plan(requests[3].step, H - K))


def test_a_late_chunk_takes_over_at_the_actions_actually_consumed():
    H, K = 8, 3
    selector = ActionSelector(ActionSelectionConfig("rtc", replan_every=K))
    # Delays by request: 0 (first), 1, 1, then 3 ticks against an estimate of 1, then a
    # chunk so late (9 ticks) that the current one runs out and the robot holds.
    delays = [0, 1, 1, 3, 9]  # then 1
    actions, requests, takeovers = drive(selector, lambda s: plan(s, H), ticks=30,
                                         delay_of=lambda n: delays[n] if n < len(delays) else 1)
    assert [r.guidance.frozen if r.guidance else None for r in requests[:5]] == [None, 0, 1, 1, 3]
    # The 3-tick chunk: its first 3 actions were run from the old chunk (1 of them frozen,
    # 2 only softly guided) and are skipped; the robot continues without a jump.
    assert takeovers[3] == 3
    # The 9-tick chunk: the old chunk had H - K = 5 actions left, the robot ran them and
    # held 4 ticks; the new chunk takes over at index 5 (consumed), not 9 (elapsed).
    assert takeovers[4] == H - K
    # Measured from consumption, each once; the window (10) has dropped the first two 1s.
    assert selector.measured_delays == [3, 9] + [1] * 8
    holds = [n for n, a in enumerate(actions) if a is None]
    assert len(holds) == 4 and holds == list(range(holds[0], holds[0] + 4))
    sent = [a[0] for a in actions if a is not None]
    assert sent == list(range(len(sent)))  # still every step once, in order
    # The next request, at once: the estimate is now 9, capped by the 3 actions left.
    assert requests[5].step == requests[4].step + H - K and requests[5].guidance.frozen == 3
    # With an estimate of 9 ticks against chunks of 8, every chunk is asked for as soon as
    # the one before arrives: waiting for K actions would only run the queue dry.
    assert [r.step for r in requests[5:9]] == [17, 18, 19, 20]


def test_initial_delay_is_used_until_a_delay_is_measured():
    selector = ActionSelector(ActionSelectionConfig("rtc", replan_every=2, initial_delay=3))
    _, requests, _ = drive(selector, lambda s: plan(s, 6), ticks=23, delay_of=lambda n: 20 if n == 0 else 0)
    # The first chunk took 20 ticks (a cold start): not a measurement, so the second
    # request freezes the configured 3; its own 0-tick delay is the first measurement.
    assert len(requests) == 2 and requests[1].guidance.frozen == 3
    assert selector.measured_delays == [0] and selector.delay_estimate == 0


def test_a_dropped_chunks_delay_is_left_out_of_the_estimate():
    """The executor drops a chunk back too late to act on (deploy.max_chunk_age_s, a second
    or more): its delay was measured, and as the window's largest it set the estimate, under
    rtc a second's actions frozen in each of the next ten chunks."""
    selector = ActionSelector(ActionSelectionConfig("rtc", replan_every=2))
    drive(selector, lambda s: plan(s, 6), ticks=4)  # the first chunk, then one back at once
    assert selector.measured_delays == [0]
    while not selector.wants_chunk():
        selector.next_action()
    late = selector.request()
    for _ in range(30):  # a hiccup: the robot holds while it is awaited
        selector.next_action()
    selector.discard(late)
    assert selector.measured_delays == [0] and selector.delay_estimate == 0


# -- misuse ----------------------------------------------------------------------------------


def test_misuse_is_refused():
    selector = ActionSelector(ActionSelectionConfig("replan"))
    request = selector.request()
    with pytest.raises(RuntimeError, match="still pending"):
        selector.request()
    with pytest.raises(RuntimeError, match="not the pending one"):
        selector.deliver(ChunkRequest(step=0, tick=0), plan(0, 4))
    with pytest.raises(ValueError, match="shape"):
        selector.deliver(request, np.zeros(4))
    selector.deliver(request, plan(0, 4))
    with pytest.raises(ValueError, match="after chunks of"):
        selector.deliver(selector.request(), plan(0, 5))
    assert not selector.wants_chunk()  # still pending after a refused delivery


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"strategy": "blend"}, "unknown action selection strategy 'blend'; choose one of: replan, ensemble, rtc"),
    ({"replan_every": 0}, "replan every must be at least 1"),
    ({"ensemble_coeff": float("nan")}, "finite"),
    ({"delay_window": 0}, "delay window"),
    ({"initial_delay": -1}, "initial inference delay"),
    ({"rtc_fade": 0}, "rtc_fade must be at least 1 action"),
])
def test_bad_config_is_one_line(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        ActionSelectionConfig(**kwargs)


def test_imports_without_torch():
    """The executor on the robot's core install (no torch) imports it."""
    code = (
        "import importlib.abc, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torch':\n"
        "            raise ImportError('torch imported')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from shallowpi.policy.action_selection import ActionSelector, ActionSelectionConfig\n"
        "s = ActionSelector(ActionSelectionConfig('rtc'))\n"
        "s.deliver(s.request(), [[1.0, 2.0]])\n"
        "print(s.next_action())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[1. 2.]"


def test_a_chunk_is_asked_for_early_enough_to_arrive_before_the_last_one_runs_out():
    # H = 20, K = 15, a steady 8-tick delay: asked after K actions, each chunk would arrive 3
    # ticks after the one before ran out (the robot holding); asked after H - d = 12, none is
    # late. (With K = H / 2, the default, this only binds when H < 2d, and then one chunk in
    # flight cannot keep up however early it is asked for: the chunk must be longer.)
    H, K, d = 20, 15, 8
    selector = ActionSelector(ActionSelectionConfig("replan", replan_every=K, initial_delay=d))
    actions, requests, _ = drive(selector, lambda s: plan(s, H), ticks=120, delay_of=lambda n: d)
    assert [b.step - a.step for a, b in itertools.pairwise(requests[1:])] == [H - d] * (len(requests) - 2)
    assert all(a is not None for a in actions[d:])  # after the first chunk's arrival, no hold


def test_eval_sim_guides_its_first_rtc_chunk_with_the_delay_it_simulates():
    # eval --sim's agent froze 0 rows on the first guided chunk of every episode (the
    # config's initial estimate) where the robot's executor freezes its measured delay.
    from types import SimpleNamespace

    from shallowpi.evaluate.sim_eval import PolicyAgent, SimEvalConfig
    from shallowpi.robots.observation import Observation

    frozen: list[int] = []

    class Inpainting:
        def __call__(self, obs):
            return np.zeros((20, 2))

        def inpainted(self, obs, target, weight):
            frozen.append(int((weight == 1).sum()))
            return np.zeros((20, 2))

    cfg = SimEvalConfig(selection=ActionSelectionConfig(strategy="rtc", replan_every=10), delay_ticks=5)
    agent = PolicyAgent(Inpainting(), cfg)
    agent.begin(SimpleNamespace(spec=SimpleNamespace(joints=[0, 1])), SimpleNamespace(instruction="x"), 0)
    for _ in range(60):
        agent.next_goal(lambda: Observation(0.0, np.zeros(2, np.float32), {}))
    assert frozen and frozen == [5] * len(frozen)
