"""Distil cheaper students from the shipped pair on a lent GPU, under JAX (no TensorFlow).

    # here: the compact stem cache that travels beside the repository
    python benchmarks/gpu/distill.py pack --musdb ../shared/data/musdb7 \\
        --mir1k ../shared/data/mir1k -o .carry/distill
    # on the GPU machine (make gpu-distill): train every student for --steps or --budget s
    KERAS_BACKEND=jax python benchmarks/gpu/distill.py train --cache .carry/distill \\
        --out $OUT [--resume DIR] [--steps N] [--budget S] [--batch 32] [--students a,b]
    # here, afterwards: a student's weights as a keras-svs model file
    python benchmarks/gpu/distill.py export OUT/NAME.npz -o NAME.keras

**The cache** (``pack``): the voice and accompaniment of ``musdb7`` train and valid (stereo,
resampled to 22.05 kHz) and of MIR-1K train and valid (mono, its own 16 kHz), as Ogg Vorbis,
one folder per split; the run resamples MIR-1K to 22.05 kHz as it loads it. The students'
networks see the lowest 768 bins of a 4096-point STFT at 44.1 kHz
(0-8.3 kHz); a 2048-point STFT with hop 512 at 22.05 kHz has the same bins (10.8 Hz apart),
window (46 ms) and hop (11.6 ms), and the same magnitudes (the window is divided by its
sum) for audio below 11 kHz: half the samples to carry and to transform.

**The examples** are those of :class:`keras_svs.examples.PatchSampler` with ``remix=1``:
every patch's voice and accompaniment come from two random clips of all the songs of both
datasets (length-weighted), each with a random gain in +-``--gain-db``, and with
probability ``--pitch`` the voice shifted by 1-3 semitones. The sampler's :meth:`draw`
makes each batch's random choices on the host (a few numbers a patch); the reads, linear
interpolation, gains, STFTs, magnitudes, smoothed IBM and the teacher's probabilities are
computed on the device, from the stems held there (:func:`device_examples`).

**The objective** (:func:`keras_svs.models.teacher.distillation_loss`): the student's
cross-entropy against the teacher's voice probability, plus ``--ibm-weight`` times the
cross-entropy against the smoothed IBM, from the logits.

**A step**: one jitted call makes a batch and the teacher's probabilities of it, then one
jitted call per student takes its Adam step on that same batch (the teacher runs once for
all students; ``--fused`` instead traces examples, teacher and the step as one function
per student, the teacher then running once per student).

**Output** (``--out``, at most ``2 + students`` files): ``NAME.npz`` per student (its
weights, float32, float16 where float32 would pass 15 MiB; its architecture; the steps
done), written every ``--checkpoint-every`` seconds and at the end; ``log.jsonl`` (one line
per ``--log-every`` steps and student: loss, steps/s); ``summary.json`` (steps/s, losses on
held-out valid remixes). ``--resume DIR`` (default: ``--out`` itself) continues each
student from its ``NAME.npz`` at the next batch of the same stream (Adam's moments restart).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import types
from pathlib import Path

if __name__ == "__main__":  # as a script; an importer (a test) keeps its own backend and env
    os.environ.setdefault("KERAS_BACKEND", "jax")
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

#: the cache's sample rate and the STFT that gives the students' 768 bins at it
CACHE_RATE = 22050
N_FFT, HOP = 2048, 512
TEACHER = ROOT / "keras_svs" / "assets" / "default.keras"
HALF = (8, 16, 32, 64, 128, 256)
QUARTER = (4, 8, 16, 32, 64, 128)
#: the students trained, by name: the ``student`` preset's architecture arguments
#: (benchmarks/student_speed.py measured these >= 2.5x faster as a whole separation)
STUDENTS = {
    "half_ext384": dict(heads=2, filters=HALF, network_bins=384),
    "half_sep3": dict(heads=2, filters=HALF, separable=3),
    "quarter_ext512": dict(heads=2, filters=QUARTER, network_bins=512),
}
#: a file that comes back may be at most 16 MiB
MAX_FILE = 15 * 2 ** 20


# -- the cache (here) -----------------------------------------------------------------------
def pack(args) -> None:
    """Write the compact stem cache: ``OUT/{train,valid}/{dataset}-{track}/{vocals,
    accompaniment}.ogg`` at :data:`CACHE_RATE` or below, and ``OUT/index.json``."""
    import soundfile as sf

    from keras_svs.audio import resample
    from keras_svs.datasets import discover, select_split
    from keras_svs.datasets.splits import split_file_for

    out = Path(args.output)
    index = {"rate": CACHE_RATE, "splits": {}}
    for dataset, root in (("musdb", args.musdb), ("mir1k", args.mir1k)):
        if root is None:
            continue
        tracks = discover(root)
        for split in ("train", "valid"):
            chosen = select_split(tracks, split, split_file_for(root))
            if args.limit:
                chosen = chosen[:args.limit]
            for track in chosen:
                voice, accompaniment, rate = track.load(None, mono=False)
                if rate > CACHE_RATE:  # MUSDB's 44.1 kHz; MIR-1K stays at its 16 kHz
                    voice, accompaniment = (resample(x, rate, CACHE_RATE)
                                            for x in (voice, accompaniment))
                    rate = CACHE_RATE
                folder = out / split / f"{dataset}-{track.name}".replace("/", "_")
                folder.mkdir(parents=True, exist_ok=True)
                for stem, x in (("vocals", voice), ("accompaniment", accompaniment)):
                    sf.write(folder / f"{stem}.ogg", np.asarray(x, np.float32).T, rate,
                             format="OGG", subtype="VORBIS", compression_level=args.level)
                index["splits"].setdefault(split, []).append(folder.name)
    (out / "index.json").write_text(json.dumps(index, indent=1))
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    counts = {k: len(v) for k, v in index["splits"].items()}
    print(f"cache {out}: {counts} tracks, {size / 1e6:.1f} MB")


def load_cache(folder: str | os.PathLike, split: str):
    """One split of the cache as a decode cache (attributes of
    :class:`keras_svs.pipeline.DecodedAudio`: stereo float32 ``(2, samples)`` sources at
    :data:`CACHE_RATE`, a mono track in both channels)."""
    import soundfile as sf

    from keras_svs.audio import resample

    folder = Path(folder)
    names = json.loads((folder / "index.json").read_text())["splits"].get(split, [])
    voices, accompaniments = [], []
    for name in names:
        pair = []
        for stem in ("vocals", "accompaniment"):
            x, rate = sf.read(folder / split / name / f"{stem}.ogg", dtype="float32",
                              always_2d=True)
            x = resample(x.T, rate, CACHE_RATE)
            pair.append(np.repeat(x, 2, axis=0) if x.shape[0] == 1 else x[:2])
        length = min(p.shape[1] for p in pair)
        voices.append(pair[0][:, :length])
        accompaniments.append(pair[1][:, :length])
    lengths = np.array([v.shape[1] for v in voices], np.int64)
    return types.SimpleNamespace(
        names=names, voice=np.concatenate(voices, axis=1),
        accompaniment=np.concatenate(accompaniments, axis=1),
        starts=np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64),
        lengths=lengths, sample_rate=CACHE_RATE)


def cache_preset(frames: int):
    """The ``student`` preset's examples at the cache's rate: 768 bins of a 2048-point
    STFT, hop 512, ``frames`` frames a patch."""
    from keras_svs.models import get_preset
    from keras_svs.spectral import StftConfig

    return dataclasses.replace(get_preset("student"), frames=frames,
                               stft=StftConfig(CACHE_RATE, N_FFT, N_FFT, HOP))


# -- the examples (on the device) -----------------------------------------------------------
def device_examples(voice, accompaniment, starts, lengths, draw, segment: int,
                    window, hop: int, bins: int, smoothing: float):
    """:meth:`keras_svs.examples.PatchSampler.batch`'s fine-tuning examples (target
    ``ibm``, no weights) in ``jax.numpy``, from the sampler's padded stereo sources held on
    the device and a batch's :class:`~keras_svs.examples.Draw` (``n`` patches).

    Returns:
        float32 ``(n, frames, bins, 2)`` mixture magnitudes and smoothed IBM targets.
    """
    import jax.numpy as jnp

    rate = jnp.asarray(draw.rate, jnp.float32)
    shifted = jnp.any(rate != 1.0)

    def read(source, clip, offset, rate):
        i = jnp.arange(segment, dtype=jnp.float32)[None, :]
        extra = i * (rate[:, None] - 1.0)  # position = i + extra, kept exact in float32
        low = jnp.arange(segment)[None, :] + jnp.floor(extra).astype(jnp.int32)
        frac = (extra - jnp.floor(extra))[:, None, :]
        offset = jnp.asarray(offset, jnp.int32)[:, None]
        index = jnp.asarray(starts, jnp.int32)[clip][:, None] + offset + low
        limit = jnp.asarray(lengths, jnp.int32)[clip][:, None]
        inside = jnp.where(shifted, offset + low + 1 < limit, offset + low < limit)
        left = jnp.moveaxis(source[:, index], 0, 1)  # (n, 2, segment)
        right = jnp.moveaxis(source[:, index + 1], 0, 1)
        return (left + (right - left) * jnp.where(shifted, frac, 0.0)) * inside[:, None, :]

    gains = jnp.asarray(draw.gains, jnp.float32)
    v = read(voice, draw.voice_clip, draw.voice_offset, rate) * gains[:, 0, None, None]
    a = read(accompaniment, draw.accompaniment_clip, draw.accompaniment_offset,
             jnp.ones_like(rate)) * gains[:, 1, None, None]
    frames = (segment - window.shape[0]) // hop + 1
    index = jnp.arange(frames)[:, None] * hop + jnp.arange(window.shape[0])[None, :]

    def stft(x):  # (n, 2, segment) -> (n, frames, bins, 2)
        spectrum = jnp.fft.rfft(x[..., index] * window, axis=-1)[..., :bins]
        return jnp.moveaxis(spectrum, 1, -1)

    sv, sa = stft(v), stft(a)
    mixture = jnp.abs(sv + sa)
    dominates = jnp.abs(sv) ** 2 > jnp.abs(sa) ** 2
    target = jnp.where(dominates, 1.0 - smoothing, smoothing)
    return mixture.astype(jnp.float32), target.astype(jnp.float32)


# -- training (on the device) ---------------------------------------------------------------
class Student:
    """One student's model, optimizer and stateless state, its jitted step and its file."""

    def __init__(self, name: str, arch: dict, learning_rate: float, ibm_weight: float,
                 seed: int):
        import jax
        import keras
        from keras import ops

        from keras_svs.models import bin_cross_entropy, build_model, get_preset, logits_model
        from keras_svs.models.teacher import distillation_loss

        self.name, self.arch = name, arch
        keras.utils.set_random_seed(seed)
        preset = dataclasses.replace(get_preset("student"), arch=arch)
        self.model = build_model(preset)
        self.view = logits_model(self.model)
        self.optimizer = keras.optimizers.Adam(learning_rate)
        self.optimizer.build(self.view.trainable_variables)
        self.step_done = 0
        view = self.view

        def loss_of(trainable, non_trainable, x, y, q):
            z, non_trainable = view.stateless_call(trainable, non_trainable, x, training=True)
            loss = ops.mean(distillation_loss(bin_cross_entropy, y, z, q, ibm_weight))
            return loss, non_trainable

        gradient = jax.value_and_grad(loss_of, has_aux=True)

        def step(state, x, y, q):
            trainable, non_trainable, optimizer = state
            (loss, non_trainable), grads = gradient(trainable, non_trainable, x, y, q)
            trainable, optimizer = self.optimizer.stateless_apply(optimizer, grads, trainable)
            return (trainable, non_trainable, optimizer), loss

        def evaluate(state, x, y, q):
            trainable, non_trainable, _ = state
            z, _ = view.stateless_call(trainable, non_trainable, x, training=False)
            return (ops.mean(distillation_loss(bin_cross_entropy, y, z, q, 0.0)),
                    ops.mean(bin_cross_entropy(y, z)))

        self.plain_step = step
        self.step = jax.jit(step, donate_argnums=0)
        self.evaluate = jax.jit(evaluate)
        self.state = self._state()

    def _state(self):
        return ([v.value for v in self.view.trainable_variables],
                [v.value for v in self.view.non_trainable_variables],
                [v.value for v in self.optimizer.variables])

    def commit(self) -> None:
        """Write the stateless state back into the Keras variables."""
        trainable, non_trainable, _ = self.state
        for v, value in zip(self.view.trainable_variables, trainable):
            v.assign(value)
        for v, value in zip(self.view.non_trainable_variables, non_trainable):
            v.assign(value)

    def save(self, folder: Path) -> Path:
        self.commit()
        weights = [np.asarray(w) for w in self.model.get_weights()]
        if sum(w.nbytes for w in weights) > MAX_FILE:
            weights = [w.astype(np.float16) for w in weights]
        path = folder / f"{self.name}.npz"
        staged = folder / f".{self.name}.tmp.npz"
        with open(staged, "wb") as f:
            np.savez(f, step=self.step_done, arch=json.dumps(self.arch),
                     **{f"w{i:03d}": w for i, w in enumerate(weights)})
        os.replace(staged, path)
        return path

    def resume(self, folder: Path) -> bool:
        path = folder / f"{self.name}.npz"
        if not path.is_file():
            return False
        with np.load(path) as saved:
            weights = [saved[f"w{i:03d}"].astype(np.float32)
                       for i in range(len(self.model.weights))]
            self.step_done = int(saved["step"])
        self.model.set_weights(weights)
        self.state = self._state()
        return True


