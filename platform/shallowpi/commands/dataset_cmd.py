"""Look after recorded datasets (zarr stores under the data root, datasets/ by default).

  platform dataset list                              every store: episodes, frames (--size: on disk)
  platform dataset info kitchen                      features and the episode table (--episodes 0-99, --last 20,
                                                     --size: on disk)
  platform dataset check kitchen                     verify every episode (exit 1 on damage)
  platform dataset repair kitchen                    remove a killed recording's uncommitted tail
  platform dataset show kitchen --episode 3          PNG: camera strip + joint plots
  platform dataset view kitchen --episode 3          the episode in the Rerun viewer
  platform dataset view kitchen --episode 3 --save ep3.rrd   ...or an .rrd file (no display)
  platform dataset delete kitchen --episode 3 5      remove episodes, compact the arrays
  platform dataset merge kitchen kitchen2 --out all  a new store with both stores' episodes
  platform dataset export kitchen --to lerobot out/  a LeRobotDataset (needs the lerobot extra)
  platform dataset import out/ --out kitchen_copy    a local LeRobotDataset into zarr

A dataset is named (kitchen = <data root>/kitchen.zarr) or given as a path.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shallowpi import config
from shallowpi.cli import add_config_flags, at_least, overrides_from, ready_output, user_path
from shallowpi.errors import ConfigError, PlatformError, StoreEditedError, StoreError
from shallowpi.terminal import is_interactive, is_terminal

if TYPE_CHECKING:
    from shallowpi.data.store import EpisodeInfo, EpisodeStore

HELP = "list, inspect, check, plot, edit, export and import recorded datasets"
INFO_ALL_UP_TO = 100  # `dataset info` lists every episode of a store this size or smaller...
INFO_LAST = 50  # ...else the last this many, unless --episodes or --last says otherwise


def episode_span(text: str) -> tuple[int, int | None]:
    """argparse type for `--episodes`: "A-B" (both shown), "A-" (A to the last) or "A"
    alone, as (first, last or None); an unreadable or backwards span is one line at parse
    time."""
    first, dash, last = text.partition("-")
    try:
        span = (int(first), (int(last) if last else None) if dash else int(first))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an episode span: A-B (e.g. 0-99), A- or A") from None
    if span[0] < 0 or (span[1] is not None and span[1] < span[0]):
        raise argparse.ArgumentTypeError(f"{text!r} is not an episode span: A-B with 0 <= A <= B")
    return span


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one subparser per action: list, info, check, repair, show, view, delete, merge,
    export, import."""
    sub = parser.add_subparsers(dest="action", metavar="ACTION", parser_class=type(parser))
    sub.required = True

    def action(name: str, help: str, store: bool = True, example: str = "") -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, epilog=f"example:\n  {example}" if example else None,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        if store:
            p.add_argument("store", help="dataset name (under the data root) or path to a .zarr store")
        add_config_flags(p)
        return p

    listing = action("list", "list the stores under the data root", store=False,
                     example="platform dataset list --data-root /mnt/ssd/datasets")
    listing.add_argument("--size", action="store_true",
                         help="also each store's size on disk (looks at every file: a minute for millions of frames)")
    info = action("info", "features, metadata and the episode table of a store",
                  example="platform dataset info kitchen   datasets/kitchen.zarr: each episode's task, length, "
                          f"outcome (the last {INFO_LAST} of a larger store)\n"
                          "  platform dataset info kitchen --episodes 100-199   those episodes' rows")
    # A store of thousands of episodes took seconds to print a table nobody scrolls:
    # beyond INFO_ALL_UP_TO episodes the last INFO_LAST are shown unless asked.
    shown = info.add_mutually_exclusive_group()
    shown.add_argument("--episodes", type=episode_span, metavar="A-B",
                       help=f"the rows of episodes A to B (0-99; 100- to the last; 7 alone; default: all up to "
                            f"{INFO_ALL_UP_TO} episodes, else the last {INFO_LAST})")
    shown.add_argument("--last", type=at_least(1), metavar="N", help="the rows of the last N episodes")
    info.add_argument("--size", action="store_true",
                      help="also the store's size on disk (looks at every file: a minute for millions of frames)")
    check = action("check", "verify every episode; exits 1 naming what is wrong",
                   example="platform dataset check kitchen --quick   each episode's first and last frame decoded")
    check.add_argument("--quick", action="store_true", help="decode only each episode's first and last frame")
    check.add_argument("--workers", type=at_least(1), help="frames decoded at once (default: one per core)")
    action("repair", "remove the uncommitted frames a stopped recording left past the last episode",
           example="platform dataset repair kitchen")
    show = action("show", "write a PNG of one episode: camera frames and joint plots",
                  example="platform dataset show kitchen --episode -1   kitchen_episode<N>.png of the last one")
    show.add_argument("--episode", type=int, default=0, help="episode index (default 0; -1 = last)")
    show.add_argument("--out", type=user_path, help="PNG path (default: <store>_episode<N>.png here)")
    view = action("view", "log one episode to Rerun: cameras, every joint's state and action, task, outcome",
                  example="platform dataset view kitchen --episode 3 --save ep3.rrd   then: rerun ep3.rrd")
    view.add_argument("--episode", type=int, default=0, help="episode index (default 0; -1 = last)")
    view.add_argument("--save", type=user_path, metavar="FILE.rrd",
                      help="write a Rerun recording instead of opening the viewer (`rerun FILE.rrd` opens it)")
    delete = action("delete", "delete episodes and compact the store (the others are numbered anew)",
                    example="platform dataset delete kitchen --episode 3 7   asks first; --yes does not")
    # extend: `--episode 1 --episode 2` deletes both (with nargs alone the last flag won, silently)
    delete.add_argument("--episode", type=int, nargs="+", action="extend", required=True,
                        help="episode indices (-1 = last): --episode 1 2, or the flag repeated")
    delete.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    merge = sub.add_parser(
        "merge", help="merge stores with the same features into a new one",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Copy every episode of two or more stores, in the order given, into a new store.\n"
                    "The stores must have the same features and fps, and no store or twin scene twice;\n"
                    "the sources are not changed.",
        epilog="example:\n  platform dataset merge kitchen kitchen2 --out all   all.zarr: kitchen's episodes, "
               "then kitchen2's")
    merge.add_argument("stores", nargs="+", help="two or more datasets")
    merge.add_argument("--out", required=True, help="name of the new store (under the data root) or its path "
                                                     "(with a slash, or ending in .zarr: here)")
    merge.add_argument("--allow-mixed-calibration", action="store_true",
                       help="merge stores of different calibration ids (recorded in the new store); "
                            "stores of different fps never merge")
    merge.add_argument("--allow-repeated-scenes", action="store_true",
                       help="merge stores holding the same twin scenes (task and seed), e.g. two policies' "
                            "deploy --sim --record rollouts; one recording twice is never merged")
    add_config_flags(merge)
    export = action("export", "export a store to another format")
    export.formatter_class = argparse.RawDescriptionHelpFormatter
    export.description = ("Write every committed episode of a store as a LeRobotDataset (lerobot 0.6, format v3):\n"
                          "cameras as AV1 videos (H.264 where AV1 cannot take the frame size), every frame with its\n"
                          "task. Needs the lerobot extra (Python >= 3.12).")
    export.epilog = ("example:\n  platform dataset export kitchen --to lerobot exports/kitchen-lerobot   "
                     "then LeRobotDataset('local/kitchen', root='exports/kitchen-lerobot')")
    export.add_argument("--to", choices=["lerobot"], required=True, help="target format")
    export.add_argument("dest", type=user_path, help="output directory (new, or an empty folder)")
    export.add_argument("--repo-id", help="the LeRobot repo id the export is written and verified under "
                        "(default: local/<name>); LeRobot v3 keeps none on disk, so any id loads it")
    imp = sub.add_parser(
        "import", help="import a local LeRobotDataset directory into a new store",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Read a LeRobotDataset from a local directory (its meta/, data/ and videos/) and\n"
                    "write its episodes into a new zarr store; needs the lerobot extra.",
        epilog="example:\n  platform dataset import ~/lerobot/pusht --out pusht   datasets/pusht.zarr from "
               "a local copy")
    imp.add_argument("source", type=user_path, help="LeRobotDataset root directory")
    imp.add_argument("--out", required=True, help="name of the new store (under the data root) or its path "
                                                   "(with a slash, or ending in .zarr: here)")
    imp.add_argument("--repo-id", help="repo id of the LeRobot dataset (default: local/<dir name>)")
    add_config_flags(imp)


