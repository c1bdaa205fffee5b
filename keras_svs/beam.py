"""Catalogue-scale separation on Apache Beam: what ``keras-svs separate-beam`` runs.

The pipeline (:func:`separate_catalogue`), on any Beam runner (DirectRunner here; Dataflow,
Flink or Spark on a cluster)::

    MatchFiles(glob)                     the inputs, local or on any Beam file system (gs://)
    -> plan                              each input's output names: keras_svs.batch.output_paths,
                                         the rules of `keras-svs separate`
    -> GroupByKey(output)                two inputs that would write the same file: both fail
    -> decode                            keras_svs.audio.read (a remote input copied first)
    -> RunInference(StemsModelHandler)   the model loaded once per worker; files batched
    -> write                             keras_svs.audio.write_all: all stems or none
    failures of any step                 OUTPUT/failed.jsonl: {"path", "step", "reason"}
    separated files                      OUTPUT/separated.jsonl: {"path", "written", "seconds"}

A file is the unit of work that the runner spreads over its workers; inside one, the
model's own block scheduling (:meth:`keras_svs.separation.Separator.probability_blocks`)
chunks the song, so a worker's memory is bounded by its longest file's audio. The model is
a ``.keras`` file, separated by the engine (:class:`keras_svs.separation.Separator`: the same
stems as ``keras-svs separate``), or a SavedModel folder written by ``keras-svs export``
(:class:`keras_svs.export.ExportedSeparator`: its ``serve`` graph, equal to the engine's
float32 runtimes within 1e-4 at the model's rate).

Needs the ``[beam]`` extra (``pip install 'keras-svs[beam]'``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Iterable, Sequence

try:
    import apache_beam as beam
except ImportError as error:  # the optional extra
    raise ImportError("separate-beam needs Apache Beam: pip install 'keras-svs[beam]'") \
        from error
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from . import audio, batch
from .options import BEAM_RUNNERS as RUNNERS  # noqa: F401 (any registered runner works)
from .options import DEFAULT_FILENAME, STEMS
#: The tagged output of failed files.
FAILED = "failed"
#: Counters of a run (:func:`separate_catalogue`'s result), in the ``keras_svs`` namespace.
COUNTERS = ("separated", "failed", "audio_ms")


def _is_local(path: str) -> bool:
    return FileSystems.get_scheme(str(path)) in (None, "file")


def _join(folder: str, name: str) -> str:
    """``folder / name``: a local path, or a URL (``gs://bucket/out/name``)."""
    return os.path.join(folder, name) if _is_local(folder) else f"{folder.rstrip('/')}/{name}"


@contextlib.contextmanager
def _local_copy(path: str):
    """``path`` itself where it is local, else a temporary local copy of it."""
    if _is_local(path):
        yield path
        return
    folder = tempfile.mkdtemp(prefix="keras-svs-")
    try:
        local = os.path.join(folder, Path(path).name)
        with FileSystems.open(path) as source, open(local, "wb") as target:
            shutil.copyfileobj(source, target)
        yield local
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _failure(path: str, step: str, error: BaseException) -> dict:
    return {"path": str(path), "step": step, "reason": batch.first_line(error)}


class ModelSource:
    """How a worker makes its separator: a ``.keras`` model (default: the shipped one) and
    the :class:`~keras_svs.separation.Separator` settings, or a SavedModel folder.

    Args:
        model: a ``.keras`` path (local or on a Beam file system) or a local SavedModel
            folder (``keras-svs export``); ``None``: the shipped model.
        settings: ``mask``, ``threshold``, ``mode``, ``precision``, ``extension``,
            ``runtime`` for a ``.keras`` model (a SavedModel carries its own mask settings
            and runs on TensorFlow in float32).
    """

    def __init__(self, model: str | os.PathLike | None = None, **settings):
        self.model = None if model is None else str(model)
        self.settings = {k: v for k, v in settings.items() if v is not None}

    @property
    def exported(self) -> bool:
        """Whether the model is a SavedModel folder."""
        return self.model is not None and _is_local(self.model) and Path(self.model).is_dir()

    def check(self) -> None:
        """Raises ValueError, before any pipeline starts, for a model that is missing, or
        settings that differ from a SavedModel's own (its export's mask, threshold, mode
        and extension; float32 on TensorFlow)."""
        if self.model is not None and not FileSystems.exists(self.model):
            raise ValueError(f"{self.model}: no such model file or SavedModel folder")
        if not self.exported:
            return
        from .export import export_settings

        own = {**export_settings(self.model), "precision": "float32", "runtime": "tensorflow"}
        for key, value in self.settings.items():
            if own.get(key) != value:
                raise ValueError(f"{self.model}: the SavedModel's {key} is {own.get(key)} "
                                 f"(set at export), not {value}")

    def load(self):
        """The separator, with ``separate(waveform, rate) -> {stem: array}``."""
        if self.exported:
            from .export import ExportedSeparator

            return ExportedSeparator(self.model)
        from .separation import Separator

        if self.model is None or _is_local(self.model):
            return Separator(self.model, **self.settings)
        with _local_copy(self.model) as local:
            return Separator(local, **self.settings)


class StemsModelHandler(ModelHandler):
    """A RunInference model handler: decoded songs in, stems out.

    Elements are ``(path, plan, waveform, rate)``; each result is a ``PredictionResult``
    whose ``example`` is ``(path, plan, rate)`` and whose ``inference`` is ``{stem:
    float32 (channels, samples)}``, or the expected error
    (:data:`keras_svs.batch.EXPECTED_ERRORS`) that stopped that song. The separator is
    loaded once per worker process (RunInference's shared model); up to ``max_batch_size``
    songs are handed to it per call. The threads of a process take turns with it (a LiteRT
    interpreter runs one call at a time; one call already uses every core).

    Args:
        source: the model (:class:`ModelSource`).
        max_batch_size: songs per ``run_inference`` call.
    """

    def __init__(self, source: ModelSource, max_batch_size: int = 4):
        super().__init__()
        self.source, self.max_batch_size = source, max_batch_size

    def load_model(self):
        return _Taking(self.source.load())

    def run_inference(self, songs: Sequence[tuple], model, inference_args=None
                      ) -> Iterable[PredictionResult]:
        for path, plan, waveform, rate in songs:
            try:
                with model.turn:
                    stems = model.separator.separate(waveform, rate)
            except batch.EXPECTED_ERRORS as error:
                stems = error
            yield PredictionResult((path, plan, rate), stems)

    def batch_elements_kwargs(self):
        return {"min_batch_size": 1, "max_batch_size": self.max_batch_size}


class _Taking:
    """A worker's separator and the lock its threads take turns with."""

    def __init__(self, separator):
        self.separator, self.turn = separator, threading.Lock()


class _Decode(beam.DoFn):
    """``(path, plan)`` -> ``(path, plan, waveform, rate)``, after the overwrite check."""

    def __init__(self, stems: tuple[str, ...], overwrite: bool):
        self.stems, self.overwrite = stems, overwrite

    def process(self, element):
        path, plan = element
        try:
            batch.check_overwrite(plan, self.stems, self.overwrite, FileSystems.exists)
            with _local_copy(path) as local:
                waveform, rate = audio.read(local)
            yield path, plan, waveform, rate
        except batch.EXPECTED_ERRORS as error:
            yield beam.pvalue.TaggedOutput(FAILED, _failure(path, "decode", error))


class _Write(beam.DoFn):
    """A ``PredictionResult`` -> its stems written (all or none), and a manifest line."""

    def __init__(self, stems: tuple[str, ...], bit_depth: int):
        self.stems, self.bit_depth = stems, bit_depth
        self.separated = beam.metrics.Metrics.counter("keras_svs", "separated")
        self.audio_ms = beam.metrics.Metrics.counter("keras_svs", "audio_ms")

    def process(self, result: PredictionResult):
        path, plan, rate = result.example
        if isinstance(result.inference, BaseException):
            yield beam.pvalue.TaggedOutput(FAILED, _failure(path, "separate", result.inference))
            return
        try:
            outputs = {plan[stem]: result.inference[stem] for stem in self.stems}
            _store(outputs, rate, self.bit_depth)
        except batch.EXPECTED_ERRORS as error:
            yield beam.pvalue.TaggedOutput(FAILED, _failure(path, "write", error))
            return
        seconds = result.inference[self.stems[0]].shape[-1] / rate
        self.separated.inc()
        self.audio_ms.inc(int(round(seconds * 1000)))
        yield {"path": path, "written": {stem: plan[stem] for stem in self.stems},
               "seconds": round(seconds, 3)}


def _store(outputs: dict, rate: int, bit_depth: int) -> None:
    """:func:`keras_svs.audio.write_all` (all or none); for outputs on a remote file system,
    written locally first, then each copied into place."""
    if all(_is_local(path) for path in outputs):
        audio.write_all(outputs, rate, bit_depth)
        return
    with tempfile.TemporaryDirectory(prefix="keras-svs-") as folder:
        local = {os.path.join(folder, f"{i}{Path(p).suffix}"): x
                 for i, (p, x) in enumerate(outputs.items())}
        audio.write_all(local, rate, bit_depth)
        for source, target in zip(local, outputs):
            with open(source, "rb") as data, FileSystems.create(target) as out:
                shutil.copyfileobj(data, out)


def _collisions(group, template: str):
    """``(output, [(path, plan), ...])``: the input, or a failure for each of several
    inputs that would write the same file."""
    target, tracks = group
    tracks = sorted(tracks)
    if len(tracks) == 1:
        yield tracks[0]
        return
    for path, _ in tracks:
        others = [p for p, _ in tracks if p != path]
        yield beam.pvalue.TaggedOutput(FAILED, _failure(path, "plan", batch.OutputNameError(
            f"{template!r} writes {target} for both {others[0]} and {path}")))


def plan(path: str, out_dir: str, filename: str = DEFAULT_FILENAME,
         stems: tuple[str, ...] = STEMS, codec: str = "wav") -> dict[str, str]:
    """``{stem: output}`` of one input: :func:`keras_svs.batch.output_paths`'s name joined
    to ``out_dir`` (a local folder or a Beam file system's, e.g. ``gs://bucket/out``).

    Raises:
        keras_svs.batch.OutputNameError: the template (as for ``keras-svs separate``).
    """
    [names] = batch.output_paths([path], ".", filename, stems, codec)
    return {stem: _join(out_dir, Path(os.path.relpath(name)).as_posix())
            for stem, name in names.items()}


def build(pipeline: beam.Pipeline, pattern: str, out_dir: str, source: ModelSource, *,
          filename: str = DEFAULT_FILENAME, codec: str = "wav", bit_depth: int = 16,
          stems: tuple[str, ...] = STEMS, overwrite: bool = False, batch_size: int = 4):
    """Add the separation of every file matching ``pattern`` to ``pipeline``.

    Returns:
        ``(separated, failed)``: PCollections of manifest and dead-letter dicts (both also
        written to ``out_dir``'s ``separated.jsonl`` and ``failed.jsonl``).
    """
    stems = tuple(stems)
    plans = (pipeline
             | "list" >> fileio.MatchFiles(pattern)
             | "plan" >> beam.Map(lambda meta: (meta.path, plan(meta.path, out_dir, filename,
                                                                stems, codec)))
             | "by output" >> beam.Map(lambda track: (track[1][stems[0]], track))
             | "group" >> beam.GroupByKey()
             | "collisions" >> beam.FlatMap(_collisions, filename).with_outputs(
                 FAILED, main="tracks"))
    decoded = plans.tracks | "decode" >> beam.ParDo(_Decode(stems, overwrite)).with_outputs(
        FAILED, main="songs")
    written = (decoded.songs
               | "separate" >> RunInference(StemsModelHandler(source, batch_size))
               | "write" >> beam.ParDo(_Write(stems, bit_depth)).with_outputs(
                   FAILED, main="separated"))
    failed = ((plans[FAILED], decoded[FAILED], written[FAILED])
              | "failures" >> beam.Flatten())
    failed | "count failures" >> beam.Map(
        lambda _: beam.metrics.Metrics.counter("keras_svs", "failed").inc())
    for name, lines in (("separated", written.separated), ("failed", failed)):
        (lines | f"{name} as json" >> beam.Map(json.dumps, sort_keys=True)
         | f"write {name}" >> beam.io.WriteToText(_join(out_dir, name),
                                                  file_name_suffix=".jsonl",
                                                  shard_name_template=""))
    return written.separated, failed


@dataclasses.dataclass(frozen=True)
class Run:
    """What :func:`separate_catalogue` did (from the pipeline's counters).

    Attributes:
        separated, failed: files written, and files in the dead-letter output.
        audio_seconds: the duration of the files written.
        out_dir: the output folder (``failed.jsonl`` there lists the failures).
    """

    separated: int
    failed: int
    audio_seconds: float
    out_dir: str

    def line(self) -> str:
        """``N files separated (A s of audio), M failed``."""
        return (f"{self.separated} files separated ({self.audio_seconds:.1f} s of audio), "
                f"{self.failed} failed")

    def failure(self) -> str | None:
        """Why the run failed (files in the dead letter), or None."""
        return (f"{self.failed} files failed: see {_join(self.out_dir, 'failed.jsonl')}"
                if self.failed else None)


def separate_catalogue(pattern: str, out_dir: str | os.PathLike, model=None, *,
                       runner: str = "DirectRunner", pipeline_args: Sequence[str] = (),
                       mask: str | None = None, threshold: float | None = None,
                       mode: str | None = None, precision: str | None = None,
                       extension: str | None = None, **options) -> Run:
    """Separate every file matching ``pattern`` on a Beam runner and wait for it to finish.

    Args:
        pattern: a glob of input files, local or on a Beam file system (``gs://...``).
        out_dir: the output folder, local or on a Beam file system.
        model: as :class:`ModelSource`'s; ``mask``, ``threshold``, ``mode``,
            ``precision``, ``extension``: its separator settings (``None``: the model's).
        runner: a Beam runner name (:data:`RUNNERS`).
        pipeline_args: further Beam pipeline options (``--project``, ``--region``,
            ``--temp_location``, ``--direct_num_workers``, ...).
        options: ``filename``, ``codec``, ``bit_depth``, ``stems``, ``overwrite``,
            ``batch_size`` (:func:`build`).

    Returns:
        the :class:`Run`, from the pipeline's :data:`COUNTERS`.

    Raises:
        keras_svs.batch.OutputNameError: the file name template, before the run.
        ValueError: an unknown stem or model (:meth:`ModelSource.check`), before the run.
    """
    stems = tuple(options.get("stems", STEMS))
    unknown = [stem for stem in stems if stem not in STEMS]
    if unknown or not stems:
        raise ValueError(f"unknown stems {unknown}; choose among {STEMS}")
    plan("check", str(out_dir), options.get("filename", DEFAULT_FILENAME), stems,
         options.get("codec", "wav"))
    source = ModelSource(model, mask=mask, threshold=threshold, mode=mode,
                         precision=precision, extension=extension)
    source.check()
    beam_options = PipelineOptions([f"--runner={runner}", *pipeline_args])
    with beam.Pipeline(options=beam_options) as pipeline:
        build(pipeline, pattern, str(out_dir), source, **options)
    result = pipeline.result
    counts = dict.fromkeys(COUNTERS, 0)
    for counter in result.metrics().query()["counters"]:
        if counter.key.metric.namespace == "keras_svs":
            counts[counter.key.metric.name] += counter.committed or counter.attempted or 0
    return Run(counts["separated"], counts["failed"], counts["audio_ms"] / 1000, str(out_dir))


__all__ = ["COUNTERS", "FAILED", "RUNNERS", "ModelSource", "Run", "StemsModelHandler", "build",
           "plan", "separate_catalogue"]
