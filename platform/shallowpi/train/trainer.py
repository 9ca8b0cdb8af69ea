"""The training loop: one `Objective` (train/objective.py) minimised over one dataset.

The teacher's flow matching and the distiller's three-term loss run through this one loop,
for one process or many (torchrun: DDP, or FSDP at full size; train/distributed.py). What
makes a run reproducible and resumable is that nothing random depends on history:
- batch b of step s is a fixed slice of a permutation seeded by (seed, epoch);
- the flow-matching noise and time of step s come from generators seeded by (seed, s),
  drawn for the whole global batch and sliced per rank (objective.step_noise);
- the random crops (policy.crop_scale < 1) of step s on rank r from one seeded by
  (seed, s, r), drawn per rank in the forward.
So a run killed at any point and resumed from its last checkpoint on the same number of
processes replays the same loss curve, N processes on a global batch compute the same
losses as one process when the crops are off (with them, each rank crops its own samples
otherwise than one process would), and two objectives with the same noise spec (a student
and its teacher) see the same draws.

Run folder layout (never overwritten; a second run into the same folder needs --resume):
    config.yaml                 resolved config of the run
    split.json                  train / held-out episode indices
    metrics.jsonl               one line per logged step (step, loss, lr, grad_norm, the
                                objective's named terms)
    tb/                         TensorBoard events
    eval.json                   the offline evaluation after the last step (train/finetune.py)
    checkpoints/step_000250/    model.safetensors (a Policy), train_state.safetensors (the
                                newest `keep_last` kept when set)
    checkpoints/last            name of the newest complete checkpoint (train/checkpoint.py)
    .lock                       held by the training process (train/run_lock.py): one at a time
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from shallowpi.durable_files import errors_named, replace_text
from shallowpi.errors import PlatformError, refuse_fractional
from shallowpi.torchrun_env import torchrun_rank
from shallowpi.train.checkpoint import (
    Checkpointer,
    ema_change_refused,
    latest_checkpoint,
    mend_last_marker,
    remove_partial_checkpoints,
    remove_pruned,
)
from shallowpi.train.distributed import (
    Dist,
    all_reduce_sum,
    barrier,
    init_distributed,
    pick_device,
    wrap_policy,
)
from shallowpi.train.errors import TrainingError
from shallowpi.train.interrupt import SIGNALS, StopRequest, TrainingInterrupted
from shallowpi.train.objective import Objective, step_noise
from shallowpi.train.progress import ProgressBar
from shallowpi.train.run_lock import RunLock

log = logging.getLogger(__name__)

__all__ = ["StepBatches", "TrainConfig", "Trainer", "TrainingError", "check_launch", "check_processes",
           "latest_checkpoint", "launched", "lr_at"]


# TrainConfig refuses seeds from here on: below it, every generator a run seeds takes the
# seed (and what step_noise makes of it) as it is.
MAX_SEED = 2**31


@dataclass
class TrainConfig:
    """Training settings: optimisation, data checks, logging (configs/policy/<preset>.yaml `train:`)."""

    steps: int = 1500
    batch_size: int = 32
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.01
    betas: Sequence[float] = (0.9, 0.95)
    grad_clip: float = 1.0
    ema: float | None = None
    eval_fraction: float = 0.1
    require_held_out: bool = False  # refuse (instead of warn) when no episode is left to hold out
    skip_nonfinite: bool = False  # skip windows touching NaN/inf state or action (instead of refusing)
    # Train on the episodes marked successful only: a demonstration that failed (a scripted
    # expert's grasp lost under DART noise) teaches the failure. Unjudged episodes are kept.
    successful_only: bool = False
    log_every: int = 10
    save_every: int = 250
    # Checkpoints kept: after each save only the newest keep_last step folders stay (and the
    # one checkpoints/last names); None keeps every one. A π0 checkpoint is ~50 GB: the 30
    # saves of a default run, all kept, would write ~1.5 TB and die of a full disk hours in.
    keep_last: int | None = None
    workers: int = 1
    fsdp: bool = False
    bf16: bool = True  # autocast matmuls to bfloat16 on CUDA (weights and optimizer stay float32)
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    tensorboard: bool = True

    def __post_init__(self) -> None:
        refuse_fractional("train", self, ("steps", "batch_size", "warmup_steps", "log_every", "save_every",
                                          "keep_last", "workers", "seed"), TrainingError)
        if self.steps < 1 or self.batch_size < 1:
            raise TrainingError(f"steps and batch_size must be >= 1 (got {self.steps}, {self.batch_size})")
        if self.log_every < 1 or self.save_every < 1 or self.warmup_steps < 0:
            raise TrainingError(f"log_every and save_every must be >= 1, warmup_steps >= 0 (got {self.log_every}, "
                                f"{self.save_every}, {self.warmup_steps})")
        # 0 reads as "keep none", yet the one `last` names always stays: refused, not taken as 1.
        if self.keep_last is not None and self.keep_last < 1:
            raise TrainingError(f"keep_last must be >= 1 (the newest checkpoints kept) or null (keep every one), "
                                f"got {self.keep_last}")
        # grad_clip 0 read as "no clipping" scaled every gradient to 0: hours of steps that
        # changed the weights by weight decay alone, under a normal-looking grad_norm.
        if not (isinstance(self.grad_clip, (int, float)) and self.grad_clip > 0):
            raise TrainingError(f"grad_clip must be > 0 (the largest gradient norm a step keeps), got {self.grad_clip}")
        if not (self.lr >= 0 and self.min_lr >= 0 and self.weight_decay >= 0):  # lr 0: a cut left untrained
            raise TrainingError(f"lr, min_lr and weight_decay must be >= 0 (got {self.lr}, {self.min_lr}, "
                                f"{self.weight_decay})")
        if self.min_lr > self.lr:  # the cosine (lr_at) would climb from lr to min_lr instead of decaying
            raise TrainingError(f"min_lr ({self.min_lr}) must not exceed lr ({self.lr}): the schedule decays from lr "
                                "to min_lr")
        # AdamW's decay rates of the gradient's mean and square: [0.9] or 1.0 failed in the
        # optimizer after the store's screening and the model's build, workers=-1 in the
        # loader after config.yaml and split.json were written (tracebacks both).
        if not (isinstance(self.betas, Sequence) and not isinstance(self.betas, str) and len(self.betas) == 2
                and all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in self.betas)):
            raise TrainingError(f"betas must be two numbers in [0, 1) (AdamW's decay rates of the gradient's mean and "
                                f"square), got {self.betas}")
        if not (isinstance(self.workers, int) and self.workers >= 0):
            raise TrainingError(f"workers must be >= 0 (data loading processes; 0 loads in the training process), "
                                f"got {self.workers}")
        if self.ema is not None and not 0.0 < self.ema < 1.0:
            raise TrainingError(f"ema must be in (0, 1) or null, got {self.ema}")
        # 0 holds out nothing (the evaluation then scores training episodes, labelled so);
        # a negative one held out one episode, as the smallest positive one does.
        if not (isinstance(self.eval_fraction, (int, float)) and 0 <= self.eval_fraction < 1):
            raise TrainingError(f"eval_fraction must be in [0, 1) (the share of episodes held out), "
                                f"got {self.eval_fraction}")
        # A negative seed went through the whole setup, then numpy's generators (data order,
        # flow times) refused it. Below MAX_SEED, step_noise's seed * 1_000_003 + step stays
        # far under the 2**64 torch's generator takes, whatever the step count.
        if not (isinstance(self.seed, int) and 0 <= self.seed < MAX_SEED):
            raise TrainingError(f"seed must be in [0, {MAX_SEED}), got {self.seed}")


def _worker_leaves_stops_to_the_trainer(_worker_id: int) -> None:
    """In each loader worker: SIGINT, SIGTERM and SIGHUP are the trainer's to handle
    (`StopRequest`). A SIGTERM to the process group (SLURM's scancel or preemption, a service
    stopped) killed the workers through torch's own handler, and the trainer, busy in a step,
    died of "DataLoader worker killed by signal" without saving; a terminal's Ctrl-C killed
    the worker whose batch the step waited on, and the run stopped a step early. Set here,
    not inherited from the trainer through fork: Python 3.14 starts workers by forkserver,
    with the default handlers. There a SIGTERM or SIGHUP to the whole process group also
    ends the forkserver process, the workers' parent, and torch's workers end with their
    parent: the run then saves the step before the one it waited on (one step lost, the
    checkpoint whole). The workers still end with the loader, or with the trainer."""
    import signal

    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def _until_stopped(batches: Iterator[tuple[int, Any]], stop: StopRequest) -> Iterator[tuple[int, Any]]:
    """The loader's batches; ends quietly if a stop was requested and fetching then fails
    (Ctrl-C in a terminal also reaches the loader's workers, which exit). A PlatformError
    raised in a worker (the store edited or damaged under the run) comes out as its own
    one-line error (`_unwrapped`)."""
    while True:
        try:
            item = next(batches)
        except StopIteration:
            return
        except PlatformError as exc:
            if (own := _unwrapped(exc)) is exc:  # raised in this process: as it was, its own cause kept
                raise
            raise own from exc  # the cause keeps the worker's traceback
        except RuntimeError:
            if stop.requested:
                return
            raise
        yield item


def _unwrapped(exc: PlatformError) -> PlatformError:
    """The error a loader worker raised, out of torch's re-raise of it in the trainer
    (torch/_utils.py, ExceptionWrapper.reraise: the same class, with the message "Caught X
    in DataLoader worker process N.\nOriginal Traceback ..." whose last line is the
    worker's "module.X: <message>"). The CLI printed those ~15 lines as the "one-line"
    error. `exc` itself when it is not such a re-raise."""
    text, kind = str(exc), type(exc)
    if not text.startswith(f"Caught {kind.__name__} in DataLoader worker"):
        return exc
    # traceback names the class with its module, but not one of __main__ or builtins.
    for head in (f"\n{kind.__module__}.{kind.__qualname__}: ", f"\n{kind.__qualname__}: "):
        at = text.rfind(head)
        if at >= 0:
            return kind(text[at + len(head):].rstrip("\n"))
    return exc


def _end_workers(batches: Iterator[Any] | None) -> None:
    """Shut the loader iterator `batches`' workers down now (nothing for a loader without
    workers). Left to the iterator's collection they outlived a run that ended in an error:
    torch's re-raise of a worker's error holds the iterator in a reference cycle, and at
    exit Python SIGTERMs its daemon children and waits for them, which these workers ignore
    (`_worker_leaves_stops_to_the_trainer`): `train` printed its error and never exited."""
    shutdown = getattr(batches, "_shutdown_workers", None)
    if shutdown is None:
        return
    shutdown()
    for worker in getattr(batches, "_workers", ()):
        if worker.is_alive():  # still in a read past torch's join timeout: its SIGTERM was ignored
            worker.kill()
            worker.join()


def ema_decay(step: int, rate: float) -> float:
    """The EMA's decay at optimizer step `step` (0-based): `rate`, warmed up as
    min(rate, (1 + step) / (10 + step)) (TensorFlow's ExponentialMovingAverage with
    num_updates). Without the warm-up the random initialization keeps weight rate**step:
    13 % of the teacher's averaged weights at step 2000 with rate 0.999, which then failed
    in closed loop where the raw weights did not."""
    return min(rate, (1.0 + step) / (10.0 + step))


# What the raw weights' trajectory depends on (the EMA does not feed back: it may be
# switched on at a resume, and then starts from the resumed weights).
# What is trained on too: a resume that changed it would train another split's data order.
RECIPE = ("seed", "batch_size", "lr", "min_lr", "warmup_steps", "weight_decay", "betas", "grad_clip",
          "successful_only", "skip_nonfinite")


def augment_seed(seed: int, step: int, rank: int) -> int:
    """The global generator's seed for training step `step` on process `rank` (distinct for
    every (seed, step, rank) up to 2**20 ranks and steps)."""
    return ((seed * 1_048_576 + step) * 1_048_576 + rank) % (2**63)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to cfg.lr, then cosine decay to cfg.min_lr at cfg.steps (held there
    after). The cosine schedule is SGDR's without restarts (Loshchilov & Hutter, 2017)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / (cfg.warmup_steps + 1)
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


# ----------------------------------------------------------------------------- data order


class StepBatches(Sampler[list[int]]):
    """Index lists for steps start..steps-1: this rank's share of each global batch.

    Global sample g (= step * batch + j) is position g % n of a permutation seeded by
    (seed, g // n): epochs reshuffle, and any step's batch is known without replaying.
    """

    def __init__(self, n: int, batch: int, seed: int, start: int, steps: int, d: Dist) -> None:
        if batch % d.world:
            raise TrainingError(f"batch_size {batch} is not divisible by {d.world} processes")
        self.n, self.batch, self.seed, self.start, self.steps, self.d = n, batch, seed, start, steps, d
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.n)}
        return self._perms[epoch]

    def global_batch(self, step: int) -> list[int]:
        """All `batch` sample indices of `step`, across every rank (this rank takes a slice)."""
        g = np.arange(step * self.batch, (step + 1) * self.batch)
        return [int(self._perm(int(i // self.n))[i % self.n]) for i in g]

    def __iter__(self) -> Iterator[list[int]]:
        share = self.batch // self.d.world
        for step in range(self.start, self.steps):
            yield self.global_batch(step)[self.d.rank * share : (self.d.rank + 1) * share]

    def __len__(self) -> int:
        return max(0, self.steps - self.start)


# ----------------------------------------------------------------------------- the trainer


def launched() -> Dist:
    """This process's place among those torchrun launched, read from the variables it sets
    (RANK, WORLD_SIZE, MASTER_ADDR) without joining their group: the `Dist` that
    `init_distributed` will give (Dist() outside torchrun, a single torchrun process
    grouped too). Commands check settings against it before any work."""
    launch = torchrun_rank()
    return Dist() if launch is None else Dist(*launch, grouped=True)


def check_processes(cfg: TrainConfig, settings: str, d: Dist) -> None:
    """TrainingError (one line naming the `settings` section, e.g. "distill.train") for
    settings that `d`'s processes cannot train with: a batch_size they cannot share evenly
    (each takes batch_size / world samples of every step), an EMA with FSDP. The Trainer
    checks its own settings with it; `check_launch` checks them before a command's work."""
    if cfg.batch_size % d.world:
        raise TrainingError(f"{settings}.batch_size {cfg.batch_size} is not divisible by the {d.world} processes "
                            f"(each takes an equal share of every batch): give a multiple of {d.world}")
    if cfg.ema and cfg.fsdp and d.grouped:
        # The average would hold each rank's shards, and a checkpoint only rank 0's.
        raise TrainingError(f"{settings}.ema is not supported with fsdp yet: turn one of them off "
                            f"({settings}.ema=null, or {settings}.fsdp=false for plain DDP)")


def check_launch(cfg: TrainConfig, settings: str) -> None:
    """What the Trainer would refuse of `cfg` (the `settings` section) on the processes
    torchrun launched (`launched`), refused before any work: the device (`pick_device`:
    --device cuda:N for every process) and `check_processes`. Found by the Trainer, that
    was after an hour of a teacher's training, or after a student's run folder was
    written. PlatformError / TrainingError, one line."""
    pick_device(cfg.device)
    check_processes(cfg, settings, launched())


def check_run_folder(run_dir: Path, resume: bool) -> Path | None:
    """The run folder's newest complete checkpoint, None for a fresh run. TrainingError
    (one line) when it holds checkpoints and `resume` is off (nothing is overwritten), or
    holds none to resume. Commands call it before long preparatory work as well."""
    existing = latest_checkpoint(run_dir)
    if existing is None and resume:
        raise TrainingError(f"nothing to resume in {run_dir} (no complete checkpoint: a run stopped before its "
                            "first save, or none began); run without --resume to start it")
    if existing is not None and not resume:
        raise TrainingError(f"run folder {run_dir} already holds checkpoints; pass --resume to continue it "
                            "or --run NAME for a new run (nothing was overwritten)")
    return existing


class Trainer:
    """Minimises `objective` over `train_set`, training `objective.policy`.

    Owns the loop: data order, each step's noise and time, the optimiser (the trained
    policy's parameters only), schedule, EMA, gradient clipping, logs (metrics.jsonl,
    TensorBoard, progress bar) and checkpoints. Raises TrainingError for an empty dataset,
    a run folder that another trainer holds or that already holds checkpoints (without
    resume), nothing to resume, a resumed run already past cfg.steps, settings its
    processes cannot train with (`check_processes`), an objective with trainable
    parameters outside its policy, and a non-finite loss. Its main process holds
    the run folder's lock (train/run_lock.py) from construction until fit ends or `close`.
    """

    def __init__(
        self,
        objective: Objective,
        train_set: Dataset,
        cfg: TrainConfig,
        run_dir: Path,
        *,
        resume: bool = False,
        run_metadata: dict[str, str] | None = None,
        settings: str = "policy.train",
        init_flag: bool = True,
    ) -> None:
        self.cfg, self.run_dir = cfg, run_dir
        # What the messages name: the config section `cfg` came from, and whether the
        # command can start a new run from a checkpoint (train's --init; distill has none).
        self.settings, self.init_flag = settings, init_flag
        self.device = pick_device(cfg.device)
        self.dist = init_distributed(self.device)
        check_processes(cfg, settings, self.dist)  # before anything is moved, made or locked
        self.objective = objective.to(self.device)
        self.policy = objective.policy
        self.noise_spec = objective.noise_spec()
        self.train_set = train_set
        run_dir.mkdir(parents=True, exist_ok=True)
        if len(train_set) == 0:
            raise TrainingError("the training split holds no samples; record more episodes")
        # One trainer per run folder (the main process holds the lock until fit ends): two
        # (--resume launched twice, a requeued job while the first lives) cut each other's
        # metrics.jsonl and deleted each other's checkpoint in the making.
        self._lock = RunLock(run_dir) if self.dist.main else None
        try:
            self._setup(resume, run_metadata or {})
        except BaseException:
            self.close()
            raise

    def _setup(self, resume: bool, run_metadata: dict[str, str]) -> None:
        """The rest of __init__, under the run folder's lock."""
        cfg, run_dir, objective, settings = self.cfg, self.run_dir, self.objective, self.settings
        if self.dist.main:
            for partial in remove_partial_checkpoints(run_dir):
                log.warning("removed %s, a checkpoint whose save was cut short", partial)
            for pruned in remove_pruned(run_dir):
                log.warning("removed %s, an old checkpoint whose removal (%s.keep_last) was cut short", pruned,
                            settings)
            if (mended := mend_last_marker(run_dir)) is not None:
                log.warning("checkpoints/last now names %s, the newest checkpoint (a save was cut short before "
                            "naming it)", mended.name)
            if cfg.warmup_steps >= cfg.steps:
                log.warning("%s.warmup_steps %d >= steps %d: the learning rate only warms up (to %.3g at the last "
                            "step) and never decays to min_lr", settings, cfg.warmup_steps, cfg.steps,
                            lr_at(cfg.steps - 1, cfg))
        existing = check_run_folder(run_dir, resume)
        _check_frozen(objective)
        for name in self.policy.model.dead_parameter_names():
            self.policy.model.get_parameter(name).requires_grad_(False)
        # Only the trained policy is wrapped: frozen modules stay whole on every process.
        self.module = wrap_policy(self.policy, self.dist, cfg.fsdp, self.device)
        params = [p for p in self.policy.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        self.optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": cfg.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=cfg.lr,
            betas=tuple(cfg.betas),
            eps=1e-8,
            # One kernel for all tensors: 2.5-4 ms against 14-17.5 for the default (a loop over
            # the teacher's ~380 tensors on a CPU), 3-4 % of its step (BENCHMARKS.md "Training
            # throughput").
            fused=True,
        )
        self.checkpoints = Checkpointer(
            run_dir, self.policy, self.optimizer, sharded=cfg.fsdp and self.dist.grouped,
            main=self.dist.main, metadata=run_metadata,
            # What a step's batch, noise and update depend on: a resume that changed one
            # would not continue the run it names (the step count may grow: the cosine then
            # decays to the new end).
            recipe={k: list(v) if k == "betas" else v for k, v in dataclasses.asdict(cfg).items() if k in RECIPE},
            noted={"ema": cfg.ema, "steps": cfg.steps}, settings=settings, keep_last=cfg.keep_last,
        )
        self.start_step, saved_ema = 0, {}
        if existing is not None:
            self.start_step, saved_ema = self.checkpoints.load(existing, self.device)
            self._check_resumed_settings(existing)
        # After the load: a run resumed from a checkpoint without an average (EMA switched on
        # at resume) starts it from the trained weights, not from the initial ones.
        self.ema: dict[str, Tensor] | None = None
        if cfg.ema:
            live = self.policy.state_dict()  # detached views of the parameters and buffers
            self.ema = {k: saved_ema.get(k, v.detach().clone()) for k, v in live.items()}
            floats = [k for k, v in live.items() if v.dtype.is_floating_point]
            self._ema_pairs = ([self.ema[k] for k in floats], [live[k] for k in floats])

    def _check_resumed_settings(self, path: Path) -> None:
        """What a resume may change, said or refused. EMA: switched on, it starts from the
        resumed weights; switched off or to another rate, the run's average would be lost or
        mixed with another (TrainingError). Steps: the cosine then decays to the new end, so
        the learning rate jumps (a run finished at 1,500 steps, continued to 9,000, restarts
        near its peak): said, with both rates."""
        cfg, then = self.cfg, self.checkpoints.loaded_notes
        if self.start_step > cfg.steps:  # fit would train nothing and say nothing
            raise TrainingError(f"the run is already at step {self.start_step} ({path}), past --steps {cfg.steps} "
                                f"({self.settings}.steps); give --steps above {self.start_step} to train it further")
        if ema_change_refused(then.get("ema"), cfg.ema):
            raise TrainingError(f"{self.settings}.ema={cfg.ema} differs from the run being resumed ({then['ema']}, {path}): "
                                "its average would be lost or mixed with another rate; resume with it, or start a "
                                "new run (--run NAME)")
        steps = then.get("steps")
        if steps is not None and steps != cfg.steps and self.start_step < cfg.steps:
            before = lr_at(self.start_step, dataclasses.replace(cfg, steps=steps))
            log.warning("%s.steps %d differs from the run being resumed (%d): the schedule now ends at step "
                        "%d, so the learning rate at step %d goes from %.3g to %.3g", self.settings, cfg.steps, steps,
                        cfg.steps, self.start_step, before, lr_at(self.start_step, cfg))

    def close(self) -> None:
        """Release the run folder's lock (fit does when it ends; so does the process's exit)."""
        if self._lock is not None:
            self._lock.release()

    def _non_finite_advice(self) -> str:
        lower = f"; check the data, or lower {self.settings}.lr"
        last = latest_checkpoint(self.run_dir)
        if last is None:
            return lower
        if not self.init_flag:  # a resume must keep the rate: a new run, from the start
            return f"{lower} in a new run (--run NEW {self.settings}.lr=...)"
        return f"{lower} in a new run from the last good checkpoint: --init {last} --run NEW {self.settings}.lr=..."

    def save(self, step: int) -> Path | None:
        """checkpoints/step_XXXXXX (train/checkpoint.py); every process must call it."""
        return self.checkpoints.save(step, self.ema, self.cfg.ema)

    # -- the loop

    def fit(self) -> dict[str, float]:
        """Run steps start_step..cfg.steps-1; returns the last step's logged numbers. The
        run folder's lock is released when it ends, however it ends."""
        try:
            return self._fit()
        finally:
            self.close()

    def _fit(self) -> dict[str, float]:
        cfg, d = self.cfg, self.dist
        sampler = StepBatches(len(self.train_set), cfg.batch_size, cfg.seed, self.start_step, cfg.steps, d)
        loader = DataLoader(
            self.train_set,
            batch_sampler=sampler,
            num_workers=cfg.workers,
            persistent_workers=False,
            pin_memory=self.device.type == "cuda",
            worker_init_fn=_worker_leaves_stops_to_the_trainer,
        )
        metrics_path = self.run_dir / "metrics.jsonl"
        writer = self._tensorboard() if d.main else None
        if d.main:
            _truncate_metrics(metrics_path, self.start_step)
        progress = ProgressBar("train", cfg.steps, self.start_step, enabled=d.main and cfg.progress)
        share = cfg.batch_size // d.world
        last: dict[str, float] = {}
        done = saved = self.start_step  # steps completed; the step last checkpointed
        self.objective.train()
        stop = StopRequest(enabled=d.world == 1)
        batches = None
        try:
            with stop:
                # The terminal's Ctrl-C reaches the loader's workers too: each ignores it
                # (`_worker_leaves_stops_to_the_trainer`), so none dies with the batch the step
                # waits on (tests/test_train.py, ctrl_c).
                batches = iter(loader)
                for step, batch in _until_stopped(enumerate(batches, start=self.start_step), stop):
                    last = self._step(step, batch, share)
                    done = step + 1
                    self._log(step, last, metrics_path, writer, progress)
                    if done % cfg.save_every == 0 or done == cfg.steps:
                        self.save(done)
                        saved = done
                    if stop.requested:
                        break
                # Still inside `stop`: the request's other copy (a group-wide stop that torchrun
                # forwards too, interrupt.py) arriving during this save is ignored; after `stop`
                # it met the default handlers and killed the save it asked for.
                if stop.requested:
                    if done > saved:
                        self.save(done)
                    where = f"; checkpoint step_{done:06d} saved: continue with --resume" if done else ""
                    raise TrainingInterrupted(f"training stopped by {stop.signal_name} after step {done}{where}")
        finally:
            _end_workers(batches)  # however the run ends: see there
            progress.close()
            if writer is not None:
                writer.close()
        # Every process leaves together, with the last checkpoint written (only the main
        # process writes it): whatever a process does next (read that checkpoint, evaluate,
        # leave the group) no peer is still in a collective with it.
        barrier(d, self.device)
        return last

    def _log(self, step: int, last: dict[str, float], metrics_path: Path, writer: Any, progress: ProgressBar) -> None:
        """metrics.jsonl and TensorBoard every log_every steps; the progress bar every step."""
        cfg = self.cfg
        if self.dist.main and (step % cfg.log_every == 0 or step == cfg.steps - 1):
            with errors_named(metrics_path), metrics_path.open("a") as f:  # a full disk's ENOSPC names no file
                f.write(json.dumps({"step": step, **last}) + "\n")
            if writer is not None:
                for key, value in last.items():
                    writer.add_scalar(f"train/{key}", value, step)
        named = {k: v for k, v in last.items() if k not in ("loss", "lr", "grad_norm")}
        terms = "".join(f" {k} {v:.4f}" for k, v in named.items()) if len(named) > 1 else ""
        progress.update(step + 1, f"loss {last['loss']:.4f}{terms} lr {last['lr']:.2e}")

    def _step(self, step: int, batch: dict[str, Any], share: int) -> dict[str, float]:
        cfg, d = self.cfg, self.dist
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        noise, t = step_noise(step, cfg.seed, cfg.batch_size, self.noise_spec)
        rows = slice(d.rank * share, (d.rank + 1) * share)
        # Whatever else draws from torch's global generator in the forward (the random crop)
        # draws from one seeded by (seed, step, rank): a resumed run replays its crops, and
        # ranks crop their own samples differently.
        torch.manual_seed(augment_seed(cfg.seed, step, d.rank))
        batch = _to_device(batch, self.device)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.bf16 and self.device.type == "cuda")
        with autocast:
            out = self.objective.loss(self.module, batch, noise[rows].to(self.device), t[rows].to(self.device))
        # Normalise by the count over all ranks, so DDP's gradient mean equals one process's.
        # At least 1: a batch of windows wholly padded (a format-1 store's last frames, whose
        # actions lie past the episode) has nothing to learn, not a 0/0 NaN that ends the run.
        global_count = all_reduce_sum(out.count.detach().float(), d).clamp(min=1.0)
        loss = out.total * d.world / global_count
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(
            [p for p in self.policy.parameters() if p.requires_grad], cfg.grad_clip
        )
        # The total and each named term, summed over ranks in one collective.
        names = list(out.terms)
        sums = torch.stack([out.total.detach().float(), *(out.terms[n].detach().float() for n in names)])
        means = (all_reduce_sum(sums, d) / global_count).tolist()
        reported = means[0]
        if not math.isfinite(reported):
            # Name the term(s) that went bad: with several, which one is the lead to follow.
            bad = [f"{n} = {v}" for n, v in zip(names, means[1:]) if not math.isfinite(v)]
            raise TrainingError(f"loss became {reported} at step {step}" + (f" (term {', '.join(bad)})" if bad else "")
                                + self._non_finite_advice())
        # A finite loss can still give an inf/NaN gradient (an overflow in the backward):
        # clipping would then scale every gradient by NaN and the step would poison the weights.
        if not math.isfinite(float(grad_norm)):
            raise TrainingError(f"gradient norm became {float(grad_norm)} at step {step} with a finite loss "
                                f"({reported:.4g})" + self._non_finite_advice())
        self.optimizer.step()
        if self.ema is not None:
            weight = 1.0 - ema_decay(step, cfg.ema)
            with torch.no_grad():  # no state_dict() a step (a per-tensor loop on a CPU, fused on CUDA)
                torch._foreach_lerp_(*self._ema_pairs, weight)
        return {"loss": reported, "lr": lr_at(step, cfg), "grad_norm": float(grad_norm), **dict(zip(names, means[1:]))}

    def _tensorboard(self) -> _TensorBoard | None:
        if not self.cfg.tensorboard:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.warning("tensorboard is not installed (training extra); no TensorBoard logs")
            return None
        folder = self.run_dir / "tb"
        try:
            return _TensorBoard(SummaryWriter(str(folder), purge_step=self.start_step), folder)
        except OSError as exc:  # a full or read-only disk: the run goes on without the view
            log.warning("no TensorBoard logs for this run: cannot write %s (%s); metrics.jsonl has every logged step",
                        folder, exc.strerror or exc)
            return None