def time_teacher(student: Student, teach, fused, teacher_state, held, draw,
                 rounds: int) -> dict:
    """Median seconds, over ``rounds`` interleaved rounds after a warm-up, of: making a
    batch and its teacher probabilities (``teach``); one student step given them
    (``step``); and both as one traced function (``fused``, the teacher in the step).
    With ``S`` students a batch costs ``teach + S * step`` precomputed, ``S * fused`` with
    the teacher in each step."""
    import statistics

    import jax

    def teach_only():
        jax.block_until_ready(teach(teacher_state, held, draw))

    batch = teach(teacher_state, held, draw)

    def step_only():
        student.state, loss = student.step(student.state, *batch)
        jax.block_until_ready(loss)

    def in_step():
        student.state, loss = fused[student.name](student.state, teacher_state, held, draw)
        jax.block_until_ready(loss)

    ways = {"teach_s": teach_only, "step_s": step_only, "fused_s": in_step}
    times = {name: [] for name in ways}
    for round_ in range(rounds + 1):
        for name, way in ways.items():
            began = time.perf_counter()
            way()
            if round_:
                times[name].append(time.perf_counter() - began)
    return {name: round(statistics.median(t), 4) for name, t in times.items()}


def export(args) -> None:
    """A student's ``.npz`` as a keras-svs model file (the ``student`` preset's input)."""
    from keras_svs.models import build_model, get_preset

    with np.load(args.checkpoint) as saved:
        arch = json.loads(str(saved["arch"]))
        arch = {k: tuple(v) if isinstance(v, list) else v for k, v in arch.items()}
        model = build_model(dataclasses.replace(get_preset("student"), arch=arch))
        model.set_weights([saved[f"w{i:03d}"].astype(np.float32)
                           for i in range(len(model.weights))])
        step = int(saved["step"])
    model.save(args.output)
    print(f"{args.output}: {model.count_params():,} parameters, {step} steps")


