"""keras_svs.distribute: strategy choice, TF_CONFIG, sharded input; mirrored and multi-worker
training runs (each in its own processes: logical devices and a cluster are set before
TensorFlow starts)."""
from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import write_training_pairs
from keras_svs import distribute, examples, pipeline
from keras_svs.datasets import discover
from keras_svs.models import get_preset, load_model
from keras_svs.options import STRATEGIES, RunOptions

#: Trains the tiny preset for 1 fine-tuning epoch of 4 steps at a learning rate high enough
#: that the examples seen show in the loss, into OUT/<strategy> for each strategy (argv:
#: data, OUT, strategies); with
#: ``LOGICAL_CPUS`` set, first splits the CPU into that many logical devices; with
#: ``NO_DROPOUT``, the preset has no dropout (each replica draws its own dropout masks).
TRAIN_SCRIPT = """
import dataclasses, os, sys
import tensorflow as tf
cpus = int(os.environ.get("LOGICAL_CPUS", "0"))
if cpus:
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0],
        [tf.config.LogicalDeviceConfiguration() for _ in range(cpus)])
from keras_svs.models import presets
if os.environ.get("NO_DROPOUT"):
    tiny = presets.PRESETS["tiny"]
    presets.PRESETS["tiny"] = dataclasses.replace(tiny, arch={**tiny.arch, "dropout": 0.0})
from keras_svs.training import Recipe, RunOptions, train
data, out = sys.argv[1:3]
for strategy in sys.argv[3:]:
    train(data, os.path.join(out, strategy),
          Recipe(preset="tiny", epochs=1, pretrain_epochs=0, steps_per_epoch=4, batch_size=8,
                 learning_rate=1e-2, seed=3),
          RunOptions(strategy=strategy, gnsdr_clips=0, verbose=0))
"""


def _run(args, env=None, timeout=240):
    return subprocess.run([sys.executable, "-c", TRAIN_SCRIPT, *map(str, args)],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})})


def _losses(out: Path) -> dict[str, float]:
    with open(out / "finetune" / "log.csv") as f:
        [row] = list(csv.DictReader(f))
    return {key: float(row[key]) for key in ("loss", "val_loss")}


def test_choose_resolves_auto_and_checks_names():
    assert distribute.choose("auto", devices=1, tasks=1) == "one-device"
    assert distribute.choose("auto", devices=2, tasks=1) == "mirrored"
    assert distribute.choose("auto", devices=8, tasks=3) == "multi-worker"
    assert distribute.choose("mirrored", devices=1, tasks=1) == "mirrored"
    assert distribute.choose("one-device", devices=4, tasks=1) == "one-device"
    with pytest.raises(ValueError, match="TF_CONFIG"):
        distribute.choose("multi-worker", devices=2, tasks=1)
    with pytest.raises(ValueError, match="strategy must be one of"):
        distribute.choose("horovod", devices=1, tasks=1)
    assert set(STRATEGIES) == {"auto", "one-device", "mirrored", "multi-worker"}
    assert RunOptions().strategy == "auto"


def test_cluster_orders_the_chief_first_and_maps_to_jax_processes():
    config = {"cluster": {"chief": ["a:1"], "worker": ["b:2", "c:3"]},
              "task": {"type": "worker", "index": 1}}
    where = distribute.cluster(json.dumps(config))
    assert where == distribute.Cluster(("a:1", "b:2", "c:3"), 2) and where.size == 3
    assert distribute.jax_job(where) == {"job_addresses": "a:1,b:2,c:3", "num_processes": 3,
                                         "process_id": 2}
    no_chief = {"cluster": {"worker": ["b:2", "c:3"]}, "task": {"type": "worker", "index": 0}}
    assert distribute.cluster(json.dumps(no_chief)).index == 0
    assert distribute.cluster(None) == distribute.Cluster() and distribute.Cluster().size == 1
    with pytest.raises(ValueError, match="not in its cluster"):
        distribute.cluster(json.dumps({**no_chief, "task": {"type": "worker", "index": 2}}))
    with pytest.raises(ValueError, match="not a cluster description"):
        distribute.cluster("{not json")


def test_split_batch_needs_a_multiple_of_the_replicas():
    assert distribute.split_batch(8, replicas=4, pipelines=2) == 4
    assert distribute.split_batch(8, replicas=1, pipelines=1) == 8
    with pytest.raises(ValueError, match="multiple of the 3 replicas"):
        distribute.split_batch(8, replicas=3, pipelines=1)


def test_one_device_plan_is_the_plain_stream(tmp_path):
    plan = distribute.Plan("one-device", tf_config="")
    assert (plan.name, plan.engine, plan.replicas, plan.pipelines, plan.chief) == (
        "one-device", None, 1, 1, True)
    assert plan.folder(tmp_path) == tmp_path
    assert plan.dataset(lambda *args: args, 16) == (16, 1, 0, 1)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        distribute.Plan("multi-worker", tf_config="")


