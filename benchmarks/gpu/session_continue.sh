#!/bin/bash
# A short lent-GPU call (see benchmarks/gpu/README.md): one run alone on the GPU
# that continues a trained `unet` model ($INIT, carried in .carry/) on train+valid with a new
# cosine from $LR, the magnitude-weighted loss and weight averaging; brings the float16
# model and the logs back through $OUT.
#
#   INIT=.carry/init16.keras BUDGET=220 bash benchmarks/gpu/session_continue.sh   # on the GPU
set -u
source "$(dirname "$0")/common.sh"
INIT=${INIT:?a .keras model to continue}
BUDGET=${BUDGET:-220}
DATA=${DATA:-.carry/mir1k}
STEPS=${STEPS:-100}; BATCH=${BATCH:-32}; LR=${LR:-5e-4}; WORKERS=${WORKERS:-8}
RUN=${RUN:-runs/gpu3/c_all}
mkdir -p "$RUN" "$OUT"

cli train -d "$DATA" -o "$RUN" -p unet --init "$INIT" --pretrain-epochs 0 --epochs 100000 \
    --time-budget "$BUDGET" --steps-per-epoch "$STEPS" --batch-size "$BATCH" \
    --learning-rate "$LR" --cosine --precision mixed_bfloat16 --pitch 0.75 --loss weighted \
    --average-last 3 --gnsdr-clips 0 --seed 1 --train-split train+valid \
    --workers "$WORKERS" > "$RUN.log" 2>&1
stamp "training done"
tr '\r' '\n' < "$RUN.log" | grep -v "^ *$" | tail -n 4
cli shrink "$RUN/model.keras" "$RUN/model16.keras" \
    && split -b 15m "$RUN/model16.keras" "$OUT/model16.keras.part-"
tar czf "$OUT/logs.tgz" "$RUN.log" "$RUN"/training.json "$RUN"/*/log.csv 2>/dev/null
stamp "packed: $(ls "$OUT" | tr '\n' ' ')"
