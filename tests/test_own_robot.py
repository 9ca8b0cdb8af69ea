"""A robot of one's own, brought up from its config: what reading the config refuses before
any port opens (a multi-turn joint over a turn, an unquoted camera serial, a baud rate no
Dynamixel takes), and the joint kinds its episodes keep through a LeRobot export."""

from __future__ import annotations

import copy
import json
import os
import shutil

import numpy as np
import pytest
from omegaconf import OmegaConf

from dxl_fixtures import robot_spec
from shallowpi import config
from shallowpi.data import EpisodeStore
from shallowpi.data.features import robot_features
from shallowpi.data.store import StoreSettings
from shallowpi.errors import ConfigError, StoreError
from shallowpi.robots.spec import RobotSpec

# The robot a review brought up: an XM540/XM430 follower at 57,600 baud (IDs 11-14) whose
# first joint is a lift on a lead screw (5 mm a radian: 0.18 m is 5.7 turns of its servo,
# so it runs in extended position mode), an XL330 leader at 2 Mbaud and a gripper on a bus
# of its own.
OWN_ROBOT = """
name: bench
fps: 30
joints:
  - {name: lift, lower: 0.0, upper: 0.18, max_velocity: 0.015}
  - {name: shoulder, lower: -1.5, upper: 1.5, max_velocity: 2.0}
  - {name: elbow, lower: -2.0, upper: 2.0, max_velocity: 2.0}
  - {name: wrist, lower: -2.0, upper: 2.0, max_velocity: 3.0}
  - {name: gripper, lower: 0.0, upper: 1.0, max_velocity: 4.0}
cameras:
  front: {width: 640, height: 480, fps: 30, serial: "036522070660"}
buses:
  follower: {port: /dev/ttyUSB0, baud: 57600}
  hand: {port: /dev/ttyUSB1, baud: 57600}
  leader: {port: /dev/ttyUSB2, baud: 2000000}
motors:
  lift: {bus: follower, id: 11, model: XM540-W270, mode: extended_position, metres_per_rad: 0.005}
  shoulder: {bus: follower, id: 12, model: XM540-W270}
  elbow: {bus: follower, id: 13, model: XM540-W270}
  wrist: {bus: follower, id: 14, model: XM430-W350}
  gripper: {bus: hand, id: 1, model: XM430-W350, mode: current_based_position, max_current_a: 0.5}
leaders:
  leader:
    bus: leader
    motors:
      lift: {id: 1, model: XL330-M077, metres_per_rad: 0.05}
      shoulder: {id: 2, model: XL330-M077}
      elbow: {id: 3, model: XL330-M077}
      wrist: {id: 4, model: XL330-M077}
      gripper: {id: 5, model: XL330-M077}
"""


def _own_robot(text: str = OWN_ROBOT) -> dict:
    """The robot node as `RobotSpec.from_config` gets it: the YAML read as OmegaConf reads
    a config file (YAML 1.1: unquoted digits with a leading 0 are octal)."""
    return OmegaConf.to_container(OmegaConf.create(text), resolve=True)


