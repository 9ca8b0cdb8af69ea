"""Jetson detection against fake system files (a root-directory override), and the plan."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from shallowpi.deploy.jetson import JetsonProfile, Machine, detect, plan
from shallowpi.errors import ConfigError

ORIN_RELEASE = "# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64, DATE: Fri Sep 13\n"


def fake_jetson(root: Path, compatible: str, model: str, mode: str = "MAXN",
                freq: tuple[int, int] = (1300500000, 1300500000), release: str = ORIN_RELEASE) -> Path:
    (root / "etc").mkdir(parents=True)
    (root / "etc/nv_tegra_release").write_text(release)
    tree = root / "proc/device-tree"
    tree.mkdir(parents=True)
    (tree / "model").write_bytes(model.encode() + b"\0")
    (tree / "compatible").write_bytes(f"nvidia,p3737-0000+p3701-0005\0{compatible}\0".encode())
    sbin = root / "usr/sbin"
    sbin.mkdir(parents=True)
    (sbin / "nvpmodel").write_text(f"#!/bin/sh\necho 'NV Power Mode: {mode}'\necho 0\n")
    (sbin / "nvpmodel").chmod(0o755)
    gpu = root / "sys/class/devfreq/17000000.ga10b"
    gpu.mkdir(parents=True)
    (gpu / "cur_freq").write_text(f"{freq[0]}\n")
    (gpu / "max_freq").write_text(f"{freq[1]}\n")
    return root


def test_an_orin_at_full_speed(tmp_path):
    root = fake_jetson(tmp_path, "nvidia,tegra234", "NVIDIA Jetson AGX Orin Developer Kit")
    machine = detect(root)
    assert machine.l4t == "R36 (release), REVISION: 4.0"
    assert machine.module == "orin" and machine.power_mode == "MAXN"
    result = plan("orin", machine, cuda=True)
    assert result.on_target and result.profile.backend == "onnxruntime" and result.profile.precision == "fp16"
    assert result.message == ("NVIDIA Jetson AGX Orin Developer Kit (L4T R36 (release), REVISION: 4.0): "
                              "full speed (MAXN, clocks at maximum)")


def test_an_orin_in_a_low_power_mode_with_floating_clocks_is_told_what_to_change(tmp_path):
    root = fake_jetson(tmp_path, "nvidia,tegra234", "NVIDIA Jetson AGX Orin", mode="30W",
                       freq=(306000000, 1300500000))
    message = plan("orin", detect(root), cuda=True).message
    assert "\n" not in message
    assert "`sudo nvpmodel -m 0` (power mode 30W -> MAXN)" in message
    assert "`sudo jetson_clocks` (GPU clock 306 of 1300 MHz)" in message


def test_an_orin_nano_is_pointed_at_its_own_modes_and_its_maxn_variant_is_full_speed(tmp_path):
    """The AGX's `nvpmodel -m 0` is MAXN; an Orin Nano (same SoC, the orin profile) numbers
    its modes otherwise, and its top mode is called MAXN_SUPER."""
    slow = detect(fake_jetson(tmp_path / "slow", "nvidia,tegra234", "NVIDIA Jetson Orin Nano Developer Kit",
                              mode="15W"))
    message = plan("orin", slow, cuda=True).message
    assert "the fastest mode `sudo nvpmodel -q --verbose` lists (power mode 15W; MAXN on the AGX)" in message
    assert "nvpmodel -m 0" not in message
    fast = detect(fake_jetson(tmp_path / "fast", "nvidia,tegra234", "NVIDIA Jetson Orin Nano Developer Kit",
                              mode="MAXN_SUPER"))
    assert plan("orin", fast, cuda=True).message.endswith("full speed (MAXN_SUPER, clocks at maximum)")


def test_a_thor_is_recognised_by_its_soc(tmp_path):
    root = fake_jetson(tmp_path, "nvidia,tegra264", "NVIDIA Jetson AGX Thor Developer Kit",
                       release="# R38 (release), REVISION: 2.0, GCID: 1\n")
    result = plan("thor", detect(root), cuda=True)
    assert result.on_target and result.profile.name == "thor" and result.profile.precision == "bf16"


def test_another_jetson_says_so_and_runs_its_own_profile(tmp_path):
    root = fake_jetson(tmp_path, "nvidia,tegra234", "NVIDIA Jetson AGX Orin")
    result = plan("thor", detect(root), cuda=True)
    assert not result.on_target and result.profile.name == "orin"
    assert result.message.startswith("NVIDIA Jetson AGX Orin (L4T R36 (release), REVISION: 4.0), not a Jetson thor")


@pytest.mark.parametrize("cuda, profile, backend", [(False, "cpu", "onnxruntime"), (True, "cuda", "torch")])
def test_not_a_jetson_says_so_in_one_line_and_runs_the_best_local_backend(tmp_path, cuda, profile, backend):
    machine = detect(tmp_path)  # an empty root: no /etc/nv_tegra_release
    assert machine == Machine() and not machine.is_jetson
    result = plan("thor", machine, cuda=cuda)
    assert not result.on_target and result.profile.name == profile and result.profile.backend == backend
    assert result.message == (f"this machine is not a Jetson thor (no /etc/nv_tegra_release): running the "
                              f"best local backend, {backend} on {result.profile.device} (profile {profile})")


def test_the_plan_names_the_backend_given_and_asks_for_cuda_only_when_it_chooses_a_local_profile(tmp_path):
    """`--jetson orin --backend tensorrt` on a Thor named the Thor profile's own backend
    (onnxruntime) in its first line, then ran tensorrt. And deploy's CUDA probe imports
    torch: on the named Jetson, where it decides nothing, it is not asked."""
    thor = detect(fake_jetson(tmp_path / "thor", "nvidia,tegra264", "NVIDIA Jetson AGX Thor"))
    result = plan("orin", thor, cuda=True, backend="tensorrt")
    assert result.profile.name == "thor" and result.message.endswith(
        "running the best local backend, tensorrt (--backend) with the profile thor")
    assert plan("orin", thor, cuda=True, backend="onnxruntime").message.endswith("onnxruntime on cuda (profile thor)")

    def no_probe() -> bool:
        raise AssertionError("the CUDA probe ran on the profile's own Jetson")

    orin = detect(fake_jetson(tmp_path / "orin", "nvidia,tegra234", "NVIDIA Jetson AGX Orin"))
    assert plan("orin", orin, cuda=no_probe).on_target
    assert plan("orin", Machine(), cuda=lambda: False).profile.name == "cpu"
    # A lab's own profile for its module (configs/jetson/orin_nx.yaml, orin's copied in fp32)
    # is on target by the SoC it names: by name only orin and thor were, and orin's fp16 ran.
    lab = dataclasses.replace(JetsonProfile.load("orin"), name="orin_nx", precision="fp32")
    own = plan(lab, orin, cuda=no_probe)
    assert own.on_target and own.profile == lab


def test_the_command_line_s_jetson_overrides_reach_the_profile(tmp_path):
    """`jetson.providers=[...]` is what the ONNX Runtime backend's error tells a user to pass:
    deploy plans with the composed profile, not the file's."""
    from shallowpi import config

    composed = config.compose(["jetson=orin", "jetson.providers=[CUDAExecutionProvider,CPUExecutionProvider]"])
    profile = JetsonProfile.from_config(composed.jetson)
    orin = detect(fake_jetson(tmp_path / "orin", "nvidia,tegra234", "NVIDIA Jetson AGX Orin"))
    result = plan(profile, orin, cuda=True)
    assert result.on_target and result.profile.providers == ("CUDAExecutionProvider", "CPUExecutionProvider")
    elsewhere = plan(profile, Machine(), cuda=False)  # not this profile's Jetson: the local one, as shipped
    assert elsewhere.profile == JetsonProfile.load("cpu")
    assert elsewhere.message.endswith("(profile cpu); the jetson.* overrides are for the orin profile, not used")
    assert "not used" not in plan(JetsonProfile.load("orin"), Machine(), cuda=False).message


