"""Training throughput of a preset under each Keras precision policy (any backend).

Random magnitudes and IBM targets, so only the network and the optimizer are timed.
Prints one line per (preset, policy): patches/s, the median of ``--repeats`` timed fits.

    python benchmarks/precision.py --preset unet --preset paper16k
    KERAS_BACKEND=jax python benchmarks/precision.py ...   # e.g. on a GPU machine
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import keras
import numpy as np

from keras_svs.models import bin_cross_entropy, build_model, get_preset, logits_model

POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")


def throughput(preset_name: str, policy: str, steps: int, repeats: int,
               batch_size: int | None = None) -> float:
    """Median patches/s of ``repeats`` fits of ``steps`` batches (after one warm-up fit)."""
    preset = get_preset(preset_name)
    batch = batch_size or preset.batch_size
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = logits_model(build_model(preset))
        model.compile(optimizer=keras.optimizers.Adam(preset.learning_rate),
                      loss=bin_cross_entropy)
        rng = np.random.default_rng(0)
        x = (rng.random((batch * steps, preset.frames, preset.bins)) * 0.1).astype(np.float32)
        y = (rng.random(x.shape) > 0.5).astype(np.float32)
        model.fit(x, y, batch_size=batch, epochs=1, verbose=0)  # compile
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
            times.append(time.perf_counter() - start)
        return batch * steps / statistics.median(times)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", action="append", default=None)
    parser.add_argument("--policy", action="append", default=None, choices=POLICIES)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    results = []
    print(f"backend {keras.backend.backend()}, {platform.machine()}, "
          f"{time.strftime('%Y-%m-%d')}", flush=True)
    for name in args.preset or ["unet"]:
        for policy in args.policy or POLICIES:
            rate = throughput(name, policy, args.steps, args.repeats, args.batch_size)
            results.append({"preset": name, "policy": policy, "patches_per_s": rate,
                            "backend": keras.backend.backend()})
            print(f"{name:10s} {policy:15s} {rate:10.1f} patches/s", flush=True)
            if args.json:  # after each result: a run cut short keeps what it measured
                with open(args.json, "w") as f:
                    json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
