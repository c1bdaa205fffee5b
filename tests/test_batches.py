"""keras_svs.batches: the NumPy loader's stream of PatchSampler batches, in process or in
worker processes."""
from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np

from keras_svs import batches
from keras_svs.examples import PatchSampler
from test_pipeline import TINY, synth_decoded


def test_the_numpy_loader_imports_no_tensorflow_or_keras():
    """What runs where TensorFlow is not installed (a JAX-only GPU machine)."""
    code = ("import sys, keras_svs.batches, keras_svs.examples; "
            "print(sorted({'tensorflow', 'keras'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


# -- stream -----------------------------------------------------------------------------------
def test_stream_in_process_yields_batches_in_order():
    sampler = PatchSampler(synth_decoded([4000, 3000]), TINY, "finetune", batch_size=4,
                           remix=0.5, pitch=0.5, seed=5)
    got = list(itertools.islice(batches.stream(sampler, workers=0), 3))
    for index, (x, y) in enumerate(got):
        want = sampler.batch(index)
        np.testing.assert_array_equal(x, want[0])
        np.testing.assert_array_equal(y, want[1])
    x, _ = next(batches.stream(sampler, start=7))
    np.testing.assert_array_equal(x, sampler.batch(7)[0])


def test_stream_with_a_worker_process_yields_the_same_batches():
    """Spawns one process (a few seconds: it imports keras_svs)."""
    sampler = PatchSampler(synth_decoded([4000, 3000]), TINY, "finetune", batch_size=4,
                           remix=0.5, pitch=0.5, seed=5)
    it = batches.stream(sampler, start=2, workers=1)
    try:
        got = list(itertools.islice(it, 3))
    finally:
        it.close()  # leaves the pool's context: the worker is terminated
    for index, (x, y) in zip(range(2, 5), got):
        want = sampler.batch(index)
        np.testing.assert_array_equal(x, want[0])
        np.testing.assert_array_equal(y, want[1])
