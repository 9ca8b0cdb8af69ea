"""What the recorder publishes every tick, and the commands a dashboard may send back.

Plain dataclasses that travel as JSON (inside envelope.py's typed envelope), so a monitor
needs nothing but this module to read them. `CameraStatus`, `LoopStatus` and `Thumbnail`
are shared by every status kind with a control loop and cameras (recorder, executor).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, TypeVar


class RecorderState(str, enum.Enum):
    """The recorder's phase, as the dashboard shows it; travels as its string value."""

    IDLE = "idle"  # connected, waiting for the operator to start
    RECORDING = "recording"
    RESETTING = "resetting"  # between episodes: the scene is being reset, nothing recorded
    PAUSED = "paused"
    SAVING = "saving"  # the writer is still flushing; the next episode may already start
    FAULT = "fault"  # a servo or camera failed: robot held or torque off, see `message`
    # Every episode saved, on a robot: teleoperation goes on, nothing recorded, until the
    # operator ends the session (q, Ctrl-C) with the follower at rest.
    DONE = "done"
    STOPPED = "stopped"


class Command(str, enum.Enum):
    """Keys on the dashboard map to these; the recorder acts on them at the next tick."""

    START = "start"  # start recording (from idle/paused)
    STOP = "stop"  # end the episode now and keep it
    NEXT = "next"  # skip the rest of the reset period
    RERECORD = "rerecord"  # discard the episode in flight and record it again
    DISCARD = "discard"  # discard the episode in flight
    SUCCESS = "success"  # mark the current (or last) episode successful
    FAILURE = "failure"  # mark it failed
    PAUSE = "pause"
    QUIT = "quit"  # stop after saving (the dashboard asks for confirmation first)
    ESTOP = "estop"  # torque off now
    # Jog the joints no teleoperator drives (a humanoid's head and lift): pick one, step it.
    JOG_NEXT = "jog_next"
    JOG_UP = "jog_up"
    JOG_DOWN = "jog_down"


@dataclass(frozen=True)
class Request:
    """A command as a dashboard sent it: with `seen`, the state (its value) the operator's
    screen showed when the key was pressed, and `episode`, the episode it showed, or None
    where that is not known (a script).

    A key means different things in different states (d discards the take while
    recording, deletes the episode just saved while resetting), and a screen is a tenth
    of a second behind: the recorder refuses a request whose key would now do something
    other than what the screen said (`telemetry.keys.overtaken`), so that d pressed twice
    discards the take and does not then delete the episode before it.
    """

    command: Command
    seen: str | None = None
    episode: int | None = None  # the episode (store index) the screen showed, where known

    @classmethod
    def of(cls, item: Command | str | Request) -> Request:
        """`item` as a Request (a bare command: seen not known). Raises ValueError for an
        unknown command."""
        return item if isinstance(item, Request) else cls(Command(item))


@dataclass
class CameraStatus:
    """One camera's health as the recording loop sees it (per camera role)."""

    fps: float = 0.0  # measured frame rate
    # frames lost by the camera (sequence-number gaps) in the take in flight; between takes,
    # in the last one (what was stored with it); 0 before the first
    dropped: int = 0
    age_ms: float = 0.0  # age of the frame used at the last tick


@dataclass
class LoopStatus:
    """Control-loop timing: the measured tick period's median and 99th percentile, ms, over
    the last 600 ticks (what is stored with a take is over every tick of it); and the servo
    link's health this episode."""

    target_hz: float = 30.0
    period_p50_ms: float = 0.0
    period_p99_ms: float = 0.0
    overruns: int = 0  # ticks that took longer than the period, this episode
    # True in simulation: a tick is one period of simulated time, however long it takes on
    # the wall clock, so the measured period is the rendering speed, and nothing overruns.
    simulated: bool = False
    # The loop's exchanges with the servos this episode, the tries among them that got no
    # valid reply and were retried (robots/base.LinkCounts), and the joint whose servo was
    # silent most often: 0 and "" without a servo bus (the direct twin).
    link_exchanges: int = 0
    link_failed_tries: int = 0
    link_worst: str = ""
    link_worst_failed: int = 0


@dataclass
class WriterStatus:
    """The background episode writer's queue, in frames, and its throughput (MB/s)."""

    queue_depth: int = 0  # frames waiting to be encoded/written
    queue_capacity: int = 0
    high_water: int = 0
    mb_per_s: float = 0.0  # frame data handed to the store over the last 5 s (writer.RATE_WINDOW_S), uncompressed
    backpressure_ms: float = 0.0  # total time the loop waited on a full queue, this episode
    pending_episodes: int = 0  # episodes handed to the writer, not yet committed

    @property
    def queue_text(self) -> str:
        """'depth/capacity' as the lines and dashboards show it: a capacity in the millions
        (record.queue_mb of frames without cameras) in thousands or millions, '9.1M'."""
        cap = self.queue_capacity
        shown = str(cap) if cap < 100_000 else f"{cap / 1e3:.0f}k" if cap < 1_000_000 else f"{cap / 1e6:.1f}M"
        return f"{self.queue_depth}/{shown}"


@dataclass
class EpisodeSummary:
    """One episode in the dashboard's list; `index` is its number in the store."""

    index: int  # in the store
    frames: int  # so far, while it records
    duration_s: float
    success: bool | None = None
    # recording | saving | saved | discarded (a take) | deleted (d / r after saving) | lost (the writer failed)
    state: str = "saved"


@dataclass
class Thumbnail:
    """A small RGB frame for half-block rendering: `rgb` is height*width*3 bytes, hex."""

    height: int
    width: int
    rgb: str


