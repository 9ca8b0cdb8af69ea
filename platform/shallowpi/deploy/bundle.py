"""A deploy bundle: everything the robot needs to run a policy, checked before it runs.

    bundle/
      manifest.json        format, version, and {file: {sha256, bytes}} for every file below
      config.json          the policy config, features, the checkpoint's metadata
      stats.json           normalisation mean/std of state and action (robot units; under
                           policy.actions=delta the action's are over the offsets from the state)
      tokenizer.json       only for a file tokenizer (PaliGemma's); "bytes" needs none
      model.safetensors    the checkpoint's weights (the torch backend loads these)
      graphs/*.onnx        exported graphs (deploy/export_onnx.py): chunk, prefix, step
      reference.npz        one observation, one draw of noise and the torch policy's chunks
                           from them, plain and inpainted (deploy/reference.py): the robot's
                           backend must compute them before it drives anything

The manifest also names the code that built it (`code_sha256`: the sources that decide
what a bundle computes, the policy's and the export's and the preprocessing's): a bundle
is rebuilt on the workstation when that code changed (its graphs would be the old code's,
verified all the same). It names apart the code the robot runs around the graphs
(`runtime_sha256`: camera and state preprocessing, instruction tokens, action decoding,
action selection and inpainting) and the checkout's git commit: `platform deploy` on a
robot whose clone runs other code there refuses the bundle (its inputs or its actions
would not be the ones the policy was built for), naming the commit to check out.

`build_bundle` writes into a sibling temporary folder and renames it into place, so a
failed export never leaves a half-written bundle. `Bundle.load` recomputes every file's
size and sha256 against the manifest and refuses a truncated, modified or missing file in
one line naming it: a robot must not run weights nobody built. So the manifest must list
every file the robot reads (config, stats, weights; the tokenizer file and reference its
config and deploy/reference.py read), each named inside the bundle: a name that leaves it
(absolute, `..`, a link out) would be hashed and read as the bundle's. A manifest or
config of any other shape is refused in one line too.

This module imports without torch (the robot side); building a bundle needs it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from shallowpi.durable_files import errors_named, fsync_path, fsync_tree, naming
from shallowpi.errors import PlatformError

FORMAT = "shallowpi-deploy-bundle"
# v2: the policy may predict offsets from the state (policy.actions=delta, config.json's
# policy.delta_dims). A reader from before v2 would send those offsets as joint targets, so
# such a bundle is written as v2, which it refuses; every other bundle stays v1.
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
MANIFEST = "manifest.json"
GRAPH_NAMES = ("chunk", "prefix", "step")
# The files build_bundle writes into every bundle and Bundle.load reads: a manifest that
# leaves one out would let it run unhashed. (reference.npz is written always too, but a
# bundle from before references were kept still runs in the twin: deploy_cmd refuses it
# on hardware; one that holds it must list it, `verify`.)
REQUIRED_FILES = ("config.json", "stats.json", "model.safetensors")
# deploy/reference.py's REFERENCE (that module imports the backends): read by name, not
# through the manifest.
REFERENCE_FILE = "reference.npz"
REBUILD = "rebuild it from its checkpoint (`platform deploy --policy CKPT --bundle-only`)"


# What decides a bundle's numbers: the policy's code (the graphs are traced from it), the
# export, and the robot side's preprocessing, which reads the bundle's config.
# torch_backend.py computes the reference chunks the robot's backend is checked against.
CODE_FILES = ("policy/*.py", "deploy/export_onnx.py", "deploy/preprocess.py", "deploy/export_reference.py",
              "deploy/backends/torch_backend.py")
# What the robot runs around the graphs, from the bundle's config and stats: the inputs
# made (cameras, state, instruction tokens) and the actions decoded and chosen.
RUNTIME_FILES = ("deploy/preprocess.py", "deploy/backends/base.py", "policy/config.py", "policy/tokenizer.py",
                 "policy/action_space.py", "policy/inpaint.py", "policy/action_selection.py")


def files_sha256(root: Path, patterns: Iterable[str]) -> str:
    """sha256 over the names (relative to `root`) and bytes of the files under `root` that
    match the glob `patterns`, in name order: which code made or judged a result."""
    digest = hashlib.sha256()
    for path in sorted({p for pattern in patterns for p in root.glob(pattern)}):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@functools.cache  # the installed sources do not change under a running process
def code_fingerprint() -> str:
    """sha256 over the names and bytes of `CODE_FILES` as installed here: the code a bundle
    is built by (`code_sha256` in its manifest)."""
    return files_sha256(Path(__file__).resolve().parent.parent, CODE_FILES)


@functools.cache
def runtime_fingerprint() -> str:
    """sha256 over the names and bytes of `RUNTIME_FILES` as installed here: the code a
    robot runs around a bundle's graphs (`runtime_sha256` in its manifest)."""
    return files_sha256(Path(__file__).resolve().parent.parent, RUNTIME_FILES)