def test_shards_interleave_the_example_stream(tmp_path):
    data = write_training_pairs(tmp_path / "data", tracks=3, seconds=1.0)
    preset = get_preset("tiny")
    decoded = pipeline.decode(discover(data), preset.stft.sample_rate)
    whole = examples.PatchSampler(decoded, preset, batch_size=4, seed=5, remix=0.5)
    shards = [examples.PatchSampler(decoded, preset, batch_size=4, seed=5, remix=0.5,
                                    shards=2, shard=s) for s in (0, 1)]
    for k in range(3):  # shard s's batch k is the stream's batch 2k + s
        for s in (0, 1):
            for a, b in zip(shards[s].batch(k), whole.batch(2 * k + s)):
                np.testing.assert_array_equal(a, b)
    assert not np.array_equal(shards[0].batch(0)[0], shards[1].batch(0)[0])
    with pytest.raises(ValueError, match="shard must be in"):
        examples.PatchSampler(decoded, preset, shards=2, shard=2)


def test_training_dataset_splits_batches_per_replica(tmp_path):
    data = write_training_pairs(tmp_path / "data", tracks=2, seconds=1.0)
    preset = get_preset("tiny")
    decoded = pipeline.decode(discover(data), preset.stft.sample_rate)
    sampler = examples.PatchSampler(decoded, preset, batch_size=6, seed=1)
    pieces = [piece for piece in pipeline.training_dataset(sampler, replicas=3).take(6)]
    for k in range(2):
        x, y = sampler.batch(k)
        got = pieces[3 * k:3 * k + 3]
        assert all(p[0].shape[0] == 2 for p in got)
        np.testing.assert_array_equal(np.concatenate([p[0] for p in got]), x)
        np.testing.assert_array_equal(np.concatenate([p[1] for p in got]), y)
    with pytest.raises(ValueError, match="cannot be split into 4"):
        pipeline.training_dataset(sampler, replicas=4)


def test_mirrored_on_two_logical_cpus_matches_one_device(tmp_path):
    data = write_training_pairs(tmp_path / "data", tracks=4, seconds=1.5)
    result = _run([data, tmp_path, "one-device", "mirrored"],
                  {"LOGICAL_CPUS": "2", "NO_DROPOUT": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    runs = {}
    for strategy, replicas in (("one-device", 1), ("mirrored", 2)):
        record = json.loads((tmp_path / strategy / "training.json").read_text())
        assert (record["strategy"], record["replicas"]) == (strategy, replicas)
        runs[strategy] = _losses(tmp_path / strategy)
    one, two = runs["one-device"], runs["mirrored"]
    assert one["val_loss"] < 0.69  # it learnt: what it saw shows
    # the same global batches, split over 2 replicas: the same loss up to summation order
    for key in one:
        assert two[key] == pytest.approx(one[key], rel=1e-3), (key, one, two)
    weights = [load_model(tmp_path / s / "model.keras").get_weights() for s in runs]
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("extra, message", [
    (["--strategy", "multi-worker"], "TF_CONFIG"),
    (["--strategy", "mirrored", "--loader", "numpy"], "takes the tf loader, not numpy"),
    (["--strategy", "cluster"], "Invalid value for '--strategy'")])
def test_train_command_refuses_a_strategy_it_cannot_run(tmp_path, monkeypatch, extra, message):
    from click.testing import CliRunner

    from keras_svs.cli import main

    monkeypatch.delenv("TF_CONFIG", raising=False)
    data = write_training_pairs(tmp_path / "data", tracks=2, seconds=0.5)
    result = CliRunner().invoke(main, ["train", "-d", str(data), "-o", str(tmp_path / "run"),
                                       "-p", "tiny", *extra])
    assert result.exit_code != 0 and message in result.output, result.output
    assert not (tmp_path / "run" / "model.keras").exists()


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_multi_worker_on_two_local_processes(tmp_path):
    data = write_training_pairs(tmp_path / "data", tracks=4, seconds=1.5)
    out = tmp_path / "multi-worker"
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    procs = []
    for index in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_CONFIG": json.dumps(config)}
        procs.append(subprocess.Popen(
            [sys.executable, "-c", TRAIN_SCRIPT, str(data), str(tmp_path), "multi-worker"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    try:
        results = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err[-3000:]
    record = json.loads((out / "training.json").read_text())
    assert (record["strategy"], record["replicas"], record["workers"]) == ("multi-worker", 2, 2)
    assert (out / "model.keras").is_file() and (out / "finetune" / "best.weights.h5").is_file()
    assert _losses(out)["val_loss"] < 0.69  # it learnt
    assert not (out / ".worker-1").exists()  # the other worker's files are gone
