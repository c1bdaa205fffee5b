"""Inference and training speed of U-Net widths on this machine.

    python benchmarks/model_speed.py [--widths 1,0.5] [--frames 1024] [--repeats 3]

The compute of a network does not depend on its weights, so untrained models are timed:
for each width factor w, the ``unet`` preset with every level's channels scaled by w
(1 = the shipped architecture). Inference: one ``tf.function`` call with a fixed input of
``--frames`` model frames (16 kHz, hop 256: 62.5 frames per second of audio), reported as
times real time. Training: one ``train_on_batch`` of the preset's batch (8 x 128 frames), in
patches per second. Best of ``--repeats`` after a warm-up call.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from separate_speed import machine  # noqa: E402


def scaled_preset(width: float):
    from keras_svs.models import get_preset

    preset = get_preset("unet")
    filters = tuple(max(1, round(f * width)) for f in preset.arch["filters"])
    return dataclasses.replace(preset, arch={**preset.arch, "filters": filters})


def best_of(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="1,0.5")
    parser.add_argument("--frames", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import keras
    import tensorflow as tf

    from keras_svs.models import bin_cross_entropy, build_model, logits_model

    m = machine()
    print(f"machine: {m['cpu']} ({' '.join(m['simd']) or 'no AVX2'}), {m['cores']} cores; {m['date']}; load {m['load_average_1min']}")
    print(f"{'width':>6} {'filters':>28} {'params':>11} {'inference':>12} {'training':>14}")
    for width in (float(w) for w in args.widths.split(",")):
        preset = scaled_preset(width)
        keras.utils.set_random_seed(0)
        model = build_model(preset)
        x = tf.random.uniform([1, args.frames, preset.bins])
        infer = tf.function(lambda v: model(v, training=False),
                            input_signature=[tf.TensorSpec(x.shape, tf.float32)])
        seconds = best_of(lambda: infer(x).numpy(), args.repeats)
        realtime = args.frames / (preset.stft.sample_rate / preset.stft.hop_length) / seconds
        trainable = logits_model(model)
        trainable.compile(optimizer=keras.optimizers.Adam(1e-3), loss=bin_cross_entropy)
        batch = np.random.default_rng(0).random((preset.batch_size, preset.frames, preset.bins),
                                                dtype=np.float32)
        target = (batch > 0.5).astype(np.float32)
        step = best_of(lambda: trainable.train_on_batch(batch, target), args.repeats)
        print(f"{width:6g} {str(preset.arch['filters']):>28} {model.count_params():11,} "
              f"{realtime:10.1f}x {preset.batch_size / step:10.1f} p/s")


if __name__ == "__main__":
    main()
