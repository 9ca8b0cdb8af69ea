#!/usr/bin/env bash
# Set up a machine for Shallow-pi and run one of the two jobs the README names.
#
#   bash tools/setup.sh run    # install, then run the main job (platform demo) on the simulated arm
#   bash tools/setup.sh test   # install, then lint and run the test suite
#   bash tools/setup.sh env    # install only; prints the venv path
#
# The virtual environment lives outside the checkout, keyed by a hash of pyproject.toml's
# dependency data (parsed, so a comment or the license line keeps it) and the interpreter's
# version, so a fresh clone (CI clones main anew for every run) reuses the ~6 GB of torch,
# lerobot and MuJoCo that an earlier run installed, and changed dependencies get a new one;
# venvs of other keys beyond the two last used are removed. SHALLOWPI_VENV overrides the
# location (one folder, relative to the caller's cwd, brought up to date in place when the
# dependency lists change); SHALLOWPI_PYTHON the interpreter (>= 3.12 for the lerobot
# extra). `.venv` in the checkout is a link to the venv in use. `env` and `run` point the
# venv's editable install (its `platform`) at this checkout; `test` leaves an existing
# venv's alone (pytest runs this checkout's code through its pythonpath and PYTHONPATH), so
# a CI clone, deleted after its run, does not become every user's `platform`.
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

# Run one step of a build (venv, pip) in a process group of its own, and on INT/TERM stop
# that whole group before exiting: bash runs a trap only after a foreground child ends, and
# a SIGTERM to this script alone (CI's timeout) left pip downloading gigabytes into a venv
# the next run deletes, holding the inherited lock fd so that the next setup waited for it.
# A venv cut short keeps no .complete marker, so the next run builds it again.
build_pid=""
stop_build() {
    trap - INT TERM
    [[ -z "$build_pid" ]] || kill -TERM -- "-$build_pid" 2>/dev/null || true
    say "stopped by a signal during the install, and its processes with it (a venv left unfinished is built again by the next run)"
    exit "$1"
}
build() {
    trap 'stop_build 130' INT
    trap 'stop_build 143' TERM
    set -m  # job control: the child leads a new process group, so kill -- -PID reaches pip's own children
    "$@" </dev/null &
    build_pid=$!
    set +m
    local rc=0
    wait "$build_pid" || rc=$?
    trap - INT TERM
    build_pid=""
    return "$rc"
}

# "MAJOR.MINOR.MICRO" of interpreter $1 on stdout; fails (quietly) when $1 does not run.
py_version() { "$1" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null; }