# Episode summaries a recorder status carries: the dashboard lists the newest dozen.
EPISODES_KEPT = 100


@dataclass
class RecorderStatus:
    """What `platform record` publishes every tick (telemetry kind "recorder")."""

    kind: ClassVar[str] = "recorder"

    state: RecorderState = RecorderState.IDLE
    robot: str = ""
    dataset: str = ""
    task: str = ""
    # Episodes are numbered by their index in the store, everywhere: `episode` is the take
    # in flight (or the next one), `first_episode` the first this run records, so this run
    # is at take episode - first_episode + 1 of episodes_total.
    episode: int = 0
    first_episode: int = 0
    episodes_total: int = 0  # episodes this run records
    episode_time_s: float = 0.0
    episode_time_limit_s: float = 0.0
    reset_time_left_s: float = 0.0
    joint_names: list[str] = field(default_factory=list)
    # Joint limits from the robot config, per joint: the dashboard scales its bars to them
    # (empty: bars span -pi..pi).
    joint_lower: list[float] = field(default_factory=list)
    joint_upper: list[float] = field(default_factory=list)
    leader: list[float] = field(default_factory=list)  # teleoperator command, per joint
    follower: list[float] = field(default_factory=list)  # follower state, per joint
    # The joints no leader drives, which the ], + and - keys jog between takes (teleop/jog.py);
    # empty where the teleoperator drives every joint, and the dashboard leaves those keys out.
    jog_joints: list[str] = field(default_factory=list)
    cameras: dict[str, CameraStatus] = field(default_factory=dict)
    loop: LoopStatus = field(default_factory=LoopStatus)
    writer: WriterStatus = field(default_factory=WriterStatus)
    # The newest EPISODES_KEPT episodes of the run (a session may record thousands, and the
    # status is copied and published every tick); the ones dropped off the front are counted.
    episodes: list[EpisodeSummary] = field(default_factory=list)
    episodes_earlier: int = 0  # episodes of this run no longer in `episodes`
    episodes_saved: int = 0  # episodes of this run in the store (committed, not deleted)
    thumbnails: dict[str, Thumbnail] = field(default_factory=dict)
    message: str = ""  # last event or fault, for the operator
    control_allowed: bool = True  # False for a read-only monitor
    age_s: float = 0.0  # set on receipt: seconds from its publishing to its sending

    def snapshot(self) -> RecorderStatus:
        """A copy another thread may read while the loop keeps updating this one.

        The loop may update one status in place every tick; the publisher's sender thread
        and an in-process dashboard read what was published later, on their own threads.
        Every list and dict is copied, so none changes size while another thread iterates
        it; the records inside (cameras, episodes, thumbnails) are shared: a field the loop
        assigns later is read whole, old or new. A few µs: cheap enough for every tick.
        """
        clone = object.__new__(RecorderStatus)
        clone.__dict__.update(self.__dict__)
        clone.joint_names = list(self.joint_names)
        clone.joint_lower = list(self.joint_lower)
        clone.joint_upper = list(self.joint_upper)
        clone.leader = list(self.leader)
        clone.follower = list(self.follower)
        clone.jog_joints = list(self.jog_joints)
        clone.cameras = dict(self.cameras)
        clone.episodes = list(self.episodes)
        clone.thumbnails = dict(self.thumbnails)
        return clone

    def to_json(self) -> dict[str, Any]:
        """Nested dataclasses as dicts and `state` as its value: what `from_json` reads."""
        return status_to_json(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RecorderStatus:
        """Tolerant of other versions: unknown keys are ignored, missing ones take defaults."""
        return status_from_json(cls, data, {
            "cameras": dict_of(CameraStatus),
            "loop": record_of(LoopStatus),
            "writer": record_of(WriterStatus),
            "episodes": list_of(EpisodeSummary),
            "thumbnails": dict_of(Thumbnail),
        })


# ------------------------------------------------- JSON for every status kind (recorder, executor)

StatusT = TypeVar("StatusT")
Reader = Callable[[Any], Any]


def status_to_json(status: Any) -> dict[str, Any]:
    """A status dataclass as plain JSON types: nested dataclasses as dicts, its `state`
    enum as the enum's value."""
    data = asdict(status)
    data["state"] = status.state.value
    return data


def status_from_json(cls: type[StatusT], data: dict[str, Any], nested: dict[str, Reader]) -> StatusT:
    """`cls` back from `status_to_json`'s dict, tolerant of other versions: unknown keys
    are ignored, missing ones take the field's default, and a `state` this version does
    not know is the default state. `nested` names the fields that hold records, each with
    how to read it (record_of, dict_of, list_of); the other fields are taken as they are."""
    by_name = {f.name: f for f in fields(cls)}
    default_state = by_name["state"].default
    try:
        state = type(default_state)(data.get("state", default_state.value))
    except ValueError:
        state = default_state
    values = {k: data[k] for k in by_name.keys() - {"state", *nested} if k in data}
    values.update({k: read(data[k]) for k, read in nested.items() if k in data})
    return cls(state=state, **values)


def record_of(cls: type) -> Reader:
    """Reads one record of `cls` (its fields this version knows)."""
    return lambda data: _known(cls, data)


def dict_of(cls: type) -> Reader:
    """Reads a dict of `cls` records, keyed by name (a camera role, for instance)."""
    return lambda data: {k: _known(cls, v) for k, v in data.items()}


def list_of(cls: type) -> Reader:
    """Reads a list of `cls` records."""
    return lambda data: [_known(cls, v) for v in data]


def _known(cls: type, data: dict[str, Any]) -> Any:
    """`cls(**data)` keeping only the fields `cls` has (a newer publisher may send more)."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})
