"""The `platform` command: one subcommand per job, each in shallowpi/commands/.

Every subcommand composes its settings from configs/ (Hydra compose API). Friendly flags
are sugar for overrides and any `key=value` argument passes through as a Hydra override:

    platform config show --robot humanoid          # == platform config show robot=humanoid
    platform dataset info kitchen                  # datasets/kitchen.zarr
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import errno
import functools
import importlib
import logging
import math
import os
import re
import signal
import stat
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from shallowpi import config
from shallowpi.durable_files import owner_and_mode
from shallowpi.errors import FILE_SYSTEM_ERRORS, PlatformError, written_path
from shallowpi.log_format import LogFormatter
from shallowpi.torchrun_env import torchrun_rank

# numpy's OpenBLAS runs every matrix product on a pool of one thread per core whose threads
# spin waiting for each other: beside a control loop, an inference thread or a training run
# on the same cores, the deploy preprocessing's 1-ms image resize took 100+ ms at the median
# (BENCHMARKS.md "Deployment"). The platform's numpy products are small; torch and ONNX
# Runtime keep their own pools. Set before any command imports numpy; a user's value wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# The one table of subcommands: name -> module. A module provides `add_arguments(parser)`
# and `run(args) -> int`, and imports its heavy dependencies inside `run`.
COMMANDS: dict[str, str] = {
    "config": "shallowpi.commands.config_cmd",
    "dataset": "shallowpi.commands.dataset_cmd",
    "record": "shallowpi.commands.record_cmd",
    "sim": "shallowpi.commands.sim_cmd",
    "emulate": "shallowpi.commands.emulate_cmd",
    "calibrate": "shallowpi.commands.calibrate_cmd",
    "doctor": "shallowpi.commands.doctor_cmd",
    "monitor": "shallowpi.commands.monitor_cmd",
    "train": "shallowpi.commands.train_cmd",
    "distill": "shallowpi.commands.distill_cmd",
    "eval": "shallowpi.commands.eval_cmd",
    "deploy": "shallowpi.commands.deploy_cmd",
    "demo": "shallowpi.commands.demo_cmd",
}

EPILOG = """\
examples:
  platform doctor                              what servos, cameras and GPUs this machine has
  platform record --robot humanoid --sim direct --task cube_in_bowl --dataset kitchen
                                               record 5 episodes in the simulated twin
  platform dataset list                        stores under the data root (datasets/)
  platform dataset show kitchen --episode 0    a PNG of one episode's frames and joints
  platform train --dataset kitchen --policy small    train the teacher on them
  platform distill --dataset kitchen --policy small  cut and train a 6-layer student
  platform demo --quick                        the whole loop on the simulated arm, in minutes
  platform config show --robot humanoid        the resolved config, as YAML

Any key=value argument is a Hydra override, e.g. `data_root=/mnt/ssd/datasets`.
"""


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line, with the valid choices."""

    def error(self, message: str) -> NoReturn:
        """Exit with code 2 and one line on stderr; an unrecognised option also lists the
        parser's valid `--` options."""
        if "unrecognized arguments" in message:
            options = sorted(
                {s for a in self._actions for s in a.option_strings if s.startswith("--")}
            )
            message = f"{message}; valid options: {', '.join(options) or 'none'}"
        self.exit(2, f"{self.prog}: error: {message} (try `{self.prog} --help`)\n")


def user_path(text: str) -> Path:
    """argparse type for a path: `~` expanded. The shell expands it only at a word's start,
    so `--policy=~/ckpt` arrives with its tilde and would name a folder called `~`."""
    return Path(text).expanduser()


