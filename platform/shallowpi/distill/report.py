"""The distillation report: runs/<name>/report.md with PNG plots beside it.

Sections: what was cut (layers, parameter counts, the attention pairing, how each selection
strategy's student starts); loss per term over steps (loss_terms.png); offline action error
on held-out episodes, per joint (by name, each in its own unit), student and teacher against
the ground truth and the student against the teacher (action_error.png); closed-loop success
of teacher and student in the twin on every task of the robot both can be told, with 95 %
Wilson intervals (success.png), and a line for each task not run saying why; one chunk's
latency and FLOPs, teacher vs student, the measured ratio beside the FLOP-ideal one; the
resolved config.

Everything is measured on the CPU of the machine that ran the distillation (the GPU
numbers belong to BENCHMARKS.md); closed-loop episodes use seeds 1000.. like `eval --sim`,
with its progress bar (the run's --no-progress turns it off).
"""

from __future__ import annotations

import json
import logging
import statistics
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from shallowpi.data.episode_plot import UNIT_OF_KIND
from shallowpi.data.features import ACTION_KEY
from shallowpi.data.store import EpisodeStore
from shallowpi.distill.settings import DistillConfig
from shallowpi.distill.timing import interleaved_chunk_times
from shallowpi.durable_files import replace_text
from shallowpi.errors import PlatformError
from shallowpi.evaluate.interval import wilson_interval
from shallowpi.joints import named_gripper
from shallowpi.policy.flops import flop_counter
from shallowpi.policy.model import count_parameters
from shallowpi.policy.policy import Policy
from shallowpi.train.offline_eval import evenly_spaced

log = logging.getLogger(__name__)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ----------------------------------------------------------------------------- losses


def loss_plot(metrics: Path, png: Path, run: str | None = None) -> dict[str, float]:
    """Write `loss_figure` to `png`; returns the last logged value of each term."""
    plt = _pyplot()
    fig, last = loss_figure(metrics, run)
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return last


def loss_figure(metrics: Path, run: str | None = None) -> tuple[Any, dict[str, float]]:
    """Each logged term of `metrics` (metrics.jsonl) and the weighted total over steps, titled
    with the run's name (`run`, default the folder `metrics` is in), and the last values. The
    squared-error terms (task, output; the total is their weighted sum with the attention
    term's) are per action element, the attention term a mean KL divergence per action query
    (nats; heads and paired layers averaged, distill/objective.py): a panel of its own, in
    its own unit."""
    from shallowpi.train.trainer import read_metrics

    rows, _ = read_metrics(metrics)
    plt = _pyplot()
    has_attention = any("attention" in r for r in rows)
    fig, axes = plt.subplots(1, 2 if has_attention else 1, figsize=(11 if has_attention else 7, 4), squeeze=False)
    errors = axes[0][0]
    last = {}
    for key in ("loss", "task", "output", "attention"):
        points = [(r["step"], r[key]) for r in rows if key in r]
        if points:
            steps, values = zip(*points)
            ax = axes[0][1] if key == "attention" else errors
            total = "total (weighted, the attention KL's included)" if has_attention else "total (weighted)"
            ax.plot(steps, values, label=total if key == "loss" else key,
                    color="C3" if key == "attention" else None)
            last[key] = values[-1]
    for ax in axes[0]:
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.legend()
        ax.grid(alpha=0.3)
    errors.set_ylabel("squared error per action element")
    if has_attention:
        axes[0][1].set_ylabel("KL(teacher || student) per action query, nats", fontsize=9)
    fig.suptitle(f"distillation losses: {run or metrics.parent.name}")
    fig.tight_layout()
    return fig, last


# ----------------------------------------------------------------------------- offline error


