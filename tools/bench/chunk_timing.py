"""One action chunk of a teacher and of its uniform cuts, timed in one process.

Shared by latency_ratio.py and reproduce.py. The students are the teacher's uniform cuts
(distill/student.py: the layers a distillation keeps); a trained student runs the
computation of its untrained cut (same architecture and shapes, other values), so timing
the cuts needs no student checkpoint. Two paths, each on one thread with the models
interleaved chunk by chunk, so load that comes and goes on a shared machine falls on every
model alike: torch (`Policy.sample_actions` after `prepare_inference`: preprocessing, the
fast sampler, denormalising; what `platform eval` and the distillation report time, in
the rounds of `shallowpi.distill.timing` that the report and the demo use too) and
ONNX Runtime (`OnnxChunk`: the exported chunk graph the `cpu` deployment profile runs).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from shallowpi.data.training import ChunkDataset
from shallowpi.distill.student import build_student, uniform_layers

# The torch path's rounds are the package's own (what the distillation report and the demo
# time with), imported from here by latency_ratio.py and reproduce.py.
from shallowpi.distill.timing import interleaved_chunk_times as interleaved_chunk_times
from shallowpi.policy.policy import Policy


def teacher_and_cuts(teacher_checkpoint: Path, depths: list[int],
                     name: Callable[[int], str] = str) -> dict[str, Policy]:
    """{"teacher": the checkpoint's policy, name(k): its uniform cut to k joint layers} in
    eval mode, for each k of `depths` other than the teacher's own depth; one thread."""
    torch.set_num_threads(1)
    teacher = Policy.load(teacher_checkpoint).eval()
    return {"teacher": teacher} | {name(k): build_student(teacher, uniform_layers(teacher.cfg.depth, k))[0].eval()
                                   for k in depths if k != teacher.cfg.depth}


def one_observation(store: Path, policy: Policy) -> dict[str, Any]:
    """The first window of `store`'s first episode as `policy` reads it, without its actions."""
    item = ChunkDataset(store, policy.cfg.chunk_len, episodes=[0])[0]
    return {k: v for k, v in item.items() if k not in ("action", "action_is_pad")}


class OnnxChunk:
    """A policy's unrolled chunk graph (deploy/export_onnx.py `ChunkGraph`, what the `cpu`
    profile's onnxruntime backend runs) in an ONNX Runtime session on one thread, with
    fixed example inputs (the inpainting weight 0: a plain chunk). Export takes ~30 s for
    a 6-layer student of the `teacher` preset and ~80 s for its 18-layer teacher here."""

    def __init__(self, policy: Policy, folder: Path) -> None:
        import onnxruntime as ort

        from shallowpi.deploy.export_onnx import (
            CHUNK_INPUTS,
            ChunkGraph,
            example_inputs,
            export_graphs,
        )
        from shallowpi.policy.flops import flop_counter

        start = time.perf_counter()
        folder.mkdir(parents=True, exist_ok=True)
        graph = export_graphs(policy, folder, ("chunk",), check=False)["chunk"]
        self.export_s = time.perf_counter() - start
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        x = example_inputs(policy, seed=1)
        x["weight"] = torch.zeros_like(x["weight"])
        inputs = tuple(x[k] for k in CHUNK_INPUTS)
        self.feed = {k: v.numpy() for k, v in zip(CHUNK_INPUTS, inputs, strict=True)}
        with torch.no_grad(), flop_counter() as counter:
            expected = ChunkGraph(policy.model, policy.cfg.num_steps)(*inputs)
        self.flops = counter.get_total_flops()  # the graph's own computation, attention included
        self.max_abs_diff = float(abs(self() - expected.numpy()).max())  # also the warm-up

    def __call__(self):
        """One chunk: actions [1, C, A] (numpy, normalised)."""
        return self.session.run(None, self.feed)[0]


def interleaved_onnx_times(graphs: Mapping[str, OnnxChunk], rounds: int) -> dict[str, list[float]]:
    """Seconds of each exported chunk graph, `rounds` rounds of one chunk a model."""
    times: dict[str, list[float]] = {name: [] for name in graphs}
    for _ in range(rounds):
        for name, graph in graphs.items():
            start = time.perf_counter()
            graph()
            times[name].append(time.perf_counter() - start)
    return times
