#!/usr/bin/env bash
# Pretrain candidate backbones on one CUDA GPU, side by side, each from a shipped backbone with a cosine schedule.
#
# The GPU candidates of 2026-12-04 were trained by this script (one H200, 7 minutes each, three processes sharing
# it) from the CPU-trained weights then shipped; it starts from the weights shipped now, so a rerun continues them:
#   OUT=runs/gpu bash benchmarks/gpu_pretrain.sh
# Then compare them with the shipped backbones and VST+BM3D on the CPU:
#   python benchmarks/bench_backbone.py --model fast --model standard --model runs/gpu/fast-gpu.safetensors ...
# Settings (environment): BUDGET seconds per run (default 420), FIELDS clean fields in each bank (default 1500),
# BATCH and PATCH (default 32 x 128²), DEVICE (default cuda), PYTHON (default python3).
set -u
OUT=${OUT:-runs/gpu}
BUDGET=${BUDGET:-420}
FIELDS=${FIELDS:-1500}
BATCH=${BATCH:-32}
PATCH=${PATCH:-128}
DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  "$PY" -c "import torch, numpy; print('torch', torch.__version__, 'numpy', numpy.__version__)"; } > "$OUT/gpu.txt"

PIDS=()
run() {  # NAME then pretrain arguments; each run renders its bank into its own cache (no two writers)
  local name=$1; shift
  "$PY" -m livedenoise.cli pretrain "$@" --device "$DEVICE" --time-budget "$BUDGET" --checkpoint-every 60 \
    --bank-fields "$FIELDS" --batch-size "$BATCH" --patch-size "$PATCH" --steps 1000000 \
    --steps-per-validation 250 --patience 40 --seed 21 --cache-dir "/tmp/livedenoise-bank-$name" \
    -o "$OUT/$name.safetensors" --overwrite > "$OUT/$name.log" 2>&1 &
  PIDS+=($!)
}
run standard-gpu --init livedenoise/weights/backbone-standard.safetensors --lr 3e-4 --schedule cosine
run standard-gpu-lr1e-3 --init livedenoise/weights/backbone-standard.safetensors --lr 1e-3 --schedule cosine
run fast-gpu --init livedenoise/weights/backbone-fast.safetensors --lr 3e-4 --schedule cosine
failed=0
for pid in "${PIDS[@]}"; do wait "$pid" || failed=$((failed + 1)); done
ls -la "$OUT"
tail -n 2 "$OUT"/*.log
[ "$failed" -eq 0 ] || { echo "gpu_pretrain: $failed run(s) failed; see $OUT/*.log" >&2; exit 1; }