# The interpreter a variable names ($1: the variable's name, $2: its value), checked to
# be the Python version $3 ("3.12+" for at least 3.12, "3.10" for exactly that) before
# minutes of install: one line naming the variable, the interpreter and the version
# needed. A path with a slash is the caller's (relative to its cwd); a bare name is
# looked up on PATH. The interpreter's absolute path on stdout.
checked_python() {
    local name="$1" given="$2" need="$3" path version major minor need_major need_minor
    path="$given"
    if [[ "$path" == */* ]]; then
        [[ "$path" == /* ]] || path="$caller/$path"
    else
        path="$(command -v -- "$path" 2>/dev/null)" || path=""
    fi
    if [[ -z "$path" ]] || ! version="$(py_version "$path")"; then
        say "error: $name=$given does not run as a Python interpreter; Python $need needed"
        exit 2
    fi
    IFS=. read -r major minor _ <<<"$version"
    IFS=. read -r need_major need_minor <<<"${need%+}"
    if ((major * 1000 + minor != need_major * 1000 + need_minor)) &&
        { [[ "$need" != *+ ]] || ((major * 1000 + minor < need_major * 1000 + need_minor)); }; then
        say "error: $name=$given is Python $version; Python $need needed"
        exit 2
    fi
    printf '%s\n' "$path"
}

# A new venv at $2 from the interpreter $1. The marker comes first: a venv cut short (Ctrl-C
# in `python -m venv`) is still known as this script's, and replaced by the next run.
new_venv() {
    rm -rf "$2"
    mkdir -p "$2"
    touch "$2/.shallowpi-setup"
    build "$1" -m venv "$2"
}

# The venvs of other keys that this script made (its marker) in folder $1 named $2-<key>,
# except $3 (the one in use) and the $keep_other last used (by .last-used, stamped on each
# use; by .complete, or the folder, for one made before the stamps): removed, each ~6 GB,
# once unused for $prune_after_s. One whose lock another setup holds is in use and
# skipped; a job that setup started (pytest, the main job) holds none, so an age is what
# keeps its venv: a venv set up within two days is never removed. Without flock nothing
# tells a setup in progress, so nothing is removed. The lock files stay: removing one
# while a setup waits on it would let the next setup lock a new file and build alongside it.
keep_other=2
prune_after_s=$((2 * 24 * 3600))
last_use() { stat -c %Y "$1/.last-used" 2>/dev/null || stat -c %Y "$1/.complete" 2>/dev/null || stat -c %Y "$1"; }
prune_venvs() {
    local dir="$1" prefix="$2" current="$3" path line fd used
    command -v flock >/dev/null || return 0
    local listed
    listed="$(for path in "$dir/$prefix"-????????????; do
        [[ -d "$path" && ! -L "$path" && -f "$path/.shallowpi-setup" && "$path" != "$current" ]] || continue
        printf '%s %s\n' "$(last_use "$path")" "$path"
    done | sort -rn | tail -n +$((keep_other + 1)) | awk -v before="$(($(date +%s) - prune_after_s))" '$1 < before')"
    while IFS= read -r line; do
        [[ -n "$line" ]] || continue
        used="${line%% *}"
        path="${line#* }"
        exec {fd}>>"$path.lock"
        # Used again since it was listed (a setup that ended just now): kept.
        if flock -n "$fd" && [[ "$(last_use "$path")" == "$used" ]]; then
            say "removing $path: a venv of other dependencies, not used since $(date -d "@$used" '+%F %R')"
            rm -rf "$path" || say "warning: could not remove all of $path"
        fi
        exec {fd}>&-
    done <<<"$listed"
}

# The key of a venv: pyproject.toml's dependency data as parsed (so a comment, the license
# line or a tool setting keep it): requires-python, dependencies and build-system requires,
# with `all` the optional dependencies too, and every further argument (the interpreter's
# `-VV`, a package list). `requirements` instead prints what `pip install ".[all]"` would
# install besides the project itself, one a line (the `all` extra's self-references
# expanded). Run by the main interpreter (>= 3.12: tomllib).
pyproject_py='
import hashlib, json, re, sys, tomllib
try:
    with open("pyproject.toml", "rb") as file:
        meta = tomllib.load(file)
except (OSError, tomllib.TOMLDecodeError) as error:
    sys.exit(f"[setup] error: pyproject.toml: {error}")
project = meta.get("project", {})
extras = project.get("optional-dependencies", {})
if sys.argv[1] == "requirements":
    wanted, seen, found = ["all"], set(), list(project.get("dependencies", []))
    while wanted:
        extra = wanted.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for requirement in extras.get(extra, []):
            own = re.fullmatch(r"\s*" + re.escape(project.get("name", "")) + r"\s*\[([^]]*)\]\s*", requirement)
            if own:
                wanted += [name.strip() for name in own.group(1).split(",")]
            else:
                found.append(requirement)
    print("\n".join(dict.fromkeys(found)))
else:
    data = {"requires-python": project.get("requires-python"),
            "dependencies": project.get("dependencies", []),
            "build-system": meta.get("build-system", {}).get("requires", []),
            "extra": sys.argv[2:]}
    if sys.argv[1] == "all":
        data["optional-dependencies"] = extras
    print(hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12])
'

# --- python and the venvs' places: all checked before minutes of install ----------------
if [[ -n "${SHALLOWPI_PYTHON:-}" ]]; then
    python="$(checked_python SHALLOWPI_PYTHON "$SHALLOWPI_PYTHON" "3.12+")"
else
    python=""
    # python3.12 on PATH, then any pyenv 3.12.x (newest first), then python3 if it is >= 3.12
    for candidate in python3.12 $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python \
                                       /root/.pyenv/versions/3.12*/bin/python 2>/dev/null | sort -rV) python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
            python="$(command -v "$candidate")"
            break
        fi
    done
    [[ -n "$python" ]] || { say "error: Python >= 3.12 not found; set SHALLOWPI_PYTHON=/path/to/python3.12"; exit 2; }
fi

# The robot's computer runs JetPack 6's Python 3.10 with the core install only (zarr-python
# 2, no torch/lerobot). A small second venv lets the tests check the robot side there.
py310=""
if [[ "$job" == test && -n "${SHALLOWPI_PY310_INTERPRETER:-}" ]]; then
    py310="$(checked_python SHALLOWPI_PY310_INTERPRETER "$SHALLOWPI_PY310_INTERPRETER" 3.10)"
elif [[ "$job" == test ]]; then
    for candidate in python3.10 /root/.pyenv/versions/3.10.13/bin/python "$HOME/.pyenv/versions/3.10.13/bin/python"; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' 2>/dev/null; then
            py310="$(command -v "$candidate")"
            break
        fi
    done
fi
# What the Python 3.10 venv holds besides the core install: part of its key.
py310_tools=(pip "setuptools>=77")
py310_tests=(pytest pytest-timeout)

key="$("$python" -c "$pyproject_py" all "$("$python" -VV)")"
cache="${XDG_CACHE_HOME:-}"
[[ "$cache" == /* ]] || cache="$HOME/.cache"  # the XDG spec: a relative one is ignored
cache="$cache/shallowpi"
if [[ -n "${SHALLOWPI_VENV:-}" ]]; then
    # The caller's path: relative to its cwd (not to this checkout, where the script runs),
    # no trailing slash (the lock file is "$venv.lock"), `..` resolved but not links: the
    # checkout's .venv is a link to the venv in use, and must stay one.
    venv="$SHALLOWPI_VENV"
    [[ "$venv" == /* ]] || venv="$caller/$venv"
    venv="$(realpath -ms -- "$venv")"
    physical="$(realpath -m -- "$(dirname -- "$venv")")/$(basename -- "$venv")"
    if [[ "$venv" == "$repo/.venv" || "$venv" == "$repo/.venv/"* || "$physical" == "$(pwd -P)/.venv" ]]; then
        say "error: SHALLOWPI_VENV=$SHALLOWPI_VENV is this checkout's .venv, the link this script points at the venv; name another folder"
        exit 2
    fi
else
    venv="$cache/venv-$key"
fi
if [[ -d .venv && ! -L .venv ]]; then
    say "error: .venv here is a folder, not the link to the venv this script keeps; move it aside (mv .venv .venv.old)"
    exit 2
fi

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

# --- the main venv ---------------------------------------------------------------------
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
    # Re-point the editable install at this checkout (CI clones into a new folder), for
    # `env` and `run` only: the tests run this checkout's code without it (pytest's
    # pythonpath, subprocess_env's PYTHONPATH), and a CI clone is deleted after its run.
    if [[ "$job" != test ]]; then
        build "$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e . 2>/dev/null ||
            build "$venv/bin/python" -m pip install -q --no-deps -e .
    fi
elif [[ -f "$venv/.complete" && "$("$venv/bin/python" -VV 2>/dev/null)" == "$("$python" -VV)" ]]; then
    # Installed by this script for other dependency lists (or for ones it did not write
    # down), on this Python: the full install again in place (pip keeps what still fits; a
    # new venv would fetch ~6 GB again). The test job installs the dependencies alone, so
    # the editable install stays pointed where it was (as above).
    # (.complete keeps the old key until it is done: a run cut short updates again.)
    say "updating $venv: the dependency lists in pyproject.toml changed since its install"
    if [[ "$job" == test ]]; then
        listed="$("$python" -c "$pyproject_py" requirements)"
        mapfile -t requirements <<<"$listed"
        build "$venv/bin/python" -m pip install -q "${requirements[@]}"
    else
        build "$venv/bin/python" -m pip install -q -e ".[all]"
    fi
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
    build "$venv/bin/python" -m pip install -q --upgrade pip
    build "$venv/bin/python" -m pip install -q -e ".[all]"
    echo "$key" >"$venv/.complete"
fi
touch "$venv/.last-used"
unlock_venv
ln -sfn "$venv" .venv
export PATH="$venv/bin:$PATH"
# The venvs of other keys (in the default place only: SHALLOWPI_VENV is one folder).
[[ -n "${SHALLOWPI_VENV:-}" ]] || prune_venvs "$cache" venv "$venv"

# --- the Python 3.10 venv (test job) ---------------------------------------------------
if [[ -n "$py310" ]]; then
    # Keyed by its own interpreter and what it holds: a change of either builds it anew.
    key310="$("$python" -c "$pyproject_py" core "$("$py310" -VV)" "${py310_tools[@]}" "${py310_tests[@]}")"
    venv310="${venv%/*}/py310-$key310"
    lock_venv "$venv310"
    if [[ ! -f "$venv310/.complete" ]]; then
        if [[ -e "$venv310" && ! -f "$venv310/.shallowpi-setup" && -n "$(ls -A "$venv310" 2>/dev/null)" ]]; then
            say "error: $venv310 exists and was not made by this script; remove it"
            exit 2
        fi
        say "creating $venv310 (Python 3.10, core install: the robot side)"
        new_venv "$py310" "$venv310"
        build "$venv310/bin/python" -m pip install -q --upgrade "${py310_tools[@]}"
        build "$venv310/bin/python" -m pip install -q -e . "${py310_tests[@]}"
        touch "$venv310/.complete"
    fi
    # An existing one is not re-pointed at this checkout: only the tests use it, with
    # this checkout's code on PYTHONPATH (subprocess_env).
    touch "$venv310/.last-used"
    unlock_venv
    prune_venvs "${venv%/*}" py310 "$venv310"
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