def run(args: argparse.Namespace) -> int:
    """Run the chosen action on the named store(s); returns its exit code.

    `check` returns 1 when an episode is damaged, `delete` returns 1 when the user declines.
    PlatformError for bad input (e.g. --workers < 1, `merge` with one store, `delete`
    without --yes when stdin is not a terminal).
    """
    refuse_unread_overrides(args.action, getattr(args, "overrides", []))
    cfg = config.compose(overrides_from(args))
    root = config.data_root(cfg)

    def path_of(name: str) -> Path:
        return config.resolve_dataset(name, root)

    handler = {
        "list": lambda: _list(root, size=args.size),
        "info": lambda: _info(path_of(args.store), args.episodes, args.last, args.size),
        "check": lambda: _check(path_of(args.store), quick=args.quick, workers=args.workers),
        "repair": lambda: _repair(path_of(args.store)),
        "show": lambda: _show(path_of(args.store), args.episode, args.out),
        "view": lambda: _view(path_of(args.store), args.episode, args.save),
        "delete": lambda: _delete(path_of(args.store), args.episode, args.yes),
        "merge": lambda: _merge([path_of(s) for s in args.stores], path_of(args.out), args.allow_mixed_calibration,
                                args.allow_repeated_scenes),
        "export": lambda: _export(path_of(args.store), args.dest, args.repo_id),
        "import": lambda: _import(args.source, path_of(args.out), args.repo_id, cfg.store),
    }[args.action]
    return handler()


