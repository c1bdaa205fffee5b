"""The job store and queue of ``keras-svs serve``: one SQLite database (WAL) under the data
folder, and one folder of files per job.

Layout of the data folder ``DIR``::

    DIR/jobs.sqlite3            the jobs (WAL: readers never wait for the writer)
    DIR/jobs/<id>/input[.ext]   the upload (the extension only from a short allow-list)
    DIR/jobs/<id>/stems/        the stems and the mask picture, written all or nothing

A job goes ``queued -> running -> done | failed``. The web process adds and deletes jobs;
worker processes (:mod:`keras_svs.serve.workers`) claim the oldest queued job in one
``BEGIN IMMEDIATE`` transaction, so two workers never take the same job. A job left
``running`` by a process that was killed goes back to ``queued`` (:meth:`Store.recover`), at
its old place in the queue: the order is the order of upload.

Nothing here imports TensorFlow, Starlette or NumPy.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import sqlite3
import time
import uuid
from pathlib import Path

from ..options import CODECS, MASKS, STEMS

#: Job states, in the order a job goes through them (``failed`` instead of ``done``).
STATUSES = ("queued", "running", "done", "failed")
#: A job id: 32 lowercase hex digits (a random UUID).
JOB_ID = re.compile(r"[0-9a-f]{32}")
#: A job whose separation was interrupted this many times (its worker died, the server was
#: killed) fails instead of going back to the queue once more.
MAX_ATTEMPTS = 3
#: Upload extensions kept on the stored input (libsndfile reads by content; the extension
#: helps the decoders that look at it). Any other name is stored without one.
INPUT_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".aifc",
                    ".au", ".w64", ".caf", ".opus")
#: Content types of the stems by codec.
MEDIA_TYPES = {"wav": "audio/wav", "flac": "audio/flac", "ogg": "audio/ogg",
               "mp3": "audio/mpeg"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    name TEXT NOT NULL,
    input TEXT NOT NULL,
    options TEXT NOT NULL,
    status TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    error TEXT,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    duration REAL NOT NULL,
    rate INTEGER NOT NULL,
    channels INTEGER NOT NULL,
    worker INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    outputs TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, seq);
"""


class StoreError(OSError):
    """The data folder or its database cannot be written (full disk, no permission); the
    message says which and why, in one line."""


@dataclasses.dataclass(frozen=True)
class JobOptions:
    """How one job is separated: ``model`` (a name of the server's models), ``mask`` (one
    of :data:`keras_svs.options.MASKS`, or None for the model's own), ``codec`` (one of
    :data:`keras_svs.options.CODECS`) and ``stems`` (a tuple of
    :data:`keras_svs.options.STEMS`)."""

    model: str
    mask: str | None
    codec: str
    stems: tuple[str, ...]

    def as_dict(self) -> dict:
        return {"model": self.model, "mask": self.mask, "codec": self.codec,
                "stems": list(self.stems)}


@dataclasses.dataclass(frozen=True)
class Job:
    """One row of the store. Times are seconds since the epoch (UTC); ``duration`` seconds
    of input at ``rate`` Hz; ``progress`` in [0, 1]; ``outputs`` ``{stem: file name}`` (and
    ``"plot"``) in the job's ``stems/`` folder once done."""

    seq: int
    id: str
    name: str
    input: str
    options: JobOptions
    status: str
    progress: float
    error: str | None
    created: float
    started: float | None
    finished: float | None
    duration: float
    rate: int
    channels: int
    worker: int | None
    attempts: int
    outputs: dict

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "Job":
        values = dict(row)
        options = json.loads(values["options"])
        values["options"] = JobOptions(options["model"], options["mask"], options["codec"],
                                       tuple(options["stems"]))
        values["outputs"] = json.loads(values["outputs"] or "{}")
        return cls(**values)


def new_id() -> str:
    """A fresh job id (:data:`JOB_ID`)."""
    return uuid.uuid4().hex


def display_name(name: str | None, limit: int = 200) -> str:
    """A client's file name, for display only: control characters dropped, whitespace
    folded, at most ``limit`` characters; ``"upload"`` where nothing is left. Never used as a
    path (:func:`check_file_name` refuses names with path parts)."""
    cleaned = "".join(c for c in (name or "") if c.isprintable())
    cleaned = " ".join(cleaned.split())[:limit]
    return cleaned or "upload"


def check_file_name(name: str) -> None:
    """``ValueError`` for a client's file name that holds a NUL or another control
    character, or a path (``/``, ``\\``, ``..``): a browser sends a bare name, so such a
    name is a hostile one."""
    if "\x00" in name:
        raise ValueError("the file name holds a NUL character")
    if any(not c.isprintable() for c in name):
        raise ValueError("the file name holds control characters")
    if "/" in name or "\\" in name or name.strip() in ("..", "."):
        raise ValueError("the file name must be a name, not a path")


