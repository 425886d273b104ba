#!/usr/bin/env bash
# The sharding benchmark's accelerator rows, inside a fixed time budget: every stage's
# train step (T5: forward) timed on one real accelerator, paper sizes first (the
# numbers that matter), then tiny; and, on the same host's CPU cores, the paper-size
# 8-fake-device rows that benchmarks/sharding.py still lacks, one process per stage.
# Each row is written as soon as it is measured, so a run cut short keeps what it did.
#
#   benchmarks/accelerator.sh OUT_DIR [SECONDS] [PLATFORM]
#
# OUT_DIR gets accel.md/json (PLATFORM: gpu, the default, or tpu), cpu_<stage>.json
# and accelerator.log; merge them into docs/ with
#   python benchmarks/sharding.py --resume --report_only --devices=1 --platform=gpu \
#     --strategies=data --merge=OUT_DIR/accel.json --out=docs/sharding_gpu.md
#   python benchmarks/sharding.py --resume --report_only --sizes=paper \
#     --merge=OUT_DIR/cpu_sr256.json,... --out=docs/sharding_paper.md
set -u
out=${1:?usage: benchmarks/accelerator.sh OUT_DIR [SECONDS] [PLATFORM]}
budget=${2:-480}
platform=${3:-gpu}
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
deadline=$((SECONDS + budget))
log="$out/accelerator.log"

python3 -c 'import jax, flax, optax; print("jax", jax.__version__, "flax", flax.__version__,
"optax", optax.__version__, jax.devices())' 2>&1 | tee -a "$log"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
  --format=csv 2>&1 | tee -a "$log"

# CPU rows in the background, niced below the accelerator process (whose compiles need
# cores too). CPU_STAGES empty: none.
pids=()
for stage in ${CPU_STAGES-sr256 sr1024 prior decoder64 upsample256}; do
  JAX_PLATFORMS=cpu timeout $((budget - 15)) nice -n 10 python3 benchmarks/sharding.py \
    --sizes=paper --stages="$stage" --out="$out/cpu_$stage.md" >"$out/cpu_$stage.log" 2>&1 &
  pids+=($!)
done

accel() {  # one group of accelerator rows, if time is left
  local left=$((deadline - SECONDS))
  [ "$left" -gt 30 ] || { echo "no time left for: $*" | tee -a "$log"; return 0; }
  timeout "$left" python3 benchmarks/sharding.py --platform="$platform" --devices=1 \
    --strategies=data --time_steps=10 --resume --out="$out/accel.md" "$@" 2>&1 | tr '\r' '\n' |
    grep -v '^compile:' | tee -a "$log"
}
accel --sizes=paper --stages=t5,base64
accel --sizes=tiny
accel --sizes=paper --stages=decoder64,prior,sr256,upsample256,sr1024

for p in "${pids[@]}"; do wait "$p"; done
for f in "$out"/cpu_*.log; do
  [ -e "$f" ] && { echo "== $f"; tr '\r' '\n' <"$f" | grep -v '^compile:' | tail -8; } >>"$log"
done
rm -f "$out"/*.tmp
echo "accelerator.sh: done in ${SECONDS}s" | tee -a "$log"
