"""The separation workers of ``keras-svs serve``: N processes (``multiprocessing`` spawn),
each holding one :class:`~keras_svs.separation.Separator`, taking jobs from the
:class:`~keras_svs.serve.jobs.Store` one at a time.

A job is separated as ``keras-svs separate`` separates a file
(:func:`keras_svs.batch.separate_one`): whole, with the mask picture of ``--plot``, up to
5 minutes; longer files streamed in blocks in bounded memory, their progress reported into
the store. The stems are written all or nothing (temporary files renamed into place), so a
finished job's files are complete and a killed worker leaves no partial stem.

Signals a worker takes (from the web process, :class:`Workers`):

* ``SIGUSR1``: stop the running job (it was deleted); the worker goes on with the next.
* ``SIGTERM``: the server stops; the running job goes back to the queue and the worker
  exits.
* ``SIGINT`` is ignored (Ctrl-C in a terminal reaches the whole process group; the web
  process stops the workers itself).

A worker dies with the web process (``PR_SET_PDEATHSIG`` where Linux has it, and a check of
its parent between jobs), so a server killed with SIGKILL leaves no worker behind; the next
server puts the jobs they ran back in the queue (:meth:`~keras_svs.serve.jobs.Store.recover`).
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import time
from pathlib import Path

from .jobs import Job, JobOptions, Store, StoreError

#: Seconds between two looks at an empty queue.
POLL_SECONDS = 0.2
#: Seconds between two progress reports of a streamed job.
PROGRESS_SECONDS = 0.5


@dataclasses.dataclass(frozen=True)
class WorkerSettings:
    """What every worker process is given.

    Attributes:
        folder: the data folder (:class:`~keras_svs.serve.jobs.Store`).
        models: ``{name: path}`` (None: the shipped model).
        runtime: the separators' runtime (:data:`keras_svs.options.RUNTIMES`).
        plot: draw the mask picture of jobs separated whole (needs matplotlib).
        threads: CPU threads of each worker (:func:`keras_svs.separation.set_threads`).
        preload: ``(model name, mask)`` of the separator each worker loads as it starts
            (the server's defaults), so that the first job does not wait for it; None: the
            first job's.
    """

    folder: str
    models: dict
    runtime: str = "auto"
    plot: bool = True
    threads: int = 1
    preload: tuple | None = None


class Workers:
    """``count`` worker processes over one data folder, started and watched by the web
    process (:func:`keras_svs.serve.app.create_app`'s lifespan).

    Args:
        settings: what each worker is given.
        count: how many.
    """

    def __init__(self, settings: WorkerSettings, count: int = 1):
        if count < 1:
            raise ValueError(f"workers must be at least 1, not {count}")
        self.settings, self.count = settings, count
        self.store = Store(settings.folder)
        self.processes: list[multiprocessing.process.BaseProcess] = []
        self._context = multiprocessing.get_context("spawn")
        self._stopping = False

    def _spawn(self, index: int):
        process = self._context.Process(target=work, args=(self.settings, os.getpid()),
                                        name=f"keras-svs-worker-{index}", daemon=True)
        process.start()
        return process

    def start(self) -> None:
        """Start the processes (from the main thread: a worker dies with the thread that
        started it, ``PR_SET_PDEATHSIG``)."""
        self.processes = [self._spawn(i) for i in range(self.count)]

    def alive(self) -> int:
        return sum(p.is_alive() for p in self.processes)

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def check(self) -> list[str]:
        """Replace the workers that died (killed, out of memory); their jobs go back to the
        queue (:meth:`~keras_svs.serve.jobs.Store.recover`). Returns those jobs' ids."""
        requeued = []
        for i, process in enumerate(self.processes):
            if process.is_alive() or self._stopping:
                continue
            process.join()
            requeued += self.store.recover(worker=process.pid)
            self.processes[i] = self._spawn(i)
        return requeued

    def stop_job(self, job: Job) -> bool:
        """Stop a running job in the worker that runs it (``SIGUSR1``); False where none
        of this pool's workers does."""
        for process in self.processes:
            if process.pid == job.worker and process.is_alive():
                os.kill(process.pid, signal.SIGUSR1)
                return True
        return False

    def stop(self, timeout: float = 30.0) -> None:
        """Stop every worker (``SIGTERM``: the running jobs go back to the queue), killing
        those still running after ``timeout`` seconds; then any job still marked running
        is put back too."""
        self._stopping = True
        for process in self.processes:
            if process.is_alive():
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self.processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
        try:
            self.store.recover()
        except StoreError as error:  # the data folder went away: the next start recovers
            import logging

            logging.getLogger(__name__).error("%s", error)


# -- inside a worker process ------------------------------------------------------------
class _Stop(KeyboardInterrupt):
    """Raised in a worker to stop the job it runs."""


class Separators:
    """The one separator a worker holds: made again only when a job asks for another
    model or mask."""

    def __init__(self, settings: WorkerSettings):
        self.settings, self.key, self.separator = settings, None, None

    def get(self, options: JobOptions):
        from ..separation import Separator, release_free_memory

        key = (options.model, options.mask)
        if key != self.key:
            self.separator, self.key = None, None
            release_free_memory()
            self.separator = Separator(self.settings.models[options.model], mask=options.mask,
                                       runtime=self.settings.runtime)
            self.key = key
        return self.separator


def _die_with_parent(parent: int) -> None:
    """Ask Linux to SIGKILL this process when its parent dies; exit now if it already has."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(0)


def work(settings: WorkerSettings, parent: int) -> None:
    """A worker process's life: take the oldest queued job, separate it, record the
    outcome; until SIGTERM or the parent's death."""
    from .. import audio
    from ..separation import set_threads

    _die_with_parent(parent)
    state = {"job": None, "stopping": False}

    def on_signal(signum, frame):
        if signum == signal.SIGTERM:
            state["stopping"] = True
        if state["job"] is not None:  # inside a separation: no stem may be committed now
            audio.STOPPING.set()
            raise _Stop("stopped")

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGUSR1, on_signal)
    set_threads(settings.threads)
    store = Store(settings.folder)
    separators = Separators(settings)
    if settings.preload is not None:
        try:
            separators.get(JobOptions(*settings.preload, "wav", ()))
        except Exception:  # noqa: BLE001 (a bad model fails its jobs, with their message)
            pass
    while not state["stopping"] and os.getppid() == parent:
        job = store.claim(os.getpid())
        if job is None:
            time.sleep(POLL_SECONDS)
            continue
        if state["stopping"]:  # SIGTERM came while the job was claimed
            store.requeue(job.id)
            break
        audio.STOPPING.clear()
        state["job"] = job.id
        try:
            run_job(store, job, separators, settings.plot)
        except KeyboardInterrupt:  # deleted (SIGUSR1) or the server stops (SIGTERM)
            state["job"] = None
            if store.get(job.id) is None:
                store.remove_files(job.id)
            else:
                store.requeue(job.id)
        finally:
            state["job"] = None
            audio.STOPPING.clear()


def run_job(store: Store, job: Job, separators: Separators, plot: bool = True) -> str:
    """Separate one claimed job into its ``stems/`` folder and record the outcome in the
    store: ``done``, or ``failed`` with a one-line error (naming the upload by its display
    name, never by its path on the server). A job deleted meanwhile leaves no files.

    Returns:
        the job's new status (``deleted`` where it was deleted meanwhile).

    Raises:
        KeyboardInterrupt: the job was stopped (a signal, or its row gone while streaming);
            nothing is committed, the caller requeues or removes it.
    """
    import shutil

    from .. import audio
    from ..batch import AUTO_STREAM_SECONDS, EXPECTED_ERRORS, first_line, separate_one

    source = store.input_path(job)
    folder = store.stems_dir(job.id)
    shutil.rmtree(folder, ignore_errors=True)  # what a killed run left behind
    options = job.options
    plan = {stem: folder / f"{stem}.{options.codec}" for stem in options.stems}
    draw = plot and job.duration <= AUTO_STREAM_SECONDS and _can_plot()
    if draw:
        plan["plot"] = folder / "separation.png"
    last = [0.0]

    def progress(path, done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_SECONDS or done >= total:
            last[0] = now
            if not store.set_progress(job.id, done / max(total, 1)):
                raise _Stop("deleted")

    try:
        separator = separators.get(options)
        outcome = separate_one(separator, source, plan, stems=options.stems, plot=draw,
                               overwrite=True, progress=progress)
    except (*EXPECTED_ERRORS, ImportError) as error:
        if audio.STOPPING.is_set():  # a stop signal that surfaced as another error
            raise _Stop("stopped") from error
        message = first_line(error).replace(str(source), job.name).replace(str(folder), "")
        status = "failed" if store.fail(job.id, message) else "deleted"
    except Exception as error:  # noqa: BLE001 (a bug must fail the job, not the worker)
        if audio.STOPPING.is_set():
            raise _Stop("stopped") from error
        status = "failed" if store.fail(job.id, f"internal error: {first_line(error)}") \
            else "deleted"
    else:
        written = {key: Path(path).name for key, path in outcome.written.items()}
        status = "done" if store.finish(job.id, written) else "deleted"
    if status == "deleted":
        store.remove_files(job.id)
    return status


def _can_plot() -> bool:
    from ..plotting import require_matplotlib

    try:
        require_matplotlib()
    except ImportError:
        return False
    return True


__all__ = ["WorkerSettings", "Workers", "Separators", "work", "run_job", "POLL_SECONDS"]
