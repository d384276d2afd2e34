#!/usr/bin/env bash
# Run one experiment config on several hosts at once with jax.distributed (data parallel over
# every GPU/TPU of every host; see launch/multihost.md).
#
#   launch/multihost.sh slurm  <experiment> <variant> <workdir> [--config.x=y ...]
#       inside an allocation (sbatch/salloc): one process per node through srun;
#       jax.distributed finds the coordinator from SLURM's variables.
#   launch/multihost.sh tpu    <experiment> <variant> <workdir> [--config.x=y ...]
#       on a Cloud TPU VM pod slice: the same command on every worker via gcloud
#       (TPU_NAME and ZONE in the environment); jax.distributed detects the pod.
#   launch/multihost.sh manual <experiment> <variant> <workdir> [--config.x=y ...]
#       any other cluster: prints the command to start on each of HOSTS (space-separated,
#       the first is the coordinator, PORT defaults to 12355); with RUN=1 starts them over ssh.
#
# Every process runs the same command; only process 0 writes metrics and results. The workdir
# must be a path on storage all hosts mount (checkpoints are written by all processes through
# orbax); a URL such as gs://... is refused, the runtime writes only local paths.
# DRY_RUN=1 prints the command(s) instead of running them.
set -euo pipefail

usage() {
  sed -n '2,18p' "$0" >&2
  exit 2
}

[ $# -ge 4 ] || usage
mode=$1 experiment=$2 variant=$3 workdir=$4
shift 4
config="experiments/configs/${experiment}.py"
repo=$(cd "$(dirname "$0")/.." && pwd)
if [ ! -f "$repo/$config" ] || [ ! -f "$repo/experiments/${experiment}.py" ]; then
  echo "launch/multihost.sh: unknown experiment '$experiment' (no $config or experiments/${experiment}.py)" >&2
  exit 2
fi
if [ -z "${workdir//[[:space:]]/}" ]; then
  # Made absolute below, an empty workdir would be the caller's directory (the checkout).
  echo "launch/multihost.sh: the workdir '$workdir' is empty; give the run's directory" >&2
  exit 2
fi
case "$workdir" in
  *://*)
    # The runtime writes through the local filesystem: gs://b/x would become the directory
    # gs:/b/x on each host's own disk (no shared checkpoints, no resume).
    echo "launch/multihost.sh: workdir '$workdir' is a URL; give a path that every host mounts (NFS, Lustre, Filestore, a gcsfuse mount)" >&2
    exit 2
    ;;
esac
case "$workdir" in
  /*) ;;
  *) workdir="$PWD/$workdir" ;;  # relative to the caller, not to the repository we cd into
esac
python=${PYTHON:-$repo/.venv/bin/python}

# The config and its variant, read as every process will read them (rnn_jax's config_file,
# by the interpreter the processes run; no JAX, well under a second), before any process is
# started: an unknown variant was found by each process on its own, on every host. The check
# exits 3 on a ConfigError; any other failure is the interpreter's (no such file, not the
# project's environment), named as PYTHON with its last line of output: it was reported as if
# the config were wrong, a traceback or an empty message.
check='import sys
from rnn_jax.train.config import ConfigError
from rnn_jax.train.config_file import read_config_spec
try:
    read_config_spec(sys.argv[1])
except ConfigError as error:
    print(f"config error: {error}", file=sys.stderr)
    sys.exit(3)'
code=0
problem=$(cd "$repo" && "$python" -c "$check" "${config}:${variant}" 2>&1) || code=$?
if [ "$code" -ne 0 ]; then
  if [ "$code" -ne 3 ]; then
    last=$(printf '%s\n' "$problem" | tail -n 1)
    problem="PYTHON='$python' cannot read the config (exit status ${code}: ${last:-no output}); set PYTHON to the project's interpreter (default .venv/bin/python)"
  fi
  echo "launch/multihost.sh: ${problem}" >&2
  exit 2
fi

# A shell word for each argument: as it is when it needs no quoting, else single-quoted
# (`${a@Q}`), so that the remote shell (srun's bash -c, gcloud's and ssh's command) gets back
# exactly these arguments, spaces and quotes included. `[`, `]` and `^` are quoted too: left
# bare, `--config.x=[1,2]` was a glob pattern to the remote shell (a file `--config.x=1` in
# the checkout would have replaced it; bash with failglob refused the command).
words() {
  local out=() a
  for a in "$@"; do
    if [[ "$a" =~ ^[A-Za-z0-9_./:=,+@%-]+$ ]]; then out+=("$a"); else out+=("${a@Q}"); fi
  done
  printf '%s' "${out[*]}"
}
command="cd $(words "$repo") && $(words "$python" -m "experiments.${experiment}" \
  "--workdir=${workdir}" "--config=${config}:${variant}" "$@")"

run() {
  if [ "${DRY_RUN:-0}" = 1 ]; then
    printf '%s\n' "$(words "$@")"
  else
    "$@"
  fi
}

case "$mode" in
  slurm)
    # One task per node; each task sees all the node's GPUs (jax uses them all).
    run srun --ntasks-per-node=1 bash -c "$command"
    ;;
  tpu)
    : "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
    run gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all \
      --command="$command"
    ;;
  manual)
    : "${HOSTS:?set HOSTS to the space-separated host names, coordinator first}"
    read -r -a hosts <<< "$HOSTS"
    if [ ${#hosts[@]} -eq 0 ]; then
      # `:?` lets a blank HOSTS through; set -u then failed with 'hosts[0]: unbound variable'.
      echo "launch/multihost.sh: HOSTS='$HOSTS' names no host; set HOSTS to the space-separated host names, coordinator first" >&2
      exit 2
    fi
    coordinator="${hosts[0]}:${PORT:-12355}"
    pids=()
    for i in "${!hosts[@]}"; do
      command_i="$command $(words "--coordinator_address=${coordinator}" \
        "--num_processes=${#hosts[@]}" "--process_id=${i}")"
      if [ "${RUN:-0}" = 1 ] && [ "${DRY_RUN:-0}" != 1 ]; then
        ssh "${hosts[$i]}" "$command_i" &
        pids+=("$!")
      else
        printf '%s: %s\n' "${hosts[$i]}" "$command_i"
      fi
    done
    # A bare `wait` returns 0 whatever the processes return: wait for each, keep a failure.
    status=0
    for i in "${!pids[@]}"; do
      wait "${pids[$i]}" || {
        code=$?
        echo "launch/multihost.sh: process ${i} on ${hosts[$i]} exited with status ${code}" >&2
        status=$code
      }
    done
    exit "$status"
    ;;
  *)
    echo "launch/multihost.sh: unknown mode '$mode' (slurm, tpu, manual)" >&2
    usage
    ;;
esac