@torch.no_grad()
def action_errors(teacher: Policy, student: Policy, dataset: Dataset, max_samples: int = 64,
                  seed: int = 0) -> dict[str, list[float]]:
    """Per-joint mean absolute error (each joint's own unit: rad, m, a gripper's 0-1
    opening; `ActionJoints`) over non-padded steps of up to `max_samples` evenly spaced
    windows: teacher and student against the recorded actions, and student against
    teacher; both sample from the same noise."""
    subset = Subset(dataset, evenly_spaced(len(dataset), max_samples))
    gen = torch.Generator().manual_seed(seed)
    sums = {"teacher_vs_truth": 0.0, "student_vs_truth": 0.0, "student_vs_teacher": 0.0}
    count = 0.0
    for batch in DataLoader(subset, batch_size=16):
        B = batch["action"].shape[0]
        noise = torch.randn(B, teacher.cfg.chunk_len, teacher.cfg.action_dim, generator=gen)
        a_t = teacher.sample_actions(batch, noise=noise).cpu()
        a_s = student.sample_actions(batch, noise=noise).cpu()
        truth = batch["action"].float()
        valid = (~batch["action_is_pad"])[..., None].float()  # [B, C, 1]
        for key, (x, y) in {"teacher_vs_truth": (a_t, truth), "student_vs_truth": (a_s, truth),
                            "student_vs_teacher": (a_s, a_t)}.items():
            sums[key] = sums[key] + ((x - y).abs() * valid).sum(dim=(0, 1)).numpy()
        count += float(valid.sum())
    return {k: (np.asarray(v) / max(count, 1.0)).tolist() for k, v in sums.items()}


# The unit of a joint whose kind the store does not say (recorded before kinds were stored,
# imported) and whose name does not say gripper: revolute (rad) or linear (m), nobody knows.
UNKNOWN_UNIT = "as recorded"


@dataclass
class ActionJoints:
    """The action's joints in order: each one's name and the unit its positions (and so its
    errors) are in: rad (revolute), m (linear), a gripper's opening 0-1, or UNKNOWN_UNIT."""

    names: list[str]
    units: list[str]

    @classmethod
    def of_store(cls, store: Path, action_dim: int) -> ActionJoints:
        """The store's action names and kinds (the robot spec's, as the recorder stored them).
        A joint whose kind the store does not say is a gripper when its name says so
        (shallowpi.joints' rule), else of unknown unit; a store without names (or with
        another count than `action_dim`) gives j0, j1, ... Raises StoreError for a store that
        cannot be opened."""
        with EpisodeStore.open(store) as opened:
            feature = opened.features.get(ACTION_KEY)
        names = list(feature.names) if feature is not None else []
        if len(names) != action_dim:
            return cls([f"j{j}" for j in range(action_dim)], [UNKNOWN_UNIT] * action_dim)
        kinds = list(feature.kinds) or ["gripper" if named_gripper(n) else "" for n in names]
        return cls(names, [UNIT_OF_KIND.get(kind, UNKNOWN_UNIT) for kind in kinds])


def error_figure(errors: dict[str, list[float]], joints: ActionJoints) -> Any:
    """A matplotlib Figure: bars of the per-joint errors `action_errors` returned, each
    joint labelled by its name and unit (its errors are in that unit). Uses the Agg backend."""
    plt = _pyplot()
    count = len(errors["teacher_vs_truth"])
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * count), 4))
    width = 0.27
    for i, (key, label) in enumerate((("teacher_vs_truth", "teacher vs ground truth"),
                                      ("student_vs_truth", "student vs ground truth"),
                                      ("student_vs_teacher", "student vs teacher"))):
        ax.bar(np.arange(count) + (i - 1) * width, errors[key], width, label=label)
    ax.set_xticks(range(count), [f"{name}\n({unit})" for name, unit in zip(joints.names, joints.units)],
                  fontsize=8)
    ax.set_ylabel("mean absolute error (each joint's unit)")
    ax.legend()
    fig.tight_layout()
    return fig


