"""The end of `platform demo`: teacher vs student in one table, one picture and one JSON.

Per model: joint layers, parameters, success on every task of the robot in closed loop
(`eval --sim`'s counts with their 95 % Wilson interval), one action chunk's latency p50 and
p99 on this machine (distill/report.py's `chunk_costs`: batch 1, the sampler the robot runs,
after a warm-up, on a recorded observation, teacher and student timed in turns) and the
speed-up over the teacher; then the student as the executor ran it (`deploy --sim`:
success, inference p50/p99 on its backend).

    OUT/demo.json   every number below (and each stage's settings and wall time)
    OUT/demo.md     the table, the picture, the commands' own reports
    OUT/demo.png    success per task with interval whiskers; chunk latency p50 with p99 whiskers

The latency is cached in OUT/latency.json for the same two checkpoints and repeats.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shallowpi.durable_files import replace_text
from shallowpi.evaluate.interval import rate_with_interval, wilson_interval
from shallowpi.tui.panels import loop_timing_text

MODELS = ("teacher", "student")
SHORT_BAR = 0.25  # a latency bar below this fraction of the panel's top has its label above it


# Written into latency.json's key: a cache measured before the models were timed in turns
# (each model's chunks in one block, which a shared CPU's load swung either way) is
# measured again.
TIMING = "interleaved"


def chunk_latency(checkpoints: dict[str, Path], store: Path, repeats: int,
                  cache: Path) -> tuple[dict[str, dict[str, Any]], bool]:
    """Per model: parameters, layers, GFLOPs, chunk latency p50/p99 (ms) on one recorded
    observation of `store`, the models timed in turns, one chunk each a round
    (distill/report.py's `chunk_costs`); and whether that came from `cache` (which is read
    when it holds these checkpoints and repeats, timed by this code, and written otherwise)."""
    from shallowpi.commands.demo_stages import results_code
    from shallowpi.data.training import ChunkDataset
    from shallowpi.distill.distiller import checkpoint_sha256
    from shallowpi.distill.report import chunk_costs
    from shallowpi.policy.policy import Policy

    key = ({name: checkpoint_sha256(path) for name, path in checkpoints.items()}
           | {"repeats": repeats, "timing": TIMING, "code": results_code()})
    if cache.is_file():
        cached = json.loads(cache.read_text())
        if cached.get("key") == key:
            return cached["models"], True
    policies = {name: Policy.load(path).eval() for name, path in checkpoints.items()}
    # One observation for all: the first episode's first frame (its window's actions, which
    # depend on the chunk length, are left out).
    first = next(iter(policies.values()))
    sample = ChunkDataset(store, first.cfg.chunk_len, [0])[0]
    observation = {k: v for k, v in sample.items() if k not in ("action", "action_is_pad")}
    costs = chunk_costs(policies, observation, repeats)
    models = {name: {"layers": policies[name].cfg.depth, "parameters": cost.params, "gflops": cost.gflops,
                     "chunk_ms_p50": cost.chunk_ms, "chunk_ms_p99": cost.chunk_ms_p99}
              for name, cost in costs.items()}
    replace_text(cache, json.dumps({"key": key, "models": models}, indent=2))
    return models, False


def summarize(checkpoints: dict[str, Path], evals: dict[str, dict[str, Any]], deploy: dict[str, Any],
              latency: dict[str, dict[str, Any]], stages: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """demo.json's content: one row per model (tasks with intervals, latency, speed-up) and
    the deployed student."""
    teacher_ms = latency["teacher"]["chunk_ms_p50"]
    rows = []
    for name in MODELS:
        tasks = []
        for t in evals[name]["tasks"]:
            n = len(t["episodes"])
            tasks.append({"task": t["task"], "instruction": t["instruction"], "successes": t["successes"],
                          "episodes": n, "success_rate": t["successes"] / n if n else 0.0,
                          "interval95": list(wilson_interval(t["successes"], n)),
                          "other_task_instead": t.get("other_task_instead", {})})
        lat = latency[name]
        rows.append({"model": name, "label": _label(name, settings), "checkpoint": str(checkpoints[name]), **lat,
                     "tasks": tasks,
                     "speedup": teacher_ms / lat["chunk_ms_p50"] if lat["chunk_ms_p50"] and teacher_ms else None})
    deployed = {k: deploy.get(k) for k in ("backend", "runs_on", "profile", "strategy", "successes", "episodes",
                                            "inference_p50_ms", "inference_p99_ms", "loop_p99_ms",
                                            "sim_tick_wall_p99_ms", "safety")}
    deployed["task"] = deploy.get("task")
    if "sim_tick_wall_p99_ms" not in deploy:
        # deploy's JSON from before it said on which clock the loop ran: the demo deploys on
        # the twin's simulated time (--sim, no --realtime), where the loop's "period" is the
        # wall time a tick took, the chunks computed inside it included; no loop period.
        deployed["loop_p99_ms"], deployed["sim_tick_wall_p99_ms"] = None, deploy.get("loop_p99_ms")
    deployed["chunks"] = executor_chunks(deploy)
    if deployed["chunks"] == 0:
        # The executor's report says 0 ms when it computed no chunk (an episode over before
        # the first one came): no time was measured, and none is shown or compared.
        deployed["inference_p50_ms"] = deployed["inference_p99_ms"] = None
    return {"robot": evals["teacher"].get("robot"), "settings": settings, "models": rows, "deployed_student": deployed,
            "stages": stages}


def executor_chunks(deploy: dict[str, Any]) -> int | None:
    """How many chunks the executor timed over the deployment's episodes (None: a report
    without its episodes)."""
    episodes = deploy.get("per_episode")
    return None if episodes is None else sum(len(e.get("latency_ms") or []) for e in episodes)


def _label(model: str, settings: dict[str, Any]) -> str:
    """The table's name for a model: the teacher's says where it came from."""
    if model != "teacher":
        return model
    origin = {"shipped": "shipped", "train": "trained here"}.get(settings.get("teacher", "train"), "given")
    return f"teacher ({origin})"


def table(summary: dict[str, Any]) -> str:
    """The summary as plain-text columns, one row per model, then the deployed student."""
    rows = summary["models"]
    tasks = [t["task"] for t in rows[0]["tasks"]]
    width = max(34, *(len(t) for t in tasks))
    name = max(8, *(len(r.get("label", r["model"])) for r in rows))
    head = f"{'model':<{name}} {'layers':>6} {'parameters':>11}  " + "  ".join(f"{t:<{width}}" for t in tasks)
    head += f"  {'chunk p50 / p99 ms':>18} {'speed-up':>8}"
    lines = [head]
    for r in rows:
        cells = "  ".join(f"{rate_with_interval(t['successes'], t['episodes']):<{width}}" for t in r["tasks"])
        latency = f"{r['chunk_ms_p50']:.1f} / {r['chunk_ms_p99']:.1f}"
        speedup = f"{r['speedup']:.2f}x" if r["speedup"] else "-"
        lines.append(f"{r.get('label', r['model']):<{name}} {r['layers']:>6} {r['parameters']:>11,}  {cells}  "
                     f"{latency:>18} {speedup:>8}")
    if executor := executor_line(summary):
        lines.append(executor)
    return "\n".join(lines)


def executor_line(summary: dict[str, Any]) -> str | None:
    """The deployed student in one line, for the table and demo.md alike: backend, action
    selection, success with its 95 % interval, inference p50/p99 and the loop's p99 (ms):
    on the twin's simulated time the wall time of a tick, said so (`deploy` says the same).
    None when no episode ran through the executor."""
    d = summary["deployed_student"]
    if not d.get("episodes"):
        return None
    if d.get("sim_tick_wall_p99_ms") is not None:  # the twin's simulated time, as `deploy` says it
        loop = ", " + loop_timing_text(True, d["sim_tick_wall_p99_ms"])
    elif d.get("loop_p99_ms") is not None:  # the wall clock's (--realtime)
        loop = ", " + loop_timing_text(False, d["loop_p99_ms"])
    else:
        loop = ""
    return (f"student through the executor ({d['backend']}, {d['strategy']}): success "
            f"{rate_with_interval(d['successes'], d['episodes'])}, inference p50 {_ms(d['inference_p50_ms'])}, "
            f"p99 {_ms(d['inference_p99_ms'])}{loop}")


def _ms(value: float | None) -> str:
    """'27.0 ms'; '-' for a time not measured."""
    return "-" if value is None else f"{value:.1f} ms"


def markdown(summary: dict[str, Any], links: dict[str, str]) -> str:
    """demo.md: the table as Markdown, the deployed student's line as the console table
    prints it, the picture and where each stage's report is."""
    rows = summary["models"]
    tasks = [t["task"] for t in rows[0]["tasks"]]
    lines = [f"# Shallow-π demo: {summary['robot']}", "", "![teacher vs student](demo.png)", "",
             "| model | layers | parameters | " + " | ".join(f"{t} (95 % Wilson)" for t in tasks)
             + " | chunk p50 / p99 (ms) | speed-up |",
             "|---|---:|---:|" + "---|" * len(tasks) + "---:|---:|"]
    for r in rows:
        cells = " | ".join(rate_with_interval(t["successes"], t["episodes"]) for t in r["tasks"])
        speedup = f"{r['speedup']:.2f}x" if r["speedup"] else "-"
        lines.append(f"| {r.get('label', r['model'])} | {r['layers']} | {r['parameters']:,} | {cells} | "
                     f"{r['chunk_ms_p50']:.1f} / {r['chunk_ms_p99']:.1f} | {speedup} |")
    if executor := executor_line(summary):
        lines += ["", executor]
    lines += ["", "Chunk latency: one observation to one action chunk, batch 1, on this machine's CPU "
              "(the torch sampler; teacher and student timed in turns, one chunk each a round); success: "
              "`platform eval --sim` on unseen seeds (from 1000).", ""]
    lines += [f"- {what}: `{where}`" for what, where in links.items()]
    return "\n".join(lines) + "\n"


