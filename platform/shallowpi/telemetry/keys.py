"""What each dashboard key does in each recorder state: the one table.

The recorder acts on a command only where this table gives it an effect and answers
"<key> ignored while <state>" everywhere else; the dashboard shows the same answer at
once, `record --help` and the README print the table. Episodes are numbered as the store
numbers them, so "the episode just saved" is the one `platform dataset show --episode N`
shows.

    state       what runs                              leaves by
    idle        nothing (a session not autostarted)    space / n
    recording   a take: frames go to the store         its time, space, p, d, r
    resetting   the reset countdown, nothing recorded  its end, space / n, r
    paused      nothing: the countdown is held         space / n, p, r
    done        teleoperation only: every episode is   q (torque off), d, r
                saved (on a robot), the follower       (s, f mark the last one)
                follows until the operator ends it

], + and - jog the joints no leader arm drives (a humanoid's head and lift) between takes:
] picks the next one, + and - step its goal by a fiftieth of its range. Not while recording:
a take's action labels would then move for a reason its observations do not show.
"""

from __future__ import annotations

from shallowpi.telemetry.status import Command, RecorderState, Request

IDLE, RECORDING, RESETTING, PAUSED, DONE = (RecorderState.IDLE, RecorderState.RECORDING, RecorderState.RESETTING,
                                            RecorderState.PAUSED, RecorderState.DONE)
STATES: tuple[RecorderState, ...] = (IDLE, RECORDING, RESETTING, PAUSED, DONE)

# The key on the dashboard for each command (space is start or stop, by state).
KEY: dict[Command, str] = {
    Command.START: "space", Command.STOP: "space", Command.NEXT: "n", Command.RERECORD: "r",
    Command.DISCARD: "d", Command.SUCCESS: "s", Command.FAILURE: "f", Command.PAUSE: "p",
    Command.QUIT: "q", Command.ESTOP: "e", Command.JOG_NEXT: "]", Command.JOG_UP: "+", Command.JOG_DOWN: "-",
}

_JUST_SAVED = "the episode this run saved last"
_BETWEEN_TAKES = (IDLE, RESETTING, PAUSED, DONE)

EFFECTS: dict[Command, dict[RecorderState, str]] = {
    Command.START: {
        IDLE: "record the next episode now",
        RESETTING: "end the reset, record the next episode now",
        PAUSED: "record the next episode now",
    },
    Command.STOP: {RECORDING: "end the take and save it; the reset follows"},
    Command.NEXT: {
        IDLE: "record the next episode now",
        RESETTING: "skip the rest of the reset, record the next episode now",
        PAUSED: "record the next episode now",
    },
    Command.RERECORD: {
        RECORDING: "discard the take, record the same episode again now",
        RESETTING: f"delete {_JUST_SAVED} from the store, record it again now",
        PAUSED: f"delete {_JUST_SAVED} from the store, record it again now",
        DONE: f"delete {_JUST_SAVED} from the store, record it again now",
    },
    Command.DISCARD: {
        RECORDING: "discard the take; after the reset the same episode is recorded again",
        RESETTING: f"delete {_JUST_SAVED} from the store; the reset goes on",
        PAUSED: f"delete {_JUST_SAVED} from the store; still paused",
        DONE: f"delete {_JUST_SAVED} from the store; a reset, then it is recorded again",
    },
    Command.SUCCESS: {
        RECORDING: "mark the take successful (stored with it)",
        RESETTING: f"mark {_JUST_SAVED} successful in the store",
        PAUSED: f"mark {_JUST_SAVED} successful in the store",
        DONE: f"mark {_JUST_SAVED} successful in the store",
    },
    Command.FAILURE: {
        RECORDING: "mark the take failed (stored with it)",
        RESETTING: f"mark {_JUST_SAVED} failed in the store",
        PAUSED: f"mark {_JUST_SAVED} failed in the store",
        DONE: f"mark {_JUST_SAVED} failed in the store",
    },
    Command.PAUSE: {
        RECORDING: "end the take and save it, then hold: no countdown until space or p",
        RESETTING: "hold the reset countdown where it is",
        PAUSED: "resume the reset countdown where it was held",
    },
    Command.QUIT: {**{state: "stop: the take in flight is saved (record.on_interrupt), the store closed"
                      for state in STATES},
                   DONE: "end the session: torque off, the store closed"},
    Command.ESTOP: {state: "torque off now, the take discarded; the recorder ends with an error"
                    for state in STATES},
    Command.JOG_NEXT: {state: "pick the next joint no leader drives (a humanoid's head, lift) to jog"
                       for state in _BETWEEN_TAKES},
    Command.JOG_UP: {state: "step the picked joint's goal up by a fiftieth of its range" for state in _BETWEEN_TAKES},
    Command.JOG_DOWN: {state: "step the picked joint's goal down by a fiftieth of its range"
                       for state in _BETWEEN_TAKES},
}
JOG = (Command.JOG_NEXT, Command.JOG_UP, Command.JOG_DOWN)
# Keys that act alike in every state, whatever the screen showed.
EVERY_STATE = (Command.QUIT, Command.ESTOP)