def input_name(name: str) -> str:
    """The stored upload's file name: ``input`` plus the client name's extension where it
    is one of :data:`INPUT_EXTENSIONS`."""
    suffix = os.path.splitext(name)[1].lower()
    return "input" + (suffix if suffix in INPUT_EXTENSIONS else "")


def _now() -> float:
    return time.time()


class Store:
    """The jobs of one data folder.

    Every method opens its own short-lived connection, so a store can be used from any
    thread and any process (each worker process makes its own :class:`Store` on the same
    folder).

    Args:
        folder: the data folder (created if missing).

    Raises:
        StoreError: the folder or the database cannot be created or written.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / "jobs.sqlite3"
        try:
            (self.folder / "jobs").mkdir(parents=True, exist_ok=True)
            with self._connect() as db:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as error:
            raise StoreError(f"{self.folder}: cannot keep the job store there "
                             f"({_reason(error)})") from None

    @contextlib.contextmanager
    def _connect(self):
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA busy_timeout=30000")
            db.execute("PRAGMA synchronous=NORMAL")
            yield db
        finally:
            db.close()

    @contextlib.contextmanager
    def _transaction(self):
        """A write transaction (``BEGIN IMMEDIATE``: it takes the write lock at once);
        ``StoreError`` where the database cannot be written."""
        try:
            with self._connect() as db:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
        except sqlite3.Error as error:
            raise StoreError(f"{self.path}: cannot write the job store "
                             f"({_reason(error)})") from None

    # -- files --------------------------------------------------------------------------
    def job_dir(self, job_id: str) -> Path:
        """The folder of a job's files (``job_id`` must match :data:`JOB_ID`)."""
        if not JOB_ID.fullmatch(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        return self.folder / "jobs" / job_id

    def stems_dir(self, job_id: str) -> Path:
        """Where a job's stems and mask picture are written."""
        return self.job_dir(job_id) / "stems"

    def input_path(self, job: Job) -> Path:
        return self.job_dir(job.id) / job.input

    def output_path(self, job: Job, key: str) -> Path | None:
        """The finished file of a done job's stem (or ``"plot"``), else None."""
        if job.status != "done" or key not in job.outputs:
            return None
        return self.stems_dir(job.id) / job.outputs[key]

    def remove_files(self, job_id: str) -> None:
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    # -- the queue ----------------------------------------------------------------------
    def add(self, job_id: str, name: str, input: str, options: JobOptions, duration: float,
            rate: int, channels: int) -> Job:
        """Queue a job whose upload is already at ``job_dir(job_id) / input``."""
        with self._transaction() as db:
            db.execute("INSERT INTO jobs (id, name, input, options, status, created, "
                       "duration, rate, channels) VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?)",
                       (job_id, name, input, json.dumps(options.as_dict()), _now(),
                        float(duration), int(rate), int(channels)))
        return self.get(job_id)

    def get(self, job_id: str) -> Job | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else Job.from_row(row)

    def jobs(self) -> list[Job]:
        """Every job, oldest first."""
        with self._connect() as db:
            return [Job.from_row(r) for r in db.execute("SELECT * FROM jobs ORDER BY seq")]

    def position(self, job: Job) -> int | None:
        """How many queued jobs are ahead of a queued job (0: it is next); None for others."""
        if job.status != "queued":
            return None
        with self._connect() as db:
            return db.execute("SELECT COUNT(*) FROM jobs WHERE status = 'queued' AND seq < ?",
                              (job.seq,)).fetchone()[0]

    def claim(self, worker: int) -> Job | None:
        """Take the oldest queued job for worker process ``worker`` (its pid): it becomes
        ``running``, its attempts counted; None when the queue is empty."""
        with self._transaction() as db:
            row = db.execute("SELECT id FROM jobs WHERE status = 'queued' ORDER BY seq "
                             "LIMIT 1").fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET status = 'running', worker = ?, started = ?, "
                       "progress = 0, error = NULL, attempts = attempts + 1 WHERE id = ?",
                       (worker, _now(), row["id"]))
        return self.get(row["id"])

    def set_progress(self, job_id: str, progress: float) -> bool:
        """Record a running job's progress; False where the job is gone (deleted)."""
        with self._transaction() as db:
            cursor = db.execute("UPDATE jobs SET progress = ? WHERE id = ? AND status = "
                                "'running'", (min(max(float(progress), 0.0), 1.0), job_id))
        return cursor.rowcount > 0

    def finish(self, job_id: str, outputs: dict) -> bool:
        """Mark a running job done with its ``{stem: file name}``; False where it is gone."""
        with self._transaction() as db:
            cursor = db.execute("UPDATE jobs SET status = 'done', progress = 1, finished = ?, "
                                "outputs = ?, worker = NULL WHERE id = ? AND status = "
                                "'running'", (_now(), json.dumps(outputs), job_id))
        return cursor.rowcount > 0

    def fail(self, job_id: str, error: str) -> bool:
        """Mark a job failed with a one-line ``error``; False where it is gone."""
        with self._transaction() as db:
            cursor = db.execute("UPDATE jobs SET status = 'failed', error = ?, finished = ?, "
                                "worker = NULL WHERE id = ? AND status IN ('queued', "
                                "'running')", (error, _now(), job_id))
        return cursor.rowcount > 0

    def requeue(self, job_id: str) -> bool:
        """Put a running job that was stopped cleanly (the server stops) back in the queue,
        at its old place; the stopped run does not count as an attempt. False where the job
        is gone."""
        with self._transaction() as db:
            cursor = db.execute("UPDATE jobs SET status = 'queued', progress = 0, worker = "
                                "NULL, started = NULL, attempts = MAX(attempts - 1, 0) "
                                "WHERE id = ? AND status = 'running'",
                                (job_id,))
        return cursor.rowcount > 0

    def recover(self, worker: int | None = None) -> list[str]:
        """Jobs left ``running`` by a process that is gone (all of them, or worker
        ``worker``'s) go back to ``queued`` at their old place, or fail where they were
        interrupted :data:`MAX_ATTEMPTS` times. Returns the ids put back."""
        where, args = ("status = 'running'", ()) if worker is None else (
            "status = 'running' AND worker = ?", (worker,))
        with self._transaction() as db:
            rows = db.execute(f"SELECT id, attempts FROM jobs WHERE {where} ORDER BY seq",
                              args).fetchall()
            back = [r["id"] for r in rows if r["attempts"] < MAX_ATTEMPTS]
            given_up = [r["id"] for r in rows if r["attempts"] >= MAX_ATTEMPTS]
            for job_id in back:
                db.execute("UPDATE jobs SET status = 'queued', progress = 0, worker = NULL, "
                           "started = NULL WHERE id = ?", (job_id,))
            for job_id in given_up:
                db.execute("UPDATE jobs SET status = 'failed', worker = NULL, finished = ?, "
                           "error = ? WHERE id = ?",
                           (_now(), f"its separation was interrupted {MAX_ATTEMPTS} times "
                            "(the worker process died: out of memory?)", job_id))
        return back

    def delete(self, job_id: str) -> Job | None:
        """Remove a job's row (its files: :meth:`remove_files`); the job as it was, or None."""
        job = self.get(job_id)
        if job is not None:
            with self._transaction() as db:
                db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        return job

    def remove_orphans(self) -> list[str]:
        """Remove the job folders without a job (an upload cut short by a kill). Returns
        their names."""
        known = {job.id for job in self.jobs()}
        removed = []
        for folder in (self.folder / "jobs").iterdir():
            if folder.name not in known:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder.name)
        return removed