def error_plot(errors: dict[str, list[float]], joints: ActionJoints, png: Path) -> None:
    """Write `error_figure` to `png`."""
    plt = _pyplot()
    fig = error_figure(errors, joints)
    fig.savefig(png, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- closed loop


@dataclass
class TaskSuccess:
    """Closed-loop successes of one model on one task in the twin."""

    task: str
    model: str  # "teacher" | "student"
    successes: int
    episodes: int

    @property
    def interval(self) -> tuple[float, float]:
        """(low, high) of the 95 % Wilson interval of the success rate, fractions in [0, 1]."""
        return wilson_interval(self.successes, self.episodes)


@dataclass
class ClosedLoop:
    """What `closed_loop` measured: each model's successes on the tasks that ran, and, by
    task name, why each other task of the robot (or one model on it) was not run (one line)."""

    results: list[TaskSuccess]
    not_run: dict[str, str]
    robot: str = ""  # whose twin ran them (the plot's title)


def instruction_refused(policies: Mapping[str, Policy], text: str) -> str | None:
    """Why a policy of `policies` cannot be told the instruction `text` (`check_prompt`'s
    one line: a word its word vocabulary lacks, a prompt it would cut), naming the models
    when they differ; None when every one can."""
    from shallowpi.policy.tokenizer import check_prompt

    refused = {}
    for name, policy in policies.items():
        try:
            check_prompt(policy.tokenizer, text, policy.cfg.max_text_tokens)
        except PlatformError as exc:
            refused[name] = str(exc)
    if not refused:
        return None
    if len(set(refused.values())) == 1 and len(refused) == len(policies):
        return next(iter(refused.values()))  # a student reads instructions as its teacher does
    return "; ".join(f"{name}: {why}" for name, why in refused.items())


def closed_loop(policies: dict[str, Policy], store: Path, episodes: int, max_seconds: float | None,
                progress: bool = False) -> ClosedLoop:
    """Every task of the store's robot whose instruction every policy can be told (a `words`
    vocabulary holds only the store's task texts: a store of one task knows no other), each
    policy `episodes` episodes (seeds 1000..) in the twin, as `platform eval --sim` runs
    them, at the store's camera size; `progress` draws eval --sim's bar (ticks, with an ETA)
    on stderr for each task and model, plain lines where stderr is no terminal. A task a
    policy refuses, or whose episodes raise a one-line error, is in `not_run` with why; the
    tasks that ran keep their results. Raises the twin's one-line errors (no single robot
    recorded, cameras the twin lacks)."""
    from shallowpi import config
    from shallowpi.data.codecs import image_codec
    from shallowpi.evaluate.sim_checkpoint import (
        CheckpointPolicy,
        StoreFacts,
        check_fits,
        sim_target,
    )
    from shallowpi.evaluate.sim_eval import SimEvalConfig, evaluate_in_sim
    from shallowpi.policy.action_selection import ActionSelectionConfig
    from shallowpi.robots.sim.direct import DirectSimRobot
    from shallowpi.robots.sim.tasks import make_tasks
    from shallowpi.robots.sim.twin import SimError, TwinSpec

    # The store names the robot; every task of its twin is run, not only the recorded one.
    robots = StoreFacts.read(store).robots
    if len(robots) != 1:
        raise SimError(f"{store} records robots {sorted(robots) or 'none'}; cannot tell which twin to run")
    robot_name = next(iter(robots))
    target = sim_target(store, robot=robot_name, task=next(iter(make_tasks(robot_name))))
    cfg = config.compose([f"robot={target.robot}"])
    width, height = target.size or config.parse_size(cfg.record.sim_size, "record.sim_size")
    spec = TwinSpec.from_config(cfg.robot, render_width=width, render_height=height)
    any_policy = next(iter(policies.values()))
    check_fits(any_policy.features, spec, target.fps)
    # The renders through the store's image codec, as the training loader decoded the frames
    # (and as `platform eval --sim` feeds them): raw renders are inputs neither model saw.
    codec = image_codec(*target.image_codec) if target.image_codec else None
    # A task is run when every model can be told it, before any episode: one refusal used to
    # end the section, the tasks already measured lost with it.
    measured = ClosedLoop([], {}, target.robot)
    tasks = []
    for task in make_tasks(target.robot).values():
        if (why := instruction_refused(policies, task.instruction)) is None:
            tasks.append(task)
        else:
            measured.not_run[task.name] = why
            log.warning("closed loop: %s not run: %s", task.name, why)
    if not tasks:
        return measured
    runs, done = len(tasks) * len(policies), 0
    with DirectSimRobot(spec, cameras=any_policy.features.cameras) as robot:
        for task in tasks:
            for name, policy in policies.items():
                done += 1
                # Says whose episodes the bar below counts (eval --sim's bar names no model).
                log.info("closed loop %d/%d: %s on %s, %d episode(s)", done, runs, name, task.name, episodes)
                chunk_policy = CheckpointPolicy(policy, image_codec=codec)
                selection = ActionSelectionConfig.from_config(cfg.action_selection)
                selection.replan_every = selection.every(chunk_policy.chunk_len)
                eval_cfg = SimEvalConfig(episodes=episodes, selection=selection, max_seconds=max_seconds)
                try:
                    report = evaluate_in_sim(robot, task, chunk_policy, eval_cfg, progress=progress)
                except PlatformError as exc:  # this task's (or model's) line; the others' results stand
                    why = f"{name}: {exc}"
                    measured.not_run[task.name] = "; ".join(filter(None, (measured.not_run.get(task.name), why)))
                    log.warning("closed loop: %s on %s not run: %s", name, task.name, exc)
                    continue
                measured.results.append(TaskSuccess(task.name, name, report.successes, len(report.episodes)))
                log.info("%s on %s: %d/%d", name, task.name, report.successes, len(report.episodes))
    return measured


def success_plot(results: list[TaskSuccess], png: Path, robot: str = "", not_run: Iterable[str] = ()) -> None:
    """Write `success_figure` to `png`."""
    plt = _pyplot()
    fig = success_figure(results, robot, not_run)
    fig.savefig(png, dpi=100)
    plt.close(fig)


def success_figure(results: list[TaskSuccess], robot: str = "", not_run: Iterable[str] = ()) -> Any:
    """A bar chart of each task's success rate, teacher beside student, with 95 % Wilson
    error bars and k/n above each bar, the tasks in the order of `results` (the report's
    table), then those of `not_run` (tasks no model ran on); "not run" in the slot of a
    model without a row on a task. Titled with `robot` and the episodes a task and model;
    the legend above the axes, clear of a 100 % bar."""
    plt = _pyplot()
    tasks = list(dict.fromkeys([*(r.task for r in results), *not_run]))
    fig, ax = plt.subplots(figsize=(max(5, 2.5 * len(tasks)), 4.4))
    width = 0.4
    for i, model in enumerate(("teacher", "student")):
        rows = {r.task: r for r in results if r.model == model}
        at = [x for x, t in enumerate(tasks) if t in rows]
        ran = [rows[tasks[x]] for x in at]
        rates = [r.successes / r.episodes if r.episodes else 0.0 for r in ran]
        lo = [rate - r.interval[0] for rate, r in zip(rates, ran)]
        hi = [r.interval[1] - rate for rate, r in zip(rates, ran)]
        offset = (i - 0.5) * width
        ax.bar(np.asarray(at) + offset, rates, width, yerr=[lo, hi], capsize=4, label=model, color=f"C{i}")
        for x, r in zip(at, ran):
            ax.text(x + offset, r.interval[1] + 0.01, f"{r.successes}/{r.episodes}", ha="center", va="bottom",
                    fontsize=8)
        for x in (x for x, t in enumerate(tasks) if t not in rows):
            ax.text(x + offset, 0.02, "not run", ha="center", va="bottom", rotation=90, fontsize=8, color="0.4")
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_xlim(-0.6, len(tasks) - 0.4)  # a last task without bars keeps its slots
    ax.set_ylim(0, 1.12)  # room above 100 % for the counts
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel("success rate (95 % Wilson interval)")
    counts = sorted({r.episodes for r in results})
    each = (f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}") if counts else "no"
    ax.set_title(f"closed loop in the {robot + ' ' if robot else ''}twin, {each} episode"
                 f"{'' if counts == [1] else 's'} a task and model", fontsize=10)
    # Outside the axes: inside, "best" put it over a 100 % bar's top and its count.
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.08), ncol=2, fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- cost


