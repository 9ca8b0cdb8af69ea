"""tools/setup.sh, driven with a stand-in interpreter: no venv is really made, nothing installed.

The stand-in answers what the script asks of a Python: `-VV`, `-c CODE` (run by this
test's own Python, with the stand-in's version in sys.version_info), `-m venv DIR` (a
folder whose bin/python is another stand-in), and `-m pip` / `-m ruff` / `-m pytest`
(written down in a log, one JSON line each). The script runs from a copy of tools/ and
pyproject.toml in tmp_path, with its cache (XDG_CACHE_HOME) and HOME there too.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO_ROOT

STAND_IN = '''#!{python} -IS
"""A stand-in Python for tools/setup.sh's tests (tests/test_setup_script.py)."""
import json, os, sys  # the others only where needed: each call's start-up counts

here = os.path.abspath(__file__)
with open(here + ".json") as file:
    config = json.load(file)
version = config["version"]
args = sys.argv[1:]
with open(config["log"], "a") as log:
    log.write(json.dumps({{"python": here, "args": args, "cwd": os.getcwd()}}) + "\\n")
if args == ["-VV"]:
    print(f"Python {{version}} (stand-in)")
elif args[:1] == ["-c"]:
    import collections
    Info = collections.namedtuple("Info", "major minor micro releaselevel serial")
    sys.version_info = Info(*map(int, version.split(".")), "final", 0)
    sys.version = f"{{version}} (stand-in)"
    sys.argv = ["-c", *args[2:]]
    exec(compile(args[1], "<string>", "exec"), {{"__name__": "__main__"}})
elif args[:2] == ["-m", "venv"]:
    import shutil
    bin_dir = os.path.join(args[2], "bin")
    os.makedirs(bin_dir, exist_ok=True)
    shutil.copy(here, os.path.join(bin_dir, "python"))
    shutil.copy(here + ".json", os.path.join(bin_dir, "python.json"))
elif args[:2] == ["-m", "pip"] and os.environ.get("STAND_IN_PIP_HANGS"):
    # pip at work, with a child of its own (a build backend): both written down, then wait.
    import subprocess
    child = subprocess.Popen(["sleep", "60"])
    with open(os.environ["STAND_IN_PIP_HANGS"] + ".part", "w") as file:
        file.write(f"{{os.getpid()}} {{child.pid}}")
    os.rename(os.environ["STAND_IN_PIP_HANGS"] + ".part", os.environ["STAND_IN_PIP_HANGS"])
    child.wait()
elif args[:2] not in (["-m", "pip"], ["-m", "ruff"], ["-m", "pytest"]):
    sys.exit(f"stand-in python: unexpected {{args}}")
