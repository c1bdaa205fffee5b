#!/bin/bash
# The second lent-GPU call of 2026-11-26 (see benchmarks/gpu/README.md): the `unet` network
# trained from scratch with the magnitude-weighted loss from the start, batch 32, in four
# runs at once on one GPU (KERAS_BACKEND=jax, NumPy loader): training patches of 128 frames
# (a) and of $LONG frames (b), each on `train` (scored here on valid: the ablation) and on
# `train+valid` (the literature protocol: brought back as float16 files, scored on test
# on the CPU machine).
#
#   BUDGET=400 bash benchmarks/gpu/session_frames.sh          # on the GPU machine
#   PY=/tmp/jaxenv/bin/python BUDGET=90 STEPS=2 BATCH=2 WORKERS=1 OUT=/tmp/o \
#       bash benchmarks/gpu/session_frames.sh                 # a dry run anywhere
set -u
source "$(dirname "$0")/common.sh"
BUDGET=${BUDGET:-400}
DATA=${DATA:-.carry/mir1k}
STEPS=${STEPS:-100}; BATCH=${BATCH:-32}; LR=${LR:-1.5e-3}; LONG=${LONG:-192}
WORKERS=${WORKERS:-3}
RUNS=${RUNS:-runs/gpu2}
mkdir -p "$RUNS" "$OUT"
smoke

train() {  # NAME ARGS...: one keras-svs train run in the background
    local name=$1; shift
    cli train -d "$DATA" -o "$RUNS/$name" -p unet --time-budget "$BUDGET" \
        --steps-per-epoch "$STEPS" --epochs 100000 --pretrain-epochs 100000 \
        --batch-size "$BATCH" --learning-rate "$LR" --cosine --precision mixed_bfloat16 \
        --pitch 0.75 --loss weighted --average-last 3 --gnsdr-clips 0 --seed 0 \
        --workers "$WORKERS" "$@" > "$RUNS/$name.log" 2>&1 &
}
train a_train
train a_all --train-split train+valid
train b_train --frames "$LONG"
train b_all --frames "$LONG" --train-split train+valid
stamp "4 runs started"
wait
stamp "training done"
tails 4 a_train a_all b_train b_all

# The ship candidates first (float16 files; at most 16 MiB a file comes back).
for name in a_all b_all; do
    [ -f "$RUNS/$name/model.keras" ] && cli shrink "$RUNS/$name/model.keras" \
        "$RUNS/$name/model16.keras"
done
tar cf - "$RUNS"/*_all/model16.keras 2>/dev/null | split -b 15m - "$OUT/models.tar.part-"
tar czf "$OUT/logs.tgz" "$RUNS"/*.log "$RUNS"/*/training.json "$RUNS"/*/*/log.csv 2>/dev/null
stamp "packed: $(ls "$OUT" | tr '\n' ' ')"

timeout "${SCORE_TIMEOUT:-130}" "$PY" benchmarks/gpu/valid_scores.py --data "$DATA" --jobs 14 \
    --json "$OUT/valid.json" "$RUNS/a_train/model.keras:soft" "$RUNS/b_train/model.keras:soft"
stamp "end"
