"""What may join a store: one fps always, one calibration id unless mixing was allowed.

`StoreSummary` is what a store's committed episodes were recorded with (kept in its
commit record, so the rule costs the same at any store size); `check_mixing` is the
rule itself, which every path that adds episodes goes through: `record` and `--resume`
(`EpisodeStore.check_recordable`, `begin_episode`), `dataset merge` and `import`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shallowpi.errors import StoreError

if TYPE_CHECKING:
    from shallowpi.data.store import EpisodeInfo


@dataclass(frozen=True)
class StoreSummary:
    """What the committed episodes were recorded with, as sorted distinct values.

    Kept in the commit record, so the rules on what may join a store (one fps, one
    calibration unless mixing was allowed) cost the same at any store size.
    """

    fps: tuple[float, ...] = ()
    calibration_ids: tuple[str, ...] = ()
    robots: tuple[str, ...] = ()
    allow_mixed_calibration: bool = False  # set by --allow-mixed-calibration, never unset

    def with_episode(self, info: EpisodeInfo) -> StoreSummary:
        """A new summary that includes `info` (empty calibration ids and robots are skipped)."""
        return dataclasses.replace(
            self,
            fps=tuple(sorted({*self.fps, float(info.fps)})),
            calibration_ids=tuple(sorted({*self.calibration_ids, info.calibration_id} - {""})),
            robots=tuple(sorted({*self.robots, info.robot} - {""})),
        )

    @classmethod
    def of_episodes(cls, episodes: Iterable[EpisodeInfo], allow_mixed_calibration: bool = False) -> StoreSummary:
        """The summary of `episodes`, built one `with_episode` at a time."""
        summary = cls(allow_mixed_calibration=allow_mixed_calibration)
        for info in episodes:
            summary = summary.with_episode(info)
        return summary

    def to_json(self) -> dict[str, Any]:
        """This summary as a JSON-ready dict, as the commit record holds it."""
        return {"fps": list(self.fps), "calibration_ids": list(self.calibration_ids),
                "robots": list(self.robots), "allow_mixed_calibration": self.allow_mixed_calibration}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StoreSummary:
        """The summary `to_json` wrote; a missing key reads as empty (or False)."""
        return cls(fps=tuple(float(f) for f in data.get("fps", ())),
                   calibration_ids=tuple(str(c) for c in data.get("calibration_ids", ())),
                   robots=tuple(str(r) for r in data.get("robots", ())),
                   allow_mixed_calibration=bool(data.get("allow_mixed_calibration", False)))


def mixed_fps(episodes: Iterable[EpisodeInfo]) -> list[float]:
    """The distinct recording rates of `episodes`, sorted; more than one means the store
    mixes rates (training windows would then span different times)."""
    return sorted({float(e.fps) for e in episodes})


def _same_fps(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)


def check_mixing(held: StoreSummary, held_name: str, fps: Iterable[float], calibration_ids: Iterable[str],
                 new_name: str, allow_mixed_calibration: bool = False) -> None:
    """Refuse to add episodes at `fps` with `calibration_ids` (described as `new_name`)
    to the store `held_name`, whose committed episodes `held` describes.

    The one rule every path that adds episodes goes through (record, --resume, merge,
    import): one fps a store, always (a training chunk of 50 rows must span one time);
    one calibration id a store unless mixing is allowed, by `allow_mixed_calibration` or
    by the store's own record of an earlier permission (under another calibration the
    same joint value is another pose). An empty store takes anything, and an empty
    calibration id (not known: a LeRobot import) is compared with none. Raises
    StoreError naming both values and the way out.
    """
    fps, calibration_ids = sorted({float(f) for f in fps}), sorted(set(calibration_ids) - {""})
    if any(not _same_fps(a, b) for a in held.fps for b in fps):
        raise StoreError(f"{held_name} holds episodes at {_rates(held.fps)} fps, {new_name} at {_rates(fps)} fps; "
                         "one store keeps one rate: use a new dataset")
    if allow_mixed_calibration or held.allow_mixed_calibration:
        return
    if held.calibration_ids and calibration_ids and set(held.calibration_ids) != set(calibration_ids):
        ours, theirs = ", ".join(held.calibration_ids), ", ".join(calibration_ids)
        raise StoreError(
            f"{held_name} holds episodes of calibration {ours}, {new_name} of calibration {theirs} "
            "(one joint value, two poses); use a new dataset, or pass --allow-mixed-calibration "
            "to mix them (recorded in the store)")


def _rates(fps: Iterable[float]) -> str:
    return ", ".join(f"{f:g}" for f in fps)