def test_a_jetson_without_nvpmodel_or_devfreq_still_plans(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/nv_tegra_release").write_text(ORIN_RELEASE)
    machine = detect(tmp_path)
    assert machine.is_jetson and machine.module is None and machine.power_mode is None
    assert "not a Jetson orin" in plan("orin", machine, cuda=False).message


def test_every_profile_loads_and_an_unknown_one_names_the_choices():
    for name in ("orin", "thor", "cpu", "cuda"):
        assert JetsonProfile.load(name).name == name
    with pytest.raises(ConfigError, match="unknown jetson profile 'nano'; choose one of: cpu, cuda, orin, thor"):
        JetsonProfile.load("nano")
    # A misspelt precision ran fp32 under a banner saying fp16; a misspelt backend was refused
    # only after the bundle's export.
    from shallowpi import config

    for override, expected in (("jetson.precision=FP16", "jetson.precision 'FP16' is not one of: fp32, fp16, bf16, fp8"),
                               ("jetson.backend=onnx", "jetson.backend 'onnx' is not one of: torch, onnxruntime, "
                                                       "tensorrt")):
        with pytest.raises(ConfigError, match=re.escape(expected)):
            JetsonProfile.from_config(config.compose(["jetson=orin", override]).jetson)


def test_doctor_reports_the_same_detection(tmp_path):
    from shallowpi.commands.doctor_checks import jetson_report

    assert jetson_report(tmp_path / "empty") == ["not a Jetson (no /etc/nv_tegra_release)"]
    root = fake_jetson(tmp_path / "orin", "nvidia,tegra234", "NVIDIA Jetson AGX Orin", mode="15W")
    report = jetson_report(root)
    assert report[0] == "ok: NVIDIA Jetson AGX Orin (L4T R36 (release), REVISION: 4.0)"
    assert report[1] == "power mode: 15W" and "`sudo nvpmodel -m 0` (power mode 15W -> MAXN)" in report[2]


def test_doctor_warns_when_the_jetpack_or_python_is_not_the_profiles():
    """configs/jetson's jetpack and python were read nowhere: a robot venv made on another
    Python than JetPack's finds no GPU wheel, and an Orin still on JetPack 5 has an older
    TensorRT than the profile's."""
    from shallowpi.deploy.jetson import software_advice

    orin = JetsonProfile.load("orin")  # JetPack 6, Python 3.10
    jp6 = Machine(l4t="R36 (release), REVISION: 4.0", compatible=["nvidia,tegra234"])
    assert software_advice(jp6, orin, (3, 10)) is None
    assert software_advice(jp6, orin, (3, 12)) == (
        "Python 3.12 runs this, not JetPack 6's 3.10, the one NVIDIA's onnxruntime-gpu and TensorRT wheels are "
        "built for: make the robot's venv with the system python3.10")
    jp5 = Machine(l4t="R35 (release), REVISION: 5.0", compatible=["nvidia,tegra234"])
    assert software_advice(jp5, orin, (3, 10)) == (
        "L4T R35 is not JetPack 6's (R36), which the orin profile's TensorRT and wheels are written for")
    thor = Machine(l4t="R38 (release), REVISION: 2.0", compatible=["nvidia,tegra264"])
    assert software_advice(thor, JetsonProfile.load("thor"), (3, 12)) is None


def test_doctor_reports_the_software_warning(tmp_path):
    import sys

    from shallowpi.commands.doctor_checks import jetson_report

    root = fake_jetson(tmp_path / "orin", "nvidia,tegra234", "NVIDIA Jetson AGX Orin")
    warned = [line for line in jetson_report(root) if line.startswith("warning: ")]
    assert bool(warned) == (sys.version_info[:2] != (3, 10)), warned
