"""The paper's full recipe (Lin et al. 2018) on one lent GPU under JAX, fed from the GPU's
own memory.

Two commands (``make gpu-paper-cache``, ``make gpu-paper-dryrun``, ``make gpu-paper``):

``cache`` (here, with the project's environment): copies the ``musdb7`` train and valid
tracks (their Ogg Vorbis stems, 44.1 kHz stereo, exactly the files the CPU path reads) and
the split file into a folder that travels to the GPU machine (``.carry/``, ignored by git).
Measured: 93 tracks, 19.7 MB. Decoded there to 22.05 kHz mono by the same code as here
(:func:`keras_svs.pipeline.decode`), they would take 55.8 MB as int16 and 37.3 MB as FLAC,
too much beside the 42 MB repository in the 64 MiB that travel (benchmarks/gpu/README.md).

``train`` (on the GPU machine; on any machine for a dry run):

1. decodes the train and valid tracks at 22.05 kHz mono and computes, once, on the host,
   each track's unpadded STFT (the ``paper`` preset's: Hann 1024 over its sum, FFT 4096,
   hop 256, :func:`keras_svs.spectral.stft_numpy`): the mixture magnitude ``|V + A|``
   (float32) and the IBM ``|V| > |A|`` (bool), every frame of every track, uploaded to the
   device once (train: ~46k frames x 2049 bins, 0.38 GB + 0.09 GB);
2. cuts the patches on the device, by index: the paper's grid, a 9-frame patch every 8
   frames of every track (:func:`keras_svs.examples.grid_patches`; patch ``j`` is frames
   ``8j .. 8j + 8`` of its track, the same examples as ``keras-svs train --patch-hop 8``),
   each epoch one pass in a new order (:func:`keras_svs.examples.grid_items`, the same
   order as that command's);
3. trains the ``paper`` network (19,489,049 parameters) in two stages of jitted steps
   (``model.stateless_call`` and ``optimizer.stateless_apply``, the state donated), with
   no host loader in the loop: the autoencoder on
   ``IBM * |X|`` (300 epochs), then the cross-entropy against the 0.02/0.98 IBM from the
   logits (300 epochs); Adam 1e-4, batch 107, ``mixed_bfloat16`` (the weights float32);
   a fresh Adam per stage, as ``keras-svs train``;
4. validates after every epoch on the valid tracks' grid (the same loss and bin accuracy),
   keeps each stage's lowest-validation-loss weights, and starts the fine-tuning from the
   autoencoder's best;
5. writes to ``--out``: ``pretrain_log.csv`` and ``finetune_log.csv`` (a row per epoch:
   loss, val_loss, val_bin_accuracy, seconds, steps/s), ``run.json`` (wall times, steps/s,
   device, FLOP count, epochs done) and the model with float16 weights (``keras-svs
   shrink``'s form, 35 MB) split into ``paper16.keras.part-aa, -ab, ...`` of 15 MiB (what
   comes back from the GPU machine is at most 8 files of 16 MiB). ``cat`` joins them.

It stops a stage when its next epoch would pass the stage's share of ``--budget`` seconds
(the autoencoder half, the fine-tuning the rest), and checkpoints every ``--checkpoint-every``
epochs to ``--state``, from which the same command resumes (on the same machine: the GPU
machine keeps ignored files between calls while it stays warm).

TensorFlow is not needed (nor imported): the GPU machines have none.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

PRESET = "paper"
STAGES = ("pretrain", "finetune")
SPLIT_BYTES = 15 * 2 ** 20


# -- here: the travelling copy of the data ----------------------------------------------------
def make_cache(data: Path, out: Path, splits=("train", "valid")) -> dict:
    """Copy the stems of ``splits`` of ``data`` (and its split file) into ``out``.

    Returns ``{"tracks": n, "bytes": size}``. Raises ``DatasetError`` for an unusable
    dataset."""
    from keras_svs.datasets import discover, select_split
    from keras_svs.datasets.splits import split_file_for

    split_file = split_file_for(data)
    tracks = {t.name: t for s in splits for t in select_split(discover(data), s, split_file)}
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    size = 0
    for name in tracks:
        folder = out / name
        folder.mkdir()
        for stem in sorted((data / name).iterdir()):
            shutil.copyfile(stem, folder / stem.name)
            size += stem.stat().st_size
    shutil.copyfile(split_file, out / "splits.json")
    return {"tracks": len(tracks), "bytes": size}


# -- the spectrograms, once, on the host ------------------------------------------------------
def spectra(decoded, preset, patch_hop: int) -> dict:
    """Every frame of every track: ``magnitude`` float32 ``(frames, bins)`` of the mixture,
    ``ibm`` bool ``(frames, bins)``, and ``starts`` int32 ``(patches,)``: the first frame
    of each grid patch in those arrays (track by track, in time order)."""
    from keras_svs import examples, spectral

    magnitudes, ibms, first = [], [], [0]
    for i in range(len(decoded.names)):
        v, a = decoded.track(i)
        sv = spectral.stft_numpy(v, preset.stft, padded=False)[:, :preset.bins]
        sa = spectral.stft_numpy(a, preset.stft, padded=False)[:, :preset.bins]
        magnitudes.append(np.abs(sv + sa).astype(np.float32))
        ibms.append(np.square(sv.real) + np.square(sv.imag)
                    > np.square(sa.real) + np.square(sa.imag))
        first.append(first[-1] + len(sv))
    clip, offset = examples.grid_patches(decoded.lengths, preset, patch_hop)
    starts = np.asarray(first[:-1])[clip] + offset // preset.stft.hop_length
    return {"magnitude": np.concatenate(magnitudes), "ibm": np.concatenate(ibms),
            "starts": starts.astype(np.int32)}


def training_flops(model) -> float:
    """Multiply-adds of the Conv2D and Dense layers x 2 (forward) x 3 (forward + backward):
    FLOPs of one training patch."""
    import keras

    macs = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw = layer.kernel_size
            macs += (np.prod(layer.output.shape[1:]) * kh * kw * layer.input.shape[-1])
        elif isinstance(layer, keras.layers.Dense):
            macs += layer.input.shape[-1] * layer.units
    return float(6 * macs)


# -- the device side ---------------------------------------------------------------------------
class Trainer:
    """The jitted epoch and validation functions of one stage of one model."""

    def __init__(self, view, stage: str, smoothing: float, learning_rate: float,
                 batch_size: int, frames: int):
        import jax
        import jax.numpy as jnp
        import keras

        from keras_svs.models import bin_accuracy, bin_cross_entropy

        self.view, self.stage, self.batch_size = view, stage, batch_size
        self.optimizer = keras.optimizers.Adam(learning_rate)
        self.optimizer.build(view.trainable_variables)
        offsets = jnp.arange(frames)

        def examples_of(magnitude, ibm, starts):
            index = starts[:, None] + offsets  # (batch, frames)
            x, voice = magnitude[index], ibm[index]
            if stage == "pretrain":  # the autoencoder: IBM * |X| to itself
                x = jnp.where(voice, x, 0.0)
                return x, x
            return x, jnp.where(voice, 1.0 - smoothing, smoothing).astype(jnp.float32)

        def loss_of(trainable, non_trainable, x, y):
            logits, non_trainable = view.stateless_call(trainable, non_trainable, x,
                                                        training=True)
            return jnp.mean(bin_cross_entropy(y, logits)), non_trainable

        gradient = jax.value_and_grad(loss_of, has_aux=True)

        def step(state, starts, magnitude, ibm):
            trainable, non_trainable, optimizer = state
            x, y = examples_of(magnitude, ibm, starts)
            (loss, non_trainable), grads = gradient(trainable, non_trainable, x, y)
            trainable, optimizer = self.optimizer.stateless_apply(optimizer, grads, trainable)
            return (trainable, non_trainable, optimizer), loss


        def validate(trainable, non_trainable, order, weight, magnitude, ibm):
            def one(total, batch):
                starts, w = batch
                x, y = examples_of(magnitude, ibm, starts)
                logits, _ = view.stateless_call(trainable, non_trainable, x, training=False)
                return (total[0] + jnp.sum(bin_cross_entropy(y, logits) * w),
                        total[1] + jnp.sum(bin_accuracy(y, logits) * w)), None

            (loss, accuracy), _ = jax.lax.scan(one, (0.0, 0.0), (order, weight))
            count = jnp.sum(weight)
            return loss / count, accuracy / count

        self.step = jax.jit(step, donate_argnums=0)
        self.validate = jax.jit(validate)

    def epoch(self, state, order, magnitude, ibm):
        """One epoch: a jitted step per row of ``order`` ``(steps, batch)`` (the patches'
        first frames), dispatched without waiting; returns the state and the mean loss (a
        device scalar). A ``lax.scan`` over the steps ran ~50x slower on the CPU (XLA's
        convolutions inside a loop body)."""
        total = 0.0
        for starts in order:
            state, loss = self.step(state, starts, magnitude, ibm)
            total = total + loss
        return state, total / len(order)

    def compile(self, state, magnitude, ibm, valid_order, valid_weight,
                valid_magnitude, valid_ibm) -> float:
        """Compile the step and validation functions ahead of time; returns the seconds it
        took (so that steps/s exclude it)."""
        import jax

        tic = time.time()
        starts = jax.ShapeDtypeStruct((self.batch_size,), "int32")
        self.step = self.step.lower(state, starts, magnitude, ibm).compile()
        self.validate = self.validate.lower(state[0], state[1], valid_order, valid_weight,
                                            valid_magnitude, valid_ibm).compile()
        return time.time() - tic

    def state(self):
        """Copies of the variables' values (the jitted epoch donates the arrays it is given,
        so a variable's own value must not be among them)."""
        import jax.numpy as jnp

        return tuple([jnp.copy(v.value) for v in variables]
                     for variables in (self.view.trainable_variables,
                                       self.view.non_trainable_variables,
                                       self.optimizer.variables))