def ready_output(path: Path | None, flag: str, *, folder: bool = False, suffix: str | None = None,
                 example: str | None = None) -> Path | None:
    """Make sure a result can be written to `path` before the work that makes it runs:
    `folder` True makes the folder (the episodes' videos), else the file's folder (a JSON
    report). A run of an hour ended in a traceback at its last line, the result lost, when
    --json named a folder or a path under a file. `suffix` (".png"): the format the writer
    writes whatever the name says, so a name without it is refused (matplotlib added
    ".png" to one, and the path printed was not the file written); `example`, a file name
    to suggest inside a folder given instead. A name in `path` longer than its file system
    takes (`name_over_limit`) is refused too, and a folder this user may not make files in
    (read-only, a colleague's, a full disk's: `_write_refused`). PlatformError in one line naming `flag`;
    None passes through (the flag not given)."""
    if path is None:
        return None
    path = Path(path)
    if (too_long := name_over_limit(path)) is not None:  # else is_dir() raised ENAMETOOLONG, a traceback
        raise PlatformError(f"{flag} {path}: {too_long[1]}; give a shorter one")
    if not folder and path.is_dir():
        what = f"the {suffix} file" if suffix else "the file"
        named = path / (example or (f"{path.name}{suffix}" if suffix else "report.json"))
        raise PlatformError(f"{flag} {path} is a folder; name {what} to write, e.g. {named}")
    if suffix and path.suffix.lower() != suffix:
        raise PlatformError(f"{flag} {path}: it writes a {suffix} file; name it so (e.g. {path.stem}{suffix})")
    where = path if folder else path.parent
    try:
        where.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise PlatformError(f"{flag} {path}: a file stands where a folder must be; choose another path") from None
    except OSError as exc:
        raise PlatformError(f"{flag} {path}: cannot make its folder ({exc.strerror})") from None
    # mkdir(exist_ok) passes an existing folder whatever its modes or mount: a deploy --json
    # into a read-only or a colleague's folder ran its whole episode, then lost the result.
    refused = _write_refused(where)
    if refused is not None:
        reason = FILE_SYSTEM_ERRORS.get(refused.errno or 0, refused.strerror)
        if refused.errno in (errno.EACCES, errno.EPERM):
            detail = f" ({'' if folder else 'its folder: '}{owner_and_mode(where)})"
        elif refused.errno in (errno.ENOSPC, errno.EDQUOT):  # the folder, and what is free there where measured
            measured = refused.strerror if refused.strerror != os.strerror(refused.errno) else None
            detail = f" ({where}{f': {measured}' if measured else ''})"
        else:
            detail = ""
        fix = ("free space there or " if refused.errno in (errno.ENOSPC, errno.EDQUOT)
               else "" if refused.errno in (errno.EFBIG, errno.EIO) else "make it writable or ")
        raise PlatformError(f"cannot write {path}: {reason}{detail}; {fix}give {flag} on another disk")
    return path


# Free bytes below which an output's folder is refused as full (`ready_output`): more than a
# report or a plot takes, where a disk that still takes the probe's byte ends the run's
# result half written (an hour of deploy episodes, the --json last).
OUTPUT_FREE_FLOOR = 1 << 20


def _write_refused(folder: Path) -> OSError | None:
    """The OSError that writing a file in `folder` meets (EROFS, EACCES, ENOSPC, EDQUOT...),
    None when one can be written there. Asked by making one under a unique hidden name,
    writing and syncing a byte, and removing it: os.access sees neither an NFS server's root
    squash nor an ACL's refusal, a folder's write bit says nothing of its mount, and an
    empty file takes no block (a full disk made one, then lost the result at the run's end;
    an NFS quota says so at the sync). Under OUTPUT_FREE_FLOOR free (statvfs, where the file
    system counts it) is ENOSPC too, its strerror saying what is free."""
    import tempfile

    try:
        fd, probe = tempfile.mkstemp(prefix=".shallowpi-probe-", dir=folder)
    except OSError as exc:
        return exc
    try:
        try:
            os.write(fd, b"\0")
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        return exc
    finally:
        with contextlib.suppress(OSError):
            os.unlink(probe)
    try:
        stat_ = os.statvfs(folder)
    except OSError:  # nothing to judge by: the byte was written
        return None
    free = stat_.f_bavail * stat_.f_frsize
    if stat_.f_blocks and free < OUTPUT_FREE_FLOOR:  # 0 blocks: a file system that does not count (network, overlay)
        return OSError(errno.ENOSPC, f"{free // 1024} KiB free, under the {OUTPUT_FREE_FLOOR >> 20} MiB an output needs",
                       str(folder))
    return None