def test_a_multi_turn_joint_over_a_turn_is_refused_unless_the_lab_homes_it():
    """A servo in extended position mode restarts its turn count at power-up: the lift,
    calibrated, moved to 0.15 m and brought back 4 turns low as after a power cycle, read
    0.024 m, inside its limits, and connect accepted it; the next goal drove it ~0.13 m into
    its top stop. Its config is refused before any port opens, unless it says the lab
    brings it up counting as at calibration."""
    with pytest.raises(ConfigError) as caught:
        RobotSpec.from_config(_own_robot())
    assert str(caught.value) == (
        "configs/robot/bench.yaml: motor for 'lift' turns 5.73 times across the joint's limits 0..0.18 m (one turn "
        "is 0.03142 m), and its turn count restarts at power-up, so connect cannot tell which turn it is on (a whole "
        "turn off reads inside the limits, and the first goal drives the joint into a stop): narrow the limits to "
        "one turn, or, if your lab brings the servo up on the turn it was calibrated on, say so with "
        "turns_homed_externally: true in its motor entry")
    assert "\n" not in str(caught.value)

    homed = _own_robot()
    homed["motors"]["lift"]["turns_homed_externally"] = True
    spec = RobotSpec.from_config(homed)
    lift = spec.motors[0]
    assert (lift.joint, lift.mode.name, lift.metres_per_rad, spec.joints[0].kind) == (
        "lift", "EXTENDED_POSITION", 0.005, "linear")

    # Within one turn (0.03 m of the 0.0314 a turn moves it) nothing needs saying.
    short = _own_robot()
    short["joints"][0]["upper"] = 0.03
    assert RobotSpec.from_config(short).joints[0].upper == 0.03

    # A revolute joint counts the same way (3.5 rad either side: 1.11 turns), and a leader
    # read in extended position mode: a leader a turn off drives its follower a turn off. A
    # Y servo keeps its count through power-off (its backup battery): no refusal.
    wide = _own_robot()
    wide["motors"]["lift"]["turns_homed_externally"] = True
    wide["joints"][1].update(lower=-3.5, upper=3.5)
    wide["motors"]["shoulder"]["mode"] = "extended_position"
    with pytest.raises(ConfigError, match=r"motor for 'shoulder' turns 1\.11 times across the joint's limits "
                                          r"-3\.5\.\.3\.5 rad \(one turn is 6\.283 rad\)"):
        RobotSpec.from_config(wide)
    wide["motors"]["shoulder"].update(model="YM080-230-R099-RH", mode="position")
    wide["joints"][1]["max_velocity"] = 2.5
    assert RobotSpec.from_config(wide).motors[1].model.series == "Y"
    leader = _own_robot()
    leader["motors"]["lift"]["turns_homed_externally"] = True
    leader["leaders"]["leader"]["motors"]["lift"].update(mode="extended_position", metres_per_rad=0.005)
    with pytest.raises(ConfigError, match=r"leader motor for 'lift' turns 5\.73 times"):
        RobotSpec.from_config(leader)

    # The key is a yes or no, and only where a turn count is kept.
    for value, says in (("sometimes", r"motor for 'lift' has turns_homed_externally 'sometimes'; give true or false"),
                        (True, r"motor for 'shoulder' has turns_homed_externally, but its servo reads within one "
                               r"turn in position mode and keeps no turn count to home; remove it")):
        slip = _own_robot()
        slip["motors"]["lift"]["turns_homed_externally"] = True
        slip["motors"]["lift" if value == "sometimes" else "shoulder"]["turns_homed_externally"] = value
        with pytest.raises(ConfigError, match=says):
            RobotSpec.from_config(slip)


@pytest.mark.parametrize("name", ["arm", "bimanual", "humanoid"])
def test_the_shipped_robots_still_load(name):
    """Their linear joints (0.4 m at 0.15 m a radian: 0.42 of a turn) and Y-series arms
    (6.2 rad: 0.99 of a turn) stay within a turn; their cameras name no serial, their
    buses run at 1 and 4 Mbaud."""
    spec = robot_spec(name)
    assert spec.motors and spec.buses


def test_an_unquoted_camera_serial_is_refused_with_its_quoted_form():
    """YAML reads `serial: 036522070660` as the octal number 4115165616, and the camera
    looked for was "RealSense 4115165616": not found, beside the one plugged in."""
    # The lift within a turn: the config is refused for its serial alone.
    text = OWN_ROBOT.replace("""serial: "036522070660\"""", "serial: 036522070660").replace("upper: 0.18", "upper: 0.03")
    with pytest.raises(ConfigError) as caught:
        RobotSpec.from_config(_own_robot(text))
    assert str(caught.value) == (
        "camera 'front' serial was read as 4115165616, not text, from configs/robot/bench.yaml or a "
        "robot.cameras.front.serial override (unquoted digits are a number, and in YAML digits after a leading 0 "
        "are octal); quote it as `platform doctor` lists it: on the command line "
        "'robot.cameras.front.serial=\"SERIAL\"', in the file serial: \"036522070660\" if it was written "
        "036522070660 there, else serial: \"4115165616\"")
    quoted = RobotSpec.from_config(_own_robot(text.replace("serial: 036522070660", "serial: '036522070660'")))
    assert quoted.cameras[0].serial == "036522070660"

    # A Hydra override keeps a leading 0 as text, but reads other digits as a number.
    assert robot_spec("arm").cameras[0].serial is None
    loaded = RobotSpec.from_config(config.compose(["robot=arm", "robot.cameras.front.serial=036522070660"]).robot)
    assert loaded.cameras[0].serial == "036522070660"
    with pytest.raises(ConfigError, match=r"^camera 'front' serial was read as 819612070593, not text, .* on the "
                                          r"command line 'robot\.cameras\.front\.serial=\"SERIAL\"', .* else "
                                          r"serial: \"819612070593\"$"):
        RobotSpec.from_config(config.compose(["robot=arm", "robot.cameras.front.serial=819612070593"]).robot)
    quoted = config.compose(["robot=arm", 'robot.cameras.front.serial="819612070593"']).robot
    assert RobotSpec.from_config(quoted).cameras[0].serial == "819612070593"