@dataclass
class Cost:
    """What one action chunk costs a policy at batch 1, measured by `chunk_costs`."""

    params: int
    chunk_ms: float  # median wall time of one chunk, batch 1, after prepare_inference
    gflops: float  # one chunk (prefix + every Euler step), matmuls and attention (policy/flops.py)
    # 99th percentile of the same timings (numpy's, interpolated): of 100 chunks or fewer
    # (distill.latency_repeats: 10; the demo's 20) it lies between the two slowest, near the max
    chunk_ms_p99: float = 0.0


def chunk_costs(policies: Mapping[str, Policy], observation: dict[str, Any], repeats: int) -> dict[str, Cost]:
    """Parameters, FLOPs and latency (median and p99 of `repeats` chunks, after one warm-up;
    with `repeats` <= 100 the p99 lies between the two slowest chunks: near the maximum)
    of one action chunk for one observation, for each of `policies`, all on the path the
    robot runs (the fast sampler, `Policy.prepare_inference`): the FLOPs are those of the
    computation timed, so their ratio is the latency ratio arithmetic alone would give (the
    sampler's folds skip ~1 % of the reference path's FLOPs, all in the part no layer count
    removes). The policies are timed in turns, one chunk each a round
    (`distill.timing.interleaved_chunk_times`), so their latencies compare on a shared CPU."""
    flops = {}
    for name, policy in policies.items():
        policy.prepare_inference()
        noise = torch.zeros(1, policy.cfg.chunk_len, policy.cfg.action_dim)
        with torch.no_grad(), flop_counter() as counter:
            policy.sample_actions(observation, noise=noise)  # also the warm-up
        flops[name] = counter.get_total_flops()
    times = interleaved_chunk_times(policies, observation, repeats)
    return {name: Cost(count_parameters(policy), 1e3 * statistics.median(times[name]), flops[name] / 1e9,
                       1e3 * float(np.percentile(times[name], 99)))
            for name, policy in policies.items()}


