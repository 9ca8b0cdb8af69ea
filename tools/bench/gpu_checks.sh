#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one run: the CUDA-graph sampler tests, one-chunk
# latency (ours vs lerobot's PI0, full-size π0 in bfloat16, and vs layers kept), and a
# full-size π0 training step under torchrun + FSDP with bf16 autocast.
#
#   bash tools/bench/gpu_checks.sh                # logs and JSON in .bench/gpu/ (or $OUT)
#
# Needs the train and lerobot extras; CI has no GPU, so these are not in its test run.
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${OUT:-.bench/gpu}"
mkdir -p "$out"
export PYTHONPATH="$PWD/platform${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
py="${PYTHON:-python3}"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
"$py" -m pytest -q -p no:cacheprovider tests/test_policy_sampler.py 2>&1 | tee "$out/pytest.log"

latency=(tools/bench/policy_latency.py --device cuda --dtype bfloat16 --reps 10 --out "$out/policy_latency_cuda.json")
"$py" "${latency[@]}" 2>&1 | tee "$out/latency.log" ||
    { echo "lerobot comparison failed; our side only" | tee -a "$out/latency.log"
      "$py" "${latency[@]}" --skip-lerobot 2>&1 | tee -a "$out/latency.log"; }

"$py" -m torch.distributed.run --nproc_per_node 1 tools/bench/policy_train.py --policy pi0 \
    --device cuda --fsdp --cameras 3 --batch 8 --steps 5 --out "$out/policy_train_cuda.json" 2>&1 |
    tee "$out/train.log"
