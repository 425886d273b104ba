#!/usr/bin/env bash
# Train on several GPU nodes, one process per node driving all of its GPUs, joined
# through jax.distributed. Two ways to start the processes:
#
#   # SLURM: srun starts one task per node; jax reads SLURM's variables (--distributed)
#   bash launch/gpu_multinode.sh slurm --nodes=4 --gpus_per_node=8 \
#       --config=configs/imagen.py:paper,base64 --workdir=/shared/runs/base64 -- --config.mesh.fsdp=-1 --config.mesh.data=1
#
#   # Plain hosts: ssh to each, node 0 is the coordinator (explicit address/count/id)
#   bash launch/gpu_multinode.sh hosts --hosts=gpu0,gpu1 --port=8476 --remote_dir=imagen-jax \
#       --config=configs/imagen.py:paper,base64 --workdir=/shared/runs/base64
#
# --dry-run prints the commands instead of running them. The workdir must be one
# filesystem every node reaches (NFS, gs://). Arguments after -- go to imagen_jax.main.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

script=gpu_multinode.sh
dry_run=0
source "launch/_lib.sh"

[ $# -gt 0 ] || usage 2
mode="$1"; shift
case "$mode" in
  slurm|hosts) ;;
  -h|--help) usage 0 ;;
  *) die "unknown mode '$mode' (slurm or hosts)" ;;
esac

nodes=""; gpus=8; hosts=""; port=8476; remote_dir="imagen-jax"; config=""; workdir=""
partition=""; heartbeat=100; dry_run=0
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes=*) nodes="${1#*=}" ;;
    --gpus_per_node=*) gpus="${1#*=}" ;;
    --partition=*) partition="${1#*=}" ;;
    --hosts=*) hosts="${1#*=}" ;;
    --port=*) port="${1#*=}" ;;
    --remote_dir=*) remote_dir="${1#*=}" ;;
    --config=*) config="${1#*=}" ;;
    --workdir=*) workdir="${1#*=}" ;;
    --heartbeat_timeout=*) heartbeat="${1#*=}" ;;
    --dry-run|--dry_run) dry_run=1 ;;
    -h|--help) usage 0 ;;
    --) shift; break ;;
    *) die "unknown option $1 (main's own flags go after --)" ;;
  esac
  shift
done
[ -n "$config" ] || die "--config is required (e.g. configs/imagen.py:paper,base64)"
[ -n "$workdir" ] || die "--workdir is required (shared by all nodes)"
main=(.venv/bin/python -m imagen_jax.main "--config=$config" "--workdir=$workdir"
      "--heartbeat_timeout=$heartbeat" "$@")


case "$mode" in
  slurm)
    [[ "$nodes" =~ ^[1-9][0-9]*$ ]] || die "slurm needs --nodes=N (a positive integer)"
    [[ "$gpus" =~ ^[1-9][0-9]*$ ]] || die "--gpus_per_node=$gpus must be a positive integer"
    srun=(srun "--nodes=$nodes" --ntasks-per-node=1 "--gpus-per-node=$gpus" --kill-on-bad-exit=1)
    [ -z "$partition" ] || srun+=("--partition=$partition")
    run "${srun[@]}" "${main[@]}" --distributed
    ;;
  hosts)
    [ -n "$hosts" ] || die "hosts needs --hosts=HOST0,HOST1,... (HOST0 is the coordinator)"
    [[ "$port" =~ ^[0-9]+$ ]] && [ "$port" -gt 0 ] && [ "$port" -lt 65536 ] \
      || die "--port=$port is not a TCP port"
    IFS=, read -r -a host_list <<<"$hosts"
    n="${#host_list[@]}"
    pids=()
    for ((i = 0; i < n; i++)); do
      flags=("${main[@]}" "--coordinator_address=${host_list[0]}:$port" "--num_processes=$n"
             "--process_id=$i")
      remote="cd $remote_dir && $(printf '%q ' "${flags[@]}")"
      if [ "$dry_run" = 1 ]; then
        run ssh "${host_list[$i]}" "$remote"
      else
        ssh "${host_list[$i]}" "$remote" > >(sed -u "s/^/[${host_list[$i]}] /") 2>&1 &
        pids+=("$!")
      fi
    done
    status=0
    for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
    exit "$status"
    ;;
esac
