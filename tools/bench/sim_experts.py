"""Scripted expert success rate over many seeds, per robot and task (physics only).

  python tools/bench/sim_experts.py                    # 100 seeds of every task
  python tools/bench/sim_experts.py --seeds 20 --robots arm
  python tools/bench/sim_experts.py --robots humanoid --tasks handover --sim-noise 0.0075

Seeds 0..N-1; success is judged at the end of each episode as in `platform sim`. The
target is >= 95% per task. `--sim-noise` runs the experts under the DART noise a recording
with `record.sim_noise` adds (record/dart.py, the same seed per episode): the success at
that noise level, about the share of demonstrations a noisy recording keeps (episodes end
at the task's time limit, as in eval; the recorder's episodes may run to 20 s).
Prints a table; writes .bench/sim_experts.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "platform"))

from shallowpi import config  # noqa: E402
from shallowpi.record.dart import NoisyExecution  # noqa: E402
from shallowpi.robots.sim.direct import DirectSimRobot  # noqa: E402
from shallowpi.robots.sim.episode import Episode, EpisodeResult, ScriptedAgent, run_episode  # noqa: E402
from shallowpi.robots.sim.tasks import Task, make_tasks  # noqa: E402
from shallowpi.robots.sim.twin import TwinSpec  # noqa: E402


def run_noisy(sim: DirectSimRobot, task: Task, seed: int, noisy: NoisyExecution) -> EpisodeResult:
    """One expert episode with `noisy` executing its goals (the recorder's DART path)."""
    episode = Episode.start(sim, task, ScriptedAgent(), seed)
    noisy.reset_noise(seed)
    while not episode.over():
        noisy.act(episode.next_goal(sim.observe))
    return episode.result()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--robots", nargs="+", default=["arm", "bimanual", "humanoid"])
    parser.add_argument("--tasks", nargs="+", help="only these tasks (default: each robot's)")
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--sim-noise", type=float, default=0.0, help="DART noise (record.sim_noise), default 0")
    parser.add_argument("--sim-noise-tau-s", type=float, default=0.5, help="its correlation time (default 0.5)")
    parser.add_argument("--out", default=str(ROOT / ".bench" / "sim_experts.json"))
    args = parser.parse_args()
    known = {task for robot in args.robots for task in make_tasks(robot)}
    unknown = sorted(set(args.tasks or []) - known)
    if unknown:
        parser.error(f"--tasks {unknown[0]}: not a task of {' or '.join(args.robots)} ({', '.join(sorted(known))})")

    rows = []
    print(
        f"{'robot':10s} {'task':16s} {'success':>9s} {'steps/ep':>9s} {'steps/s':>8s}  failed seeds"
    )
    for robot in args.robots:
        spec = TwinSpec.from_config(config.compose([f"robot={robot}"]).robot)
        grippers = [e.gripper for e in spec.effectors.values()]
        for name, task in make_tasks(robot).items():
            if args.tasks and name not in args.tasks:
                continue
            with DirectSimRobot(spec, cameras=()) as sim:
                t0 = time.perf_counter()
                if args.sim_noise:
                    noisy = NoisyExecution(sim, spec.lower, spec.upper, spec.joint_names, args.sim_noise,
                                           args.sim_noise_tau_s, spec.fps, spec.max_velocity, quiet=grippers)
                    results = [run_noisy(sim, task, seed, noisy) for seed in range(args.seeds)]
                else:
                    results = [run_episode(sim, task, ScriptedAgent(), seed) for seed in range(args.seeds)]
                wall = time.perf_counter() - t0
            steps = sum(r.steps for r in results)
            failed = [r.seed for r in results if not r.success]
            row = {
                "robot": robot,
                "task": name,
                "instruction": task.instruction,
                "seeds": args.seeds,
                "sim_noise": args.sim_noise,
                "success_rate": 1 - len(failed) / args.seeds,
                "failed_seeds": failed,
                "steps_per_episode": steps / args.seeds,
                "steps_per_s": steps / wall,
            }
            rows.append(row)
            print(
                f"{robot:10s} {name:16s} {100 * row['success_rate']:>8.0f}% {row['steps_per_episode']:>9.0f} "
                f"{row['steps_per_s']:>8.0f}  {failed}",
                flush=True,
            )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
