"""Separating many files: output names, long-file streaming, worker processes, failures.

:func:`separate_files` is what ``keras-svs separate`` runs::

    from keras_svs.batch import separate_files

    for outcome in separate_files({"model": "model.keras"}, ["a.mp3", "b.flac"], "out",
                                  jobs=2):
        print(outcome.path, outcome.error or outcome.written)

Nothing here imports TensorFlow until a file is separated.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import string
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

from .options import DEFAULT_FILENAME, PLACEHOLDERS, STEMS
from .runtime import import_tensorflow_quietly  # noqa: F401  (the CLI imports it from here)

#: Errors a bad input or output causes; :func:`separate_files` reports them per file (any
#: other exception propagates).
EXPECTED_ERRORS = (ValueError, OSError, KeyError, FloatingPointError)
#: Without ``block_seconds``, files longer than this many seconds are streamed ...
AUTO_STREAM_SECONDS = 300.0
#: ... in blocks of this many seconds (``streaming.DEFAULT_BLOCK_SECONDS``).
AUTO_BLOCK_SECONDS = 10.0


class OutputNameError(ValueError):
    """A file name template that cannot be used: an unknown placeholder, a name outside
    the output folder, the wrong extension, or two outputs that would be the same file."""


@dataclasses.dataclass(frozen=True)
class Outcome:
    """One file of :func:`separate_files`.

    Attributes:
        path: the input file.
        written: ``{stem: written path}`` (and ``"plot"``); empty where it failed.
        audio_seconds: the input's duration in seconds (0 where it failed).
        seconds: wall-clock seconds its separation took (0 where it failed).
        error: the expected error (:data:`EXPECTED_ERRORS`) that stopped it, else None.
    """

    path: Path
    written: dict[str, Path] = dataclasses.field(default_factory=dict)
    audio_seconds: float = 0.0
    seconds: float = 0.0
    error: Exception | None = None


def parse_stems(text: str) -> tuple[str, ...]:
    """A comma list of stem names (``"vocals,accompaniment"``), deduplicated, in the order
    given; ``ValueError`` for none or an unknown one."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise ValueError(f"name at least one of {', '.join(STEMS)}")
    unknown = [name for name in names if name not in STEMS]
    if unknown:
        raise ValueError(f"unknown stem {unknown[0]!r}; choose among {', '.join(STEMS)}")
    return tuple(dict.fromkeys(names))


def check_template(template: str) -> str:
    """``template`` if it is an output name template of known :data:`PLACEHOLDERS`
    (``{track}``, ``{stem}``, ``{codec}``), relative, without ``..``; else
    :class:`OutputNameError`."""
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(template)
                  if field is not None]
    except ValueError as error:
        raise OutputNameError(f"{template!r}: {error}") from None
    for field in fields:
        if field not in PLACEHOLDERS:
            raise OutputNameError(
                f"{template!r}: unknown placeholder {{{field}}}; use "
                f"{', '.join('{' + p + '}' for p in PLACEHOLDERS)}")
    if template.startswith(("/", "\\")) or Path(template).is_absolute():
        raise OutputNameError(f"{template!r}: must be relative to the output folder (-o)")
    if ".." in Path(template).parts or ".." in template.replace("\\", "/").split("/"):
        raise OutputNameError(f"{template!r}: must not contain '..' (outputs stay inside "
                              f"the output folder)")
    return template


def output_paths(files: Iterable[str | os.PathLike], out_dir: str | os.PathLike,
                 template: str = DEFAULT_FILENAME, stems: tuple[str, ...] = STEMS,
                 codec: str = "wav", plot: bool = False) -> list[dict[str, Path]]:
    """Where each input's outputs go.

    Args:
        files: the inputs; ``{track}`` is each one's file name without extension.
        out_dir: the output folder every name is relative to.
        template: the name of one output (:func:`check_template`); ``{stem}`` is the stem
            (``separation`` for the plot), ``{codec}`` the extension (``png`` for the plot).
        stems: the stems written.
        codec: the stems' extension (``wav``, ``flac``, ``ogg``).
        plot: also place a plot (key ``"plot"``).

    Returns:
        one ``{stem: path}`` (and ``"plot"``) per input, in order.

    Raises:
        OutputNameError: several stems without ``{stem}``; a name outside ``out_dir`` or
            not ending in ``.codec``; two outputs that would be the same file.
    """
    check_template(template)
    if len(stems) > 1 and "{stem}" not in template:
        raise OutputNameError(f"{template!r} lacks {{stem}}: the stems would be written "
                              f"to the same file")
    plans, owners = [], {}
    for path in map(Path, files):
        plan = {}
        for key in list(stems) + (["plot"] if plot else []):
            stem, ext = ("separation", "png") if key == "plot" else (key, codec)
            name = template.format(track=path.stem, stem=stem, codec=ext)
            relative = Path(name)
            if (not name or relative.is_absolute() or ".." in relative.parts
                    or name.endswith(("/", "\\"))):
                raise OutputNameError(f"{template!r} gives {name!r} for {path}: not a file "
                                      f"inside the output folder")
            if key != "plot" and relative.suffix.lower() != f".{codec}":
                raise OutputNameError(f"{template!r} gives {name!r}, which does not end in "
                                      f".{codec} (end the template with .{{codec}})")
            target = Path(out_dir) / relative
            key_path = os.path.normcase(os.path.normpath(target))
            if key_path in owners:
                other = owners[key_path]
                raise OutputNameError(
                    f"{template!r} writes {target} for both {other} and {path}"
                    if other != path else f"{template!r} writes {target} twice for {path}")
            owners[key_path] = path
            plan[key] = target
        plans.append(plan)
    return plans


