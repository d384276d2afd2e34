#!/usr/bin/env bash
# The test command (README): sets up .venv with the dev extras, lints, runs the whole suite.
#   bash scripts/test.sh [pytest args...]   (e.g. -n 0 -k lstm)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh dev
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# Two pytest-xdist workers where there are two cores (-n auto, at most 2): the suite spends
# much of its time in single-threaded work (compiling, Python), so a second process fills the
# second core (docs/design.md, "The suite runs on two workers"). `-n 0` after it: serial.
exec .venv/bin/python -m pytest -n auto --maxprocesses=2 "$@"