'''


def stand_in(path: Path, version: str, log: Path) -> Path:
    """A stand-in interpreter at `path` that says it is Python `version` ("3.12.7")."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(STAND_IN.format(python=sys.executable))
    path.chmod(0o755)
    path.with_name(path.name + ".json").write_text(json.dumps({"version": version, "log": str(log)}))
    return path


class Setup:
    """A copy of tools/setup.sh and pyproject.toml in tmp_path, run with stand-ins."""

    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        self.repo = tmp_path / "repo"
        (self.repo / "tools").mkdir(parents=True)
        shutil.copy(REPO_ROOT / "tools" / "setup.sh", self.repo / "tools" / "setup.sh")
        shutil.copy(REPO_ROOT / "pyproject.toml", self.repo / "pyproject.toml")
        self.log = tmp_path / "calls.jsonl"
        self.python = stand_in(tmp_path / "pythons" / "python3.12", "3.12.7", self.log)
        self.py310 = stand_in(tmp_path / "pythons" / "python3.10", "3.10.13", self.log)
        self.cache = tmp_path / "cache" / "shallowpi"
        # The Debian packages count as installed: no apt-get here.
        fake_bin = tmp_path / "fake-bin"
        fake_bin.mkdir()
        (fake_bin / "dpkg-query").write_text("#!/bin/sh\nprintf 'install ok installed'\n")
        (fake_bin / "dpkg-query").chmod(0o755)
        self.env = {"PATH": f"{fake_bin}:/usr/bin:/bin", "HOME": str(tmp_path / "home"),
                    "XDG_CACHE_HOME": str(tmp_path / "cache"), "SHALLOWPI_PYTHON": str(self.python),
                    "SHALLOWPI_PY310_INTERPRETER": str(self.py310), "LC_ALL": "C.UTF-8"}

    def command(self, job: str, **env: str) -> tuple[list[str], dict[str, str]]:
        return ["bash", str(self.repo / "tools" / "setup.sh"), job], {**self.env, **env}

    def run(self, job: str = "env", cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess:
        self.log.unlink(missing_ok=True)
        cmd, full_env = self.command(job, **env)
        return subprocess.run(cmd, cwd=cwd or self.tmp, env=full_env, capture_output=True, text=True,
                              timeout=60)

    def calls(self) -> list[dict]:
        """The stand-ins' calls in the last run."""
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []

    def pip_calls(self, python: Path | None = None) -> list[list[str]]:
        """The pip commands of the last run (those of `python` alone, when given)."""
        return [call["args"][2:] for call in self.calls()
                if call["args"][:2] == ["-m", "pip"] and python in (None, Path(call["python"]))]

    def edit_pyproject(self, old: str, new: str) -> None:
        text = (self.repo / "pyproject.toml").read_text()
        assert old in text
        (self.repo / "pyproject.toml").write_text(text.replace(old, new, 1))


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    return Setup(tmp_path)


def venv_of(result: subprocess.CompletedProcess) -> Path:
    """The venv `setup.sh env` printed (its last line)."""
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.strip().splitlines()[-1])


def test_the_venv_key_ignores_a_comment_and_the_license_and_follows_the_dependencies(setup):
    """The key had hashed pyproject.toml's raw text: a comment or the license line forced a
    ~7-minute rebuild. Now the parsed dependency data and the interpreter's version."""
    first = venv_of(setup.run())
    assert first.parent == setup.cache and first.name.startswith("venv-")
    assert ["install", "-q", "-e", ".[all]"] in setup.pip_calls()

    setup.edit_pyproject('    "numpy>=1.26",\n', '    # the array library\n    "numpy>=1.26",\n')
    setup.edit_pyproject('license = "Apache-2.0"', 'license = "MIT"')
    assert venv_of(setup.run()) == first
    assert not any(".[all]" in call for call in setup.pip_calls())

    setup.edit_pyproject('    "numpy>=1.26",\n', '    "numpy>=1.26",\n    "tqdm>=4",\n')
    changed = venv_of(setup.run())
    assert changed != first and changed.parent == setup.cache

    other_python = stand_in(setup.tmp / "pythons" / "python3.13", "3.13.1", setup.log)
    assert venv_of(setup.run(SHALLOWPI_PYTHON=str(other_python))) not in (first, changed)


def test_a_relative_shallowpi_venv_is_the_callers_and_the_checkouts_own_link_is_refused(setup):
    """SHALLOWPI_VENV had resolved against the checkout (the script's cwd) and kept a
    trailing slash (lock file `DIR/.lock`); `.venv` made the self-link .venv/.venv."""
    work = setup.tmp / "work"
    work.mkdir()
    result = setup.run(cwd=work, SHALLOWPI_VENV="envs/mine/")
    assert venv_of(result) == work / "envs" / "mine"
    assert (work / "envs" / "mine" / ".complete").is_file()
    assert (work / "envs" / "mine.lock").is_file()
    assert os.readlink(setup.repo / ".venv") == str(work / "envs" / "mine")
    assert not (setup.repo / "envs").exists()

    # The Python 3.10 venv sits beside it, not inside it.
    result = setup.run("test", cwd=work, SHALLOWPI_VENV="envs/mine")
    assert result.returncode == 0, result.stderr
    assert [p.name[:6] for p in (work / "envs").iterdir() if p.is_dir()].count("py310-") == 1
    assert not list((work / "envs" / "mine").glob("py310-*"))

    refused = setup.run(cwd=setup.repo, SHALLOWPI_VENV=".venv")
    assert refused.returncode == 2
    assert refused.stderr.strip().count("\n") == 0
    assert "SHALLOWPI_VENV=.venv is this checkout's .venv" in refused.stderr
    assert os.readlink(setup.repo / ".venv") == str(work / "envs" / "mine")
    assert setup.pip_calls() == []


@pytest.mark.parametrize("variable, version, needed", [
    ("SHALLOWPI_PYTHON", "3.11.9", "Python 3.12+ needed"),
    ("SHALLOWPI_PY310_INTERPRETER", "3.11.9", "Python 3.10 needed"),
])
def test_an_interpreter_of_the_wrong_version_is_one_line_before_any_install(setup, variable, version, needed):
    """A 3.11 named as the Python 3.10 built a "3.10" venv of 3.11; a 3.11 main interpreter
    installed without lerobot, silently."""
    wrong = stand_in(setup.tmp / "pythons" / "python3.11", version, setup.log)
    result = setup.run("test", **{variable: str(wrong)})
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert f"error: {variable}={wrong} is Python {version}; {needed}" in result.stderr
    assert setup.pip_calls() == [] and not setup.cache.exists()


def test_an_interpreter_that_does_not_run_is_one_line(setup):
    result = setup.run(SHALLOWPI_PYTHON="/nonexistent/python3.12")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "error: SHALLOWPI_PYTHON=/nonexistent/python3.12 does not run as a Python interpreter; " \
           "Python 3.12+ needed" in result.stderr


def test_the_python310_venv_is_rebuilt_for_another_interpreter_version(setup):
    assert setup.run("test").returncode == 0
    first = sorted(p.name for p in setup.cache.glob("py310-*") if p.is_dir())
    newer = stand_in(setup.tmp / "pythons" / "python3.10.14", "3.10.14", setup.log)
    result = setup.run("test", SHALLOWPI_PY310_INTERPRETER=str(newer))
    assert result.returncode == 0, result.stderr
    both = sorted(p.name for p in setup.cache.glob("py310-*") if p.is_dir())
    assert len(first) == 1 and len(both) == 2
    made = [call for call in setup.calls() if call["args"][:2] == ["-m", "venv"]]
    assert [call["python"] for call in made] == [str(newer)]


def test_the_test_job_leaves_an_existing_venvs_editable_install_alone(setup):
    """CI's test job had re-pointed the shared venv's `platform` at its clone (then deleted):
    only a venv it creates gets this checkout; `env` (and `run`) re-point, as before."""
    main_python = venv_of(setup.run("env")) / "bin" / "python"
    tested = setup.run("test")
    assert tested.returncode == 0, tested.stderr
    assert setup.pip_calls(main_python) == []
    assert [c["args"][:3] for c in setup.calls() if c["args"][1:2] in (["ruff"], ["pytest"])] == \
        [["-m", "ruff", "check"], ["-m", "pytest", "-q"]]

    assert setup.run("env").returncode == 0
    assert setup.pip_calls() == [["install", "-q", "--no-deps", "--no-build-isolation", "-e", "."]]


def test_the_test_jobs_update_in_place_installs_the_dependencies_alone(setup):
    """SHALLOWPI_VENV names one folder, brought up to date in place: `pip install -e .[all]`
    there had re-pointed it too."""
    own = setup.tmp / "own-venv"
    assert setup.run("env", SHALLOWPI_VENV=str(own)).returncode == 0
    setup.edit_pyproject('    "numpy>=1.26",\n', '    "numpy>=1.26",\n    "tqdm>=4",\n')
    updated = setup.run("test", SHALLOWPI_VENV=str(own))
    assert updated.returncode == 0, updated.stderr
    (update,) = setup.pip_calls(own / "bin" / "python")
    assert "-e" not in update and ".[all]" not in update
    assert "tqdm>=4" in update and "numpy>=1.26" in update and "torch>=2.6" in update
    assert not any(requirement.startswith("shallowpi") for requirement in update)


def test_pruning_keeps_the_two_last_used_venvs_of_other_keys(setup):
    """Old venv-*/py310-* folders (6+ GB each) had never been removed; one a running job
    may still use (set up within two days) is kept."""
    setup.cache.mkdir(parents=True)
    now = time.time()

    def old_venv(name: str, hours_ago: float, marker: bool = True) -> Path:
        path = setup.cache / name
        (path / "bin").mkdir(parents=True)
        (path / ".complete").write_text("0123456789ab\n")
        if marker:
            (path / ".shallowpi-setup").touch()
        (path / ".last-used").touch()
        os.utime(path / ".last-used", (now - hours_ago * 3600,) * 2)
        return path

    kept = [old_venv("venv-00000000000a", 1), old_venv("venv-00000000000b", 2),
            old_venv("venv-000000000009", 47)]  # beyond the two, but set up within two days: a job may run on it
    removed = [old_venv("venv-00000000000c", 49), old_venv("venv-00000000000d", 50)]
    in_use = old_venv("venv-00000000000e", 51)  # its lock held by another setup
    foreign = old_venv("venv-00000000000f", 52, marker=False)  # not made by setup.sh
    py310_removed = [old_venv(f"py310-00000000000{i}", 60 + i) for i in range(3)]
    unrelated = setup.cache / "r_roll40_seed2"
    unrelated.mkdir()

    with open(f"{in_use}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = setup.run("test")
    assert result.returncode == 0, result.stderr
    for path in removed:
        assert not path.exists(), path
    for path in [*kept, in_use, foreign, unrelated]:
        assert path.is_dir(), path
    current = setup.cache / os.readlink(setup.repo / ".venv")
    assert current.is_dir() and (current / ".last-used").is_file()
    py310_left = sorted(p.name for p in setup.cache.glob("py310-*") if p.is_dir())
    assert py310_left == sorted([p.name for p in py310_removed[:2]] +
                                [Path(result.stderr.split("creating ")[-1].split()[0]).name])
    assert result.stderr.count("removing ") == 3


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, waiting for a reaper, has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_a_sigterm_to_setup_stops_pip_and_its_children(setup):
    """A SIGTERM to setup's bash had left pip (and its children) running, downloading into a
    venv the next run deletes and holding the venv's lock."""
    pids_file = setup.tmp / "pip.pids"
    cmd, env = setup.command("env", STAND_IN_PIP_HANGS=str(pids_file))
    # Output to a file, not a pipe: an orphan holding the pipe would keep communicate() waiting.
    stderr = setup.tmp / "stderr.txt"
    with open(stderr, "w") as err:
        proc = subprocess.Popen(cmd, cwd=setup.tmp, env=env, stdout=subprocess.DEVNULL, stderr=err)
    pids: list[int] = []
    try:
        deadline = time.monotonic() + 30
        while not pids_file.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        pids = [int(pid) for pid in pids_file.read_text().split()]
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        deadline = time.monotonic() + 5
        while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not any(alive(pid) for pid in pids), "pip or its child outlived setup.sh"
        assert proc.returncode == 143, stderr.read_text()
        venv = next(setup.cache.glob("venv-*/"))
        assert (venv / ".shallowpi-setup").is_file() and not (venv / ".complete").exists()
    finally:
        proc.kill()
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