def picture(summary: dict[str, Any], png: Path) -> None:
    """Success per task (bars, 95 % Wilson whiskers, k/n above) and chunk latency (p50 bars,
    p99 whiskers): teacher beside student, and the student as the executor ran it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = summary["models"]
    tasks = [t["task"] for t in rows[0]["tasks"]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [max(2, len(tasks)), 1.6]})
    colors = {"teacher": "#4c72b0", "student": "#dd8452"}
    for i, r in enumerate(rows):
        x = np.arange(len(tasks)) + (i - 0.5) * 0.38
        rates = np.array([t["success_rate"] for t in r["tasks"]])
        low = np.array([t["interval95"][0] for t in r["tasks"]])
        high = np.array([t["interval95"][1] for t in r["tasks"]])
        left.bar(x, rates, 0.38, yerr=[rates - low, high - rates], capsize=5, color=colors[r["model"]],
                 label=f"{r['model']} ({r['layers']} layers, {r['parameters'] / 1e6:.2f} M parameters)")
        for xi, t in zip(x, r["tasks"]):
            left.text(xi, t["interval95"][1] + 0.01, f"{t['successes']}/{t['episodes']}", ha="center", va="bottom",
                      fontsize=9)
    seeds = rows[0]["tasks"][0]["episodes"]
    left.set_xticks(range(len(tasks)), tasks)
    left.set_ylim(0, 1.28)  # room above 100 % for the counts and the legend
    left.set_yticks(np.linspace(0, 1, 6))
    left.set_ylabel("success rate (95 % Wilson interval)")
    left.set_title(f"closed loop in the {summary['robot']} twin, {seeds} unseen seed{'s' if seeds != 1 else ''} a task")
    left.legend(loc="upper center", ncol=2, fontsize=8)
    # Teacher and student are timed by the torch sampler on the CPU (chunk_latency); the
    # executor on its backend, which may be a GPU's (demo.deploy_backend): each bar says where.
    bars = [(f"{r['model']}\n(torch, CPU)", r["chunk_ms_p50"], r["chunk_ms_p99"], colors[r["model"]]) for r in rows]
    deployed = summary["deployed_student"]
    if deployed.get("episodes") and deployed.get("inference_p50_ms") is not None:
        where = ", ".join(filter(None, (deployed["backend"], deployed.get("runs_on"))))
        bars.append((f"student, executor\n({where})", deployed["inference_p50_ms"], deployed["inference_p99_ms"],
                     "#c44e52"))
    p50 = [b[1] for b in bars]
    p99 = [b[2] for b in bars]
    right.bar(range(len(bars)), p50, 0.6, yerr=[[0] * len(bars), [high - low for low, high in zip(p50, p99)]],
              capsize=5, color=[b[3] for b in bars])
    top = max(p99, default=0.0) or 1.0
    right.set_ylim(0, 1.2 * top)  # room above the longest whisker for a short bar's label
    for i, value in enumerate(p50):
        # The speed-up compares like with like: the student's sampler against the teacher's.
        speedup = f"\n{rows[i]['speedup']:.1f}x" if 0 < i < len(rows) and rows[i]["speedup"] else ""
        text = f"{value:.0f} ms{speedup}"
        if value >= SHORT_BAR * top:  # inside the bar, white on its colour
            right.text(i, value / 2, text, ha="center", va="center", color="white", fontsize=9)
        else:  # a short bar has no room for it: above its whisker, on the white background
            right.text(i, p99[i] + 0.02 * top, text, ha="center", va="bottom", color="black", fontsize=9)
    right.set_xticks(range(len(bars)), [b[0] for b in bars], fontsize=8)
    right.set_ylabel("one action chunk, ms (p50, whisker p99)")
    right.set_title("chunk latency on this machine")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
