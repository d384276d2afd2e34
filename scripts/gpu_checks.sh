#!/usr/bin/env bash
# Issue 7's GPU checks, as one command for a machine where JAX already runs on an NVIDIA GPU
# (prepared for the project's lent H200 machines; not yet run: no GPU has been lent so far):
#   1. the tests that mean something on a GPU: the cuDNN LSTM path against the fused scan
#      (tests/test_cudnn_scan.py, its GPU-only test included), the Pallas kernel compiled by
#      Triton against the reference scan (tests/test_pallas_scan.py), the fused/reference
#      scans, and whether the fused scan's loops still update their time buffers in place as
#      XLA:GPU compiles them (tests/test_loop_ops.py; its per-step op counts are CPU-only);
#   2. issue 7's two GPU goals alone, first (LSTM medium against cuDNN, torch's and
#      jax.experimental.rnn's; minGRU's associative against its sequential scan at T = 4096),
#      so that a lease that ends early still has them: $OUT/goals;
#   3. the throughput benchmark's whole `gpu` variant (experiments/configs/throughput.py):
#      $OUT/all. Its report repeats the goal checks (>= 0.9x cuDNN fwd+bwd at medium,
#      associative minGRU >= 10x sequential at T = 4096).
# Results go to $OUT (default runs/gpu): tests.txt, and in goals/ and all/ throughput.md,
# results.json and the plot; a benchmark stopped early (the device's time limit) leaves
# partial.json in its folder instead, with every group it finished.
#
# On a machine with no internet whose python3 has jax[cuda], flax, optax, torch and pytest
# but not this project's other requirements (the lent H200 image lacks ml-collections), fetch
# wheels here first and carry `.whl`:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --platform manylinux2014_x86_64 -d .whl ml-collections==1.1.0
# This script installs whatever lies in .whl into /tmp/site and runs from the checkout
# (PYTHONPATH), so it needs neither a venv nor an install of rnn_jax.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-runs/gpu}
mkdir -p "$out"
python=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$python" -c "import jax; assert jax.default_backend() == 'gpu', jax.devices(); print(jax.devices())"
tests=0  # a test failure still lets the benchmark run; the script exits non-zero at the end
# IEEE float32 dots in the tests (XLA's, Triton's and cuDNN's): at the GPU default (TF32) two
# paths' independent roundings exceed tolerances tight enough to catch bugs (emulated on CPU:
# up to 7x the Pallas tests' 2e-3). The benchmark below keeps the default, as users run it.
JAX_DEFAULT_MATMUL_PRECISION=highest "$python" -m pytest -q -p no:cacheprovider tests/test_cudnn_scan.py tests/test_pallas_scan.py \
  tests/test_fast_scan.py tests/test_loop_ops.py \
  tests/test_scan.py 2>&1 | tee "$out/tests.txt" || tests=$?
gpu=experiments/configs/throughput.py:gpu
"$python" -m experiments.throughput --workdir="$out/goals" --config="$gpu" --config.cells=lstm \
  --config.configs=medium --config.extra= --config.bidirectional= --config.stacked= \
  --config.sweep.cells=min_gru:sequential,min_gru:associative --config.sweep.lengths=4096 "$@"
"$python" -m experiments.throughput --workdir="$out/all" --config="$gpu" "$@"
exit "$tests"
