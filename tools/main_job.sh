#!/usr/bin/env bash
# The main job of `bash tools/setup.sh run`: record demonstrations on the simulated
# humanoid (no hardware needed), then show what was recorded.
#
# The MuJoCo twin runs in-process (--sim direct) and each task's scripted expert is the
# operator; episodes go into datasets/sim_humanoid.zarr through the same recorder, writer
# and store as on a real robot. Extra arguments pass to `platform record`, e.g.
#   bash tools/setup.sh run --episodes 10 --task handover
set -euo pipefail
cd "$(dirname "$0")/.."

dataset=sim_humanoid
resume=()
[[ -d "datasets/$dataset.zarr" ]] && resume=(--resume)   # a second run adds episodes
tui=()
[[ -t 0 && -t 1 ]] || tui=(--no-tui)                      # the dashboard needs a terminal

platform record --robot humanoid --sim direct --task cube_in_bowl --dataset "$dataset" \
    --episodes 5 --reset-time-s 1 "${resume[@]}" "${tui[@]}" "$@"
echo
platform dataset list
platform dataset show "$dataset" --episode -1 --out "datasets/${dataset}_last_episode.png"
echo "open datasets/${dataset}_last_episode.png to see the last episode: camera frames and joint plots"
