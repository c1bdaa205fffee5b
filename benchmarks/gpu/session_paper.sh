#!/bin/bash
# A short lent-GPU call (the faithful `paper` preset; see benchmarks/gpu/README.md):
# the paper's network at 22.05 kHz / 2049 bins with its own recipe (Adam 1e-4, batch 107,
# autoencoder then fine-tuning), twice at once: float32 and mixed_bfloat16. The first GPU
# session's mixed_bfloat16 run collapsed to a constant output; this tells whether the
# precision is the cause. Brings back the logs and the float32 run's float16 file.
#
#   BUDGET=170 bash benchmarks/gpu/session_paper.sh            # on the GPU machine
#   PY=/tmp/jaxenv/bin/python PRESET=tiny BUDGET=60 STEPS=2 WORKERS=1 OUT=/tmp/o \
#       bash benchmarks/gpu/session_paper.sh                    # a dry run anywhere
set -u
source "$(dirname "$0")/common.sh"
BUDGET=${BUDGET:-170}; PRESET=${PRESET:-paper}
DATA=${DATA:-.carry/mir1k}
STEPS=${STEPS:-100}; WORKERS=${WORKERS:-7}
RUNS=${RUNS:-runs/gpu5}
mkdir -p "$RUNS" "$OUT"
smoke

for precision in float32 mixed_bfloat16; do
    cli train -d "$DATA" -o "$RUNS/$precision" -p "$PRESET" --precision "$precision" \
        --pretrain-epochs 100000 --epochs 100000 --steps-per-epoch "$STEPS" \
        --time-budget "$BUDGET" --gnsdr-clips 0 --seed 0 --workers "$WORKERS" \
        > "$RUNS/$precision.log" 2>&1 &
done
stamp "2 runs started"
wait
stamp "training done"
tails 6 float32 mixed_bfloat16
tar czf "$OUT/logs.tgz" "$RUNS"/*.log "$RUNS"/*/training.json "$RUNS"/*/*/log.csv 2>/dev/null
cli shrink "$RUNS/float32/model.keras" "$RUNS/float32/model16.keras" \
    && split -b 15m "$RUNS/float32/model16.keras" "$OUT/float32_model16.keras.part-"
stamp "packed: $(ls "$OUT" | tr '\n' ' ')"
