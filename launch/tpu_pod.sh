#!/usr/bin/env bash
# Train on a Cloud TPU VM pod slice: every worker runs the same `imagen_jax.main`
# command and joins the job through jax.distributed (TPU metadata: --distributed).
#
#   bash launch/tpu_pod.sh create  --name=imagen --zone=us-central2-b --type=v4-32
#   bash launch/tpu_pod.sh setup   --name=imagen --zone=us-central2-b  # code + .venv on all workers
#   bash launch/tpu_pod.sh train   --name=imagen --zone=us-central2-b \
#       --config=configs/imagen.py:paper,base64 --workdir=gs://BUCKET/runs/base64 \
#       -- --config.train.steps=2500000 --config.mesh.fsdp=-1 --config.mesh.data=1
#   bash launch/tpu_pod.sh stop    --name=imagen --zone=us-central2-b  # kill training on all workers
#   bash launch/tpu_pod.sh delete  --name=imagen --zone=us-central2-b  # release the TPUs
#   bash launch/tpu_pod.sh ssh     --name=imagen --zone=us-central2-b --worker=0
#
# --dry-run prints every gcloud command instead of running it. --project=P adds
# --project to each. The workdir must be on gs:// (every worker writes its shards of
# each checkpoint there); re-running `train` resumes from the latest checkpoint.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

script=tpu_pod.sh
dry_run=0
source "launch/_lib.sh"

[ $# -gt 0 ] || usage 2
action="$1"; shift
case "$action" in
  create|setup|train|stop|delete|ssh) ;;
  -h|--help) usage 0 ;;
  *) die "unknown action '$action' (create, setup, train, stop, delete, ssh)" ;;
esac

name=""; zone=""; type=""; version="tpu-ubuntu2204-base"; project=""; config=""; workdir=""
worker=0; dry_run=0; spot=0
remote_dir="imagen-jax"
while [ $# -gt 0 ]; do
  case "$1" in
    --name=*) name="${1#*=}" ;;
    --zone=*) zone="${1#*=}" ;;
    --type=*) type="${1#*=}" ;;
    --version=*) version="${1#*=}" ;;
    --project=*) project="${1#*=}" ;;
    --config=*) config="${1#*=}" ;;
    --workdir=*) workdir="${1#*=}" ;;
    --worker=*) worker="${1#*=}" ;;
    --spot) spot=1 ;;
    --dry-run|--dry_run) dry_run=1 ;;
    -h|--help) usage 0 ;;
    --) shift; break ;;
    *) die "unknown option $1 (main's own flags go after --)" ;;
  esac
  shift
done
[ -n "$name" ] || die "--name is required"
[ -n "$zone" ] || die "--zone is required"

base=(gcloud compute tpus tpu-vm)
common=("--zone=$zone")
[ -z "$project" ] || common+=("--project=$project")


on_all_workers() {  # one shell command, run on every worker of the slice at once
  run "${base[@]}" ssh "$name" "${common[@]}" --worker=all --command="$1"
}

case "$action" in
  create)
    [ -n "$type" ] || die "create needs --type (e.g. v4-32, v5p-64)"
    extra=()
    [ "$spot" = 0 ] || extra+=(--spot)
    run "${base[@]}" create "$name" "${common[@]}" "--accelerator-type=$type" \
      "--version=$version" "${extra[@]}"
    ;;
  setup)
    # The exact code of this checkout (committed files), copied to every worker, and
    # the same install the README describes plus jax's TPU wheel.
    archive="/tmp/imagen-jax-$name.tar.gz"
    run git archive --format=tar.gz -o "$archive" HEAD
    run "${base[@]}" scp "$archive" "$name:imagen-jax.tar.gz" "${common[@]}" --worker=all
    on_all_workers "rm -rf $remote_dir && mkdir -p $remote_dir && tar -xzf imagen-jax.tar.gz -C $remote_dir && cd $remote_dir && bash launch/setup_env.sh && .venv/bin/pip install -q 'jax[tpu]'"
    ;;
  train)
    [ -n "$config" ] || die "train needs --config (e.g. configs/imagen.py:paper,base64)"
    [ -n "$workdir" ] || die "train needs --workdir"
    case "$workdir" in
      gs://*) ;;
      *) die "--workdir=$workdir must be on gs:// so that every worker reaches the same checkpoints" ;;
    esac
    flags=("--config=$config" "--workdir=$workdir" --distributed "$@")
    quoted="$(printf '%q ' "${flags[@]}")"
    # nohup + a log per worker: the job survives a dropped ssh session.
    on_all_workers "cd $remote_dir && (nohup .venv/bin/python -m imagen_jax.main $quoted> train.log 2>&1 &) && sleep 5 && tail -n 5 train.log"
    ;;
  stop)
    on_all_workers "pkill -f 'python -m imagen_jax.main' || true"
    ;;
  delete)
    run "${base[@]}" delete "$name" "${common[@]}" --quiet
    ;;
  ssh)
    run "${base[@]}" ssh "$name" "${common[@]}" "--worker=$worker"
    ;;
esac
