"""Distributed training setup: the process group, the device of each process, and the
trained policy wrapped for it (DDP, or FSDP sharded layer by layer).

Only the trained policy is wrapped: an objective's frozen modules (a teacher) stay plain
modules on every process, whole, outside any gradient synchronisation.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
from torch import Tensor, nn

from shallowpi.errors import PlatformError
from shallowpi.policy.policy import Policy
from shallowpi.torchrun_env import torchrun_rank

T = TypeVar("T")

# How long a collective may wait for a peer before the group gives up, in seconds; the
# environment variable SHALLOWPI_DIST_TIMEOUT_S sets another. torch's defaults (NCCL: 10
# minutes) are shorter than a π0 checkpoint's save on rank 0 (~50 GB, synced, while the
# others wait in the next collective) or its read at resume on slow lab storage, and NCCL's
# watchdog then kills the job mid-save. A peer that really hung is found this much later.
DEFAULT_TIMEOUT_S = 3600.0
TIMEOUT_VARIABLE = "SHALLOWPI_DIST_TIMEOUT_S"


@dataclass
class Dist:
    """This process's place in the run: `rank` of `world` processes (0 of 1 unlaunched)."""

    rank: int = 0
    world: int = 1
    # In a torch.distributed process group (launched by torchrun), even as its only process.
    grouped: bool = False

    @property
    def main(self) -> bool:
        """Rank 0: the one process that logs, shows progress and writes checkpoints."""
        return self.rank == 0