def duration(path: str | os.PathLike) -> float:
    """The duration in seconds of an audio file libsndfile reads, else 0."""
    from . import audio

    try:
        rate, _, frames = audio.info(path)
    except Exception:
        return 0.0
    return frames / rate


def block_seconds_for(path: str | os.PathLike, block_seconds: float | None) -> float | None:
    """The block length in seconds to stream ``path`` with, or None to separate it whole.

    With ``block_seconds``: files longer than it stream in blocks of it. Without: files
    longer than :data:`AUTO_STREAM_SECONDS` stream in blocks of :data:`AUTO_BLOCK_SECONDS`.
    """
    seconds = duration(path)
    if block_seconds is not None:
        return block_seconds if seconds > block_seconds else None
    if seconds <= AUTO_STREAM_SECONDS:
        return None
    return AUTO_BLOCK_SECONDS


def check_overwrite(plan: Mapping[str, str | os.PathLike], stems: tuple[str, ...] = STEMS,
                    overwrite: bool = False,
                    exists: Callable[[str], bool] = os.path.exists) -> None:
    """Raises ``FileExistsError`` naming the first output of ``stems`` in ``plan`` that
    ``exists`` (a local file, or with another ``exists`` one on another file system),
    unless ``overwrite``."""
    existing = [t for t in (plan[stem] for stem in stems) if exists(str(t))]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} exists (use --overwrite to replace it)")


#: The progress callback of :func:`separate_files`: ``(input, frames done, frames)``.
Progress = Callable[[Path, int, int], object]


def separate_one(separator, path: str | os.PathLike, plan: Mapping[str, Path],
                 stems: tuple[str, ...] = STEMS, bit_depth: int = 16,
                 block_seconds: float | None = None, plot: bool = False,
                 overwrite: bool = False, progress: Progress | None = None,
                 bitrate: int = 320) -> Outcome:
    """Separate one file to the paths ``plan`` (one entry of :func:`output_paths`),
    streaming it as :func:`block_seconds_for` says (never with ``plot``).

    Args:
        progress: for a streamed file, called after each block with the input, its frames
            (samples per channel) separated so far and its frames in all.

    Returns:
        its :class:`Outcome` (``error`` None).

    Raises:
        FileExistsError: an output exists and ``overwrite`` is false; nothing is written.
        the errors of :meth:`~keras_svs.separation.Separator.separate_file` and
        :func:`~keras_svs.streaming.separate_file_stream`.
    """
    from . import audio

    path = Path(path)
    check_overwrite(plan, stems, overwrite)
    started = time.perf_counter()
    block = block_seconds_for(path, block_seconds)
    if block is not None and not plot:
        from .streaming import separate_file_stream

        update = None
        if progress is not None:
            total, done = audio.info(path)[2], [0]

            def update(frames: int) -> None:
                done[0] += frames
                progress(path, done[0], total)

        written = separate_file_stream(separator, path, ".", bit_depth=bit_depth,
                                       stems=stems, block_seconds=block, paths=plan,
                                       progress=update, bitrate=bitrate)
    else:
        written = separator.separate_file(path, ".", bit_depth=bit_depth, stems=stems,
                                          plot=plot, paths=plan, bitrate=bitrate)
    seconds = time.perf_counter() - started
    rate, _, frames = audio.info(written[stems[0]])
    return Outcome(path, dict(written), frames / rate, seconds)