def effect(command: Command, state: RecorderState) -> str | None:
    """What `command` does in `state`, or None where it has no meaning there."""
    return EFFECTS[command].get(state)


def ignored(command: Command, state: RecorderState) -> str:
    """The answer to a key with no meaning in `state`, naming the keys that do act."""
    acting = sorted({KEY[c] for c, by_state in EFFECTS.items()
                     if state in by_state and c not in (*EVERY_STATE, *JOG)})  # the episode keys
    hint = f" (here: {', '.join(acting)})" if acting else ""
    return f"{KEY[command]} ({command.value}) ignored while {state.value}{hint}"


STATE_VALUES = frozenset(s.value for s in RecorderState)
# Keys that act on one episode (the take in flight, or the episode saved last).
ON_AN_EPISODE = (Command.SUCCESS, Command.FAILURE, Command.DISCARD, Command.RERECORD)
# Keys that end the take in flight (space saves it, p saves it and holds): pressed on the
# screen of a take that had ended meanwhile, they would cut the next one short.
ON_A_TAKE = (Command.STOP, Command.PAUSE)
# How a take ended (`extra.ended`), as the answer to a key meant for it says it.
_ENDED = {"time limit": " at its time limit", "expert done": " when the expert was done"}


def overtaken(request: Request, state: RecorderState, episode: int | None = None,
              ended: str | None = None) -> str | None:
    """Why `request` must not act in `state` at `episode` (the one the recorder's status
    shows now), or None where it may: its key was pressed on a screen showing another
    state, and means something else now; or it acts on an episode and was pressed on the
    screen of another (with no reset between takes the recorder can be on the next take in
    the same state, and s, f, d or r would land on it, space or p end it after a few rows
    and save those as an episode). `ended` is how the take that screen showed ended
    (`extra.ended`: "time limit", "stopped"...), where the recorder knows it. An E-STOP and
    a quit always act. The answer names what the key was for, and what it would do now."""
    command, seen = request.command, request.seen
    if command in EVERY_STATE:
        return None
    # A state this recorder does not know is nothing to compare against.
    shown = RecorderState(seen) if seen is not None and seen != state.value and seen in STATE_VALUES else None
    if shown is not None:
        meant = effect(command, shown) if shown in STATES else None
        now = effect(command, state)
        if meant != now and now is not None:  # else the same act, or none (which says "ignored" on its own)
            return (f"{KEY[command]} ignored: pressed while {shown.value} ({meant or 'no effect there'}), "
                    f"the recorder is {state.value} now, where it would {now}; press it again to do that")
    if None in (request.episode, episode) or request.episode == episode:
        return None
    if command in ON_AN_EPISODE:
        return (f"{KEY[command]} ignored: pressed on the screen of episode {request.episode}, the recorder is "
                f"at episode {episode} now; press it again to {effect(command, state)}")
    if command in ON_A_TAKE and state is RECORDING:  # between takes p holds or resumes the reset, whichever episode
        how = _ENDED.get(ended, f" ({ended})") if ended else ""
        return (f"{KEY[command]} ignored: take {request.episode}, on whose screen it was pressed, had already "
                f"ended{how}; nothing changed, the recorder is recording episode {episode} now; "
                f"press it again to {effect(command, state)}")
    return None


def table() -> str:
    """The key/state table as plain text, for `record --help` and the README: per key,
    what it does in each state it acts in; in any other state it is ignored, and says so."""
    order = [Command.START, Command.STOP, Command.NEXT, Command.RERECORD, Command.DISCARD,
             Command.SUCCESS, Command.FAILURE, Command.PAUSE, Command.QUIT, Command.ESTOP, *JOG]
    lines = []
    for command in order:
        lines.append(f"  {KEY[command]} ({command.value})")
        if command in EVERY_STATE:
            lines.append(f"      {'any':<10} {EFFECTS[command][IDLE]}")
            lines += [f"      {state.value:<10} {effect}" for state, effect in EFFECTS[command].items()
                      if effect != EFFECTS[command][IDLE]]
            continue
        if command in JOG:
            lines.append(f"      {', '.join(state.value for state in _BETWEEN_TAKES)}: {EFFECTS[command][IDLE]}")
            continue
        for state in STATES:
            if state in EFFECTS[command]:
                lines.append(f"      {state.value:<10} {EFFECTS[command][state]}")
    return "\n".join(lines)