def chunk_cost(policy: Policy, observation: dict[str, Any], repeats: int) -> Cost:
    """`chunk_costs` of one policy (its FLOPs and a warm-up with `repeats` 1; comparing
    latencies of two policies takes `chunk_costs` of both, timed in turns)."""
    return chunk_costs({"policy": policy}, observation, repeats)["policy"]


# ----------------------------------------------------------------------------- the report


def _guard(what: str, fn: Callable[[], Any]) -> tuple[Any, str | None]:
    """Run one section; a one-line platform error becomes the section's text, not a crash
    (the student checkpoint is already saved; a twin that cannot run is not a failed run)."""
    try:
        return fn(), None
    except PlatformError as exc:
        log.warning("report: %s not measured: %s", what, exc)
        return None, str(exc)


def _closed_loop_section(measured: ClosedLoop, dcfg: DistillConfig, png: Path) -> list[str]:
    """The report's lines of a closed loop that ran on some tasks (or none): the plot
    (written to `png` when a task ran), the table, then one line per task not run."""
    lines: list[str] = []
    if measured.results:
        success_plot(measured.results, png, measured.robot, measured.not_run)
        cap = f", episodes capped at {dcfg.sim_episode_time_s} s" if dcfg.sim_episode_time_s else ""
        lines += [f"![success]({png.name})", "",
                  f"{dcfg.sim_episodes} episode(s) per task and model (seeds 1000..){cap}.", "",
                  "| task | model | success | 95 % Wilson interval |", "|---|---|---|---|"]
        for r in measured.results:
            lo, hi = r.interval
            lines.append(f"| {r.task} | {r.model} | {r.successes}/{r.episodes} | [{lo:.2f}, {hi:.2f}] |")
    if measured.not_run:
        lines += [*([""] if lines else []), "Not run:" if measured.results else "Not run on any task of the robot:",
                  "", *(f"- {task}: {why}" for task, why in measured.not_run.items())]
    return lines


