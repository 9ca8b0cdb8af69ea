#!/usr/bin/env bash
# The main job of `bash tools/setup.sh run`: the product's whole loop on the simulated arm,
# no hardware needed: `platform demo` records scripted demonstrations of the robot's tasks
# in its MuJoCo twin, takes the shipped 18-layer teacher (robots/arm/teacher; or trains one:
# demo.teacher=train), distils the 6-layer student, evaluates
# both in closed loop, runs the student through the on-device executor and ends with a
# teacher-vs-student table and picture (demo/arm-default/demo.md, demo.png, demo.json).
# A second run reuses every finished stage. Arguments pass to `platform demo`, e.g.
#   bash tools/setup.sh run --quick                  # a first look in <= 5 minutes
#   bash tools/setup.sh run --teacher CKPT           # distil a given teacher
#   bash tools/setup.sh run demo.teacher_steps=3000  # any size in configs/demo/
# Relative paths (--out, --teacher) are the caller's: run from where it was called.
set -euo pipefail

exec platform demo "$@"
