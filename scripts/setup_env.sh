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
if [ "$want" != runtime ] && [ "$want" != dev ] || [ $# -gt 1 ]; then
  echo "scripts/setup_env.sh: unknown arguments '$*' (give nothing, 'runtime' or 'dev')" >&2
  exit 2
fi
# A venv is whole once its pip runs: `venv` makes .venv/bin/python before ensurepip installs
# pip, so an interrupted set-up left a python without pip that every rerun then failed on
# ("No module named pip"); it is rebuilt like a venv whose python is gone.
if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
  # The pins of requirements.txt (numpy 2.4, scipy 1.17, jax 0.10) need Python >= 3.11; an
  # older one fails later in pip with "no matching distribution found for jax==0.10.2".
  if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "scripts/setup_env.sh: $PYTHON is not Python >= 3.11 (set PYTHON to one that is)" >&2
    exit 2
  fi
  # --clear: a .venv whose python no longer runs (its base interpreter was removed or
  # upgraded) or has no pip is rebuilt from scratch, stamps included, so everything is installed again
  # (in place, venv keeps the dangling link and pip would fail, or a stamp would skip it all).
  "$PYTHON" -m venv --clear .venv
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
