"""What a store holds: one `Feature` per recorded array (name, dtype, shape, kind).

Names follow lerobot's convention so datasets move between the two without renaming:
`observation.state`, `action`, `observation.images.<camera role>`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shallowpi.errors import StoreError
from shallowpi.joints import JOINT_KINDS

# lerobot's names; robots/observation.py's `lerobot_row` is the one place observations get them.
STATE_KEY = "observation.state"
ACTION_KEY = "action"
IMAGE_PREFIX = "observation.images."


def name_problem(key: object) -> str | None:
    """Why `key` cannot name a feature, or None for a plain name. A feature is stored as
    the folders `data/<key>` and `data/<key>.timestamp`, and its name becomes a file name
    in exports: a name with a path separator (or an absolute one) put its chunk files
    outside the store, and one of dots alone (`..`) or hidden (`.zarray`: zarr's own
    metadata names) names another folder than its own. Dots inside are lerobot's
    convention (`observation.images.front`) and stay; a leading '-' would read as an
    option to the tools a name is handed to."""
    if not isinstance(key, str) or not key:
        return "empty" if key == "" else f"a {type(key).__name__}, not text"
    for bad, what in (("/", "'/'"), ("\\", "'\\'"), ("\0", "a NUL character")):
        if bad in key:
            return f"it holds {what}"
    if key.startswith("."):
        return "it starts with '.'"
    if key.startswith("-"):
        return "it starts with '-'"
    return None


def require_plain_names(keys: Iterable[object], what: str, why: str) -> None:
    """StoreError (one line) for the first of `keys` that is not a plain feature name
    (`name_problem`): "<what> '<key>' is not a plain name (<problem>; no '/' or '..'); <why>"."""
    for key in keys:
        if (problem := name_problem(key)) is not None:
            raise StoreError(f"{what} {key!r} is not a plain name ({problem}; no '/' or '..'); {why}")


class FeatureKind(str, enum.Enum):
    """How a feature is chunked and compressed (see codecs.py); the value is stored in JSON."""

    NUMERIC = "numeric"  # state, action, ...: lossless, chunked along time
    IMAGE = "image"  # HxWx3 uint8 camera frames: one frame a chunk, image codec


@dataclass(frozen=True)
class Feature:
    """One recorded array's per-frame description: the store holds it as [N, *shape].

    `dtype` is a numpy dtype name. `kinds` are a joint vector's per-dimension joint kinds
    (JOINT_KINDS) from the robot spec, empty where unknown (stores recorded before they
    were kept, lerobot imports). Two features are equal when their dtype, shape, kind and
    names are, and their joint kinds where both give them: a store without kinds still
    takes new episodes, a store of other kinds does not (`joint_kind_conflicts` names
    them). Raises TypeError for a dtype numpy does not know, StoreError for an image that
    is not uint8 [H, W, 3] or [H, W, 1], for `names` or `kinds` whose count differs from a
    vector's length and for an unknown kind. `to_json`/`from_json` round-trip it through
    the store's header.
    """

    dtype: str
    shape: tuple[int, ...]
    kind: FeatureKind = FeatureKind.NUMERIC
    names: tuple[str, ...] = field(default=())  # per-dimension labels, e.g. joint names
    kinds: tuple[str, ...] = field(default=(), compare=False)  # per-dimension joint kinds: see __eq__

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "kind", FeatureKind(self.kind))
        object.__setattr__(self, "names", tuple(self.names))
        object.__setattr__(self, "kinds", tuple(self.kinds))
        np.dtype(self.dtype)  # raises TypeError on nonsense
        if self.kind is FeatureKind.IMAGE and (
            self.dtype != "uint8" or len(self.shape) != 3 or self.shape[2] not in (1, 3)
        ):
            raise StoreError(f"image features are uint8 HxWx3 (or HxWx1), got {self.dtype} {self.shape}")
        if self.names and len(self.shape) == 1 and len(self.names) != self.shape[0]:
            raise StoreError(f"{len(self.names)} names for a feature of shape {self.shape}")
        if self.kinds and (len(self.shape) != 1 or len(self.kinds) != self.shape[0]):
            raise StoreError(f"{len(self.kinds)} joint kinds for a feature of shape {self.shape}")
        unknown = sorted(set(self.kinds) - set(JOINT_KINDS))
        if unknown:
            raise StoreError(f"unknown joint kind(s) {unknown}; a joint is one of {', '.join(JOINT_KINDS)}")

    def __eq__(self, other: object) -> bool:
        # Kinds left out of the generated comparison (and the hash) so that unknown kinds
        # match any; two known lists that differ would put new episodes under the old
        # kinds (delta-action joints, plot units), so they do not match.
        if not isinstance(other, Feature):
            return NotImplemented
        return ((self.dtype, self.shape, self.kind, self.names) == (other.dtype, other.shape, other.kind, other.names)
                and (not self.kinds or not other.kinds or self.kinds == other.kinds))

    @classmethod
    def image(cls, height: int, width: int, channels: int = 3) -> Feature:
        """A camera feature: uint8 [height, width, channels] in pixels."""
        return cls("uint8", (height, width, channels), FeatureKind.IMAGE)

    @classmethod
    def vector(cls, names: Sequence[str], dtype: str = "float32", kinds: Sequence[str] = ()) -> Feature:
        """A numeric [D] feature, D = len(names), one label per dimension (joint names) and,
        for joints, optionally each one's kind (JOINT_KINDS)."""
        return cls(dtype, (len(names),), FeatureKind.NUMERIC, tuple(names), tuple(kinds))

    def to_json(self) -> dict[str, Any]:
        """This feature as a JSON-ready dict (dtype, shape, kind, names, and kinds when known)."""
        out = {"dtype": self.dtype, "shape": list(self.shape), "kind": self.kind.value, "names": list(self.names)}
        if self.kinds:  # absent otherwise, as older stores wrote it
            out["kinds"] = list(self.kinds)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Feature:
        """The feature `to_json` wrote; `names` and `kinds` may be absent. KeyError for a
        missing key, ValueError for an unknown feature kind."""
        return cls(data["dtype"], tuple(data["shape"]), FeatureKind(data["kind"]), tuple(data.get("names", ())),
                   tuple(data.get("kinds", ())))

    def check_value(self, key: str, value: np.ndarray) -> np.ndarray:
        """A copy of `value` in this feature's dtype, or a one-line error naming the key.

        Always a copy of its own (one memcpy, the dtype cast included): the episode writer
        holds the numbers until its commit and camera frames for a batch, and a caller that
        refills one buffer every frame (a script's preallocated array) would otherwise have
        its last value stored in every row held."""
        array = np.asarray(value)
        if array.shape != self.shape:
            raise StoreError(f"frame value '{key}' has shape {array.shape}, the store expects {self.shape}")
        if array.dtype != np.dtype(self.dtype) and self.kind is FeatureKind.IMAGE:
            raise StoreError(f"frame value '{key}' is {array.dtype}, images must be uint8")
        return np.array(array, dtype=self.dtype, copy=True)