def _reason(error: Exception) -> str:
    """An OS or SQLite error in a few words."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def check_options(fields: dict, models: dict, defaults: JobOptions) -> JobOptions:
    """A job's options from its form fields (``model``, ``mask``, ``codec``, ``stems``;
    missing or empty ones take ``defaults``).

    Args:
        fields: ``{name: text}``.
        models: the server's models, ``{name: path}``.
        defaults: the server's defaults.

    Raises:
        ValueError: an unknown model, mask, codec or stem, in one line that lists the choices.
    """
    from ..batch import parse_stems

    model = fields.get("model") or defaults.model
    if model not in models:
        raise ValueError(f"unknown model {model!r}; choose among {', '.join(models)}")
    mask = fields.get("mask") or defaults.mask
    if mask is not None and mask not in MASKS:
        raise ValueError(f"unknown mask {mask!r}; choose among {', '.join(MASKS)}")
    codec = fields.get("codec") or defaults.codec
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; choose among {', '.join(CODECS)}")
    stems = parse_stems(fields["stems"]) if fields.get("stems") else defaults.stems
    return JobOptions(model, mask, codec, tuple(stems))


__all__ = ["STATUSES", "JOB_ID", "MAX_ATTEMPTS", "STEMS", "MEDIA_TYPES", "Job", "JobOptions",
           "Store", "StoreError", "check_options", "check_file_name", "display_name",
           "input_name", "new_id"]