def checkout_commit() -> str:
    """The git commit of the checkout this code runs from, with "+changes" when files
    differ from it; "" where that cannot be told (no git, not a clone)."""
    import subprocess

    root = Path(__file__).resolve().parents[3]
    if not (root / "platform" / "shallowpi").is_dir():  # an installed copy: no checkout to ask
        return ""
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return head + ("+changes" if dirty else "")


class BundleError(PlatformError):
    """A deploy bundle that is missing, tampered with, truncated or of another format."""


def sha256_of(path: Path, block: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class NormStats:
    """Per-dimension mean and std (std already floored as the policy's Normalizer does)."""

    mean: np.ndarray  # [D] float32
    std: np.ndarray  # [D] float32

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """Robot units -> the model's: (x - mean) / std, float32 [..., D]."""
        return (np.asarray(x, np.float32) - self.mean) / self.std

    def denormalize(self, x: np.ndarray) -> np.ndarray:
        """The model's units -> robot units: x * std + mean, float32 [..., D]."""
        return np.asarray(x, np.float32) * self.std + self.mean


@dataclass
class Bundle:
    """A verified bundle. `config` is the PolicyConfig as a dict (torch-free), `features`
    {state_dim, action_dim, cameras}, `graphs` {name: path} of the exported ONNX files."""

    path: Path
    config: dict[str, Any]
    features: dict[str, Any]
    checkpoint_metadata: dict[str, str]
    state_stats: NormStats
    action_stats: NormStats
    tokenizer: str  # "bytes", "words" (vocabulary in `config`) or the path of the bundle's tokenizer file
    graphs: dict[str, Path]
    digest: str  # sha256 over the manifest's file table: names the bundle's exact contents
    checkpoint_digest: str  # sha256 of the checkpoint's model.safetensors it was built from
    code_digest: str = ""  # code_fingerprint() of the code that built it ("" before it was recorded)
    runtime_digest: str = ""  # runtime_fingerprint() there ("" before it was recorded)
    commit: str = ""  # the building checkout's git commit (checkout_commit), "" where unknown

    @property
    def built_by_this_code(self) -> bool:
        """Whether this installation's policy, export and preprocessing code built it."""
        return self.code_digest == code_fingerprint()

    @property
    def runs_here_as_built(self) -> bool | None:
        """Whether the code this robot runs around the graphs is the code the bundle was
        built with, and for a bundle without graphs (the torch backend runs this checkout's
        policy code) that code too (None: the bundle does not record it)."""
        if not self.runtime_digest:
            return None
        same = self.runtime_digest == runtime_fingerprint()
        return same and (bool(self.graphs) or self.built_by_this_code)

    @property
    def weights(self) -> Path:
        """The checkpoint's model.safetensors inside the bundle (the torch backend's input)."""
        return self.path / "model.safetensors"

    @property
    def cameras(self) -> list[str]:
        """Camera roles the policy reads, in prefix order."""
        return list(self.features["cameras"])

    @classmethod
    def load(cls, path: str | Path, check_files: bool = True) -> Bundle:
        """Verify every file against the manifest, then read the small ones.

        Raises BundleError (one line) naming the first missing, truncated, modified or
        unlisted file, a name outside the bundle, or a manifest, config or stats of another
        shape. `check_files=False` skips the hashing (the manifest's shape and names are
        still checked), for the builder reading back what it just wrote."""
        path = Path(path).expanduser()
        manifest = _read_manifest(path)
        files: dict[str, dict[str, Any]] = manifest["files"]
        if check_files:
            _check_files(path, files)
        config = _read_json(path / "config.json")
        stats = _read_json(path / "stats.json")
        try:
            policy, features = config["policy"], config["features"]
            if not isinstance(policy, dict) or not isinstance(features, dict):
                raise TypeError("policy and features must be objects")
            tokenizer = _tokenizer(path, config, files)
            state_stats, action_stats = _stats(stats["observation.state"]), _stats(stats["action"])
            metadata = config.get("checkpoint_metadata", {})
            if not isinstance(metadata, dict):
                raise TypeError("checkpoint_metadata must be an object")
        except (KeyError, TypeError, ValueError) as exc:
            # A hand-made bundle can hash consistently and still not be one build_bundle wrote.
            raise BundleError(f"{path}'s config.json or stats.json is not a bundle's ({type(exc).__name__}: "
                              f"{_one_line(exc)}); {REBUILD}") from None
        graphs = {Path(name).stem: path / name for name in files if name.startswith("graphs/")}
        return cls(
            path=path,
            config=policy,
            features=features,
            checkpoint_metadata=metadata,
            state_stats=state_stats,
            action_stats=action_stats,
            tokenizer=tokenizer,
            graphs=graphs,
            digest=table_digest(files),
            checkpoint_digest=files["model.safetensors"]["sha256"],
            code_digest=str(manifest.get("code_sha256", "")),
            runtime_digest=str(manifest.get("runtime_sha256", "")),
            commit=str(manifest.get("commit", "")),
        )


def _stats(entry: dict[str, list[float]]) -> NormStats:
    """One stats.json entry -> NormStats; TypeError/ValueError for another shape."""
    mean, std = np.asarray(entry["mean"], np.float32), np.asarray(entry["std"], np.float32)
    if mean.ndim != 1 or mean.shape != std.shape:
        raise ValueError(f"mean {mean.shape} and std {std.shape} must be one vector each, of one length")
    return NormStats(mean, std)


def _tokenizer(path: Path, config: dict[str, Any], files: dict[str, dict[str, Any]]) -> str:
    """The bundle's tokenizer (Bundle.tokenizer): "bytes", "words", or the path of its
    tokenizer file, which must be one the manifest lists (so it is inside the bundle and
    hashed). BundleError for a file it does not list, TypeError for another shape."""
    name = config.get("tokenizer_file")
    if name:
        if not isinstance(name, str):
            raise TypeError(f"tokenizer_file must be a file name, got {name!r}")
        if name not in files:
            raise BundleError(f"{path}'s config.json reads its tokenizer from {name!r}, which its manifest does not "
                              f"list (not hashed, or outside the bundle); {REBUILD}")
        return str(path / name)
    spec = config["policy"]["tokenizer"]
    if spec not in ("bytes", "words"):  # build_bundle copies any other into the bundle (tokenizer_file)
        raise BundleError(f"{path}'s policy reads its tokenizer from {spec!r}, a file outside the bundle (its "
                          f"config.json names no tokenizer_file); {REBUILD}")
    return spec


def _read_json(file: Path) -> Any:
    """A bundle file's JSON; BundleError (one line) where it does not read as JSON."""
    try:
        return json.loads(file.read_text())
    except ValueError as exc:  # UnicodeDecodeError is one too
        raise BundleError(f"{file} is not valid JSON ({_one_line(exc)}); {REBUILD}") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def table_digest(files: dict[str, dict[str, Any]]) -> str:
    """sha256 of the manifest's file table: one name for the bundle's exact contents."""
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def verify(path: Path) -> dict[str, dict[str, Any]]:
    """The manifest's file table, after checking its shape and names (`_read_manifest`)
    and every file's size and sha256. BundleError (one line) naming what is wrong."""
    files: dict[str, dict[str, Any]] = _read_manifest(path)["files"]
    _check_files(path, files)
    return files


def _read_manifest(path: Path) -> dict[str, Any]:
    """path/manifest.json, checked without reading the files it lists: of this format, a
    table {name: {sha256: str, bytes: int}} that lists `REQUIRED_FILES` (and the reference
    where the bundle holds one), every name inside the bundle. BundleError (one line)."""
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{path} is not a deploy bundle (no {MANIFEST}); build one with `platform deploy`")
    try:
        manifest = json.loads(manifest_path.read_text())
    except ValueError as exc:
        raise BundleError(f"{manifest_path} is not valid JSON ({_one_line(exc)}); rebuild the bundle") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{manifest_path} holds a JSON {type(manifest).__name__}, not a manifest; {REBUILD}")
    version = manifest.get("version")
    if manifest.get("format") == FORMAT and type(version) is int and version > max(READABLE_VERSIONS):
        # Rebuilding on the machine that built it makes the same version again: this
        # checkout is the one behind (a robot not yet updated).
        built = f" (commit {manifest['commit']})" if manifest.get("commit") else ""
        raise BundleError(f"{path} is a {FORMAT} v{version} bundle, built by newer code{built}; this platform reads "
                          f"v{'/'.join(map(str, READABLE_VERSIONS))}: update this checkout to the code that built it")
    if manifest.get("format") != FORMAT or version not in READABLE_VERSIONS:
        raise BundleError(
            f"{path} is a {manifest.get('format')!r} v{manifest.get('version')} bundle; this "
            f"platform reads {FORMAT} v{'/'.join(map(str, READABLE_VERSIONS))}: rebuild it from the checkpoint"
        )
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise BundleError(f"{manifest_path} has no table of files ('files': {{name: {{sha256, bytes}}}}); {REBUILD}")
    root = path.resolve()
    for name, entry in files.items():
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
                and type(entry.get("bytes")) is int):  # bool is an int, and no size
            raise BundleError(f"{manifest_path} lists {name!r} as {entry!r}, not {{\"sha256\": hex, \"bytes\": "
                              f"count}}; {REBUILD}")
        # A name that leaves the folder would be hashed and read as the bundle's own: an
        # absolute one, a '..' (graphs/../../etc/x), or a link that points out.
        relative = PurePosixPath(name)
        if not name or relative.is_absolute() or ".." in relative.parts or not _inside(root, path / name):
            raise BundleError(f"bundle manifest names {name!r}, outside the bundle {path}; {REBUILD}")
    if missing := [name for name in REQUIRED_FILES if name not in files]:
        raise BundleError(f"bundle manifest {manifest_path} does not list {', '.join(missing)}, which every bundle "
                          f"holds (it would run unhashed); {REBUILD}")
    if REFERENCE_FILE not in files and (path / REFERENCE_FILE).exists():
        # deploy/reference.py checks the robot's backend against it by name: unhashed, a
        # reference edited to match a wrong backend would pass that check.
        raise BundleError(f"bundle file {path / REFERENCE_FILE} is not in the manifest (not hashed); {REBUILD}")
    return manifest


