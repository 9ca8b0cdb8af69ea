"""Real file systems for the tests of a full disk (a tmpfs of a given size) and a spy on
what reaches the disk before a rename (`SyncWatch`), for the tests of a power cut."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest


@contextmanager
def small_disk(path: Path, size: str, inodes: int | None = None) -> Iterator[Path]:
    """Mount a tmpfs of `size` (e.g. "1m") at `path`, so writers meet a real ENOSPC, with
    at most `inodes` files (its root folder is one) if given; needs the right to mount
    (root), else the calling test is skipped."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (f",nr_inodes={inodes}" if inodes is not None else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


class SyncWatch:
    """Spies on os.fsync, os.replace and os.rename (each still runs, so the real file
    system does the work): which files were synced, and each rename as `Rename`. Paths
    are resolved; an fd's path is read from /proc (Linux)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import os

        self.synced: set[str] = set()
        self.renames: list[Rename] = []
        fsync, replace, rename = os.fsync, os.replace, os.rename

        def spy_fsync(fd):
            self.synced.add(os.readlink(f"/proc/self/fd/{fd if isinstance(fd, int) else fd.fileno()}"))
            return fsync(fd)

        def spy(real):
            def move(src, dst, **kwargs):
                src, dst = os.path.realpath(src), os.path.realpath(dst)
                files = [os.path.join(r, f) for r, _, fs in os.walk(src) for f in fs] if os.path.isdir(src) else [src]
                self.renames.append(Rename(src, dst, os.path.isfile(dst), [f for f in files if f not in self.synced]))
                return real(src, dst, **kwargs)
            return move

        monkeypatch.setattr(os, "fsync", spy_fsync)
        monkeypatch.setattr(os, "replace", spy(replace))
        monkeypatch.setattr(os, "rename", spy(rename))

    def rename_to(self, dst: Path) -> Rename:
        """The last rename onto `dst`; AssertionError if there was none."""
        dst_path = str(Path(dst).resolve())
        matches = [r for r in self.renames if r.dst == dst_path]
        assert matches, f"nothing was renamed onto {dst_path}"
        return matches[-1]


@dataclass
class Rename:
    """One rename seen by SyncWatch: `replaced` when `dst` was an existing file; `unsynced`,
    the files of `src` (itself, or those under a folder) not fsynced before it."""

    src: str
    dst: str
    replaced: bool
    unsynced: list[str]
