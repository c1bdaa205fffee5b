# Sourced by the lent-GPU scripts beside it: the JAX environment, a timer, the CLI, a smoke test.
PY=${PY:-python3}
export KERAS_BACKEND=jax XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
start=$(date +%s)
stamp() { echo "[$(( $(date +%s) - start )) s] $*"; }
cli() { "$PY" -c "from keras_svs.cli import main; main()" "$@"; }
smoke() {  # the carried packages import, and the GPU is there
    stamp "smoke"
    "$PY" -c "import jax, keras, soundfile, mir_eval, soxr; print(jax.devices(), keras.__version__)" \
        || exit 3
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1; nproc
}
tails() {  # LINES NAME...: the last LINES lines of each $RUNS/NAME.log, progress bars unrolled
    local lines=$1 name; shift
    for name in "$@"; do
        echo "== $name"; tr '\r' '\n' < "$RUNS/$name.log" | grep -v "^ *$" | tail -n "$lines"
    done
}
