"""The commit record (meta/.zattrs["commit"]) and its log of in-place cuts.

A recorder's d or r cuts committed episodes in place, while readers may hold the store
open. Each such edit is counted in the commit record and listed with the episodes it
kept (the latest CUTS_LISTED of them), so a reader can tell a cut of a take it never saw
(it reads on) from a cut of its own episodes (StoreEditedError: open again). Here: the
record's value (`commit_record`), the list read back from it (`cuts_of`), grown by an
edit (`with_cut`, data/store_edit.py), and the test a reader makes (`kept_since`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shallowpi.data.store_rules import StoreSummary

# In-place cuts (the recorder's d / r) the commit record lists with the episodes each kept, so a
# reader can tell a drop of a take it never saw (it reads on) from one of its own episodes. A
# reader opened before the oldest listed cut cannot tell, and is refused as before the list.
CUTS_LISTED = 32
# (since, [(edit number, episodes kept), ...]): every in-place edit numbered above `since` is
# listed, or followed by a listed one that kept no more episodes (`with_cut`).
CutLog = tuple[int, list[tuple[int, int]]]


def commit_record(episodes: int, frames: int, summary: StoreSummary, edits: int = 0,
                  cuts: CutLog = (0, [])) -> dict[str, Any]:
    """The value of meta/.zattrs["commit"]: the counts, the in-place edits so far and the
    episodes the latest ones kept (`"cuts": {"since": n, "kept": [[edit, episodes], ...]}`:
    readers open meanwhile look at them, `kept_since`), and what every episode agrees on."""
    since, kept = cuts
    listed = {"cuts": {"since": since, "kept": [[edit, count] for edit, count in kept]}} if kept else {}
    return {"episodes": episodes, "frames": frames, **({"edits": edits} if edits else {}), **listed,
            **summary.to_json()}


def cuts_of(record: Mapping[str, Any]) -> CutLog:
    """The in-place cuts a commit record lists (`commit_record`). A record that lists none,
    or not the latest edit (written by a version that kept no list, which drops it), lists
    from its latest edit on: a reader opened before it cannot tell what was cut."""
    edits = int(record.get("edits", 0))
    listed = record.get("cuts")
    try:
        since, kept = int(listed["since"]), [(int(edit), int(count)) for edit, count in listed["kept"]]
    except (TypeError, KeyError, ValueError):
        return edits, []
    if not kept or kept[-1][0] != edits or since > edits:
        return edits, []
    return since, kept


def with_cut(cuts: CutLog, edit: int, kept: int) -> CutLog:
    """`cuts` and in-place edit number `edit`, which left `kept` episodes. An earlier cut
    that kept as many or more goes: any reader it would refuse, this one refuses too. So
    the list keeps rising counts, and only its latest CUTS_LISTED: `since` moves up to the
    last one forgotten, and a reader opened before that is refused (`kept_since`)."""
    since, listed = cuts
    listed = [(e, k) for e, k in listed if k < kept] + [(edit, kept)]
    if len(listed) > CUTS_LISTED:
        since, listed = listed[-CUTS_LISTED - 1][0], listed[-CUTS_LISTED:]
    return since, listed


def kept_since(edits: int, cuts: CutLog, after: int, episodes: int) -> bool:
    """Whether a store whose commit record says `edits` in-place edits and `cuts` still
    holds, as they were, the first `episodes` episodes of a reader that opened it after
    edit number `after`: no in-place cut since kept fewer (appends never change them).
    False when the record does not reach back to `after`."""
    if edits == after:
        return True
    since, listed = cuts
    return since <= after < edits and all(count >= episodes for edit, count in listed if edit > after)
