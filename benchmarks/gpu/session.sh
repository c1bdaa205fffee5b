#!/bin/bash
# One lent-GPU session (see benchmarks/gpu/README.md): trains the unet recipe (x2, the
# reproducibility check), its no-autoencoder ablation, the literature protocol (train+valid),
# and the paper's network at 16 kHz and at 22.05 kHz, all at once on one GPU with
# KERAS_BACKEND=jax and the NumPy loader; scores each on MIR-1K valid; times the precision
# policies; packs models and logs into $OUT.
#
#   BUDGET=330 bash benchmarks/gpu/session.sh          # on the GPU machine
#   PY=/tmp/jaxenv/bin/python UNET=tiny PAPER=tiny PAPER16=tiny BUDGET=40 OUT=/tmp/o \
#       bash benchmarks/gpu/session.sh                  # a dry run anywhere
set -u
source "$(dirname "$0")/common.sh"
BUDGET=${BUDGET:-330}
UNET=${UNET:-unet}; PAPER16=${PAPER16:-paper16k}; PAPER=${PAPER:-paper}
DATA=${DATA:-.carry/mir1k}
PRECISION=${PRECISION:-mixed_bfloat16}
RUNS=${RUNS:-runs/gpu}
mkdir -p "$RUNS" "$OUT"
smoke

train() {  # NAME ARGS...: one keras-svs train run in the background
    local name=$1; shift
    cli train -d "$DATA" -o "$RUNS/$name" \
        --time-budget "$BUDGET" --steps-per-epoch 100 --epochs 100000 --precision "$PRECISION" \
        --gnsdr-every 25 --gnsdr-clips 2 "$@" > "$RUNS/$name.log" 2>&1 &
}
unet="-p $UNET --cosine --pitch 0.5 --seed 0 --workers 3 --pretrain-epochs 100000"
train unet_a $unet
train unet_b $unet
train unet_noae -p "$UNET" --cosine --pitch 0.5 --seed 0 --workers 3 --pretrain-epochs 0
train unet_all $unet --train-split train+valid
train paper16k -p "$PAPER16" --remix 0 --workers 2 --pretrain-epochs 100000
train paper -p "$PAPER" --remix 0 --workers 2 --pretrain-epochs 100000
stamp "6 runs started"
wait
stamp "training done"
for name in unet_a unet_b unet_noae unet_all paper16k paper; do
    tail -n 3 "$RUNS/$name.log"
done

"$PY" benchmarks/gpu/valid_scores.py --data "$DATA" --jobs 14 --json "$OUT/valid.json" \
    "$RUNS/unet_a/model.keras:soft" "$RUNS/unet_b/model.keras:soft" \
    "$RUNS/unet_noae/model.keras:soft" "$RUNS/paper/model.keras:thresholded:centre" \
    "$RUNS/unet_a/model.keras:binary" "$RUNS/paper/model.keras:soft" \
    > "$RUNS/valid_scores.log" 2>&1
cat "$RUNS/valid_scores.log"
stamp "scored"

for name in unet_a unet_all paper16k; do  # the models to bring back, float16-stored
    [ -f "$RUNS/$name/model.keras" ] && cli \
        shrink "$RUNS/$name/model.keras" "$RUNS/$name/model16.keras"
done
tar cf - "$RUNS"/*.log "$RUNS"/*/training.json "$RUNS"/*/*/log.csv "$RUNS"/*/model16.keras \
    2>/dev/null | split -b 15m - "$OUT/pack.tar.part-"
stamp "packed: $(ls "$OUT")"

timeout "${BENCH_TIMEOUT:-80}" "$PY" benchmarks/precision.py --preset "$UNET" \
    --preset "$PAPER16" --steps 20 --repeats 2 --json "$OUT/precision.json"
cat "$OUT/precision.json" 2>/dev/null
stamp "end"