def pick_device(name: str) -> torch.device:
    """"auto" is the GPU when there is one; under torchrun each process takes its LOCAL_RANK's.
    A CUDA device becomes the process's current one too. PlatformError (`check_device`)
    for a device this machine does not have."""
    check_device(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda:") and "LOCAL_RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Every rank on that one GPU: NCCL fails, or the ranks fight over it.
        from shallowpi.errors import PlatformError

        raise PlatformError(f"--device {name} names one GPU for every process under torchrun; pass --device cuda "
                            "(each process takes its LOCAL_RANK's), and choose GPUs with CUDA_VISIBLE_DEVICES")
    if name == "cuda":
        name = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    device = torch.device(name)
    if device.type == "cuda":
        # The current device, not only the one tensors are moved to: the loader pins its
        # batches (pin_memory) on the current device, and CUDA makes its context there.
        # Left at 0, `--device cuda:1` put a context and pinned memory on GPU 0, beside
        # whatever ran there (out of memory, or refused in exclusive mode).
        torch.cuda.set_device(device)
    return device


def check_device(name: str) -> str:
    """`name` ("auto", "cpu", "cuda", "cuda:N", ...) if this machine has that device; else
    PlatformError in one line saying what it has (torch's own answer to `cuda` on a machine
    without one is a RuntimeError traceback from deep in the first transfer)."""
    if name == "auto":
        return name
    try:
        device = torch.device(name)
    except RuntimeError:
        raise PlatformError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise PlatformError(f"device '{name}': torch sees no CUDA GPU on this machine; use --device cpu "
                                "(or auto, which takes a GPU when there is one)")
        if device.index is not None and device.index >= count:
            raise PlatformError(f"device '{name}': this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    elif device.type not in ("cpu", "mps"):
        raise PlatformError(f"device '{name}' is not one the policy runs on; use auto, cpu, cuda or cuda:N")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise PlatformError(f"device '{name}': torch sees no Apple GPU here; use --device cpu")
    return name


def init_distributed(device: torch.device) -> Dist:
    """Join the process group when launched by torchrun (or anything else that sets RANK,
    WORLD_SIZE and MASTER_ADDR). A single torchrun process joins too, so FSDP runs the same
    code on one GPU as on eight; a plain `platform train` is not grouped. Its collectives
    wait `group_timeout()` for a peer (PlatformError for a bad SHALLOWPI_DIST_TIMEOUT_S)."""
    if torchrun_rank() is None:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        # torch.distributed.nn.functional binds `group=group.WORLD` as default arguments
        # when it is first imported. DDP and FSDP import it (through torch._dynamo) on
        # first use: imported after the group exists, it would hold the group for the
        # life of the process, so destroy_process_group could not free it (see
        # close_distributed). Imported first, its defaults are None.
        import torch.distributed.nn  # noqa: F401

        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", timeout=group_timeout())
    return Dist(dist.get_rank(), dist.get_world_size(), grouped=True)


def group_timeout() -> timedelta:
    """How long each collective of the process group waits for the slowest process:
    SHALLOWPI_DIST_TIMEOUT_S seconds when set, else DEFAULT_TIMEOUT_S (an hour; see there
    why not torch's 10 minutes). PlatformError in one line for a value that is not a
    positive number of seconds."""
    given = os.environ.get(TIMEOUT_VARIABLE, "").strip()
    if not given:
        return timedelta(seconds=DEFAULT_TIMEOUT_S)
    try:
        seconds = float(given)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < float("inf"):
        raise PlatformError(f"{TIMEOUT_VARIABLE}={given!r}: give the seconds a process may wait for the others "
                            f"(default {DEFAULT_TIMEOUT_S:.0f}), a positive number")
    return timedelta(seconds=seconds)


def barrier(d: Dist, device: torch.device) -> None:
    """Wait until every process of the group gets here (nothing outside a group)."""
    if not d.grouped:
        return
    import torch.distributed as dist

    if device.type == "cuda":
        dist.barrier(device_ids=[device.index])
    else:
        dist.barrier()


def close_distributed() -> None:
    """Leave the process group and join its threads (nothing outside a group). Every
    process calls it once, after its last collective (Trainer.fit ends with a barrier), when
    its work succeeded (after an error a peer may never get here; torchrun stops the rest).

    Why: a group left to interpreter exit keeps gloo's worker threads (NCCL's watchdog)
    running through finalization, where a thread dropping its last reference to a tensor
    needs the GIL of a dying interpreter, and the process aborts after its work is done
    ("terminate called without an active exception", SIGABRT). destroy_process_group joins
    those threads only when it drops the group's last reference, so the references torch
    keeps elsewhere are dropped too (see init_distributed and _forget_mesh_groups).
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    # A finished run's FSDP-sharded modules are reference cycles holding the group.
    gc.collect()
    dist.destroy_process_group()
    _forget_mesh_groups()


def _forget_mesh_groups() -> None:
    """FSDP's device meshes outlive the run in DTensor's caches (sharding propagation,
    redistribution plans), each still holding the destroyed group in its `_pg_registry`:
    empty those, so the group's last reference goes now."""
    from torch.distributed.device_mesh import DeviceMesh

    for obj in gc.get_objects():
        # type(), not isinstance(): isinstance reads an object's __class__ through its own
        # __getattribute__, and torch.distributed.reduce_op's warns that it is deprecated: every
        # torchrun run ended with that FutureWarning from each process.
        if issubclass(type(obj), DeviceMesh):
            registry = getattr(obj, "_pg_registry", None)
            if isinstance(registry, dict):
                registry.clear()


def rank0_value(d: Dist, device: torch.device, value: T) -> T:
    """Rank 0's `value` (picklable) on every process: a choice each rank made for itself
    (a near-tie broken otherwise by floating-point rounding on one of them) becomes one.
    Every rank computes its own first, so none waits in a collective while rank 0 works."""
    if d.world == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0, device=device if device.type == "cuda" else None)
    return box[0]


def all_reduce_sum(x: Tensor, d: Dist) -> Tensor:
    """Sum of `x` over every process (a copy; `x` itself is untouched)."""
    if d.world > 1:
        import torch.distributed as dist

        x = x.clone()
        dist.all_reduce(x)
    return x


def wrap_policy(policy: Policy, d: Dist, fsdp: bool, device: torch.device) -> nn.Module:
    """The module the loop calls: `policy` itself outside a process group, else DDP around
    it, or (fsdp) the policy sharded in place, layer by layer, so only one layer's full
    weights exist at a time. Wrapped, every process trains rank 0's weights and buffers,
    whatever its own were (a collective: every process must call): a run begun from --init
    reads the checkpoint on rank 0 only (finetune._initial_policy)."""
    if not d.grouped:
        return policy
    if fsdp:
        from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

        # fully_shard keeps each process's own slice of its own weights and, unlike FSDP1
        # (sync_module_states) or DDP, broadcasts nothing: rank 0's go to the others first,
        # in place, while each still holds the whole model (no second copy).
        _broadcast_from_rank0(policy)
        # The joint forward enters a Gemma layer through qkv() and finish(), not forward():
        # registered, they gather the layer's weights the way forward() would.
        for layer in policy.model.vision.layers:
            fully_shard(layer)
        for tower in (policy.model.vlm, policy.model.expert):
            for layer in tower.layers:
                fully_shard(layer)
                register_fsdp_forward_method(layer, "qkv")
                register_fsdp_forward_method(layer, "finish")
        return fully_shard(policy)
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    # Its constructor broadcasts rank 0's parameters and buffers to the others (the defaults
    # init_sync=True, broadcast_buffers=True: keep them).
    return DistributedDataParallel(policy, device_ids=ids)


def _broadcast_from_rank0(module: nn.Module) -> None:
    """Every parameter and buffer of `module` set, in place, to rank 0's (a collective of the
    default group: every process must call, with a module of the same layout)."""
    import torch.distributed as dist

    for tensor in (*module.parameters(), *module.buffers()):
        dist.broadcast(tensor.detach(), src=0)
