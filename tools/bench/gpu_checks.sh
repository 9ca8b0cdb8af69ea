#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one run against a deadline (a lent GPU machine is held
# for minutes): the CUDA tests (the graphed sampler; the torch backend of the `cuda` deploy
# profile, plain and inpainted, against the CPU), one-chunk latency at full π0 size in bf16
# and vs layers kept in both towers (the Shallow-π speed-up beside its FLOP-ideal), the
# distillation step against a plain student step at π0 size and at the twins' `teacher`
# size, and a full-size π0 training step under torchrun + FSDP.
#
#   bash tools/bench/gpu_checks.sh prepare        # here: wheels the GPU machine lacks, in .whl/
#   bash tools/bench/gpu_checks.sh run [SECONDS]  # there (carry .whl): logs and JSON in .bench/gpu/
#                                                 # (under the device tool: $OUT/gpu_checks.tar.gz)
#
# The machine has torch (and onnx, onnxruntime, pytest) but reaches no package registry;
# `prepare` downloads what these checks import beyond that (omegaconf for the presets).
# Without lerobot there the latency table has our side only. CI has no GPU: these are not in
# its test run (the CUDA tests skip there).
set -uo pipefail
cd "$(dirname "$0")/../.."
py="${PYTHON:-python3}"

prepare() {
    mkdir -p .whl
    local pins=()
    for name in omegaconf hydra-core; do
        pins+=("$name==$("$py" -c "import importlib.metadata as m; print(m.version('$name'))")")
    done
    "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "${pins[@]}"
    "$py" -m pip wheel -q --no-deps -w .whl "antlr4-python3-runtime==4.9.3"  # an sdist only
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >>.git/info/exclude
    du -sh .whl
}

run() {
    local budget="${1:-480}" out=.bench/gpu
    local deadline=$((SECONDS + budget))
    # The device tool brings back at most 8 files from $OUT: there, one archive, renewed after
    # every step so that a run cut short still returns what it finished.
    [[ -n "${OUT:-}" ]] && out=/tmp/gpu_checks
    mkdir -p "$out"
    pack() {
        [[ -n "${OUT:-}" ]] && tar -czf /tmp/gpu_checks.tar.gz -C "$out" . && mv /tmp/gpu_checks.tar.gz "$OUT/"
    }
    export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
    if compgen -G ".whl/*.whl" >/dev/null; then
        "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl ||
            exit 1
        export PYTHONPATH="/tmp/site"
    fi
    export PYTHONPATH="$PWD/platform:$PWD/tools/bench${PYTHONPATH:+:$PYTHONPATH}"
    # step NAME SECONDS CMD...: CMD under the smaller of SECONDS and what the deadline leaves,
    # its output in $out/NAME.log; a step that fails or runs out leaves the next ones their turn.
    step() {
        local name="$1" limit="$2"
        shift 2
        if [[ -n "${GPU_CHECKS:-}" && " $GPU_CHECKS " != *" $name "* ]]; then
            return  # GPU_CHECKS="pytest policy_latency ...": only these steps
        fi
        local left=$((deadline - SECONDS))
        ((left < limit)) && limit=$left
        if ((limit < 20)); then
            echo "== $name: skipped, ${left}s left" | tee -a "$out/summary.txt"
            return
        fi
        echo "== $name (at most ${limit}s)"
        local t0=$SECONDS
        timeout --kill-after 10 "$limit" "$@" 2>&1 | tee "$out/$name.log"
        echo "== $name: exit ${PIPESTATUS[0]} after $((SECONDS - t0))s" | tee -a "$out/summary.txt"
        pack
    }
    {
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
        "$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
        "$py" -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())" 2>&1 | tail -1
        "$py" -c "import tensorrt as t; print('tensorrt', t.__version__)" 2>&1 | tail -1
    } | tee "$out/machine.txt"

    step pytest 150 "$py" -m pytest -q -p no:cacheprovider -rs tests/test_policy_sampler.py tests/test_deploy_cuda.py
    local lerobot=()
    "$py" -c "import lerobot" 2>/dev/null || lerobot=(--skip-lerobot)
    step policy_latency 200 "$py" tools/bench/policy_latency.py --device cuda --dtype bfloat16 --reps 10 \
        "${lerobot[@]}" --out "$out/policy_latency_cuda.json"
    step distill_step_pi0 180 "$py" tools/bench/distill_step.py --policy pi0 --device cuda --batch 8 --cameras 3 \
        --repeats 5 --out "$out/distill_step_pi0_cuda.json"
    step distill_step_teacher 60 "$py" tools/bench/distill_step.py --policy teacher --device cuda --batch 32 \
        --repeats 10 --out "$out/distill_step_teacher_cuda.json"
    # Batch 8 of full-size π0 with float32 AdamW needs ~83 GB (an H200); 4 fits an 80 GB H100.
    local memory_mb batch=8
    memory_mb=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
    ((${memory_mb:-0} < 100000)) && batch=4
    step train_pi0_fsdp 120 "$py" -m torch.distributed.run --nproc_per_node 1 tools/bench/policy_train.py \
        --policy pi0 --device cuda --fsdp --cameras 3 --batch "$batch" --steps 5 --out "$out/policy_train_cuda.json"
    cat "$out/summary.txt"
}

case "${1:-run}" in
prepare) prepare ;;
run) run "${2:-480}" ;;
*) echo "usage: gpu_checks.sh prepare | run [SECONDS]" >&2; exit 2 ;;
esac
