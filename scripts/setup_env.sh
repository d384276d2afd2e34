#!/usr/bin/env bash
# Creates (or refreshes) the project's virtual environment in .venv and installs the project.
#   bash scripts/setup_env.sh          # runtime: requirements.txt + rnn_jax (editable)
#   bash scripts/setup_env.sh dev      # + test tools and the torch CPU build for cross-checks
# Re-running is cheap: a stamp records what was installed and nothing is redone unless the
# requirement files changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
want=${1:-runtime}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
stamp=".venv/.rnn_jax-${want}.stamp"
digest=$(cat requirements.txt requirements-dev.txt setup.cfg pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ]; then
  .venv/bin/python -m pip install -q -r requirements.txt
  if [ "$want" = dev ]; then
    .venv/bin/python -m pip install -q -r requirements-dev.txt
  fi
  .venv/bin/python -m pip install -q --no-deps -e .
  echo "$digest" > "$stamp"
fi