def valid_batches(patches: int, batch_size: int, limit: int | None):
    """Every validation patch once, in order, as ``(batches, batch_size)`` indices and 0/1
    weights (the last batch padded with weight 0)."""
    count = -(-patches // batch_size)
    if limit:
        count = min(count, limit)
    index = np.arange(count * batch_size)
    return (np.minimum(index, patches - 1).reshape(count, batch_size).astype(np.int32),
            (index < patches).reshape(count, batch_size).astype(np.float32))


def save_checkpoint(path: Path, payload: dict) -> None:
    staged = path.with_name(f".{path.name}.tmp.npz")
    arrays = {}
    for key, value in payload.items():
        if isinstance(value, list):
            for i, x in enumerate(value):
                arrays[f"{key}/{i:04d}"] = np.asarray(x)
        else:
            arrays[key] = np.asarray(value)
    np.savez(staged, **arrays)
    os.replace(staged, path)


def load_checkpoint(path: Path) -> dict:
    out: dict = {}
    with np.load(path) as f:
        for key in sorted(f.files):
            if "/" in key:
                out.setdefault(key.split("/")[0], []).append(f[key])
            else:
                out[key] = f[key]
    return out


def append_rows(path: Path, rows: list[dict]) -> None:
    fields = ["epoch", "loss", "val_loss", "val_bin_accuracy", "seconds", "steps_per_s"]
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fields)
        if new:
            writer.writeheader()
        writer.writerows(rows)