def separate_files(separator, paths: Iterable[str | os.PathLike],
                   out_dir: str | os.PathLike = "separated", *,
                   filename: str = DEFAULT_FILENAME, codec: str = "wav", bit_depth: int = 16,
                   stems: tuple[str, ...] = STEMS, overwrite: bool = False,
                   fail_fast: bool = False, block_seconds: float | None = None,
                   jobs: int = 1, plot: bool = False,
                   progress: Progress | None = None, bitrate: int = 320) -> Iterator[Outcome]:
    """Separate many files, as ``keras-svs separate`` does.

    The names are checked before any work: all outputs are placed first
    (:func:`output_paths`). A file that fails with one of :data:`EXPECTED_ERRORS` gives an
    :class:`Outcome` with that ``error`` and leaves no output; the others go on, or with
    ``fail_fast`` no further file is started (with ``jobs``, those already started finish).

    Args:
        separator: a :class:`~keras_svs.separation.Separator`, or the keyword arguments
            that make one (``model``, ``mask``, ``threshold``, ``mode``, ``precision``,
            ``extension``); worker processes (``jobs`` > 1) each load their own from
            these arguments (a Separator's :attr:`~keras_svs.separation.Separator.arguments`).
        paths: the input audio files.
        out_dir: the output folder.
        filename: each output's name inside ``out_dir`` (:func:`output_paths`).
        codec: ``wav``, ``flac``, ``ogg`` or ``mp3``.
        bit_depth: 16, 24 (PCM) or 32 (float WAV).
        bitrate: MP3's constant bitrate in kbit/s (default 320).
        stems: the stems to write.
        overwrite: replace existing outputs (else such a file fails with
            ``FileExistsError``).
        fail_fast: stop at the first failure.
        block_seconds: stream files longer than this in blocks of this many seconds
            (:func:`block_seconds_for`; not with ``plot``).
        jobs: files separated at once, each job in its own process with its share of the
            CPU cores (:func:`keras_svs.separation.set_threads`) and its own model.
        plot: also write a plot of each separation (needs matplotlib).
        progress: see :func:`separate_one`; called in this process only (``jobs`` 1).

    Returns:
        an iterator of one :class:`Outcome` per file, in the order they finish (the input
        order with ``jobs`` 1); files are separated as it is consumed.

    Raises:
        OutputNameError: the names (:func:`output_paths`), before any work.
        ValueError: an unknown stem, or ``jobs`` > 1 with a Separator of a Keras object.
        ImportError: ``plot`` without matplotlib.
        the model's errors (:class:`~keras_svs.separation.Separator`), with ``jobs`` 1.
    """
    paths = [Path(p) for p in paths]
    unknown = [stem for stem in stems if stem not in STEMS]
    if unknown or not stems:
        raise ValueError(f"unknown stems {unknown}; choose among {STEMS}")
    plans = output_paths(paths, out_dir, filename, stems, codec, plot)
    if plot:
        from .plotting import require_matplotlib

        require_matplotlib()
    jobs = max(1, min(jobs, len(paths)))
    work = dict(stems=tuple(stems), bit_depth=int(bit_depth), block_seconds=block_seconds,
                plot=plot, overwrite=overwrite, bitrate=int(bitrate))
    if jobs > 1:
        arguments = (separator if isinstance(separator, Mapping)
                     else getattr(separator, "arguments", None))
        if arguments is None:
            raise ValueError("jobs > 1: worker processes load their own model; pass the "
                             "separator's arguments, or a Separator made from a model file")
        return _in_pool(dict(arguments), work, jobs, list(zip(paths, plans)), fail_fast)
    if isinstance(separator, Mapping):
        from .separation import Separator

        separator = Separator(**separator)
    return _in_turn(separator, work, zip(paths, plans), fail_fast, progress)


def _attempt(separator, path: Path, plan: dict, work: dict,
             progress: Progress | None = None) -> Outcome:
    """:func:`separate_one`, with an expected error as the outcome."""
    try:
        return separate_one(separator, path, plan, progress=progress, **work)
    except EXPECTED_ERRORS as error:
        from .audio import STOPPING

        if STOPPING.is_set():  # the signal surfaced as another error: stop the batch
            raise KeyboardInterrupt("terminated") from error
        return Outcome(path, error=error)


def _in_turn(separator, work: dict, tasks, fail_fast: bool, progress) -> Iterator[Outcome]:
    for path, plan in tasks:
        outcome = _attempt(separator, path, plan, work, progress)
        yield outcome
        if outcome.error is not None and fail_fast:
            return


#: A worker process's separator and settings.
_JOB: dict = {}


def _start_job(options: dict, work: dict, threads: int) -> None:
    """Initialise a worker process: ``threads`` CPU threads, its own model (TensorFlow
    imported only where its runtime needs it)."""
    from .separation import Separator, set_threads

    set_threads(threads)
    _JOB.update(separator=Separator(**options), work=work)


def _run_job(path: Path, plan: dict) -> Outcome:
    return _attempt(_JOB["separator"], path, plan, _JOB["work"])


