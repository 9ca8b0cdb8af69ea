#!/usr/bin/env bash
# Set up a machine for Shallow-pi and run one of the two jobs the README names.
#
#   bash tools/setup.sh run    # install, then run the main job (platform demo) on the simulated arm
#   bash tools/setup.sh test   # install, then lint and run the test suite
#   bash tools/setup.sh env    # install only; prints the venv path
#
# The virtual environment lives outside the checkout, keyed by a hash of pyproject.toml,
# so a fresh clone (CI clones main anew for every run) reuses the ~6 GB of torch, lerobot
# and MuJoCo that an earlier run installed, and a changed pyproject.toml gets a new one.
# SHALLOWPI_VENV overrides the location (one folder, brought up to date in place when the
# dependency lists change); SHALLOWPI_PYTHON the interpreter (>= 3.12 for the lerobot
# extra). `.venv` in the checkout is a link to the venv in use.
set -euo pipefail

job="${1:-env}"
shift || true
caller="$PWD"  # the main job runs from here: a relative --out or --teacher means the caller's
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

say() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

# A mistyped job is refused before the install (minutes, on a new machine), not after it.
case "$job" in
    run | test | env) ;;
    *)
        say "error: unknown job '$job'; choose one of: run, test, env"
        exit 2
        ;;
esac

# One setup at a time per venv (two CI clones at once): the second waits for the first,
# then finds the venv complete instead of removing it half-built. Held on fd $lock until
# unlock_venv; the lock file stays beside the venv.
lock_venv() {
    mkdir -p "$(dirname "$1")"
    command -v flock >/dev/null || return 0  # util-linux's, on every Debian: elsewhere unlocked
    exec {lock}>"$1.lock"
    if ! flock -n "$lock"; then
        say "waiting for another setup of $1 to finish"
        flock "$lock"
    fi
}
unlock_venv() { [[ -z "${lock:-}" ]] || exec {lock}>&-; lock=""; }

# A new venv at $2 from the interpreter $1. The marker comes first: a venv cut short (Ctrl-C
# in `python -m venv`) is still known as this script's, and replaced by the next run.
new_venv() {
    rm -rf "$2"
    mkdir -p "$2"
    touch "$2/.shallowpi-setup"
    "$1" -m venv "$2"
}

# --- system packages -----------------------------------------------------------------
# libusb-1.0-0: pyrealsense2's shared library links it. libegl1 + Mesa: MuJoCo renders
# headless through EGL on the CPU (MUJOCO_GL=egl). libavcodec59 family: torchcodec decodes
# LeRobot's mp4 videos with it (lerobot falls back to pyav without it, slower).
apt_packages=(libusb-1.0-0 libegl1 libgl1-mesa-dri libegl-mesa0 libavcodec59 libavformat59 libavutil57 libswscale6 libswresample4 libavdevice59 libavfilter8)
missing=()
for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        say "installing Debian packages: ${missing[*]}"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        say "warning: missing Debian 12 packages; install them: sudo apt-get install ${missing[*]}"
    fi
fi

# --- python ----------------------------------------------------------------------------
python="${SHALLOWPI_PYTHON:-}"
if [[ -z "$python" ]]; then
    # python3.12 on PATH, then any pyenv 3.12.x (newest first), then python3 if it is >= 3.12
    for candidate in python3.12 $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python \
                                       /root/.pyenv/versions/3.12*/bin/python 2>/dev/null | sort -rV) python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
            python="$(command -v "$candidate")"
            break
        fi
    done
fi
[[ -n "$python" ]] || { say "error: Python >= 3.12 not found; set SHALLOWPI_PYTHON=/path/to/python3.12"; exit 2; }

# Keyed by the dependency lists (not the whole file, so editing tool settings keeps it).
key="$( (sed -n '/^requires-python/,/^\[project.scripts\]/p' pyproject.toml; "$python" -VV) | sha256sum | cut -c1-12)"
venv="${SHALLOWPI_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/shallowpi/venv-$key}"
if [[ -d .venv && ! -L .venv ]]; then
    say "error: .venv here is a folder, not the link to the venv this script keeps; move it aside (mv .venv .venv.old)"
    exit 2
fi
lock_venv "$venv"
# .complete holds the key the venv was installed for: SHALLOWPI_VENV names one folder
# whatever pyproject.toml says, so a change of the dependency lists must be found there.
# An empty one is this script's before it wrote the key: taken as this key's (in the default
# location the folder's name is the key) and written down, not installed again (online).
installed="$(cat "$venv/.complete" 2>/dev/null || true)"
if [[ -f "$venv/.complete" && -z "$installed" ]]; then
    installed="$key"
    echo "$key" >"$venv/.complete"