def device_name(text: str) -> str:
    """argparse type for the device torch runs on (`train`, `distill`, `eval`): one this
    machine has, checked before a run folder is made or a policy loaded
    (`train.distributed.check_device`)."""
    if text in ("auto", "cpu"):
        return text  # torch is not imported to parse a default
    from shallowpi.train.distributed import check_device

    try:
        return check_device(text)
    except PlatformError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def at_least(minimum: float, kind: type = int, *, above: bool = False) -> Callable[[str], Any]:
    """argparse type: a `kind` (int or float) >= `minimum` (> with `above`), so a count, seed
    or duration of the wrong sign is one line at parse time. 0 must reach the range check:
    a flag's value is taken with `is None`, never `or` (which took `--episodes 0` for the
    default)."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {kind.__name__} value: {text!r}") from None
        if not math.isfinite(value):  # nan compares false with everything, inf passes >=
            raise argparse.ArgumentTypeError(f"{text} is not a finite number")
        if value < minimum or (above and value == minimum):
            raise argparse.ArgumentTypeError(f"{text} is not {'>' if above else '>='} {minimum:g}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its own messages
    return parse


def _robot_choices() -> str:
    """The robots configs/robot/ holds now (a lab's own among them), for --robot's help."""
    from shallowpi import config

    try:
        return ", ".join(config.group_choices("robot")) or "none yet"
    except PlatformError:  # no configs folder: the command's own error says so when it runs
        return "see `platform config groups`"


def add_config_flags(
    parser: argparse.ArgumentParser,
    *,
    robot: bool = False,
    dataset: bool = False,
    policy: bool = False,
    jetson: bool = False,
    data_root: bool = True,
) -> None:
    """The friendly flags a subcommand accepts; each maps onto one config override.
    `data_root=False` for commands that read or write no dataset: they do not offer it."""
    if robot:
        parser.add_argument("--robot", help=f"robot config (configs/robot/NAME.yaml): {_robot_choices()}")
    if dataset:
        parser.add_argument(
            "--dataset", help="dataset name (NAME.zarr under the data root) or a path, used as given "
            "(with .zarr added unless it ends in .zarr or names an existing folder)"
        )
    if policy:
        parser.add_argument("--policy", help="policy preset (configs/policy/): tiny, small (the default), "
                            "teacher (the twins' recipe), pi0 (full size, for a GPU)")
    if jetson:
        parser.add_argument("--jetson", help="target profile (configs/jetson/): orin (the default), thor, "
                            "or cpu / cuda for a workstation")
    if data_root:
        parser.add_argument("--data-root", help="folder holding the .zarr stores (default: $SHALLOWPI_DATA_ROOT, else datasets/)")


def overrides_from(args: argparse.Namespace) -> list[str]:
    """Friendly flags and pass-through `key=value` arguments as Hydra overrides.

    `--dataset` and `--data-root` are paths, which may hold anything a file name can
    (spaces, quotes, commas, `ü`, `台`, `${`): they go in quoted, so Hydra's override
    grammar reads them as one literal string.
    """
    from shallowpi.config import quote_override_value

    overrides = []
    for flag in ("robot", "policy", "jetson"):
        value = getattr(args, flag, None)
        if value:
            overrides.append(f"{flag}={value}")
    if getattr(args, "dataset", None):
        overrides.append(f"dataset={quote_override_value(args.dataset)}")
    if getattr(args, "data_root", None):
        overrides.append(f"data_root={quote_override_value(args.data_root)}")
    return overrides + list(getattr(args, "overrides", []))


def build_parser() -> Parser:
    """The top-level parser with one subparser per entry of COMMANDS; each sets `args.run`.

    Imports every command module (each keeps its heavy imports inside `run`).
    """
    parser = Parser(
        prog="platform",
        description="Shallow-π: record demonstrations, distill a shallow VLA, deploy it.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(
            name,
            help=module.HELP,
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(command)
        command.set_defaults(run=module.run)
        _accept_verbose(command)
    return parser


VERBOSE_HELP = "log debug messages, and print an error's traceback (the exceptions it wraps included)"


def _accept_verbose(parser: argparse.ArgumentParser) -> None:
    """-v/--verbose after the subcommand too (`platform deploy ... -v`), at every level of
    nested subcommands (`platform dataset check NAME -v`): only the top level took it, and a
    flag added at the end of a failed command line was refused as unrecognized. Its default
    is left unset (SUPPRESS): a subcommand's False would overwrite the top level's True."""
    if "--verbose" not in parser._option_string_actions:
        parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for nested in action.choices.values():
                _accept_verbose(nested)


def _split_overrides(extra: list[str]) -> tuple[list[str], list[str]]:
    overrides = [a for a in extra if "=" in a and not a.startswith("-")]
    unknown = [a for a in extra if a not in overrides]
    return overrides, unknown


def parse_command(words: Sequence[str], parser: Parser | None = None) -> argparse.Namespace:
    """`platform WORDS...` parsed: the subcommand's flags, `args.overrides` (its `key=value`
    words) and `args.run` (the subcommand's `run`). A bad command line exits (code 2) with
    one line, as argparse does. `platform demo` runs the other commands through this."""
    words = list(words)
    parser = parser or build_parser()
    args, extra = parser.parse_known_args(words)
    overrides, unknown = _split_overrides(extra)
    if unknown:
        # Report against the subcommand's own parser so the error lists its options.
        sub_parser = _subparser(parser, args.command, words)
        sub_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.overrides = overrides
    return args


def other_checkout(cwd: Path, package: Path) -> Path | None:
    """The checkout of this project that `cwd` is inside, when it is not the one whose
    `shallowpi` (the folder `package`) runs: the shared venv's editable install points at the
    clone that last ran tools/setup.sh, so `platform` run from another clone would run that
    clone's code, or fail once it is deleted. None inside the running checkout or outside
    any checkout."""
    for folder in (cwd, *cwd.parents):
        ours = folder / "platform" / "shallowpi"
        if (ours / "__init__.py").is_file() and (folder / "pyproject.toml").is_file():
            return None if ours.resolve() == package.resolve() else folder
    return None


def _print_traceback(exc: BaseException) -> None:
    """--verbose: `exc`'s traceback on stderr before its one line, with the exceptions it wraps
    (the one line of a StoreError "is damaged: ValueError: ..." keeps only their first line).
    A `raise ... from None` hid the one it replaced from the one line; -v is asked to show it."""
    import traceback

    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        link.__suppress_context__ = False
        link = link.__cause__ or link.__context__
    with contextlib.suppress(OSError):
        traceback.print_exception(exc, file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run `platform ARGV...` (default: sys.argv[1:]) and return the exit code.

    A PlatformError prints `error: ...` and returns its `exit_code`; an OSError the disk
    caused (see `file_system_error`) prints one line and returns 2; any other OSError is
    re-raised with its traceback. Ctrl-C returns 130. Under torchrun, a collective's error
    because another process stopped prints one line and returns 1 (`peer_stopped`), and
    ranks other than 0 log errors only (all, with -v).
    """
    _survive_any_encoding()
    try:
        os.getcwd()
    except FileNotFoundError:
        # A terminal left in a removed clone or worktree: every command (Hydra's compose asks
        # for it) ended in a FileNotFoundError traceback.
        print("error: the working folder no longer exists (it was deleted or replaced); cd to an existing "
              "folder and run the command again", file=sys.stderr)
        return PlatformError.exit_code
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["--"]:
        # `torchrun ... -m shallowpi -- train --run NAME`: the `--` keeps torchrun's own parser
        # from taking `--run` for an abbreviation of its `--run-path`; some Python versions'
        # argparse hand it on to the command line it launches.
        words = words[1:]
    parser = build_parser()
    args = parse_command(words, parser)
    # Our own messages at INFO; other libraries only when something is wrong (or -v).
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler:  # basicConfig's (not a test's capture)
            handler.setFormatter(LogFormatter())
    # Under torchrun every process runs the command: each of N repeated every line (and a
    # script reading one got N). Rank 0 says what they do; the others only what goes wrong.
    launch = torchrun_rank()
    others_quiet = launch is not None and launch[0] != 0
    logging.getLogger("shallowpi").setLevel(
        logging.DEBUG if args.verbose else logging.ERROR if others_quiet else logging.INFO)
    if not args.verbose:
        # zarr writes through asyncio: when one chunk write fails (a full disk) the others'
        # failures are "never retrieved" and asyncio logs each with a traceback, after the
        # one-line error that the first failure already became. Only those are dropped.
        logging.getLogger("asyncio").addFilter(
            lambda record: "exception was never retrieved" not in record.getMessage())
    package = Path(__file__).resolve().parent  # <checkout>/platform/shallowpi
    checkout = other_checkout(Path.cwd(), package)
    if checkout is not None:
        print(f"warning: this `platform` runs the code in {package.parents[1]}, not this "
              f"checkout's ({checkout}): run `bash tools/setup.sh env` here to use it", file=sys.stderr)
    # SIGTERM and SIGHUP as Ctrl-C for every command, from its first line: by default they
    # ended it at once with no line (a train before its first step, a deploy in its bundle's
    # export, an export whose encoder child ran on). Commands with their own take them over.
    # Not a recorder's attached dashboard (the recorder ends it so, on the terminal they
    # share, and restores the terminal itself: "interrupted" there is noise; a monitor run by
    # hand must leave its full screen as Ctrl-C does), nor a rank of several under torchrun
    # (one blocked in a collective runs no Python handler: the launcher's SIGTERM must end it,
    # not wait for its SIGKILL).
    attached = args.command == "monitor" and getattr(args, "attached", False)
    keep = attached or (launch is not None and launch[1] > 1)
    if args.command != "doctor" and (outside := config.outside_a_checkout()) is not None:  # doctor always answers
        print(f"error: {outside}", file=sys.stderr)
        return PlatformError.exit_code
    previous = {} if keep else _interrupt_on_signals()
    try:
        return int(args.run(args) or 0)
    except PlatformError as exc:
        if args.verbose:
            _print_traceback(exc)
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        if not _stdout_reader_gone():
            raise  # another pipe (a child's): a bug, keep the traceback
        # `platform doctor | head`: the reader has gone, which is not an error of ours. stdout
        # goes to /dev/null so that the flush at exit does not fail on the pipe again (the
        # Python docs' recipe, "Note on SIGPIPE"); 141 is a shell's status for SIGPIPE.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except ModuleNotFoundError as exc:
        extra = EXTRAS.get(exc.name or "")
        if extra is None:  # not an optional dependency, or a part missing from an installed one
            raise  # (JetPack's torch without torch.distributed): keep the traceback, which shows it
        if args.verbose:
            _print_traceback(exc)
        print(f"error: platform {args.command} needs the {extra} extra ({exc.name} is not installed): "
              f"pip install -e '.[{extra}]'", file=sys.stderr)
        return PlatformError.exit_code
    except OSError as exc:
        message = file_system_error(exc, args, _subparser(parser, args.command, words))
        if message is None:
            raise  # not the user's disk: a bug, keep the traceback
        if args.verbose:
            _print_traceback(exc)
        print(f"error: {message}", file=sys.stderr)
        return PlatformError.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        # An interrupt inside zarr's synchronous wrapper leaves the coroutines it had made
        # unawaited, and Python warns of each as it collects them, after the one line.
        warnings.filterwarnings("ignore", message=r"coroutine .* was never awaited", category=RuntimeWarning)
        return 130
    except RuntimeError as exc:
        message = peer_stopped(exc)
        if message is None:
            raise  # not a peer's end: a bug, keep the traceback
        if args.verbose:
            _print_traceback(exc)
        print(f"error: {message}", file=sys.stderr)
        return 1
    finally:
        for sig, handler in previous.items():  # the caller's again (main called in-process)
            signal.signal(sig, handler)


# Text the platform prints that an ASCII stream cannot take: 'π' in the help texts, the
# box drawing of tables, '…', 'ü' in a path.
_NON_ASCII_SAMPLE = "π│┃…ü"


def _survive_any_encoding() -> None:
    """Make stdout and stderr write what their encoding cannot encode as backslash escapes
    (`\\u03c0`), not raise: on an ASCII stream (LC_ALL=C without UTF-8 mode,
    PYTHONIOENCODING=ascii, a cron job's) `platform --help` was a UnicodeEncodeError
    traceback at its first 'π'. A file name's undecodable bytes (surrogateescape, as Python
    writes them under the C locale) are written as they were. A stream that takes the text,
    or cannot be reconfigured (a test's capture), is left as it is."""
    for stream in (sys.stdout, sys.stderr):
        encoding = getattr(stream, "encoding", None)
        if encoding is None or not hasattr(stream, "reconfigure"):
            continue
        try:
            _NON_ASCII_SAMPLE.encode(encoding)
        except (UnicodeEncodeError, LookupError):
            codecs.register_error(_ESCAPE_ERRORS, _escape_unencodable)
            stream.reconfigure(errors=_ESCAPE_ERRORS)


_ESCAPE_ERRORS = "shallowpi-escape"


def _escape_unencodable(exc: UnicodeError) -> tuple[str | bytes, int]:
    """The error handler of `_survive_any_encoding`: a file name's undecodable byte back as
    that byte (surrogateescape), any other character as its backslash escape."""
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    char = exc.object[exc.start]
    if "\udc80" <= char <= "\udcff":
        return bytes([ord(char) - 0xDC00]), exc.start + 1
    return codecs.backslashreplace_errors(UnicodeEncodeError(exc.encoding, exc.object, exc.start, exc.start + 1,
                                                             exc.reason))


def _interrupt_on_signals() -> dict[int, Any]:
    """console.interrupt_on_signals on the main thread (Python delivers signals only there;
    elsewhere, as a library call from a thread, nothing is installed); the handlers replaced."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    from shallowpi.commands.console import interrupt_on_signals

    return interrupt_on_signals()


# What a collective raises in a process whose peer has gone: gloo's "[.../gloo/transport/
# tcp/pair.cc:547] Connection closed by peer [127.0.0.1]:60312" (a RuntimeError), NCCL's
# "communicator was aborted" (a DistBackendError). Only these: a rendezvous that timed
# out, a peer that hung, an NCCL error on every rank are their own error, which no process
# printed "above", and keep their traceback.
_PEER_GONE = re.compile(r"connection (closed|reset) by peer|communicator was aborted", re.IGNORECASE)


def peer_stopped(exc: RuntimeError) -> str | None:
    """One line for the error a collective (a barrier, an all-reduce, FSDP's all-gather)
    raised in one of several torchrun processes because another stopped, whose own error
    that one has printed; each other rank added 45-65 lines of traceback under it. None
    outside a run of several processes, or for another error (`_PEER_GONE`)."""
    launch = torchrun_rank()
    if launch is None or launch[1] < 2:
        return None
    text = str(exc).strip()
    if not _PEER_GONE.search(text):
        return None
    # Its first line, without gloo's source location: what this process saw.
    seen = re.sub(r"^\[[^\]]*\]\s*", "", text.splitlines()[0]) if text else type(exc).__name__
    return f"rank {launch[0]}: another training process stopped (its error is above): {seen}"


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reading end was closed (poll says POLLERR)."""
    import select

    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poll.poll(0))
    except (OSError, ValueError):  # no stdout to ask
        return False


@functools.cache  # asked once for each override that names the section
def _train_settings() -> dict[str, object]:
    """TrainConfig's settings and their defaults (train/trainer.py; torch is imported only
    when an override names policy.train or distill.train)."""
    import dataclasses

    from shallowpi.train.trainer import TrainConfig

    return {f.name: f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
            for f in dataclasses.fields(TrainConfig)}


# demo.train as well: `demo.train.batch_size=16` had been refused with "did you mean
# policy.train.batch_size?", another setting (the demo's profile sets no train key).
config.OPTIONAL_SETTINGS.update({"policy.train": _train_settings, "distill.train": _train_settings,
                                 "demo.train": _train_settings})


# The optional dependencies a command may import, by module, and the pyproject extra that
# installs each: a core install (no torch) ended `platform train` in a ModuleNotFoundError
# traceback, where a missing MuJoCo or lerobot was one line.
EXTRAS = {"torch": "train", "safetensors": "train", "tensorboard": "train", "onnx": "export",
          "onnxruntime": "export", "onnxscript": "export", "mujoco": "sim", "cv2": "opencv",
          "pyrealsense2": "realsense", "lerobot": "lerobot", "rerun": "viz"}



def file_system_error(exc: OSError, args: argparse.Namespace,
                      parser: argparse.ArgumentParser | None = None) -> str | None:
    """One line for an OSError that the disk, not the code, caused (read-only, permission,
    full), naming the path and the argument that chose it; None for any other OSError.

    Every command creates files (stores, locks, runs, PNGs, exports) in many places; this
    one boundary turns all of their file-system refusals into the same message.
    """
    reason = FILE_SYSTEM_ERRORS.get(exc.errno or 0)
    raw = written_path(exc)  # the destination's: a full output disk read as the input store's
    if exc.errno == errno.ENAMETOOLONG:
        return _name_too_long(exc, args, parser)
    if reason is None and raw is not None and _file_in_the_way(exc, Path(os.fsdecode(raw))):
        path = os.fsdecode(raw)
        argument = _argument_choosing(Path(path), args, parser, inside=True)
        return (f"cannot write {path}: a file stands where a folder must be; move that file or "
                f"{f'give another {argument}' if argument else 'choose another location'}")
    if reason is None:
        return None
    if raw is None:  # zarr's writes, among others, raise without the file's name
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return f"{reason}: free space on the disk this command writes to, or write to another disk"
        if exc.errno == errno.EFBIG:
            return f"{reason}: write to another disk (ext4, exFAT)"
        if exc.errno == errno.EIO:  # a terminal closed under the run fails its prints so, naming nothing
            return None
        return f"{reason} ({exc.strerror}); choose a writable location"
    path = os.fsdecode(raw)
    if exc.errno == errno.EIO:  # a read's as often as a write's: no "cannot write", no output flag
        return f"I/O error on {path} (see dmesg): the device or its cable is failing; check it, or use another disk"
    if exc.errno in (errno.EACCES, errno.EPERM) and exc.filename2 is None and _unreadable(Path(path)):
        # A failed open or look of an existing file this user may not read (a colleague's
        # 0600 episode, chunk or config): said as "cannot write ... make it writable", a
        # `train` or `dataset info` that wrote nothing sent them to change the wrong thing.
        return f"cannot read {path}: {reason} ({owner_and_mode(Path(path))}); ask its owner"
    argument = _argument_choosing(Path(path), args, parser)
    where = f"give {argument} on another disk" if argument else "choose another location"
    fix = (f"free space there or {where}" if exc.errno in (errno.ENOSPC, errno.EDQUOT)
           else where if exc.errno in (errno.EFBIG, errno.EIO) else f"make it writable or {where}")
    return f"cannot write {path}: {reason}; {fix}"


def _unreadable(path: Path) -> bool:
    """Whether `path` exists and this user may not read it (a folder: list and enter it).
    A refusal naming it was then a read's, or an open for both (a lock's O_RDWR), which
    needs the read too: a write into a folder, or of a file this user may read, names a
    file that is yet to be made or is readable. Asked with the real ids, as `platform` runs."""
    try:
        st = path.lstat()
    except OSError:  # not there, or its folder may not be looked in: no read of it can tell
        return False
    wanted = os.R_OK | os.X_OK if stat.S_ISDIR(st.st_mode) else os.R_OK
    return not os.access(path, wanted)


def _name_too_long(exc: OSError, args: argparse.Namespace, parser: argparse.ArgumentParser | None) -> str:
    """One line for ENAMETOOLONG: the path, its name over the file system's limit and that
    limit in bytes (`name_max`), or the whole path's over PC_PATH_MAX, and the argument that
    chose it. A name of 240 letters was `OSError: [Errno 36] File name too long` with a
    traceback, from whichever call first touched it or a name made beside it."""
    from shallowpi.data.store_swap import name_bytes

    raw = written_path(exc)
    if raw is None:
        return "a file name is longer than this file system takes (ENAMETOOLONG); choose shorter names"
    path = Path(os.fsdecode(raw))
    if (too_long := name_over_limit(path)) is not None:
        # The argument whose own name is the long one (`--out`, or a name made from it): a
        # --data-root holding a dataset's long name is not what to shorten.
        argument = _argument_choosing(too_long[0], args, parser, own=True)
        return f"cannot use {path}: {too_long[1]}; {f'give a shorter {argument}' if argument else 'choose a shorter name'}"
    argument = _argument_choosing(path, args, parser)
    try:
        most = os.pathconf("/", "PC_PATH_MAX")  # the kernel's, the same on every file system
    except (OSError, ValueError):
        most = None
    return (f"cannot use {path}: the path is {name_bytes(str(path))} bytes, longer than this system takes "
            f"({f'at most {most}' if most else exc.strerror}); {f'give {argument}' if argument else 'choose'} a "
            "path in a shallower folder")


def name_over_limit(path: Path) -> tuple[Path, str] | None:
    """The outermost of `path` and its folders whose name is longer than the file system
    holding it takes (`name_max`, in bytes), and that, in words with both lengths; None when
    every name fits."""
    from shallowpi.data.store_swap import name_bytes, name_max

    for named in reversed([path, *path.parents]):
        if name_bytes(named.name) > (limit := name_max(named.parent)):
            return named, (f"the name {_shortened(named.name)} is {name_bytes(named.name)} bytes, and this file "
                           f"system takes at most {limit} in a name (UTF-8 counts bytes)")
    return None


def _shortened(name: str, keep: int = 24) -> str:
    """`name` for a message: whole when short, else its start and end around '...'."""
    return name if len(name) <= 2 * keep + 3 else f"{name[:keep]}...{name[-keep:]}"


def _file_in_the_way(exc: OSError, path: Path) -> bool:
    """Whether `exc` says a file stands where a folder was to be made or written into:
    ENOTDIR (a file among `path`'s parents), or EEXIST from making a folder where a file is."""
    if exc.errno == errno.ENOTDIR:
        return True
    return exc.errno == errno.EEXIST and path.exists() and not path.is_dir()


def _argument_choosing(path: Path, args: argparse.Namespace, parser: argparse.ArgumentParser | None,
                       inside: bool = False, own: bool = False) -> str | None:
    """How the user named the folder or file that holds `path` (`--data-root`, `DEST`, ...),
    the deepest one if several do; with `inside`, also one named inside `path` (a file in
    the way of `--out afile/m.zarr`); with `own`, only one naming `path` itself (or a
    staging sibling of it), not a folder above it; None if no argument did."""
    spelled = {}
    if parser is not None:
        for action in parser._actions:
            spelled[action.dest] = max(action.option_strings, key=len) if action.option_strings else (
                action.metavar if isinstance(action.metavar, str) else action.dest.upper())
    target = path.expanduser().absolute()
    best: tuple[int, str] | None = None
    for name, value in vars(args).items():
        if not isinstance(value, (str, Path)) or not str(value) or name in ("command", "action", "run"):
            continue
        chosen = Path(value).expanduser().absolute()
        # A staging or temporary sibling (`out.partial`, `x.png.tmp`) counts as the file.
        sibling = target.parent == chosen.parent and target.name.startswith(chosen.name)
        holds = target == chosen or sibling or (not own and chosen in target.parents) or (
            inside and target in chosen.parents)
        if holds and (best is None or len(chosen.parts) > best[0]):
            best = (len(chosen.parts), spelled.get(name, "--" + name.replace("_", "-")))
    return best[1] if best else None


def _subparser(
    parser: argparse.ArgumentParser, command: str, words: list[str]
) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = action.choices[command]
            # Nested subcommands (e.g. `dataset list`) report against the deepest parser.
            for nested in chosen._actions:
                if isinstance(nested, argparse._SubParsersAction):
                    for word in words:
                        if word in nested.choices:
                            return nested.choices[word]
            return chosen
    return parser
