"""Export a policy to ONNX: the whole chunk, or its prefix and denoise step apart.

Three graphs, all at batch 1 and fixed shapes (a robot runs one observation at a time):

    chunk   images [1, N, 3, S, S], image_masks [1, N], tokens [1, L], token_masks [1, L],
            state [1, A_s], noise [1, C, A], target [1, C, A], weight [1, C, 1]
            -> actions [1, C, A]: every Euler step unrolled, inpainting each row towards
            target by its weight (policy/inpaint.py: 1 a frozen row, between 0 and 1
            real-time chunking's soft mask, 0 plain sampling). One call a chunk.
    prefix  images, image_masks, tokens, token_masks
            -> cache_keys, cache_values [depth, 1, k, P + S, E], cache_bias [1, 1, S, P + S],
            cache_cos, cache_sin [1, 1, S, E]:
            the KV cache of `Pi0Model.prefix_cache` (the suffix slots zero); and
            cache_instruction [1, D_vlm] when the expert reads the instruction directly
            (`task_conditioning: expert`)
    step    x_t [1, C, A], t [1], state, cache_* -> velocity [1, C, A]:
            `Pi0Model.denoise_step`

Actions are in the model's normalised, padded units; the backend converts. Each graph is
traced from the model's own methods (nothing re-implemented here), checked with
onnx.checker, and run in ONNX Runtime against torch on the same inputs and noise: a max
|difference| above `PARITY_TOL` (float32) refuses the export.

Uses torch's dynamo exporter (onnxscript): the TorchScript one cannot trace the KV cache's
in-place writes. Its graph is then cleaned by onnxscript's constant folding with shape
inference and dead-node removal, not by the exporter's full optimizer (`optimize=True`):
on the unrolled chunk of a 6-layer twin student (~15,000 nodes) that spent 136 s of a 175 s
export on this 2-core CPU for a graph ONNX Runtime runs no faster (14.7 against 14.4 ms a
chunk; outputs bit-identical), since it fuses at session creation as TensorRT's builder
does; the folding takes ~3 s and leaves no CastLike behind.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from shallowpi.errors import FILE_SYSTEM_ERRORS, PlatformError
from shallowpi.policy.action_selection import rtc_weights
from shallowpi.policy.model import KVCache, Pi0Model
from shallowpi.policy.policy import Policy

if TYPE_CHECKING:
    import onnx_ir

log = logging.getLogger(__name__)

PARITY_TOL = 1e-4
OPSET = 18
CHUNK_INPUTS = ("images", "image_masks", "tokens", "token_masks", "state", "noise", "target", "weight")
PREFIX_INPUTS = ("images", "image_masks", "tokens", "token_masks")
CACHE = ("cache_keys", "cache_values", "cache_bias", "cache_cos", "cache_sin")
STEP_INPUTS = ("x_t", "t", "state")


def cache_names(model: Pi0Model) -> tuple[str, ...]:
    """The prefix graph's outputs, which the step graph takes back: the KV cache, and the
    pooled instruction when the expert reads it (`Prefix.instruction`)."""
    return (*CACHE, "cache_instruction") if model.instruction_proj is not None else CACHE


class ExportError(PlatformError):
    """An export that failed, or whose graph disagrees with torch."""


class ChunkGraph(nn.Module):
    """The whole chunk, inpainted row by row by `weight` (module docstring)."""

    def __init__(self, model: Pi0Model, num_steps: int) -> None:
        super().__init__()
        self.model, self.num_steps = model, num_steps

    def forward(self, images: Tensor, image_masks: Tensor, tokens: Tensor, token_masks: Tensor,
                state: Tensor, noise: Tensor, target: Tensor, weight: Tensor) -> Tensor:
        """One action chunk from one observation; shapes as in the module docstring.

        Runs `num_steps` Euler steps over the prefix's KV cache; each row is pulled towards
        `target` by its `weight` (1: equals it; policy/inpaint.py). -> actions [1, C, A],
        normalised.
        """
        prefix = self.model.embed_prefix(images, image_masks, tokens, token_masks)
        return self.model.sample_inpainted(prefix, state, noise, target, weight, self.num_steps)


class PrefixGraph(nn.Module):
    """The VLM prefix -> the KV cache (module docstring, graph `prefix`)."""

    def __init__(self, model: Pi0Model) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor, image_masks: Tensor, tokens: Tensor, token_masks: Tensor):
        """The prefix's KV cache as a tuple: keys, values [depth, 1, k, P + S, E], bias, cos,
        sin, and the pooled instruction [1, D_vlm] when the expert reads it."""
        cache = self.model.prefix_cache(self.model.embed_prefix(images, image_masks, tokens, token_masks))
        out = (torch.stack(cache.keys), torch.stack(cache.values), cache.bias, cache.cos, cache.sin)
        return out if cache.instruction is None else (*out, cache.instruction)


class StepGraph(nn.Module):
    """One denoising step over a given KV cache (module docstring, graph `step`)."""

    def __init__(self, model: Pi0Model, prefix_len: int) -> None:
        super().__init__()
        self.model, self.prefix_len = model, prefix_len

    def forward(self, x_t: Tensor, t: Tensor, state: Tensor, keys: Tensor, values: Tensor,
                bias: Tensor, cos: Tensor, sin: Tensor, instruction: Tensor | None = None) -> Tensor:
        """The velocity [1, C, A] at x_t [1, C, A], time t [1], over the cache `PrefixGraph`
        returned (`instruction` only when the expert reads it). The cache inputs are cloned,
        not written."""
        # The step writes its suffix keys/values into the cache; clone so the graph's
        # inputs stay inputs (the exporter functionalises the in-place writes).
        cache = KVCache(list(keys.clone().unbind(0)), list(values.clone().unbind(0)), self.prefix_len,
                        bias, cos, sin, instruction)
        return self.model.denoise_step(cache, state, x_t, t)


def example_inputs(policy: Policy, seed: int = 0) -> dict[str, Tensor]:
    """Random batch-1 inputs of every graph's shapes (images in [-1, 1], some text padding)."""
    cfg = policy.cfg
    g = torch.Generator().manual_seed(seed)
    S, L, C, A = cfg.vision.image_size, cfg.max_text_tokens, cfg.chunk_len, cfg.action_dim
    token_masks = torch.arange(L)[None] < max(1, L // 2)
    # real-time chunking's soft mask: a frozen third, then fractional weights to half the chunk
    weight = torch.from_numpy(rtc_weights(C, C // 3, C // 2)).float().view(1, C, 1)
    return {
        "images": torch.rand(1, cfg.num_cameras, 3, S, S, generator=g) * 2 - 1,
        "image_masks": torch.ones(1, cfg.num_cameras, dtype=torch.bool),
        "tokens": torch.randint(2, cfg.vocab_size, (1, L), generator=g),
        "token_masks": token_masks,
        "state": torch.randn(1, cfg.state_dim, generator=g),
        "noise": torch.randn(1, C, A, generator=g),
        "target": torch.randn(1, C, A, generator=g),
        "weight": weight,
    }


def _export(module: nn.Module, args: tuple[Tensor, ...], path: Path, inputs: Iterable[str],
            outputs: Iterable[str]) -> None:
    try:
        import onnx
        import onnxscript  # noqa: F401  (the dynamo exporter's dependency; fail here, by name)
    except ImportError as exc:
        raise ExportError(f"ONNX export needs {exc.name}: pip install 'shallowpi[export]'") from None
    for noisy in ("onnx_ir", "onnxscript"):  # one INFO line per folded constant
        logging.getLogger(noisy).setLevel(logging.WARNING)
    chatter = io.StringIO()  # the exporter prints progress lines; keep them for the log
    interrupted: list[int] = []  # signals that raised KeyboardInterrupt during the export
    try:
        with _noting_interrupts(interrupted):
            with torch.no_grad(), contextlib.redirect_stdout(chatter), warnings.catch_warnings():
                # torch's own exporter calls a pytree API that torch deprecates (2.10): not ours to act on.
                warnings.filterwarnings("ignore", message=r".*LeafSpec.* is deprecated", category=FutureWarning)
                program = torch.onnx.export(module.eval(), args, dynamo=True, opset_version=OPSET,
                                            input_names=list(inputs), output_names=list(outputs),
                                            external_data=False, verbose=False, optimize=False)
            log.debug("%s", chatter.getvalue())
            _fold(program.model)
            program.save(str(path))
            _tidy(path)
            onnx.checker.check_model(str(path), full_check=True)
    except ExportError:
        raise
    except Exception as exc:  # the exporter's and the checker's many error types, as one line
        log.debug("%s", chatter.getvalue())
        if interrupted or _interrupt_in(exc):
            # Ctrl-C (or SIGTERM under `platform`) that the exporter caught on its way (its
            # capture catches Exception; one in a lazy import came out as an ImportError):
            # the user's stop, not an export that failed ("deploy with --backend torch").
            raise KeyboardInterrupt from exc
        if (refused := _disk_refusal(exc, path)) is exc:
            raise
        if refused is not None:
            # A full or read-only disk (the saved graph, the exporter's temporary files) is
            # the disk's to fix, said by the CLI in one line naming it: not an exporter bug
            # to deploy around with --backend torch.
            raise refused from exc
        raise ExportError(f"exporting the {path.stem} graph failed: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}; deploy with --backend torch, or report "
                          "it with the log (--verbose)") from exc
    if interrupted:  # swallowed whole by something that carried on: stop all the same
        raise KeyboardInterrupt


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and every error in its chain (`__cause__`, `__context__`, an exception group's
    members), each once."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        error = todo.pop()
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        yield error
        todo += [error.__cause__, error.__context__, *getattr(error, "exceptions", ())]


def _interrupt_in(exc: BaseException) -> bool:
    """Whether a KeyboardInterrupt is `exc` or anywhere in its chain (`_chain`)."""
    return any(isinstance(error, KeyboardInterrupt) for error in _chain(exc))


def _disk_refusal(exc: BaseException, path: Path) -> OSError | None:
    """The OSError in `exc`'s chain that the file system caused (`errors.FILE_SYSTEM_ERRORS`:
    full, read-only, refused, failing), naming the file it was for, else `path` (a save's
    ENOSPC from a write names none); None when the export failed otherwise."""
    for error in _chain(exc):
        if isinstance(error, OSError) and error.errno in FILE_SYSTEM_ERRORS:
            if error.filename is not None:
                return error
            return OSError(error.errno, error.strerror or os.strerror(error.errno), str(path))
    return None


@contextlib.contextmanager
def _noting_interrupts(interrupted: list[int]) -> Iterator[None]:
    """While the block runs, append to `interrupted` the number of each SIGINT, SIGTERM or
    SIGHUP whose handler raises KeyboardInterrupt; the handlers run as before. The exporter
    catches Exception and may lose the interrupt from its chain: this remembers it. Off the
    main thread (where Python delivers no signals) nothing is installed."""
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            handler = signal.getsignal(sig)
            if callable(handler):  # SIG_DFL, SIG_IGN: not a Python handler, left as it is

                def note(signum: int, frame: Any, handler: Callable[[int, Any], Any] = handler) -> None:
                    try:
                        handler(signum, frame)
                    except KeyboardInterrupt:
                        interrupted.append(signum)
                        raise

                previous[sig] = signal.signal(sig, note)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _tidy(path: Path) -> None:
    """Rewrite the graph at `path` without what the robot has no use for: the exporter's
    per-node provenance (each node's Python stack trace, FX node and module path: 13 MB of
    the teacher's 22 MB chunk graph, naming the source files of the machine that made it)
    and repeated weights (`_share_equal_weights`)."""
    import onnx

    model = onnx.load(str(path))
    for node in model.graph.node:
        del node.metadata_props[:]
    _share_equal_weights(model.graph)
    onnx.save(model, str(path))


def _share_equal_weights(graph: Any) -> None:
    """Keep one initializer of each set with equal dtype, shape and values in `graph` (an
    onnx GraphProto, changed in place), the nodes that read the others pointed at it.
    Folding unrolls the 10 Euler steps into copies of the expert's weights: the teacher's
    chunk graph held 29 MB of initializers for 5.7 MB of distinct ones, and at pi0 size the
    copies would pass protobuf's 2 GB."""
    import onnx
    from onnx import numpy_helper

    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in graph.node for a in n.attribute):
        return  # a subgraph's nodes read names too: left as exported
    first: dict[tuple, str] = {}
    same_as: dict[str, str] = {}
    kept = []
    for tensor in graph.initializer:
        values = numpy_helper.to_array(tensor)
        key = (tensor.data_type, tuple(tensor.dims), values.tobytes())
        if key in first:
            same_as[tensor.name] = first[key]
        else:
            first[key] = tensor.name
            kept.append(tensor)
    if not same_as:
        return
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in same_as:
                node.input[i] = same_as[name]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    log.debug("%d repeated weights shared", len(same_as))


def _fold(model: onnx_ir.Model) -> None:
    """Inline, fold constants (with shape inference, which turns each CastLike into a Cast)
    and drop what no output reads, in place on the exporter's IR model (module docstring)."""
    from onnxscript import optimizer

    optimizer.inline(model)
    optimizer.fold_constants_ir(model, onnx_shape_inference=True)
    optimizer.remove_unused_nodes(model)
    optimizer.remove_unused_functions(model)


ONNX_MAX_BYTES = 2**31 - 1  # protobuf's limit on one message: an ONNX file without external data


def export_graphs(policy: Policy, out: Path, graphs: Iterable[str] = ("chunk", "prefix", "step"),
                  num_steps: int | None = None, check: bool = True) -> dict[str, Path]:
    """Write out/<name>.onnx for each graph; with `check`, refuse one that differs from
    torch by more than PARITY_TOL. Returns {name: path}. Raises ExportError, at once for a
    policy whose fp32 weights exceed ONNX's 2 GB protobuf limit (π0's are ~13 GB): the
    export writes one self-contained file, and would fail only at its end."""
    if graphs and (size := sum(p.numel() for p in policy.model.parameters()) * 4) > ONNX_MAX_BYTES:
        raise ExportError(f"the policy's weights are {size / 1e9:.1f} GB in fp32, over the {ONNX_MAX_BYTES / 1e9:.1f} GB "
                          "an ONNX file holds (this export does not split weights into external data): deploy it "
                          "with --backend torch")
    model = policy.model.float().eval()
    steps = num_steps or policy.cfg.num_steps
    x = example_inputs(policy)
    written: dict[str, Path] = {}
    for name in graphs:
        path = out / f"{name}.onnx"
        if name == "chunk":
            _export(ChunkGraph(model, steps), tuple(x[k] for k in CHUNK_INPUTS), path, CHUNK_INPUTS, ["actions"])
        elif name == "prefix":
            _export(PrefixGraph(model), tuple(x[k] for k in PREFIX_INPUTS), path, PREFIX_INPUTS, cache_names(model))
        elif name == "step":
            with torch.no_grad():
                cache = PrefixGraph(model)(*(x[k] for k in PREFIX_INPUTS))
            args = (x["noise"], torch.full((1,), 0.7), x["state"], *cache)
            inputs = (*STEP_INPUTS, *cache_names(model))
            _export(StepGraph(model, policy.cfg.prefix_len), args, path, inputs, ["velocity"])
        else:
            raise ExportError(f"unknown graph '{name}'; choose from chunk, prefix, step")
        written[name] = path
    if check:
        try:
            diffs = parity(policy, written, steps)
        except ImportError as exc:
            raise ExportError(f"checking the exported graphs needs {exc.name}: pip install 'shallowpi[export]'") from None
        except Exception as exc:  # onnxruntime's own error types (an op it cannot run), as one line
            if _interrupt_in(exc):  # Ctrl-C inside a lazy import: the user's stop, as in _export
                raise KeyboardInterrupt from exc
            raise ExportError(f"ONNX Runtime cannot run the exported graphs: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}; deploy with --backend torch, or "
                              "report it with the log (--verbose)") from exc
        for name, diff in diffs.items():
            if not diff <= PARITY_TOL:
                raise ExportError(
                    f"the exported {name} graph differs from torch by {diff:.2e} (> {PARITY_TOL:g}); "
                    "report this with the checkpoint's config"
                )
            log.info("%s graph: max |onnx - torch| = %.2e", name, diff)
    return written


def parity(policy: Policy, graphs: dict[str, Path], num_steps: int | None = None, seed: int = 1) -> dict[str, float]:
    """Max |ONNX Runtime - torch| (float32) per graph, on random inputs and noise of `seed`.

    chunk is compared twice, plain (weight 0) against `Pi0Model.sample_actions` and
    inpainted against the same inpainting in torch; prefix+step as the Euler loop they make
    (the split backend's path) against `sample_actions`."""
    import onnxruntime as ort

    model, steps = policy.model.float().eval(), num_steps or policy.cfg.num_steps
    x = example_inputs(policy, seed)
    feed = {k: v.numpy() for k, v in x.items()}
    with torch.no_grad():
        plain = model.sample_actions(model.embed_prefix(*(x[k] for k in PREFIX_INPUTS)), x["state"], x["noise"], steps)
        inpainted = ChunkGraph(model, steps)(*(x[k] for k in CHUNK_INPUTS))
    result: dict[str, float] = {}

    def session(name: str) -> ort.InferenceSession:
        return ort.InferenceSession(str(graphs[name]), providers=["CPUExecutionProvider"])

    if "chunk" in graphs:
        chunk = session("chunk")
        zero = {**{k: feed[k] for k in CHUNK_INPUTS}, "weight": np.zeros_like(feed["weight"])}
        result["chunk"] = float(np.abs(chunk.run(None, zero)[0] - plain.numpy()).max())
        got = chunk.run(None, {k: feed[k] for k in CHUNK_INPUTS})[0]
        result["chunk (inpainted)"] = float(np.abs(got - inpainted.numpy()).max())
    if "prefix" in graphs and "step" in graphs:
        from shallowpi.deploy.backends.onnxrt import SplitGraphs

        split = SplitGraphs(session("prefix"), session("step"), steps)
        got = split({k: feed[k] for k in PREFIX_INPUTS}, feed["state"], feed["noise"])
        result["prefix+step"] = float(np.abs(got - plain.numpy()).max())
    return result