def write_report(
    run_dir: Path,
    teacher: Policy,
    student: Policy,
    facts: dict[str, Any],
    dcfg: DistillConfig,
    eval_set: Dataset,
    eval_what: str,
    store: Path,
    resolved_config: Any = None,
    progress: bool = False,
) -> Path:
    """Measure and write run_dir/report.md (+ PNGs, + report.json); returns its path.
    `progress`: the closed loop's bars on stderr (minutes of twin episodes; the run's
    --no-progress / train.progress). Raises StoreError for a store that cannot be opened."""
    teacher.eval()
    student.eval()
    lines = [f"# Distillation report: {run_dir.name}", ""]
    s = facts["surgery"]
    lines += [
        "## The cut", "",
        f"- teacher: `{facts['teacher']}` (sha256 `{facts['teacher_sha256']}`), {s['teacher_depth']} joint layers",
        f"- student: teacher layers **{facts['kept_layers']}** in both towers (selection `{facts['selection']}`)",
        f"- parameters: teacher {s['teacher_params']:,}, student {s['student_params']:,} "
        f"({s['student_params'] / s['teacher_params']:.1%}); {s['copied_params']:,} copied, {s['dropped_params']:,} dropped",
        f"- loss weights: {facts['loss_weights']}",
        "- attention pairing [student layer, teacher layer]: " + (
            str(facts["attention_pairs"]) if facts["loss_weights"]["attention"] else "off (distill.weights.attention=0)"),
        *([f"- learned from the teacher alone ({' and '.join(t for t in ('output', 'attention') if facts['loss_weights'][t])}"
           f" terms; marked failed): episodes {facts['split']['teacher_only']}"]
          if facts["split"].get("teacher_only") else []),
        "",
        "How each selection strategy's student starts (before training): velocity MSE against the",
        f"teacher on probe windows of the {eval_what}, normalised units."
        # With none held out those are the training windows greedy searched on: its row flatters it.
        + (" No episode is held out: greedy is judged on the very windows it searched on."
           if not facts["split"]["held_out"] and "greedy" in facts["selections"] else ""), "",
        "| selection | layers | velocity MSE vs teacher |", "|---|---|---|",
    ]
    for name, row in facts["selections"].items():
        lines.append(f"| {name} | {row['layers']} | {row['velocity_mse']:.4g} |")
    if facts.get("greedy"):
        lines += ["", f"greedy removal order {facts['greedy']['dropped']}, subset MSE after each (on training "
                  "probe windows) "
                  f"{[round(x, 5) for x in facts['greedy']['velocity_mse']]}"]

    summary: dict[str, Any] = {"facts": facts}
    last = loss_plot(run_dir / "metrics.jsonl", run_dir / "loss_terms.png")
    summary["last_losses"] = last
    lines += ["", "## Loss per term", "", "![losses](loss_terms.png)", "",
              "Last logged: " + ", ".join(f"{k} {v:.4g}" for k, v in last.items()), ""]

    errors = action_errors(teacher, student, eval_set)
    joints = ActionJoints.of_store(store, len(errors["teacher_vs_truth"]))
    summary["action_error"] = {"joints": joints.names, "units": joints.units, **errors}
    error_plot(errors, joints, run_dir / "action_error.png")
    lines += [f"## Offline action error ({eval_what})", "", "![action error](action_error.png)", "",
              "| joint | unit | teacher vs truth | student vs truth | student vs teacher |", "|---|---|---|---|---|"]
    for j, (name, unit) in enumerate(zip(joints.names, joints.units)):
        lines.append(f"| {name} | {unit} | {errors['teacher_vs_truth'][j]:.4f} | {errors['student_vs_truth'][j]:.4f} | "
                     f"{errors['student_vs_teacher'][j]:.4f} |")
    lines += ["", "Mean absolute error of each joint in its own unit: rad for a revolute joint, m for a linear "
              "one, a gripper's opening 0-1 (its calibrated travel); \"as recorded\" where the store does not "
              "say the joint's kind. Same noise for both.", ""]

    lines += ["## Closed loop in the twin", ""]
    if dcfg.sim_episodes == 0:
        lines.append("Not run (distill.sim_episodes=0).")
    else:
        measured, why = _guard("closed-loop success", lambda: closed_loop(
            {"teacher": teacher, "student": student}, store, dcfg.sim_episodes, dcfg.sim_episode_time_s,
            progress=progress))
        if measured is None:
            lines.append(f"Not run: {why}")
        else:
            lines += _closed_loop_section(measured, dcfg, run_dir / "success.png")
            summary["closed_loop"] = [{**vars(r), "interval": list(r.interval)} for r in measured.results]
            summary["closed_loop_not_run"] = measured.not_run
    lines.append("")

    sample = {k: v for k, v in eval_set[0].items() if k not in ("action", "action_is_pad")}
    # Both timed in turns, one chunk each a round: timed one after the other, a busy stretch
    # of this (shared) CPU fell on one of them and the measured ratio followed the machine.
    costs = chunk_costs({"teacher": teacher, "student": student}, sample, dcfg.latency_repeats)
    summary["cost"] = {k: vars(v) for k, v in costs.items()}
    t, st = costs["teacher"], costs["student"]
    lines += ["## Cost of one chunk (this CPU, batch 1)", "",
              f"| | parameters | MFLOPs / chunk | latency ms (median of {dcfg.latency_repeats} chunks) |",
              "|---|---|---|---|",
              f"| teacher | {t.params:,} | {t.gflops * 1e3:.4g} | {t.chunk_ms:.2f} |",
              f"| student | {st.params:,} | {st.gflops * 1e3:.4g} | {st.chunk_ms:.2f} |", "",
              f"Student / teacher: FLOP-ideal latency ratio {st.gflops / t.gflops:.3f}, measured "
              f"{st.chunk_ms / t.chunk_ms:.3f} (parameters {st.params / t.params:.3f}). FLOPs count the "
              "prefix pass and every Euler step (matmuls and attention, policy/flops.py); the vision "
              "encoder is not cut, so the ideal ratio is above k/L. The two are timed in turns, one chunk "
              "each a round, so a busy stretch of a shared CPU slows both alike.", ""]
    if resolved_config is not None:
        from shallowpi.config import to_yaml

        lines += ["## Resolved config", "", "```yaml", to_yaml(resolved_config).rstrip(), "```", ""]
    path = run_dir / "report.md"
    # Whole or not at all: tools read report.json beside a finished checkpoint.
    replace_text(path, "\n".join(lines))
    replace_text(run_dir / "report.json", json.dumps(summary, indent=2))
    return path