class _TensorBoard:
    """The run's TensorBoard writer, whose first failure (a full disk: OSError from
    add_scalar, raised again from its writing thread, or from close) is one warning that
    switches it off for the run. TensorBoard is a view of metrics.jsonl, no reason to end a
    training run; and its close in `fit`'s finally raised the full disk's error over the one
    that ended the run (a checkpoint's, naming its path)."""

    def __init__(self, writer: Any, folder: Path) -> None:
        self.writer: Any = writer  # None once it failed or closed
        self.folder = folder

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        """Log `value` under `tag` at `step`; nothing once TensorBoard is off."""
        if self.writer is None:
            return
        try:
            self.writer.add_scalar(tag, value, step)
        except OSError as exc:
            # Its thread died with the error: closing it would put to a queue nobody reads.
            self.writer = None
            self._said(exc)

    def close(self) -> None:
        """Flush and close the writer; never raises (a failure is the one warning)."""
        writer, self.writer = self.writer, None
        if writer is None:
            return
        try:
            writer.close()
        except OSError as exc:
            self._said(exc)

    def _said(self, exc: OSError) -> None:
        log.warning("TensorBoard logs in %s stopped: %s; training goes on without them (metrics.jsonl has every "
                    "logged step)", self.folder, exc.strerror or exc)


