#!/usr/bin/env bash
# A multi-host job on one machine: N processes on 127.0.0.1, each with its own fake
# CPU devices, joined through jax.distributed (gloo collectives). The same code path
# as a TPU pod or a GPU cluster, small enough for a laptop or CI.
#
#   bash launch/local_multihost.sh -- --config=configs/imagen.py:tiny,base64 \
#       --workdir=/tmp/mh --config.train.steps=20
#   bash launch/local_multihost.sh --num_processes=4 --devices_per_process=2 -- ...
#   bash launch/local_multihost.sh --dry-run -- ...   # print the commands, run nothing
#
# Arguments after `--` go to `python -m imagen_jax.main` on every process. Each
# process logs to WORKDIR/process_I.log (WORKDIR from --workdir, else ./multihost_logs)
# and its output is also printed with a [pI] prefix. If one process fails, the
# others are stopped and the exit status is the failed one's. Ctrl-C stops all.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

num_processes=2
devices_per_process=2
port=""
dry_run=0
heartbeat=30
python="${PYTHON:-.venv/bin/python}"
script=local_multihost.sh
source "launch/_lib.sh"
while [ $# -gt 0 ]; do
  case "$1" in
    --num_processes=*) num_processes="${1#*=}" ;;
    --devices_per_process=*) devices_per_process="${1#*=}" ;;
    --port=*) port="${1#*=}" ;;
    --heartbeat_timeout=*) heartbeat="${1#*=}" ;;
    --dry-run|--dry_run) dry_run=1 ;;
    -h|--help) usage 0 ;;
    --) shift; break ;;
    *) die "unknown option $1 (options go before --, main's after)" ;;
  esac
  shift
done
for name in num_processes devices_per_process heartbeat; do
  value="${!name}"
  if ! [[ "$value" =~ ^[1-9][0-9]*$ ]]; then
    die "--$name=$value must be a positive integer"
  fi
done
if [ $# -eq 0 ]; then
  die "give main's flags after --, e.g. -- --config=... --workdir=..."
fi

workdir=""
for arg in "$@"; do
  case "$arg" in --workdir=*) workdir="${arg#*=}" ;; esac
done
logdir="${workdir:-multihost_logs}"

if [ -z "$port" ]; then  # a port the OS says is free now; the coordinator binds it next
  if [ "$dry_run" = 1 ]; then
    port=PORT
  else
    port="$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  fi
fi

# Each process's fake device count, then the caller's other XLA flags (kept: e.g. a
# test suite's compile settings).
xla_flags="--xla_force_host_platform_device_count=$devices_per_process"
user_flags="$(sed -E 's/--xla_force_host_platform_device_count=[0-9]+//g; s/^ +| +$//g' <<< "${XLA_FLAGS:-}")"
[ -n "$user_flags" ] && xla_flags="$xla_flags $user_flags"

# One process's command, as words (main's flags may contain spaces).
process_command() {
  local i="$1"; shift
  cmd=(env JAX_PLATFORMS=cpu "XLA_FLAGS=$xla_flags"
       "$python" -m imagen_jax.main "$@" "--coordinator_address=127.0.0.1:$port"
       "--num_processes=$num_processes" "--process_id=$i" "--heartbeat_timeout=$heartbeat")
}

if [ "$dry_run" = 1 ]; then
  for ((i = 0; i < num_processes; i++)); do
    process_command "$i" "$@"
    printf '%q ' "${cmd[@]}"; printf '> %q\n' "$logdir/process_$i.log"
  done
  exit 0
fi

mkdir -p "$logdir"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM
for ((i = 0; i < num_processes; i++)); do
  process_command "$i" "$@"
  "${cmd[@]}" > >(tee "$logdir/process_$i.log" | sed -u "s/^/[p$i] /") 2>&1 &
  pids+=("$!")
done

status=0
running=("${pids[@]}")
while [ "${#running[@]}" -gt 0 ]; do
  finished=""
  if wait -n -p finished "${running[@]}"; then
    left=()
    for pid in "${running[@]}"; do [ "$pid" = "$finished" ] || left+=("$pid"); done
    running=("${left[@]}")
  else
    status=$?
    echo "local_multihost.sh: a process failed (exit $status); stopping the others" >&2
    break
  fi
done
exit "$status"
