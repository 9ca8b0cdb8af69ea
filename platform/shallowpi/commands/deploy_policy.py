"""What `platform deploy` runs: the policy's deploy bundle, made from a checkpoint or
checked as given (deploy/bundle.py), and the start pose its checkpoint records (where the
robot goes before each episode: Executor.go_to_start).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from shallowpi.durable_files import hold_file_lock
from shallowpi.errors import PlatformError

log = logging.getLogger(__name__)


def policy_bundle(args: argparse.Namespace, backend: str) -> Any:
    """--policy (`args.policy`, Path) as a bundle (it holds a manifest) or a checkpoint made
    into one at `args.bundle` (reused while it verifies, holds the graph `backend` runs and
    was built by this code; deployments started together build it once). Raises ConfigError
    (one line) for no policy there, a bundle without that graph, a --bundle folder that is
    not a bundle, a bundle to build in a folder this user may not write (a colleague's
    checkpoint: said after why it is built), or a checkpoint on an install without
    training; BundleError and ExportError as building does."""
    from shallowpi.deploy.bundle import MANIFEST, Bundle, code_fingerprint
    from shallowpi.errors import ConfigError

    graphs = () if backend == "torch" else ("chunk",)
    if (args.policy / MANIFEST).is_file():
        bundle = Bundle.load(args.policy)
        if missing := [g for g in graphs if g not in bundle.graphs]:
            # --bundle-only approved it for the robot, which then refused it.
            raise ConfigError(f"{args.policy} holds no {', '.join(missing)} graph, which the {backend} backend runs: "
                              f"rebuild it from the checkpoint with --backend {backend} --bundle-only")
        _check_runtime_code(bundle, backend, on_robot=not getattr(args, "sim", None),
                            allow=getattr(args, "allow_code_change", False))
        if bundle.runs_here_as_built is None and not bundle.built_by_this_code:  # made before runtime_sha256
            log.warning("%s was built by other policy, export or preprocessing code than this installation's "
                        "(code_sha256 %s, here %s): if this checkout is the older one, update it, or rebuild the "
                        "bundle with it", args.policy, bundle.code_digest[:12] or "not recorded",
                        code_fingerprint()[:12])
        return bundle
    if not args.policy.exists():
        raise ConfigError(f"no policy at {args.policy}: pass a checkpoint folder or a deploy bundle")
    try:
        from shallowpi.train.checkpoint import checkpoint_step, weights_to_use
    except ImportError as exc:  # the robot's install: bundles only
        # A checkpoint copied over with its bundle beside it (CKPT.bundle, where --bundle-only
        # put it): that one runs, named (verifying it against the weights takes the training install).
        beside = args.bundle or args.policy.with_name(args.policy.name + ".bundle")
        how = (f"the bundle made from it is beside it: pass --policy {beside}" if (beside / MANIFEST).is_file()
               else "make it on the workstation with `platform deploy --policy CKPT --bundle-only` and copy it over")
        raise ConfigError(f"{args.policy} is not a deploy bundle (no {MANIFEST}), and making one from a checkpoint "
                          f"needs the training install ({exc.name} is missing here): {how}") from None

    args.policy = checkpoint_step(args.policy)  # a run folder's newest: its bundle is named after the step
    weights = weights_to_use(args.policy)  # a step folder's EMA average when the run kept one
    out = args.bundle or args.policy.with_name(args.policy.name + ".bundle")
    if out.exists() and not (out / MANIFEST).is_file():
        # Building replaces the folder: never one that is not a bundle (`--bundle ~/robot`).
        raise ConfigError(f"{out} exists and is not a deploy bundle (no {MANIFEST}); building one there would "
                          "replace it: pass another --bundle folder or remove it")
    # A verified bundle is used as it is, with no lock: a checkpoint folder the user may not
    # write to (a shared lab disk) runs. Deployments of one checkpoint started together (a
    # teacher's rollouts, a task a core) build its bundle once: the others wait on the lock
    # for that build and reuse it, instead of building into the same folder at once.
    if (bundle := _verified(out, weights, graphs, quiet=True)) is not None:
        return bundle
    with contextlib.ExitStack() as held:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            # hold_file_lock removes the lock file when done, without a window in which a
            # waiter holds a lock on a name no longer there (each `.CKPT.bundle.lock` stayed).
            held.enter_context(hold_file_lock(out.with_name(f".{out.name}.lock"), f"pid {os.getpid()} (deploy)",
                                              on_wait=lambda holder: print(f"waiting for {holder}, which is building "
                                                                           f"{out}", flush=True)))
        except PermissionError as exc:  # a colleague's checkpoint folder: say why first, then where else
            if (bundle := _verified(out, weights, graphs)) is not None:  # its owner rebuilt it meanwhile
                return bundle
            where = "another --bundle folder" if args.bundle else "--bundle DIR, a folder of yours,"
            refused = Path(os.fsdecode(exc.filename)).parent if exc.filename else out.parent  # the lock's folder
            raise ConfigError(f"cannot build the bundle at {out}: {refused} is not writable by this user; pass "
                              f"{where} to build it there") from None
        if (bundle := _verified(out, weights, graphs)) is not None:  # built while this one waited
            return bundle
        from shallowpi.deploy.bundle import build_bundle

        print(f"building the deploy bundle {out} ({', '.join(graphs) or 'no'} graphs)", flush=True)
        t0 = time.perf_counter()
        bundle = build_bundle(weights, out, graphs=graphs, overwrite=True)
        print(f"bundle built in {time.perf_counter() - t0:.0f} s", flush=True)
        return bundle


def _verified(out: Path, weights: Path, graphs: tuple[str, ...], quiet: bool = False) -> Any | None:
    """The bundle at `out` when it holds `weights` with `graphs` and was built by this code;
    else None, saying why it will be rebuilt unless `quiet` (a first look, without the lock,
    may meet a bundle another deployment is building)."""
    from shallowpi.deploy.bundle import Bundle, BundleError, runtime_fingerprint

    if not out.exists():
        return None
    try:
        bundle = Bundle.load(out)
    except (BundleError, OSError) as exc:  # OSError: a first look while another deployment replaces it
        if not quiet:
            log.warning("rebuilding %s: %s", out, exc)
        return None
    # `weights`: a checkpoint folder, or its model.safetensors given as a file (hashed as
    # weights/model.safetensors, "" never matched and the bundle was rebuilt on every run)
    same = bundle.checkpoint_digest == _sha(weights if weights.is_file() else weights / "model.safetensors")
    # runtime_digest: the robot refuses a bundle whose robot-side code differs from its own
    # (`_check_runtime_code`), so one built before that code changed is made again here (it
    # had been "verified" by the workstation and refused by the robot, --bundle-only too).
    current = bundle.built_by_this_code and bundle.runtime_digest == runtime_fingerprint()
    if same and all(g in bundle.graphs for g in graphs) and current:
        print(f"bundle {out} (verified)", flush=True)
        return bundle
    if not quiet:
        why = ("it holds other weights than the checkpoint's" if not same
               else "it was built by other policy, export or robot-side code than this" if not current
               else f"it holds no {', '.join(g for g in graphs if g not in bundle.graphs)} graph")
        print(f"rebuilding {out}: {why}", flush=True)
    return None


def _sha(path: Path) -> str:
    from shallowpi.deploy.bundle import sha256_of

    return sha256_of(path) if path.is_file() else ""


def _check_runtime_code(bundle: Any, backend: str, on_robot: bool, allow: bool) -> None:
    """A bundle built where the robot-side code (preprocessing, instruction tokens, action
    decoding, selection, inpainting: bundle.RUNTIME_FILES) differs from this checkout's
    would be fed other inputs, or its actions read otherwise, than it was built for; run
    by the `torch` backend, which runs this checkout's model on its weights whatever graphs
    it holds, its policy code must be this checkout's too. ConfigError on a robot, naming
    the commit it was built at, unless `allow` (--allow-code-change); a warning in the
    twin, and with `allow`."""
    from shallowpi.deploy.bundle import checkout_commit, runtime_fingerprint
    from shallowpi.errors import ConfigError

    as_built = bundle.runs_here_as_built
    through_torch = backend == "torch" and bool(bundle.graphs)
    if through_torch and bundle.runtime_digest and not bundle.built_by_this_code:
        as_built = False
    if as_built is not False:
        return
    built = f"commit {bundle.commit}" if bundle.commit else "a commit it does not record"
    here = checkout_commit() or "a checkout without git"
    what = "robot-side code (preprocessing, instruction tokens, action decoding and selection)" if bundle.graphs \
        else "policy code (a bundle without graphs runs this checkout's model through torch)"
    if through_torch and bundle.runtime_digest == runtime_fingerprint():
        what = "policy code (the torch backend runs this checkout's model on its weights, not its graphs)"
    problem = f"{bundle.path.name} was built at {built}, whose {what} differs from this checkout's ({here})"
    if on_robot and not allow:
        raise ConfigError(f"{problem}: check out that commit here, or rebuild the bundle from this checkout "
                          "(`platform deploy --policy CKPT --bundle-only`); --allow-code-change runs it anyway")
    log.warning("%s%s", problem, " (--allow-code-change)" if allow else "")


def start_state_of(bundle: Any, target: Any, speed: float | None) -> np.ndarray | None:
    """The pose the checkpoint's demonstrations started from, for a robot to go to before
    each episode (the twin's start at its home pose: None there, as with deploy.start_speed
    null or a checkpoint that predates the record, which is said)."""
    if not target.on_hardware or speed is None:
        return None
    recorded = bundle.checkpoint_metadata.get("start_state")
    if recorded is None:
        print("the checkpoint records no start pose (trained before it was recorded): each episode starts where "
              "the last one ended", flush=True)
        return None
    state = np.asarray(json.loads(recorded), np.float64)
    if state.shape != (len(target.joint_names),):
        raise PlatformError(f"the checkpoint's start pose has {state.size} joints, the robot {len(target.joint_names)}")
    print(f"before each episode the robot goes to the demonstrations' start pose at {speed:.0%} of its top speed "
          "(deploy.start_speed)", flush=True)
    return state