def robot_features(joint_names: Sequence[str], cameras: Mapping[str, tuple[int, int]],
                   joint_kinds: Sequence[str] = ()) -> dict[str, Feature]:
    """What a robot's episodes store: state and action [J] (named per joint, with each
    joint's kind when given: training tells grippers by it) and each camera role's frames
    uint8 [H, W, 3]; `cameras` maps role -> (height, width). The one builder of a
    recording's features: the recorder, the evaluation's stores and the benchmarks use it."""
    joints = Feature.vector(list(joint_names), kinds=joint_kinds)
    features = {STATE_KEY: joints, ACTION_KEY: joints}
    for role, (height, width) in cameras.items():
        features[IMAGE_PREFIX + role] = Feature.image(height, width)
    return features


def joint_kind_conflicts(ours: Mapping[str, Feature], theirs: Mapping[str, Feature]) -> dict[str, tuple[str, str]]:
    """{joint: (its kind in `ours`, its kind in `theirs`)} for every joint of a feature both
    hold, alike but for kinds that both give and that differ (a joint's `kind:` changed in
    the robot file since the store was recorded); empty when they agree or either does
    not say. A joint without a name is named by its position ("joint 3")."""
    conflicts: dict[str, tuple[str, str]] = {}
    for key, feature in ours.items():
        other = theirs.get(key)
        if other is None or not feature.kinds or not other.kinds or feature.kinds == other.kinds:
            continue
        if (feature.dtype, feature.shape, feature.names) != (other.dtype, other.shape, other.names):
            continue  # another feature altogether: the features' own comparison says so
        for i, (a, b) in enumerate(zip(feature.kinds, other.kinds)):
            if a != b:
                conflicts.setdefault(feature.names[i] if feature.names else f"joint {i}", (a, b))
    return conflicts


def check_joint_kinds(ours: Mapping[str, Feature], ours_name: str, theirs: Mapping[str, Feature],
                      theirs_name: str, fix: str) -> None:
    """StoreError (one line) naming each joint whose kind `ours` and `theirs` both give,
    differently, with both kinds, then `fix`; nothing when they agree or either does not
    say (a store recorded before kinds were kept, a lerobot import)."""
    conflicts = joint_kind_conflicts(ours, theirs)
    if conflicts:
        joints = ", ".join(f"{joint} is {a} in {ours_name} and {b} in {theirs_name}"
                           for joint, (a, b) in conflicts.items())
        raise StoreError(f"other joint kinds: {joints} (a joint's kind: changed in the robot file?); {fix}")


def features_to_json(features: Mapping[str, Feature]) -> dict[str, Any]:
    """Every feature as `Feature.to_json`, keyed by name."""
    return {key: feature.to_json() for key, feature in features.items()}


def features_from_json(data: Mapping[str, Any]) -> dict[str, Feature]:
    """The inverse of `features_to_json`."""
    return {key: Feature.from_json(value) for key, value in data.items()}