def _inside(root: Path, file: Path) -> bool:
    """Whether `file`, its links followed, lies under `root` (resolved); False for a loop of links."""
    try:
        return file.resolve().is_relative_to(root)
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python < 3.13)
        return False


def _check_files(path: Path, files: dict[str, dict[str, Any]]) -> None:
    """Each listed file's size and sha256 against the table; BundleError naming the first
    missing, truncated/padded or modified one."""
    for name, entry in files.items():
        file = path / name
        if not file.is_file():
            raise BundleError(f"bundle file {file} is missing; rebuild the bundle")
        size = file.stat().st_size
        if size != entry["bytes"]:
            raise BundleError(
                f"bundle file {file} is truncated or padded ({size} bytes, the manifest says "
                f"{entry['bytes']}); copy it again or rebuild the bundle"
            )
        if sha256_of(file) != entry["sha256"]:
            raise BundleError(
                f"bundle file {file} was modified (sha256 differs from the manifest); "
                "copy it again or rebuild the bundle"
            )


def write_manifest(path: Path, extra: dict[str, Any] | None = None, version: int = 1) -> dict[str, Any]:
    """Hash every file under `path` (but the manifest) into path/manifest.json, as a bundle
    of format `version` (2 for a policy that predicts offsets: FORMAT_VERSION's comment).
    OSError from the write names the manifest (`naming`: a full disk's names no file)."""
    files = {
        str(f.relative_to(path)): {"sha256": sha256_of(f), "bytes": f.stat().st_size}
        for f in sorted(path.rglob("*"))
        if f.is_file() and f.name != MANIFEST
    }
    manifest = {"format": FORMAT, "version": version, "files": files, **(extra or {})}
    with errors_named(path / MANIFEST):
        (path / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def build_bundle(
    checkpoint: str | Path,
    out: str | Path,
    graphs: tuple[str, ...] = GRAPH_NAMES,
    num_steps: int | None = None,
    overwrite: bool = False,
) -> Bundle:
    """Checkpoint folder -> bundle at `out` (weights, stats, config, tokenizer, ONNX graphs).

    `graphs` names which graphs to export (see export_onnx.py); () exports none (the torch
    backend needs none). `num_steps` (Euler steps a chunk) overrides the policy's for every
    backend and graph. Raises BundleError if `out` exists and `overwrite` is False,
    CheckpointError for a checkpoint that does not load, ExportError if an export fails,
    OSError naming the file, else `out`, when the disk refuses a write (`naming`: a full
    disk's ENOSPC from write_text or a copy names none, and the CLI's line could not say
    which disk).
    """
    from shallowpi.deploy.export_onnx import export_graphs
    from shallowpi.deploy.export_reference import write_reference
    from shallowpi.policy.policy import Policy

    checkpoint, out = Path(checkpoint).expanduser(), Path(out).expanduser()
    if out.exists() and not overwrite:
        raise BundleError(f"{out} already exists; pass another --bundle folder or delete it")
    policy = Policy.load(checkpoint)
    tmp = out.with_name(f".{out.name}.building")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        shutil.copyfile(checkpoint / "model.safetensors" if checkpoint.is_dir() else checkpoint,
                        tmp / "model.safetensors")
        steps = num_steps or policy.cfg.num_steps
        config: dict[str, Any] = {
            # The Euler steps live in the policy's config, the one place every backend reads
            # them; the exported graphs are unrolled with the same count.
            "policy": {**policy.cfg.to_dict(), "num_steps": steps},
            "features": {"state_dim": policy.features.state_dim, "action_dim": policy.features.action_dim,
                         "cameras": list(policy.features.cameras)},
            "checkpoint": str(checkpoint.resolve()),
            "checkpoint_metadata": {k: v for k, v in Policy.read_metadata(checkpoint).items()
                                    if k not in ("config", "features")},
        }
        # bytes and words need no file: the word vocabulary is part of the policy's config.
        if policy.cfg.tokenizer not in ("bytes", "words"):
            tok = Path(policy.cfg.tokenizer).expanduser()
            shutil.copyfile(tok, tmp / f"tokenizer{tok.suffix}")
            config["tokenizer_file"] = f"tokenizer{tok.suffix}"
        (tmp / "config.json").write_text(json.dumps(config, indent=1))
        stats = {
            key: {"mean": norm.mean.tolist(), "std": norm.std.tolist()}
            for key, norm in (("observation.state", policy.state_norm), ("action", policy.action_norm))
        }
        (tmp / "stats.json").write_text(json.dumps(stats))
        if graphs:
            (tmp / "graphs").mkdir()
            export_graphs(policy, tmp / "graphs", graphs, num_steps=steps)
        manifest = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "code_sha256": code_fingerprint(), "runtime_sha256": runtime_fingerprint(),
                    "commit": checkout_commit()}
        version = 2 if policy.cfg.delta_dims else 1
        del policy  # the reference loads the weights again, from the bundle: not two copies at once
        write_manifest(tmp, manifest, version)  # for Bundle.load to read it back; rewritten with the reference
        write_reference(Bundle.load(tmp, check_files=False))  # what the robot's backend must compute
        write_manifest(tmp, manifest, version)
        fsync_tree(tmp)  # on the disk before it appears under its name: robots lose power
        # The old bundle is moved aside, not deleted in place: a kill during a deletion left
        # a folder without its manifest, which deploy refuses to replace.
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if out.exists():
            out.rename(old)
        tmp.rename(out)
        fsync_path(out.parent)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and (named := naming(exc, out)) is not exc:
            raise named from exc
        raise
    return Bundle.load(out)