def _check_frozen(objective: Objective) -> None:
    """Every parameter outside the trained policy must be frozen: the optimiser would never
    see it, so a trainable one is a bug in the objective, not something to train silently."""
    trained = {id(p) for p in objective.policy.parameters()}
    loose = [n for n, p in objective.named_parameters() if id(p) not in trained and p.requires_grad]
    if loose:
        raise TrainingError(
            f"objective {type(objective).__name__} has trainable parameters outside its policy "
            f"({', '.join(loose[:3])}{', ...' if len(loose) > 3 else ''}); freeze them (train.objective.freeze)"
        )

# ----------------------------------------------------------------------------- helpers


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


def read_metrics(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The rows of a run's metrics.jsonl, and how many lines were damaged (cut short by a
    full disk, NULs after a power cut on XFS: appended without a sync) and left out."""
    rows, damaged = [], 0
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("step"), int):
                raise ValueError(line)
        except ValueError:
            damaged += bool(line)
            continue
        rows.append(row)
    return rows, damaged


def _truncate_metrics(path: Path, start: int) -> None:
    """On resume, drop lines logged after the checkpoint (they will be logged again), and
    damaged ones, said. The log is replaced in one rename: a kill mid-write must not take
    the earlier lines with it."""
    if not path.is_file():
        return
    rows, damaged = read_metrics(path)
    if damaged:
        log.warning("%s: dropped %d damaged line(s) (a write cut short); the checkpoints are not affected",
                    path, damaged)
    replace_text(path, "".join(json.dumps(row) + "\n" for row in rows if row["step"] < start))