def _in_pool(options: dict, work: dict, jobs: int, tasks: list,
             fail_fast: bool) -> Iterator[Outcome]:
    """Run ``tasks`` (``(path, plan)`` pairs) in ``jobs`` worker processes, at most
    ``jobs`` at a time (the executor's own queue would start them all); yield their
    outcomes as they complete. After a failure with ``fail_fast`` no task is started."""
    import multiprocessing
    from concurrent import futures

    threads = max(1, (os.cpu_count() or 1) // jobs)
    pending, running, stopping = iter(tasks), set(), False
    with futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                     initializer=_start_job,
                                     initargs=(options, work, threads)) as pool:
        while True:
            while len(running) < jobs and not stopping:
                task = next(pending, None)
                if task is None:
                    break
                running.add(pool.submit(_run_job, *task))
            if not running:
                return
            finished, _ = futures.wait(running, return_when=futures.FIRST_COMPLETED)
            for future in finished:
                running.remove(future)
                outcome = future.result()
                stopping = stopping or (outcome.error is not None and fail_fast)
                yield outcome


def first_line(error: BaseException) -> str:
    """An error's message as one line: its first, without the quotes ``KeyError`` adds;
    the error's type name where it has no message."""
    lines = str(error).strip().splitlines()
    return lines[0].strip("'\"") if lines else type(error).__name__


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Within the block, SIGTERM (a container stop, a scheduler's kill) raises
    ``KeyboardInterrupt("terminated")`` as Ctrl-C does, so that the writers' clean-up runs
    and no partial file is left; the previous handler is restored after. The handler also
    sets :data:`keras_svs.audio.STOPPING`, so that no writer commits from then on: a signal
    that lands inside native code (TensorFlow) can surface as another exception there, or
    be swallowed. After a SIGTERM, any exception leaving the block, or none, is raised as
    that ``KeyboardInterrupt``. Outside the main thread, where no handler can be set, it
    does nothing."""
    from .audio import STOPPING

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminated(signum, frame):
        STOPPING.set()
        raise KeyboardInterrupt("terminated")

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
        if STOPPING.is_set():  # the signal's exception was swallowed on its way here
            raise KeyboardInterrupt("terminated")
    except Exception as error:
        if STOPPING.is_set():
            raise KeyboardInterrupt("terminated") from error
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        STOPPING.clear()


def speed(audio_seconds: float, seconds: float) -> str:
    """Real-time factor as ``"37x"``, one decimal under 10 (``"0.4x"``)."""
    ratio = audio_seconds / max(seconds, 1e-9)
    return f"{ratio:.0f}x" if ratio >= 10 else f"{ratio:.1f}x"


class Report:
    """The lines ``keras-svs separate`` prints for a batch: one per :class:`Outcome`
    (:meth:`line`), a closing total (:meth:`summary`) and the reason for a non-zero exit
    (:meth:`failure`).

    Args:
        files: how many inputs the batch has.
        stems: the stems written (a file's line names their folder, or the files).
        fail_fast: the batch stops at its first failure.
    """

    def __init__(self, files: int, stems: tuple[str, ...] = STEMS, fail_fast: bool = False):
        self.files, self.stems, self.fail_fast = files, tuple(stems), fail_fast
        self.done = self.failed = 0
        self.audio_seconds = 0.0
        self.started = time.perf_counter()

    def line(self, outcome: Outcome) -> str:
        """``IN -> WHERE (A s of audio in T s, Nx real time)``, or ``Error: IN: why``."""
        if outcome.error is not None:
            self.failed += 1
            why = first_line(outcome.error)
            return f"Error: {why}" if str(outcome.path) in why else \
                f"Error: {outcome.path}: {why}"
        self.done += 1
        self.audio_seconds += outcome.audio_seconds
        folders = {outcome.written[stem].parent for stem in self.stems}
        where = (f"{folders.pop()}/" if len(folders) == 1 and len(self.stems) > 1
                 else ", ".join(str(outcome.written[stem]) for stem in self.stems))
        return (f"{outcome.path} -> {where} ({outcome.audio_seconds:.1f} s of audio in "
                f"{outcome.seconds:.1f} s, {speed(outcome.audio_seconds, outcome.seconds)} "
                f"real time)")

    def summary(self) -> str | None:
        """``N files, A s of audio in T s (Nx real time)`` since the report began; None if
        no file was separated."""
        if not self.done:
            return None
        total = time.perf_counter() - self.started
        return (f"{self.done} file{'s' if self.done != 1 else ''}, {self.audio_seconds:.1f} "
                f"s of audio in {total:.1f} s ({speed(self.audio_seconds, total)} real time)")

    def failure(self) -> str | None:
        """Why the batch failed (how many files, or where ``fail_fast`` stopped it); None
        if every file was separated."""
        if not self.failed:
            return None
        if self.fail_fast:
            untried = self.files - self.done - self.failed
            return (f"stopped at the first failure (--fail-fast): {self.done} of "
                    f"{self.files} files separated, {untried} not tried")
        return f"{self.failed} of {self.files} files failed"