def run(args) -> dict:
    """Train both stages (resuming from ``args.state``), write ``args.out``; returns the
    run record."""
    started = time.time()
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import jax
    import jax.numpy as jnp
    import keras

    from keras_svs import examples, pipeline
    from keras_svs.datasets import discover, select_split
    from keras_svs.models import build_model, get_preset, logits_model, save_half_precision

    if keras.backend.backend() != "jax":
        raise SystemExit("KERAS_BACKEND must be jax")
    if args.compile_cache:  # a rerun on the same machine skips the compiles
        jax.config.update("jax_compilation_cache_dir", args.compile_cache)
    out, state_dir = Path(args.out), Path(args.state)
    out.mkdir(parents=True, exist_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    preset = get_preset(PRESET)
    batch_size, hop = args.batch_size, preset.patch_hop
    record = {"device": str(jax.devices()[0]), "devices": len(jax.devices()),
              "versions": {"jax": jax.__version__, "keras": keras.__version__,
                           "python": platform.python_version()},
              "precision": args.precision, "batch_size": batch_size, "patch_hop": hop,
              "learning_rate": args.learning_rate, "budget_s": args.budget,
              "machine": f"{platform.machine()}, {os.cpu_count()} cores"}
    tracks = discover(args.data)
    split_file = Path(args.data) / "splits.json"
    audio = {s: pipeline.decode(select_split(tracks, s, split_file), preset.stft.sample_rate)
             for s in ("train", "valid")}
    record["decode_s"] = round(time.time() - started, 1)
    host = {s: spectra(audio[s], preset, hop) for s in audio}
    device = {s: {k: jnp.asarray(v) for k, v in host[s].items()} for s in host}
    del host
    record["spectra_s"] = round(time.time() - started - record["decode_s"], 1)
    patches = {s: int(device[s]["starts"].shape[0]) for s in device}
    frames_total = {s: int(device[s]["magnitude"].shape[0]) for s in device}
    steps = args.steps or examples.grid_steps(patches["train"], batch_size)
    record.update(train_tracks=len(audio["train"].names), valid_tracks=len(audio["valid"].names),
                  train_frames=frames_total["train"], train_patches=patches["train"],
                  valid_patches=patches["valid"], steps_per_epoch=steps)
    print(f"[{time.time() - started:.0f} s] data: {record['train_tracks']} + "
          f"{record['valid_tracks']} tracks, {patches['train']} + {patches['valid']} "
          f"patches, {steps} steps an epoch, on {record['device']}", flush=True)
    valid_order, valid_weight = valid_batches(patches["valid"], batch_size, args.valid_batches)
    valid_order = device["valid"]["starts"][jnp.asarray(valid_order)]
    valid_weight = jnp.asarray(valid_weight)

    keras.mixed_precision.set_global_policy(args.precision)
    keras.utils.set_random_seed(args.seed)
    model = build_model(preset)
    view = logits_model(model)
    record["flops_per_training_patch"] = training_flops(model)
    checkpoint = state_dir / "checkpoint.npz"
    epochs = {"pretrain": args.pretrain_epochs, "finetune": args.epochs}
    shares = {"pretrain": 0.5, "finetune": 1.0}
    first_stage, first_epoch, resumed, weights = 0, 0, None, None
    if checkpoint.exists():  # resume: mid-stage (its whole state) or between stages
        saved = load_checkpoint(checkpoint)
        first_stage, first_epoch = int(saved["stage"]), int(saved["epoch"])
        weights = [jnp.asarray(x) for x in saved["best"]]
        if "trainable" in saved:
            resumed = (tuple([jnp.asarray(x) for x in saved[k]]
                             for k in ("trainable", "non_trainable", "optimizer")),
                       float(saved["best_loss"]))
        print(f"resuming at {STAGES[first_stage] if first_stage < len(STAGES) else 'the end'}"
              f", epoch {first_epoch}", flush=True)
    record["stages"] = {}
    for stage_index in range(first_stage, len(STAGES)):
        stage = STAGES[stage_index]
        log = state_dir / f"{stage}_log.csv"
        trainer = Trainer(view, stage, preset.label_smoothing, args.learning_rate, batch_size,
                          preset.frames)
        state, best, best_weights, start = trainer.state(), np.inf, weights, 0
        if resumed is not None and stage_index == first_stage:
            (state, best), start = resumed, first_epoch
            _truncate(log, start)
        else:  # a new stage: the previous stage's best weights (if any), a fresh Adam
            if log.exists():
                log.unlink()
            if weights is not None:
                state = ([jnp.copy(x) for x in weights], state[1], state[2])
        deadline = started + shares[stage] * args.budget if args.budget else None
        stage_started = time.time()
        timing = {"epochs": 0, "seconds": 0.0, "compile_s": round(trainer.compile(
            state, device["train"]["magnitude"], device["train"]["ibm"], valid_order,
            valid_weight, device["valid"]["magnitude"], device["valid"]["ibm"]), 1)}
        print(f"[{time.time() - started:.0f} s] {stage}: compiled in {timing['compile_s']} s",
              flush=True)
        for epoch in range(start, epochs[stage]):
            tic = time.time()
            order = np.stack([examples.grid_items(epoch * steps + k, patches["train"],
                                                  batch_size, args.seed + stage_index)
                              for k in range(steps)])
            starts = device["train"]["starts"][jnp.asarray(order)]
            state, loss = trainer.epoch(state, starts, device["train"]["magnitude"],
                                        device["train"]["ibm"])
            loss = float(loss)
            trained = time.time() - tic
            val_loss, accuracy = (float(x) for x in trainer.validate(
                state[0], state[1], valid_order, valid_weight,
                device["valid"]["magnitude"], device["valid"]["ibm"]))
            seconds = time.time() - tic
            timing["epochs"] += 1
            timing["seconds"] += trained
            if val_loss < best or best_weights is None:
                best = val_loss
                best_weights = [jnp.copy(x) for x in state[0]]
            append_rows(log, [{"epoch": epoch + 1, "loss": f"{loss:.6f}",
                               "val_loss": f"{val_loss:.6f}",
                               "val_bin_accuracy": f"{accuracy:.4f}" if stage == "finetune"
                               else "",
                               "seconds": f"{seconds:.2f}",
                               "steps_per_s": f"{steps / trained:.3g}"}])
            shutil.copyfile(log, out / log.name)
            print(f"[{time.time() - started:.0f} s] {stage} {epoch + 1}/{epochs[stage]}: "
                  f"loss {loss:.4f}, val_loss {val_loss:.4f}, val_bin_accuracy "
                  f"{accuracy:.4f}, {steps / trained:.3g} steps/s", flush=True)
            if not np.isfinite(loss):
                raise FloatingPointError(f"{stage}: the loss became {loss}")
            last = epoch + 1 == epochs[stage]
            if (epoch + 1) % args.checkpoint_every == 0 and not last:
                save_checkpoint(checkpoint, {"stage": stage_index, "epoch": epoch + 1,
                                             "best_loss": best, "best": list(best_weights),
                                             "trainable": list(state[0]),
                                             "non_trainable": list(state[1]),
                                             "optimizer": list(state[2])})
            if deadline is not None and time.time() + seconds > deadline and not last:
                print(f"{stage}: the budget stops it after epoch {epoch + 1}", flush=True)
                break
        record["stages"][stage] = {
            "epochs_done": _rows(log) if log.exists() else 0, "best_val_loss": best,
            "wall_s": round(time.time() - stage_started, 1),
            "compile_s": timing["compile_s"],
            "steps_per_s": round(timing["epochs"] * steps / timing["seconds"], 3)
            if timing["seconds"] else None}
        weights = best_weights
        save_checkpoint(checkpoint, {"stage": stage_index + 1, "epoch": 0, "best": weights})
    if weights is None:
        raise SystemExit("no stage ran: nothing to save")

    keras.mixed_precision.set_global_policy("float32")
    final = build_model(preset)
    for variable, value in zip(final.trainable_variables, weights):
        variable.assign(np.asarray(value, np.float32))
    whole = save_half_precision(final, state_dir / "paper16.keras")
    record["model_bytes"] = whole.stat().st_size
    _split(whole, out, SPLIT_BYTES)
    record["wall_s"] = round(time.time() - started, 1)
    record["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    (out / "run.json").write_text(json.dumps(record, indent=2))
    return record


def _rows(log: Path) -> int:
    with log.open() as f:
        return sum(1 for _ in csv.DictReader(f))


def _truncate(log: Path, epochs: int) -> None:
    """Keep the header and the first ``epochs`` rows of a stage log (resuming)."""
    if log.exists():
        lines = log.read_text().splitlines(keepends=True)
        log.write_text("".join(lines[:1 + epochs]))


def _split(path: Path, out: Path, size: int) -> None:
    """``path`` as ``out/<name>.part-aa, -ab, ...`` of at most ``size`` bytes."""
    data = path.read_bytes()
    for i in range(0, max(len(data), 1), size):
        k = i // size
        suffix = "abcdefghijklmnopqrstuvwxyz"[k // 26] + "abcdefghijklmnopqrstuvwxyz"[k % 26]
        (out / f"{path.name}.part-{suffix}").write_bytes(data[i:i + size])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cache = sub.add_parser("cache", help="copy musdb7 train + valid into a travelling folder")
    cache.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/musdb7")
    cache.add_argument("--out", type=Path, default=ROOT / ".carry/musdb7")
    train = sub.add_parser("train", help="the two stages on the device")
    train.add_argument("--data", type=Path, default=ROOT / ".carry/musdb7")
    train.add_argument("--out", type=Path, required=True)
    train.add_argument("--state", type=Path, default=ROOT / "runs/gpu-paper")
    train.add_argument("--pretrain-epochs", type=int, default=300)
    train.add_argument("--epochs", type=int, default=300)
    train.add_argument("--steps", type=int, default=None,
                       help="steps an epoch (default: one pass over the grid)")
    train.add_argument("--batch-size", type=int, default=107)
    train.add_argument("--learning-rate", type=float, default=1e-4)
    train.add_argument("--precision", default="mixed_bfloat16",
                       choices=("float32", "mixed_bfloat16"))
    train.add_argument("--budget", type=float, default=None,
                       help="seconds for the whole command; stages stop at epoch ends")
    train.add_argument("--checkpoint-every", type=int, default=25)
    train.add_argument("--valid-batches", type=int, default=None,
                       help="validate on the first N batches only (dry runs)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--compile-cache", default=str(ROOT / "runs/gpu-paper/jax-cache"),
                       help="JAX's persistent compilation cache ('' for none)")
    args = parser.parse_args(argv)
    if args.command == "cache":
        print(json.dumps(make_cache(args.data, args.out)))
    else:
        print(json.dumps(run(args), indent=2))


if __name__ == "__main__":
    main()