def refuse_unread_overrides(action: str, overrides: Sequence[str]) -> None:
    """ConfigError (one line) for a `key=value` the dataset action does not read: every
    action reads data_root, `import` also the store.* settings of the store it makes. `merge
    ... store.image_codec=blosc-zstd` had exited 0 with a JPEG store: merge, like delete,
    keeps its sources' frames and settings as they are."""
    read = ("data_root", "store.") if action == "import" else ("data_root",)
    for override in overrides:
        key = override.partition("=")[0].lstrip("+~")
        if not key.startswith(read):
            keeps = (" (it copies the frames, and the first store's store.* settings, as they are)"
                     if action == "merge" and key.startswith("store.") else "")
            raise ConfigError(f"dataset {action} does not read {key}{keeps}; drop {override}")


def _console():
    from rich.console import Console

    # Piped output (scripts, grep) gets full rows instead of rich's 80-column wrap.
    return Console(width=None if is_terminal(sys.stdout) else 200)


# Seconds between the plain progress lines of a terminal rich cannot draw on live (TERM=dumb).
PLAIN_EVERY_S = 10.0


@contextmanager
def _progress(description: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar with ETA on stderr; yields a `(done, total)` callback. On a terminal
    rich cannot redraw (TERM=dumb: it would show nothing until the end, a long check looking
    hung) a plain line every PLAIN_EVERY_S seconds instead; nothing without a terminal
    (scripts and logs read stdout's results and stderr's problems)."""
    if not is_interactive(sys.stderr):
        if not is_terminal(sys.stderr):
            yield lambda done, total: None
            return
        from shallowpi.train.progress import PlainLines

        lines = PlainLines(description, None, 0, PLAIN_EVERY_S, sys.stderr)
        yield lambda done, total: lines.update(done, total=total)
        lines.close()  # not on an error: its message, not a last count, is what is left
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=False, console=Console(file=sys.stderr)) as bar:
        task = bar.add_task(description, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _list(root: Path, size: bool = False) -> int:
    """The table of the stores under `root`; `size`: with each one's size on disk
    (`EpisodeStore.nbytes_on_disk`, which looks at every file)."""
    from rich.table import Table

    from shallowpi.data.store_swap import iter_stores

    stores = list(iter_stores(root))
    if not stores:
        print(f"no datasets under {root}; record one with `platform record --dataset NAME`")
        return 0
    table = Table(title=f"datasets in {root}")
    columns = ("name", "episodes", "frames", "duration", "success", "tasks") + (("on disk",) if size else ())
    for column in columns:
        table.add_column(column, justify="right" if column in ("episodes", "frames", "on disk") else "left")
    for path in stores:
        try:
            store, episodes = _read_episodes(path)
        except PlatformError as exc:  # one that does not read is this store's row only
            table.add_row(path.stem, "-", "-", "-", "-", f"[red]{exc}[/red]", *(["-"] if size else []))
            continue
        marked = [e.success for e in episodes if e.success is not None]
        table.add_row(
            path.stem, str(len(store)), str(store.num_frames),
            f"{sum(e.duration_s for e in episodes) / 60:.1f} min",
            f"{sum(marked)}/{len(marked)}" if marked else "-",
            "; ".join(sorted({e.task for e in episodes}))[:60],
            # Opt-in: it looks at every file (each camera frame is one), minutes for millions.
            *([_size(store.nbytes_on_disk())] if size else []),
        )
    console = _console()
    console.print(table)
    if not size:
        console.print("each store's size on disk: --size (it looks at every file)", highlight=False)
    return 0


def _read_episodes(path: Path) -> tuple[EpisodeStore, list[EpisodeInfo]]:
    """The store at `path`, open for reading, and every episode's metadata. A store edited
    while it was read (a recorder's d or r, a delete) is read again, OPEN_TRIES times in
    all: it is sound, only read across the edit. StoreError for one that does not read."""
    from shallowpi.data.store import OPEN_TRIES, EpisodeStore

    for _ in range(OPEN_TRIES - 1):
        store = EpisodeStore.open(path)
        with contextlib.suppress(StoreEditedError):
            return store, store.episodes
    store = EpisodeStore.open(path)
    return store, store.episodes


def _info(path: Path, span: tuple[int, int | None] | None = None, last: int | None = None,
          size: bool = False) -> int:
    """The store's header, features and episode table: the rows of episodes `span` (first,
    last or None: to the end), or of the `last` N, or by default every episode of a store
    of up to INFO_ALL_UP_TO, else the last INFO_LAST and a line naming the flag for the
    rest. `size`: the header says the store's size on disk too (`nbytes_on_disk` looks at
    every file). PlatformError for a span that starts past the last episode."""
    from rich.table import Table

    from shallowpi.data.row_ranges import describe_ranges
    from shallowpi.data.store import EpisodeStore

    store = EpisodeStore.open(path)
    shown = _shown_episodes(path.name, len(store), span, last)  # a span past the end: refused before anything
    console = _console()
    on_disk = f"{_size(store.nbytes_on_disk())} on disk, " if size else ""
    console.print(f"[bold]{path}[/bold]  {len(store)} episodes, {store.num_frames} frames, "
                  f"{on_disk}image codec {store.settings.image_codec} (quality {store.settings.image_quality})")
    if store.summary.allow_mixed_calibration:
        console.print("mixed calibration ids allowed (--allow-mixed-calibration): "
                      + ", ".join(store.summary.calibration_ids))
    features = Table(title="features")
    for column in ("key", "kind", "dtype", "shape", "names"):
        features.add_column(column)
    for key, feature in store.features.items():
        names = ", ".join(feature.names)
        features.add_row(key, feature.kind.value, feature.dtype, str(feature.shape),
                         names if len(names) < 70 else names[:67] + "...")
    console.print(features)
    episodes = Table(title="episodes")
    for column in ("#", "task", "robot", "frames", "fps", "duration", "success", "dropped", "stale",
                   "calibration", "NaN/inf"):
        episodes.add_column(column)
    unlooked = 0  # episodes whose NaN/inf rows were never looked for
    for index in shown:
        try:
            e = store.episode(index)
        except StoreEditedError:  # no damage, but every later row would read so: "open it again"
            raise
        except StoreError as exc:  # its row says so; the others are listed (`dataset check` names it too)
            from shallowpi.data.store_check import permission_denied

            what = "metadata file not readable by this user" if permission_denied(exc) else "metadata file does not read"
            episodes.add_row(str(index), f"[red]{what}[/red]", *["-"] * 9)
            continue
        mark = {True: "[green]yes[/green]", False: "[red]no[/red]", None: "-"}[e.success]
        if e.nonfinite is None:  # recorded before episodes noted them: not "none"
            unlooked += 1
            nonfinite = "[yellow]?[/yellow]"
        elif e.nonfinite:
            nonfinite = "[red]" + "; ".join(f"{key} rows {describe_ranges(rows)}"
                                            for key, rows in e.nonfinite.items()) + "[/red]"
        else:
            nonfinite = "-"
        # rows whose camera picture was over three periods old (the recorder counts them)
        stale = e.extra.get("stale_frames")
        episodes.add_row(str(e.index), e.task, e.robot, str(e.length), f"{e.fps:g}",
                         f"{e.duration_s:.1f} s", mark, "-" if e.dropped_frames is None else str(e.dropped_frames),
                         "-" if stale is None else f"[yellow]{stale}[/yellow]" if stale else "0",
                         e.calibration_id or "-", nonfinite)
    console.print(episodes)
    if (hidden := len(store) - len(shown)) > 0:
        console.print(f"episodes {shown.start}-{shown.stop - 1} shown, {hidden} of {len(store)} not: "
                      f"--episodes A-B shows others, --episodes 0- every one", highlight=False)
    if unlooked:
        console.print(f"NaN/inf ?: {unlooked} episode(s){' shown' if hidden > 0 else ''} recorded before episodes "
                      "noted their NaN/inf rows; `platform dataset check` looks for them")
    return 0


def _shown_episodes(name: str, count: int, span: tuple[int, int | None] | None, last: int | None) -> range:
    """The episodes of a store of `count` whose rows `dataset info` prints (see `_info`)."""
    if span is not None:
        first, end = span
        if first >= count:
            held = f"episodes 0-{count - 1}" if count else "no episodes"
            raise PlatformError(f"--episodes starts at episode {first}, and {name} holds {held}")
        return range(first, count if end is None else min(end + 1, count))
    if last is None:
        last = count if count <= INFO_ALL_UP_TO else INFO_LAST
    return range(max(0, count - last), count)


def _check(path: Path, quick: bool, workers: int | None) -> int:
    from shallowpi.data.store import EpisodeStore
    from shallowpi.data.store_check import check_store

    if workers is not None and workers < 1:
        raise PlatformError(f"--workers must be 1 or more, not {workers}")
    with EpisodeStore.open(path) as store, _progress(f"check {path.name}") as progress:
        report = check_store(store, decode_images=not quick, workers=workers, progress=progress)
    for note in report.notes:
        print(f"{path.name}: {note}")
    for warning in report.warnings:
        print(f"{path.name}: warning: {warning}", file=sys.stderr)
    for problem in report.problems:
        print(f"{path.name}: {problem}", file=sys.stderr)
    if report.problems:
        print(f"{path.name}: {len(report.problems)} problem(s) found", file=sys.stderr)
        return 1
    if report.decoded_rows is not None and report.decoded_rows < report.frames:  # --quick
        # Numbers are verified in every row, camera frames in two an episode: "N frames
        # verified" would claim the frames it never decoded.
        print(f"{path.name}: ok, {report.episodes} episodes, {report.frames} frames: numbers verified in all, "
              f"camera frames decoded in {report.decoded_rows} (each episode's first and last: --quick)")
    else:
        print(f"{path.name}: ok, {report.episodes} episodes, {report.frames} frames verified")
    return 0


def _repair(path: Path) -> int:
    from shallowpi.data.store_check import repair_store

    removed = repair_store(path)
    if removed.empty:
        print(f"{path.name}: nothing to repair, no uncommitted frames past the last episode")
    else:
        print(f"{path.name}: removed {removed.frames} uncommitted frames ({removed.partial_files} unfinished "
              f"chunk files) past the last episode; every committed episode is as it was")
    return 0


def _show(path: Path, episode: int, out: Path | None) -> int:
    from shallowpi.data.episode_plot import plot_episode
    from shallowpi.data.store import EpisodeStore

    store = EpisodeStore.open(path)
    info = store.episode(episode)
    name = f"{path.stem}_episode{info.index}.png"
    out = ready_output(out or Path(name), "--out", suffix=".png", example=name)
    print(plot_episode(store, info.index, out, units=joint_units(store, info.robot)))
    return 0


def _view(path: Path, episode: int, save: Path | None) -> int:
    from shallowpi.data.episode_rerun import view_episode
    from shallowpi.data.store import EpisodeStore

    store = EpisodeStore.open(path)
    info = store.episode(episode)
    save = ready_output(save, "--save", suffix=".rrd", example=f"{path.stem}_episode{info.index}.rrd")
    logged = view_episode(store, info.index, save, units=joint_units(store, info.robot))
    cameras = sum(p.startswith("cameras/") for p in logged)
    joints = len({p.split("/")[1] for p in logged if p.startswith("joints/")})
    where = f"wrote {save} (open it with `rerun {save}`)" if save else "sent to the Rerun viewer"
    print(f"episode {info.index} of {path.name}: {info.length} frames, {cameras} camera(s), {joints} joint(s); {where}")
    return 0


def joint_units(store: EpisodeStore, robot: str) -> dict[str, str]:
    """Joint name -> unit (rad, m, gripper opening 0-1): from the joint kinds the store
    recorded, else from the robot's config in this checkout; empty when neither says (an
    imported dataset): plots then say "joint units"."""
    from shallowpi.data.episode_plot import UNIT_OF_KIND
    from shallowpi.data.features import STATE_KEY
    from shallowpi.robots.spec import RobotSpec

    state = store.features.get(STATE_KEY)  # an imported dataset may have none
    if state is None:
        return {}
    if state.kinds:
        return {name: UNIT_OF_KIND[kind] for name, kind in zip(state.names, state.kinds)}
    if not robot:
        return {}
    try:
        spec = RobotSpec.from_config(config.compose([f"robot={robot}"]).robot)
    except PlatformError:  # not a robot of this checkout: no units, the plot says so
        return {}
    return {j.name: UNIT_OF_KIND.get(j.kind, "joint units") for j in spec.joints}


def _delete(path: Path, episodes: list[int], yes: bool) -> int:
    from shallowpi.data.store import EpisodeStore
    if not yes and not is_terminal(sys.stdin):
        raise PlatformError("deleting episodes needs confirmation; pass --yes")
    # Asked on a reader: a writer's open cuts a killed recording's tail and moves an old
    # layout, which an answer of no must not have done.
    with EpisodeStore.open(path) as reader:
        # By index alone: an episode whose metadata is unreadable must still be deletable.
        doomed = sorted({reader.resolve_index(i) for i in episodes})
        asked = reader.identity
        if not yes:
            print(f"{path.name}: delete {len(doomed)} of its {len(reader)} episodes, the others numbered anew:")
            for index in doomed:
                print(f"  {_episode_line(reader, index)}")
            from shallowpi.commands.console import discard_typed_ahead

            discard_typed_ahead()
            try:
                answer = input("delete them? [y/N] ")
            except EOFError:  # Ctrl-D: a no
                answer = ""
                print()
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing deleted")
                return 1
    with EpisodeStore.open(path, mode="a", salvage=True) as store:  # arrays cut short too: require_intact judges
        if store.identity != asked:  # renumbered meanwhile: the indices confirmed name other episodes
            raise StoreError(f"{path.name} was edited while the delete waited for its answer; nothing deleted: "
                             "run it again")
        left = len(store) - len(doomed)
        # Said the moment the copy takes the store's name: an interruption after it (the old
        # copy's removal) must not read as a delete that did not happen.
        store.delete_episodes(doomed, swapped=lambda: print(f"{path.name}: deleted {len(doomed)} episode(s), "
                                                            f"{left} left", flush=True))
    return 0


def _episode_line(store: EpisodeStore, index: int) -> str:
    """'episode 3: "put the red cube in the bowl", 214 frames, recorded 2026-12-06 07:12, failed'.
    StoreEditedError when the store was edited since `store` opened: the episode asked
    about is then another one."""
    import time

    try:
        info = store.episode(index)
    except StoreEditedError:  # not damage: the delete must not be confirmed on this list
        raise
    except StoreError as exc:
        from shallowpi.data.store_check import UNREADABLE, permission_denied

        return f"episode {index}: its metadata file {'is ' + UNREADABLE if permission_denied(exc) else 'does not read'}"
    start, stop = store.episode_range(index)
    outcome = {True: ", succeeded", False: ", failed", None: ""}[info.success]
    when = ""
    if info.start_time:  # 0.0: not known (an import)
        # An import made before imports stored 0.0 holds the time of the import itself.
        verb = "imported" if info.imported else "recorded"
        when = f", {verb} {time.strftime('%Y-%m-%d %H:%M', time.localtime(info.start_time))}"
    return f'episode {index}: "{info.task}", {stop - start} frames{when}{outcome}'



def _merge(paths: list[Path], out: Path, allow_mixed_calibration: bool = False,
           allow_repeated_scenes: bool = False) -> int:
    from shallowpi.data.store import EpisodeStore

    if len(paths) < 2:
        raise PlatformError("merge needs two or more stores")
    sources = [EpisodeStore.open(p) for p in paths]
    merged = EpisodeStore.merge(sources, out, allow_mixed_calibration=allow_mixed_calibration,
                                allow_repeated_scenes=allow_repeated_scenes)
    print(f"{out}: {len(merged)} episodes, {merged.num_frames} frames")
    merged.close()
    return 0


def _export(path: Path, dest: Path, repo_id: str | None) -> int:
    from shallowpi.data.lerobot_export import export_lerobot

    with _progress(f"export {path.name}") as progress:
        out = export_lerobot(path, dest, repo_id=repo_id, progress=progress)
    print(out)
    return 0


def _import(source: Path, out: Path, repo_id: str | None, store_cfg: Any) -> int:
    from shallowpi.data.lerobot_import import import_lerobot
    from shallowpi.record.settings import store_settings

    # The store.* settings, read as record and deploy --record read them (they were accepted
    # here and not applied: frames lerobot decoded from video were always JPEG'd again at quality 90).
    settings = store_settings(store_cfg)
    with _progress(f"import {source.name}") as progress:
        store_path = import_lerobot(source, out, repo_id=repo_id, progress=progress, settings=settings)
    print(store_path)
    return 0


def _size(nbytes: int) -> str:
    size = float(nbytes)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"
