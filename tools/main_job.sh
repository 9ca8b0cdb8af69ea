#!/usr/bin/env bash
# The main job of `bash tools/setup.sh run` (the README says what it does).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "No recorder yet: this shows the configuration and the datasets under datasets/."
platform config show --robot humanoid
platform dataset list
