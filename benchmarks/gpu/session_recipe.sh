#!/bin/bash
# The third lent-GPU call of 2026-11-26 (see benchmarks/gpu/README.md): the default recipe as
# ONE `keras-svs train` command (the `unet` network from scratch, 1 autoencoder epoch, then
# $EPOCHS epochs of one cosine from $LR, batch 32, magnitude-weighted loss, pitch 0.75,
# average of the last 3 epochs, on train+valid), run twice at once with the same seed on
# one GPU: run r1 is the ship candidate, run r2 the "run again" of the reproduction check.
# Both come back as float16 files (scored on MIR-1K valid and test on the CPU machine).
# --time-budget is only a guard: with epochs that fit it changes nothing.
#
#   BUDGET=505 EPOCHS=50 bash benchmarks/gpu/session_recipe.sh     # on the GPU machine
#   PY=/tmp/jaxenv/bin/python BUDGET=120 EPOCHS=2 STEPS=2 BATCH=2 WORKERS=1 OUT=/tmp/o \
#       bash benchmarks/gpu/session_recipe.sh                      # a dry run anywhere
set -u
source "$(dirname "$0")/common.sh"
BUDGET=${BUDGET:-505}; EPOCHS=${EPOCHS:-50}
DATA=${DATA:-.carry/mir1k}
STEPS=${STEPS:-100}; BATCH=${BATCH:-32}; LR=${LR:-1.5e-3}; WORKERS=${WORKERS:-7}
RUNS=${RUNS:-runs/gpu4}
mkdir -p "$RUNS" "$OUT"
smoke

for name in r1 r2; do  # each run shrinks its model to float16 when it ends
    { cli train -d "$DATA" -o "$RUNS/$name" -p unet --train-split train+valid \
        --pretrain-epochs 1 --epochs "$EPOCHS" --steps-per-epoch "$STEPS" \
        --batch-size "$BATCH" --learning-rate "$LR" --cosine --precision mixed_bfloat16 \
        --pitch 0.75 --loss weighted --average-last 3 --gnsdr-clips 0 --seed 0 \
        --workers "$WORKERS" --time-budget "$BUDGET" > "$RUNS/$name.log" 2>&1 \
      && cli shrink "$RUNS/$name/model.keras" "$RUNS/$name/model16.keras"; } &
done
stamp "2 runs started"
wait
stamp "training done"
tails 3 r1 r2
tar cf - "$RUNS"/*/model16.keras 2>/dev/null | split -b 15m - "$OUT/models.tar.part-"
tar czf "$OUT/logs.tgz" "$RUNS"/*.log "$RUNS"/*/training.json "$RUNS"/*/*/log.csv 2>/dev/null
stamp "packed: $(ls "$OUT" | tr '\n' ' ')"
