#!/usr/bin/env bash
# A teacher sweep on a lent GPU machine (tools/bench/train_sweep.py there), for a machine
# that has torch but not this project's other dependencies, reaches no package registry
# and accepts 64 MiB a call, the store included.
#
#   bash tools/bench/gpu_sweep.sh prepare STORE   # here: .devdata/store.tar.xz + wheels
#   bash tools/bench/gpu_sweep.sh run [MINUTES]   # there, carrying .devdata; results in $OUT
#
# `run` also says what the machine offers for deployment (ONNX Runtime's providers, whether
# TensorRT imports). Variants: SWEEP_VARIANTS (space-separated train_sweep.py --variant
# values), default below.
set -uo pipefail
cd "$(dirname "$0")/../.."
data=.devdata
py="${PYTHON:-python3}"

prepare() {
    local store="${1:?usage: gpu_sweep.sh prepare STORE}"
    mkdir -p "$data/wheels"
    # xz, not zstd: Python's tarfile reads it with no tool on the other side. The JPEG
    # chunks' repeated headers make a 315 MB arm store ~52 MB.
    tar -C "$(dirname "$store")" -cf - "$(basename "$store")" | xz -9e -T2 >"$data/store.tar.xz"
    # The versions this checkout's environment runs, for CPython 3.12 on x86-64. Not
    # imagecodecs (28 MB): device_shims/ decodes the JPEG chunks with Pillow instead.
    local pins=()
    for name in zarr numcodecs donfig google-crc32c msgspec hydra-core omegaconf typing_extensions; do
        pins+=("$name==$("$py" -c "import importlib.metadata as m; print(m.version('$name'))")")
    done
    "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$data/wheels" "${pins[@]}"
    "$py" -m pip wheel -q --no-deps -w "$data/wheels" "antlr4-python3-runtime==4.9.3"  # sdist only
    du -sh "$data"/*
}

run() {
    local minutes="${1:-7}" out="${OUT:-.bench/gpu_sweep}" site=/tmp/site
    mkdir -p "$out"
    export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
    {
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
        "$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
        "$py" -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())" 2>&1 | tail -1
        "$py" -c "import tensorrt as t; print('tensorrt', t.__version__)" 2>&1 | tail -1
    } | tee "$out/log.txt"
    "$py" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$site" "$data"/wheels/*.whl || exit 1
    export PYTHONPATH="$site"
    "$py" -c "import imagecodecs" 2>/dev/null || export PYTHONPATH="$PWD/tools/bench/device_shims:$site"
    "$py" -c "import tarfile; tarfile.open('$data/store.tar.xz').extractall('/tmp/store', filter='data')" || exit 1
    local store
    store=$(ls -d /tmp/store/*.zarr | head -1)
    local variants=(${SWEEP_VARIANTS:-
        seed1:+policy.train.seed=1,policy.train.workers=0
        seed2:+policy.train.seed=2,policy.train.workers=0
        b128:policy.train.batch_size=128
        b256:policy.train.batch_size=256,policy.train.workers=2
        b512:policy.train.batch_size=512,policy.train.workers=4
        c30:policy.chunk_len=30,policy.train.batch_size=256,policy.train.workers=2
    })
    local args=()
    for v in "${variants[@]}"; do args+=(--variant "$v"); done
    "$py" tools/bench/train_sweep.py --dataset "$store" --minutes "$minutes" --runs-dir /tmp/sweep \
        --pack "$out" --out "$out/sweep.json" "${args[@]}" 2>&1 | tee -a "$out/log.txt"
    # At most 8 files come back: log.txt, sweep.json and one tar.gz a run (its log inside).
}

case "${1:-}" in
    prepare) shift; prepare "$@" ;;
    run) shift; run "$@" ;;
    *) echo "usage: gpu_sweep.sh prepare STORE | run [MINUTES]" >&2; exit 2 ;;
esac