class _NoTensorFlow:
    """An import hook under which ``import tensorflow`` fails, as on a machine without it
    (Keras then finds it unavailable, as there)."""

    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ImportError(f"{name}: blocked by --no-tensorflow")
        return None


def train(args) -> None:
    if args.no_tensorflow:
        sys.meta_path.insert(0, _NoTensorFlow())
    import jax
    import jax.numpy as jnp
    import keras

    from keras_svs import examples
    from keras_svs.models import build_model, get_preset
    from keras_svs.models.teacher import load_teacher
    from keras_svs.spectral import window_numpy

    began = time.perf_counter()
    if args.compile_cache:  # a resumed run on the same machine skips most compilation
        jax.config.update("jax_compilation_cache_dir", str(args.compile_cache))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    resume = Path(args.resume) if args.resume else out
    keras.mixed_precision.set_global_policy(args.precision)
    log = open(out / "log.jsonl", "a")

    def record(**fields):
        fields["elapsed_s"] = round(time.perf_counter() - began, 2)
        log.write(json.dumps(fields) + "\n")
        log.flush()
        print(json.dumps(fields), flush=True)

    record(event="start", devices=[str(d) for d in jax.devices()], backend=keras.backend.backend(),
           jax=jax.__version__, precision=args.precision, batch=args.batch, frames=args.frames)
    preset = cache_preset(args.frames)
    decoded = load_cache(args.cache, "train")
    sampler = examples.PatchSampler(decoded, preset, remix=1.0, pitch=args.pitch,
                                    gain_db=args.gain_db, batch_size=args.batch, seed=args.seed)
    valid = load_cache(args.cache, "valid")
    valid_sampler = (examples.PatchSampler(valid, preset, remix=1.0, pitch=0.0,
                                           gain_db=args.gain_db, batch_size=args.batch,
                                           seed=args.seed + 1) if valid.names else None)
    record(event="cache", train_tracks=len(decoded.names), train_s=round(
        float(decoded.lengths.sum()) / CACHE_RATE, 1), valid_tracks=len(valid.names))

    names = args.students.split(",") if args.students else list(STUDENTS)
    students = [Student(n, STUDENTS[n], args.learning_rate, args.ibm_weight, args.seed)
                for n in names]
    teacher = load_teacher(args.teacher, build_model(get_preset("student")))
    teacher_state = ([v.value for v in teacher.trainable_variables],
                     [v.value for v in teacher.non_trainable_variables])
    window = jnp.asarray(window_numpy(preset.stft))
    segment = examples.patch_samples(preset)
    smoothing = preset.label_smoothing

    def sources(s):
        return (jax.device_put(s.voice), jax.device_put(s.accompaniment), s.starts, s.lengths)

    held = sources(sampler)
    held_valid = sources(valid_sampler) if valid_sampler else None

    def teach(teacher_state, stems, draw):
        x, y = device_examples(*stems, draw, segment, window, preset.stft.hop_length,
                               preset.bins, smoothing)
        z, _ = teacher.stateless_call(*teacher_state, x, training=False)
        return x, y, jax.nn.sigmoid(z.astype(jnp.float32))

    teach_jit = jax.jit(teach)
    fused = {s.name: jax.jit(lambda state, ts, stems, draw, s=s: s.plain_step(
        state, *teach(ts, stems, draw)), donate_argnums=0) for s in students}
    for s in students:
        if s.resume(resume):
            record(event="resumed", student=s.name, step=s.step_done)
    start = min(s.step_done for s in students)
    deadline = began + args.budget if args.budget else None
    last_save = time.perf_counter()
    done = start
    timing = {"started": None, "from": start}
    for k in range(start, args.steps):
        if deadline is not None and time.perf_counter() > deadline:
            record(event="budget", step=k)
            break
        draw = sampler.draw(k)
        if k == start + args.warmup:
            jax.block_until_ready([s.state for s in students])
            timing.update(started=time.perf_counter(), at=k)
        losses = {}
        if args.fused:
            for s in students:
                if s.step_done <= k:
                    s.state, losses[s.name] = fused[s.name](s.state, teacher_state, held, draw)
                    s.step_done = k + 1
        else:
            x, y, q = teach_jit(teacher_state, held, draw)
            for s in students:
                if s.step_done <= k:
                    s.state, losses[s.name] = s.step(s.state, x, y, q)
                    s.step_done = k + 1
        done = k + 1
        if done % args.log_every == 0 or done == args.steps:
            rate = None
            if timing["started"] is not None:
                jax.block_until_ready([s.state for s in students])
                rate = (done - timing["at"]) / (time.perf_counter() - timing["started"])
            for name, loss in losses.items():
                record(event="step", student=name, step=done, loss=float(loss),
                       steps_per_s=None if rate is None else round(rate, 3))
        if time.perf_counter() - last_save > args.checkpoint_every:
            for s in students:
                s.save(out)
            last_save = time.perf_counter()
    jax.block_until_ready([s.state for s in students])
    elapsed = (time.perf_counter() - timing["started"]) if timing["started"] else None
    rate = (done - timing["at"]) / elapsed if elapsed else None
    summary = {"steps": done, "batch": args.batch, "frames": args.frames,
               "steps_per_s": rate, "patches_per_s": rate and rate * args.batch,
               "fused": args.fused, "students": {}}
    if args.time_teacher:
        summary["teacher_timing"] = time_teacher(students[0], teach_jit, fused, teacher_state,
                                                 held, sampler.draw(done), args.time_teacher)
        record(event="teacher_timing", **summary["teacher_timing"])
    for s in students:
        s.save(out)
        scores = None
        if held_valid is not None:
            got = []
            for j in range(args.valid_batches):
                x, y, q = teach_jit(teacher_state, held_valid, valid_sampler.draw(j))
                got.append([float(v) for v in s.evaluate(s.state, x, y, q)])
            scores = dict(zip(("teacher_ce", "ibm_ce"), np.mean(got, axis=0).tolist()))
        summary["students"][s.name] = {"arch": s.arch, "steps": s.step_done,
                                       "parameters": s.model.count_params(), "valid": scores}
    summary["wall_s"] = round(time.perf_counter() - began, 1)
    summary["tensorflow_imported"] = "tensorflow" in sys.modules
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    record(event="done", **{k: v for k, v in summary.items() if k != "students"})
    log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("pack", help="write the compact stem cache (here)")
    p.add_argument("--musdb")
    p.add_argument("--mir1k")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--limit", type=int, default=0, help="tracks per dataset and split (0: all)")
    p.add_argument("--level", type=float, default=0.8,
                   help="Vorbis compression level, 0 (best quality) to 1 (smallest); 0.8: "
                        "19.0 MB for musdb7 and MIR-1K train + valid, within what travels")
    p.set_defaults(run=pack)
    t = commands.add_parser("train", help="distil the students (on the GPU)")
    t.add_argument("--cache", required=True)
    t.add_argument("--out", default=os.environ.get("OUT", "distill_out"))
    t.add_argument("--resume", default=None)
    t.add_argument("--teacher", default=str(TEACHER))
    t.add_argument("--students", default="", help=f"comma-separated, of {sorted(STUDENTS)}")
    t.add_argument("--steps", type=int, default=100000)
    t.add_argument("--budget", type=float, default=None, help="seconds for the whole run")
    t.add_argument("--batch", type=int, default=32)
    t.add_argument("--frames", type=int, default=256)
    t.add_argument("--learning-rate", type=float, default=1e-3)
    t.add_argument("--ibm-weight", type=float, default=0.1)
    t.add_argument("--pitch", type=float, default=0.3)
    t.add_argument("--gain-db", type=float, default=6.0)
    t.add_argument("--precision", default="float32")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--warmup", type=int, default=2, help="steps before the timing starts")
    t.add_argument("--log-every", type=int, default=50)
    t.add_argument("--checkpoint-every", type=float, default=60.0, help="seconds")
    t.add_argument("--valid-batches", type=int, default=8)
    t.add_argument("--no-tensorflow", action="store_true",
                   help="make `import tensorflow` fail, as on the GPU machine (dry runs)")
    t.add_argument("--compile-cache", default=None, help="JAX's persistent compilation cache")
    t.add_argument("--time-teacher", type=int, default=0, metavar="ROUNDS",
                   help="at the end, time the teacher precomputed against in the step")
    t.add_argument("--fused", action="store_true",
                   help="examples, teacher and step as one function per student")
    t.set_defaults(run=train)
    e = commands.add_parser("export", help="a student's .npz as a .keras model (here)")
    e.add_argument("checkpoint")
    e.add_argument("-o", "--output", required=True)
    e.set_defaults(run=export)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