fi
if [[ "$installed" == "$key" ]]; then
    # Re-point the editable install at this checkout (CI clones into a new folder).
    "$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e . 2>/dev/null ||
        "$venv/bin/python" -m pip install -q --no-deps -e .
elif [[ -f "$venv/.complete" && "$("$venv/bin/python" -VV 2>/dev/null)" == "$("$python" -VV)" ]]; then
    # Installed by this script for other dependency lists (or for ones it did not write
    # down), on this Python: the full install again in place (pip keeps what still fits; a
    # new venv would fetch ~6 GB again).
    # (.complete keeps the old key until it is done: a run cut short updates again.)
    say "updating $venv: the dependency lists in pyproject.toml changed since its install"
    "$venv/bin/python" -m pip install -q -e ".[all]"
    echo "$key" >"$venv/.complete"
else
    # Only a venv this script began (its marker: cut short before .complete, or made for
    # another Python) or nothing is replaced: SHALLOWPI_VENV may name a folder of the user's own.
    if [[ -e "$venv" && ! -f "$venv/.shallowpi-setup" && -n "$(ls -A "$venv" 2>/dev/null)" ]]; then
        say "error: $venv exists and was not made by this script; remove it or point SHALLOWPI_VENV elsewhere"
        exit 2
    fi
    say "creating $venv (first time: ~6 min, ~6 GB; torch comes as a CUDA build)"
    new_venv "$python" "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q -e ".[all]"
    echo "$key" >"$venv/.complete"
fi
unlock_venv
ln -sfn "$venv" .venv
export PATH="$venv/bin:$PATH"

# The robot's computer runs JetPack 6's Python 3.10 with the core install only (zarr-python
# 2, no torch/lerobot). A small second venv lets the tests check the robot side there.
py310="${SHALLOWPI_PY310_INTERPRETER:-}"
for candidate in python3.10 /root/.pyenv/versions/3.10.13/bin/python "$HOME/.pyenv/versions/3.10.13/bin/python"; do
    [[ -n "$py310" ]] && break
    if command -v "$candidate" >/dev/null 2>&1 &&
        "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' 2>/dev/null; then
        py310="$(command -v "$candidate")"
    fi
done
if [[ -n "$py310" && "$job" == test ]]; then
    venv310="${venv%/*}/py310-$key"
    lock_venv "$venv310"
    if [[ ! -f "$venv310/.complete" ]]; then
        if [[ -e "$venv310" && ! -f "$venv310/.shallowpi-setup" && -n "$(ls -A "$venv310" 2>/dev/null)" ]]; then
            say "error: $venv310 exists and was not made by this script; remove it"
            exit 2
        fi
        say "creating $venv310 (Python 3.10, core install: the robot side)"
        new_venv "$py310" "$venv310"
        "$venv310/bin/python" -m pip install -q --upgrade pip "setuptools>=77"
        "$venv310/bin/python" -m pip install -q -e . pytest pytest-timeout
        touch "$venv310/.complete"
    else
        # As the main venv: offline first (its own setuptools), then with a build env.
        "$venv310/bin/python" -m pip install -q --no-deps --no-build-isolation -e . 2>/dev/null ||
            "$venv310/bin/python" -m pip install -q --no-deps -e . ||
            { say "error: re-installing the Python 3.10 venv's editable package failed (above)"; exit 1; }
    fi
    unlock_venv
    export SHALLOWPI_PY310="$venv310/bin/python"
elif [[ "$job" == test ]]; then
    say "no Python 3.10 here (SHALLOWPI_PY310_INTERPRETER names one): the robot-side tests on JetPack 6's Python are skipped"
fi
export MUJOCO_GL="${MUJOCO_GL:-egl}"
[[ "$MUJOCO_GL" == egl ]] && export PYOPENGL_PLATFORM="${PYOPENGL_PLATFORM:-egl}"
export HF_HUB_OFFLINE=1

case "$job" in
    env)
        echo "$venv"
        ;;
    run)
        cd "$caller"
        exec bash "$repo/tools/main_job.sh" "$@"
        ;;
    test)
        say "ruff check"
        python -m ruff check platform tests tools
        say "pytest"
        set +e
        # Two workers, one test file each at a time (a file's fixtures are built once): most
        # tests use one core, so the suite takes about half the time on this 2-core machine.
        # SHALLOWPI_TEST_WORKERS=0 runs it in one process.
        python -m pytest -q -n "${SHALLOWPI_TEST_WORKERS:-2}" --dist loadfile --durations=20 "$@"
        rc=$?
        # Exit 5 means pytest collected nothing: that is a failure here, not a pass.
        exit $rc
        ;;
esac