def test_a_baud_rate_no_dynamixel_takes_is_refused_when_the_config_is_read():
    """`baud: 500000` passed the config and was refused only by `platform emulate`; record
    had opened the ports first. Refused on reading, naming the bus and the rates there are."""
    raw = _own_robot(OWN_ROBOT.replace("upper: 0.18", "upper: 0.03"))  # the lift within a turn
    raw["buses"]["leader"]["baud"] = 500000
    with pytest.raises(ConfigError) as caught:
        RobotSpec.from_config(raw)
    assert str(caught.value) == (
        "configs/robot/bench.yaml: bus 'leader' has baud 500000, which no Dynamixel takes; give one of 9600, 57600, "
        "115200, 1000000, 2000000, 3000000, 4000000, 4500000 (new servos answer at 57600)")
    raw["buses"]["leader"]["baud"] = 4000000
    assert RobotSpec.from_config(raw).buses["leader"].baud == 4000000


@pytest.mark.lerobot
def test_joint_kinds_survive_a_lerobot_export_and_import(tmp_path):
    """An export wrote no kinds and an import built the state without them: a store of
    ('revolute' x4, 'gripper') came back with (), and its gripper was a revolute joint
    (trained as an offset under policy.actions=delta, plotted in rad). They travel in the
    feature's info.json entry, which lerobot loads as before; an info.json without them
    (lerobot's own datasets) imports as it did."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may come from a hub
    pytest.importorskip("lerobot", reason="needs the lerobot extra (Python >= 3.12)")
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from shallowpi.data.lerobot_export import export_lerobot
    from shallowpi.data.lerobot_import import import_lerobot, store_features

    kinds = ("revolute", "revolute", "revolute", "revolute", "gripper")
    names = ["lift", "shoulder", "elbow", "wrist", "gripper"]
    features = robot_features(names, {}, kinds)  # no cameras: no video to encode
    with EpisodeStore.create(tmp_path / "src.zarr", features, StoreSettings(durable=False)) as store:
        for episode in range(2):
            writer = store.begin_episode("lift the cup", robot="bench", fps=30)
            for t in range(5):
                state = np.full(5, 0.1 * t + episode, np.float32)
                writer.add_frame({"observation.state": state, "action": state}, t / 30)
            writer.commit(success=True)
    out = export_lerobot(tmp_path / "src.zarr", tmp_path / "lerobot", repo_id="local/bench")
    dataset = LeRobotDataset("local/bench", root=out, video_backend="pyav")
    assert len(dataset) == 10
    np.testing.assert_allclose(dataset[6]["observation.state"].numpy(), np.full(5, 1.1, np.float32))

    with EpisodeStore.open(import_lerobot(out, tmp_path / "back.zarr", repo_id="local/bench")) as back:
        for key in ("observation.state", "action"):
            assert back.features[key].kinds == kinds, key
            assert back.features[key].names == tuple(names)

    # Without them, as lerobot's own datasets: no kinds, as before.
    plain = tmp_path / "plain"
    shutil.copytree(out, plain)
    info_path = plain / "meta" / "info.json"
    info = json.loads(info_path.read_text())
    bare = copy.deepcopy(info)
    for entry in bare["features"].values():
        entry.pop("shallowpi_joint_kinds", None)
    info_path.write_text(json.dumps(bare))
    with EpisodeStore.open(import_lerobot(plain, tmp_path / "plain.zarr", repo_id="local/bench")) as back:
        assert back.features["observation.state"].kinds == ()
        assert back.features["observation.state"].names == tuple(names)

    # Kinds that do not fit the joints are one line, before a store is made.
    info["features"]["observation.state"]["shallowpi_joint_kinds"] = ["revolute", "wheel"]
    with pytest.raises(StoreError, match=r"^info\.json's observation\.state has shallowpi_joint_kinds \['revolute', "
                                         r"'wheel'\]; give one of revolute, linear, gripper per entry of its shape "
                                         r"\[5\], or remove it \(nothing was imported\)$"):
        store_features(info["features"])
