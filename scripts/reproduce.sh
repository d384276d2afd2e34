#!/usr/bin/env bash
# The main job (README): sets up .venv, then runs every experiment's `quick` variant on CPU
# (no download) and writes one report to runs/reproduce/report.md.
#   bash scripts/reproduce.sh [--workdir=DIR] [flags of experiments.reproduce...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python -m experiments.reproduce "$@"
