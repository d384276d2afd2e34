#!/usr/bin/env bash
# The main job (README): sets up .venv, then runs every experiment's `quick` variant on CPU
# (no download) and writes one report to runs/reproduce/report.md.
#   bash scripts/reproduce.sh [--workdir=DIR] [flags of experiments.reproduce...]
# It runs from the checkout: a relative --workdir is taken from there, a relative
# RNN_JAX_DATA from the directory it was called in.
set -euo pipefail
if [ -n "${RNN_JAX_DATA:-}" ]; then
  case "$RNN_JAX_DATA" in
    /*) ;;
    *) export RNN_JAX_DATA="$PWD/$RNN_JAX_DATA" ;;
  esac
fi
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python -m experiments.reproduce "$@"
