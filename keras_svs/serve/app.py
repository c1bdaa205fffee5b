"""The web side of ``keras-svs serve``: a Starlette app (JSON API, the page) and
:func:`serve`, which runs it on uvicorn with its worker processes.

Routes (every ``/api`` route needs ``Authorization: Bearer <token>`` where the server has a
token; an error is ``{"error": "<one line>"}`` with a 4xx or 5xx status)::

    GET    /                              the page (static/index.html)
    GET    /static/{name}                 the page's script and style sheet (no listing)
    GET    /health                        {"status": "ok", "workers": N}
    GET    /openapi.json                  the API's OpenAPI description
    GET    /api/options                   the choices and defaults of a job's options
    POST   /api/jobs                      multipart: ``file`` and options -> 201, the job
    GET    /api/jobs                      every job, oldest first
    GET    /api/jobs/{id}                 one job
    GET    /api/jobs/{id}/stems/{stem}    a done job's stem (404 until done)
    GET    /api/jobs/{id}/plot            a done job's mask picture (PNG)
    DELETE /api/jobs/{id}                 stop (if running) and remove a job and its files

Nothing is separated in the web process: it stores uploads, reads their headers, and
serves files; the worker processes (:mod:`keras_svs.serve.workers`) separate. All state is
in the :class:`~keras_svs.serve.jobs.Store` and the arguments of :func:`create_app`.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import errno
import hashlib
import hmac
import ipaddress
import os
import signal
from pathlib import Path

import anyio
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Route

from .. import audio
from ..options import CODECS, MASKS, STEMS
from .jobs import (JOB_ID, MEDIA_TYPES, Job, JobOptions, Store, StoreError, check_file_name,
                   check_options, display_name, input_name, new_id)

STATIC = Path(__file__).parent / "static"
#: The page's files: name -> content type. Nothing else under static/ is served.
STATIC_FILES = {"index.html": "text/html; charset=utf-8",
                "app.js": "text/javascript; charset=utf-8",
                "style.css": "text/css; charset=utf-8"}
#: Bytes of an upload beyond its file that the form may take (boundaries, part headers,
#: option fields).
FORM_SLACK = 64 * 1024
#: Longest option field value, in bytes.
FIELD_LIMIT = 1024
#: The option fields of ``POST /api/jobs`` (beside ``file``).
OPTION_FIELDS = ("model", "mask", "codec", "stems")
_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store"}
_PAGE_POLICY = ("default-src 'self'; img-src 'self' blob:; media-src 'self' blob:; "
                "object-src 'none'; frame-ancestors 'none'; base-uri 'none'")


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the web side of a server needs.

    Attributes:
        models: ``{name: path}`` of the models a job may name (the first is the default;
            a path of None is the shipped model).
        defaults: the options a job takes where its form does not give them.
        max_upload_bytes: the largest file a job may upload (``413`` beyond it).
        token: the bearer token every ``/api`` request must carry; None: none needed.
        upload_timeout: seconds an upload may go without sending a byte (``408``).
    """

    models: dict
    defaults: JobOptions
    max_upload_bytes: int = 500 * 2 ** 20
    token: str | None = None
    upload_timeout: float = 60.0


class _Refusal(Exception):
    """An upload refused: its status and one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=_HEADERS)


def _json(content, status: int = 200, **headers) -> JSONResponse:
    return JSONResponse(content, status_code=status, headers={**_HEADERS, **headers})


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def job_json(store: Store, job: Job) -> dict:
    """A job as the API gives it: id, name, status, progress, error, queue position,
    created/started/finished times (ISO 8601, UTC), the input's duration (s), rate (Hz) and
    channels, its options, and once done the URLs of its stems and mask picture."""
    base = f"/api/jobs/{job.id}"
    done = job.status == "done"
    return {"id": job.id, "name": job.name, "status": job.status,
            "progress": round(job.progress, 4), "error": job.error,
            "position": store.position(job), "created": _iso(job.created),
            "started": _iso(job.started), "finished": _iso(job.finished),
            "duration": round(job.duration, 3), "rate": job.rate, "channels": job.channels,
            "options": job.options.as_dict(), "url": base,
            "stems": {s: f"{base}/stems/{s}" for s in job.options.stems} if done else {},
            "plot": f"{base}/plot" if done and "plot" in job.outputs else None}


def authorized(request: Request, token: str | None) -> bool:
    """Whether ``request`` carries ``Authorization: Bearer <token>`` (always, without a
    token). The comparison takes the same time whatever the given value (digests compared
    with :func:`hmac.compare_digest`)."""
    if token is None:
        return True
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    same = hmac.compare_digest(hashlib.sha256(given.strip().encode()).digest(),
                               hashlib.sha256(token.encode()).digest())
    return same and scheme.lower() == "bearer"


class _Form:
    """One ``multipart/form-data`` upload parsed as it arrives: the file part goes straight
    to ``folder / "input.part"`` (never whole into memory) and is capped at ``limit``
    bytes; option fields are kept (at most :data:`FIELD_LIMIT` bytes each)."""

    def __init__(self, folder: Path, limit: int):
        self.folder, self.limit = folder, limit
        self.fields: dict[str, str] = {}
        self.file_name: str | None = None
        self.file_bytes = 0
        self.complete = False
        self._headers: dict[str, str] = {}
        self._field, self._value = bytearray(), bytearray()
        self._part: tuple[str, bytearray] | None = None
        self._file = None

    @property
    def part_path(self) -> Path:
        return self.folder / "input.part"

    def callbacks(self) -> dict:
        return {"on_part_begin": self._part_begin, "on_header_field": self._header_field,
                "on_header_value": self._header_value, "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished, "on_part_data": self._data,
                "on_part_end": self._part_end, "on_end": self._end}

    def _part_begin(self):
        self._headers = {}

    def _header_field(self, data, start, end):
        self._field += data[start:end]

    def _header_value(self, data, start, end):
        self._value += data[start:end]

    def _header_end(self):
        self._headers[self._field.decode("latin-1").lower()] = self._value.decode("latin-1")
        self._field, self._value = bytearray(), bytearray()

    def _headers_finished(self):
        kind, params = parse_options_header(self._headers.get("content-disposition", ""))
        if kind != b"form-data" or b"name" not in params:
            raise _Refusal(400, "a form part without a Content-Disposition name")
        name = params[b"name"].decode("utf-8", "replace")
        if b"filename" in params:
            if name != "file":
                raise _Refusal(400, f"a file in field {name!r}; send it as field 'file'")
            if self.file_name is not None:
                raise _Refusal(400, "more than one file; send one file per job")
            file_name = params[b"filename"].decode("utf-8", "replace")
            try:
                check_file_name(file_name)
            except ValueError as error:
                raise _Refusal(400, str(error)) from None
            self.file_name = file_name
            self.folder.mkdir(parents=True)
            self._file = open(self.part_path, "wb")
            self._part = ("file", bytearray())
        elif name in OPTION_FIELDS:
            self._part = (name, bytearray())
        else:
            raise _Refusal(400, f"unknown form field {name[:40]!r}; send 'file' and any of "
                                f"{', '.join(OPTION_FIELDS)}")

    def _data(self, data, start, end):
        name, buffer = self._part
        if name == "file":
            self.file_bytes += end - start
            if self.file_bytes > self.limit:
                raise _Refusal(413, f"the file is larger than this server's limit of "
                                    f"{_megabytes(self.limit)}")
            self._file.write(data[start:end])
        else:
            buffer += data[start:end]
            if len(buffer) > FIELD_LIMIT:
                raise _Refusal(400, f"form field {name!r} is longer than {FIELD_LIMIT} bytes")

    def _part_end(self):
        name, buffer = self._part
        if name == "file":
            self._file.close()
            self._file = None
        else:
            self.fields[name] = buffer.decode("utf-8", "replace").strip()
        self._part = None

    def _end(self):
        self.complete = True

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None


def _megabytes(size: int) -> str:
    return f"{size / 2 ** 20:.3g} MB"


async def _receive(request: Request, form: _Form, boundary: bytes, timeout: float) -> None:
    """Feed the request body to ``form`` as it arrives; :class:`_Refusal` for a body that
    is not a complete multipart form, stalls for ``timeout`` seconds or exceeds the cap."""
    parser = MultipartParser(boundary, form.callbacks())
    chunks = request.stream().__aiter__()
    while True:
        try:
            with anyio.fail_after(timeout):
                chunk = await chunks.__anext__()
        except StopAsyncIteration:
            break
        except TimeoutError:
            raise _Refusal(408, f"the upload stalled: no data for {timeout:g} s (a body "
                                "shorter than its declared length?)") from None
        if not chunk:
            continue
        try:
            parser.write(chunk)
        except _Refusal:
            raise
        except OSError:
            raise
        except Exception as error:  # python-multipart's parse errors
            raise _Refusal(400, f"a malformed multipart body ({_first_line(error)})") from None
    try:
        parser.finalize()
    except Exception as error:
        raise _Refusal(400, f"a malformed multipart body ({_first_line(error)})") from None
    if not form.complete:
        raise _Refusal(400, "an incomplete multipart body (no closing boundary)")


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0].strip("'\"") if lines else type(error).__name__


def _about(error: Exception, path: Path, name: str) -> str:
    """An audio error's one line about an upload, naming it by ``name``, never its path."""
    return " ".join(str(error).split()).replace(f"{path}: ", "").replace(str(path), name)


def probe(path: Path, name: str) -> tuple[int, int, int]:
    """``(rate, channels, frames)`` of an upload, reading its header and its last second
    (no separation, no decoding of the whole file).

    Raises:
        _Refusal: 400 an empty file, 415 not audio that libsndfile reads, 422 audio whose
            samples are damaged or cut short.
    """
    if path.stat().st_size == 0:
        raise _Refusal(400, f"{name}: the file is empty (0 bytes)")
    try:
        reader = audio.BlockReader(path)
    except audio.AudioError as error:
        raise _Refusal(415, f"{name}: not an audio file this server reads (WAV, FLAC, OGG, "
                            f"MP3, AIFF, ...): {_about(error, path, name)}") from None
    with reader:
        try:
            reader.read(max(0, reader.length - reader.rate), reader.length)
        except audio.AudioError as error:
            raise _Refusal(422, f"{name}: {_about(error, path, name)}") from None
        return reader.rate, reader.channels, reader.length


def _storage_error(error: OSError) -> JSONResponse:
    """507 for a write the data folder refused: full, or not writable."""
    if isinstance(error, StoreError):
        return _error(507, _first_line(error))
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return _error(507, "the server's disk is full; the upload was not stored")
    return _error(507, f"the server cannot write its data folder ({error.strerror or error})")


def openapi(settings: Settings) -> dict:
    """The API's OpenAPI 3.1 description."""
    job = {"$ref": "#/components/schemas/Job"}
    error = {"description": "an error", "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/Error"}}}}
    json_of = lambda schema: {"content": {"application/json": {"schema": schema}}}  # noqa
    jid = [{"name": "id", "in": "path", "required": True,
            "schema": {"type": "string", "pattern": JOB_ID.pattern}}]
    errors = {code: error for code in ("400", "401", "404")}
    return {
        "openapi": "3.1.0",
        "info": {"title": "keras-svs serve", "version": "1",
                 "description": "Singing-voice separation jobs: upload a song, get its "
                                "vocals and accompaniment."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"],
                          "properties": {"error": {"type": "string"}}},
                "Job": {"type": "object", "properties": {
                    "id": {"type": "string"}, "name": {"type": "string"},
                    "status": {"enum": ["queued", "running", "done", "failed"]},
                    "progress": {"type": "number", "minimum": 0, "maximum": 1},
                    "error": {"type": ["string", "null"]},
                    "position": {"type": ["integer", "null"]},
                    "created": {"type": "string", "format": "date-time"},
                    "started": {"type": ["string", "null"], "format": "date-time"},
                    "finished": {"type": ["string", "null"], "format": "date-time"},
                    "duration": {"type": "number"}, "rate": {"type": "integer"},
                    "channels": {"type": "integer"}, "options": {"type": "object"},
                    "url": {"type": "string"},
                    "stems": {"type": "object", "additionalProperties": {"type": "string"}},
                    "plot": {"type": ["string", "null"]}}}}},
        "security": [{"bearer": []}] if settings.token else [],
        "paths": {
            "/health": {"get": {"summary": "liveness", "security": [],
                                "responses": {"200": {"description": "ok"}}}},
            "/api/options": {"get": {"summary": "the choices and defaults of job options",
                                     "responses": {"200": {"description": "the choices"},
                                                   "401": error}}},
            "/api/jobs": {
                "get": {"summary": "every job, oldest first", "responses": {
                    "200": {"description": "the jobs",
                            **json_of({"type": "array", "items": job})}, "401": error}},
                "post": {"summary": "queue a song", "requestBody": {"required": True,
                         "content": {"multipart/form-data": {"schema": {
                             "type": "object", "required": ["file"], "properties": {
                                 "file": {"type": "string", "format": "binary"},
                                 "model": {"enum": list(settings.models)},
                                 "mask": {"enum": list(MASKS)},
                                 "codec": {"enum": list(CODECS)},
                                 "stems": {"type": "string",
                                           "description": "comma-separated, of "
                                                          + ", ".join(STEMS)}}}}}},
                         "responses": {"201": {"description": "queued", **json_of(job)},
                                       **{c: error for c in ("400", "401", "408", "413",
                                                             "415", "422", "507")}}}},
            "/api/jobs/{id}": {
                "get": {"summary": "one job", "parameters": jid,
                        "responses": {"200": {"description": "the job", **json_of(job)},
                                      **errors}},
                "delete": {"summary": "stop and remove a job and its files",
                           "parameters": jid,
                           "responses": {"200": {"description": "removed"}, **errors}}},
            "/api/jobs/{id}/stems/{stem}": {"get": {
                "summary": "a finished job's stem", "parameters": jid + [
                    {"name": "stem", "in": "path", "required": True,
                     "schema": {"enum": list(STEMS)}}],
                "responses": {"200": {"description": "the audio file"}, **errors}}},
            "/api/jobs/{id}/plot": {"get": {
                "summary": "a finished job's mask picture", "parameters": jid,
                "responses": {"200": {"description": "PNG"}, **errors}}}}}


def create_app(store: Store, settings: Settings, workers=None) -> Starlette:
    """The Starlette app over ``store``.

    Args:
        store: the job store.
        settings: models, defaults, upload cap, token (:class:`Settings`).
        workers: a :class:`keras_svs.serve.workers.Workers` to start and stop with the app
            (and to stop a deleted running job); None: jobs only queue (tests that run
            them otherwise).

    Returns:
        the ASGI app; its lifespan puts jobs that a killed server left running back in the
        queue, removes unfinished uploads' folders, then starts ``workers`` (and stops them
        at shutdown: their running jobs go back to the queue).
    """
    token = settings.token

    def guarded(handler):
        async def route(request: Request):
            if not authorized(request, token):
                return _error(401, "this server needs 'Authorization: Bearer <token>'")
            job_id = request.path_params.get("job_id")
            if job_id is not None and not JOB_ID.fullmatch(job_id):
                return _error(400, f"not a job id: {job_id[:64]!r}")
            try:
                return await handler(request)
            except StoreError as error:
                return _storage_error(error)
        return route

    def found(request: Request) -> Job:
        job = store.get(request.path_params["job_id"])
        if job is None:
            raise HTTPException(404, f"no job {request.path_params['job_id']}")
        return job

    async def page(request: Request):
        return FileResponse(STATIC / "index.html", media_type=STATIC_FILES["index.html"],
                            headers={**_HEADERS, "Content-Security-Policy": _PAGE_POLICY})

    async def static(request: Request):
        name = request.path_params["name"]
        if name not in STATIC_FILES:
            return _error(404, f"no file {name[:64]!r}")
        return FileResponse(STATIC / name, media_type=STATIC_FILES[name], headers=_HEADERS)

    async def health(request: Request):
        return _json({"status": "ok",
                      "workers": workers.alive() if workers is not None else 0})

    async def describe(request: Request):
        return _json(openapi(settings))

    async def options(request: Request):
        defaults = settings.defaults.as_dict()
        return _json({"models": list(settings.models), "masks": list(MASKS),
                      "codecs": list(CODECS), "stems": list(STEMS), "defaults": defaults,
                      "max_upload_bytes": settings.max_upload_bytes})

    async def list_jobs(request: Request):
        return _json([job_json(store, job) for job in store.jobs()])

    async def get_job(request: Request):
        return _json(job_json(store, found(request)))

    async def create_job(request: Request):
        kind, params = parse_options_header(request.headers.get("content-type", ""))
        boundary = params.get(b"boundary")
        if kind != b"multipart/form-data" or not boundary:
            return _error(415, "send the song as multipart/form-data (field 'file')")
        declared = request.headers.get("content-length")
        if declared is not None and not declared.isdigit():
            return _error(400, "a Content-Length that is not a number")
        if declared is not None and int(declared) > settings.max_upload_bytes + FORM_SLACK:
            return _error(413, f"the upload is larger than this server's limit of "
                               f"{_megabytes(settings.max_upload_bytes)}")
        job_id = new_id()
        folder = store.job_dir(job_id)
        form = _Form(folder, settings.max_upload_bytes)
        try:
            try:
                await _receive(request, form, boundary, settings.upload_timeout)
            finally:
                form.close()
            if form.file_name is None:
                raise _Refusal(400, "no file: send the song in form field 'file'")
            name = display_name(form.file_name)
            job_options = check_options(form.fields, settings.models, settings.defaults)
            rate, channels, frames = await anyio.to_thread.run_sync(probe, form.part_path,
                                                                   name)
            stored = input_name(form.file_name)
            os.replace(form.part_path, folder / stored)
            job = store.add(job_id, name, stored, job_options, frames / rate, rate, channels)
        except _Refusal as refusal:
            store.remove_files(job_id)
            return _error(refusal.status, str(refusal))
        except ValueError as error:
            store.remove_files(job_id)
            return _error(400, _first_line(error))
        except ClientDisconnect:
            store.remove_files(job_id)
            return _error(400, "the client closed the connection before the upload ended")
        except OSError as error:
            store.remove_files(job_id)
            return _storage_error(error)
        except BaseException:
            store.remove_files(job_id)
            raise
        return _json(job_json(store, job), 201, Location=f"/api/jobs/{job.id}")

    async def stem_file(request: Request):
        job, stem = found(request), request.path_params["stem"]
        if stem not in job.options.stems:
            return _error(404, f"no stem {stem[:40]!r} in this job; it has "
                               f"{', '.join(job.options.stems)}")
        path = store.output_path(job, stem)
        if path is None or not path.is_file():
            return _error(404, f"the job is {job.status}; its stems are served once done")
        codec = job.options.codec
        return FileResponse(path, media_type=MEDIA_TYPES.get(codec, "application/octet-stream"),
                            filename=f"{Path(job.name).stem} ({stem}).{codec}",
                            headers=_HEADERS)

    async def plot_file(request: Request):
        job = found(request)
        path = store.output_path(job, "plot")
        if path is None or not path.is_file():
            return _error(404, "no mask picture: the job is not done, or has none")
        return FileResponse(path, media_type="image/png", headers=_HEADERS)

    async def delete_job(request: Request):
        job = store.delete(found(request).id)
        if job is None:
            raise HTTPException(404, f"no job {request.path_params['job_id']}")
        if job.status == "running" and workers is not None:
            workers.stop_job(job)
        await anyio.to_thread.run_sync(store.remove_files, job.id)
        return _json({"id": job.id, "deleted": True})

    async def http_error(request: Request, error: HTTPException):
        message = error.detail if isinstance(error.detail, str) else "error"
        if error.status_code == 404 and message == "Not Found":
            message = f"no such page: {request.url.path[:80]}"
        elif error.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path[:80]}"
        return _error(error.status_code, message)

    async def server_error(request: Request, error: Exception):
        return _error(500, f"internal error: {_first_line(error)[:200]}")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        store.recover()
        store.remove_orphans()
        if workers is None:
            yield
            return
        workers.start()
        supervisor = asyncio.create_task(_supervise(workers))
        try:
            yield
        finally:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
            await anyio.to_thread.run_sync(workers.stop)

    routes = [
        Route("/", page), Route("/static/{name}", static), Route("/health", health),
        Route("/openapi.json", describe),
        Route("/api/options", guarded(options)),
        Route("/api/jobs", guarded(list_jobs), methods=["GET"]),
        Route("/api/jobs", guarded(create_job), methods=["POST"]),
        Route("/api/jobs/{job_id}", guarded(get_job), methods=["GET"]),
        Route("/api/jobs/{job_id}", guarded(delete_job), methods=["DELETE"]),
        Route("/api/jobs/{job_id}/stems/{stem}", guarded(stem_file)),
        Route("/api/jobs/{job_id}/plot", guarded(plot_file)),
    ]
    return Starlette(routes=routes, lifespan=lifespan,
                     exception_handlers={HTTPException: http_error, 500: server_error})


async def _supervise(workers, every: float = 1.0) -> None:
    """Restart workers that died (their jobs go back to the queue), every ``every`` s."""
    while True:
        await asyncio.sleep(every)
        workers.check()


def check_bind(host: str, token: str | None) -> None:
    """``ValueError`` for a non-loopback ``host`` without a ``token``."""
    if token:
        return
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise ValueError(f"--host {host} is not a loopback address: anyone who can reach it "
                         "could upload and download; pass --token TOKEN (every request must "
                         "then carry it) or listen on 127.0.0.1")


def model_names(models) -> dict:
    """``{name: path}`` of the server's models: each file's name without extension, the
    shipped model as ``default`` where none is given.

    Raises:
        ValueError: a missing file, or two models of the same name.
    """
    if not models:
        return {"default": None}
    named = {}
    for path in map(Path, models):
        if not path.is_file():
            raise ValueError(f"{path}: no such model file")
        if path.stem in named:
            raise ValueError(f"two models named {path.stem!r}; rename one")
        named[path.stem] = str(path.resolve())
    return named


def serve(host: str = "127.0.0.1", port: int = 8000, data: str | os.PathLike = "serve-data",
          workers: int = 1, max_upload_mb: float = 500, token: str | None = None,
          model=(), mask: str | None = None, codec: str = "wav",
          stems: tuple[str, ...] = STEMS, runtime: str = "auto", plot: bool = True,
          upload_timeout: float = 60.0, log_level: str = "info") -> None:
    """Run the separation service until SIGINT or SIGTERM (then the running jobs go back
    to the queue, and this returns).

    Args:
        host, port: where to listen; a non-loopback ``host`` needs a ``token``.
        data: the data folder: the job store and every job's files.
        workers: separation worker processes (each holds one model; about ``workers``
            times the memory of ``keras-svs separate``).
        max_upload_mb: the largest upload, in MiB.
        token: a bearer token every ``/api`` request must carry.
        model: ``.keras`` files a job may name (by file name without extension; the first
            is the default); none: the shipped model, named ``default``.
        mask, codec, stems: the defaults of a job's options (as ``keras-svs separate``'s).
        runtime: what runs the models (:data:`keras_svs.options.RUNTIMES`).
        plot: draw each job's mask picture (inputs up to 5 minutes; needs matplotlib).
        upload_timeout: seconds an upload may send nothing before it is refused (408).
        log_level: uvicorn's.

    Raises:
        ValueError: a non-loopback host without a token, a missing model file, an unknown
            option.
        keras_svs.serve.jobs.StoreError: the data folder cannot be written.
        BlockingIOError: another server uses the data folder.
    """
    import uvicorn

    from .workers import WorkerSettings, Workers

    check_bind(host, token)
    models = model_names(model)
    defaults = check_options({"mask": mask, "codec": codec, "stems": ",".join(stems)}, models,
                             JobOptions(next(iter(models)), None, "wav", STEMS))
    store = Store(data)
    with _exclusive(store):
        settings = Settings(models, defaults, int(max_upload_mb * 2 ** 20), token or None,
                            upload_timeout)
        pool = Workers(WorkerSettings(str(store.folder), models, runtime, plot,
                                      max(1, (os.cpu_count() or 1) // workers),
                                      (defaults.model, defaults.mask)), workers)
        app = create_app(store, settings, pool)
        # no access log: every open page polls the job list each second
        server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level,
                                               lifespan="on", server_header=False,
                                               access_log=False))
        # uvicorn raises the stopping signal again once it has shut down; here that is done
        previous = {s: signal.signal(s, lambda *_: None) for s in (signal.SIGINT,
                                                                   signal.SIGTERM)}
        try:
            server.run()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        if not server.started:
            raise OSError(f"could not listen on {host}:{port}")


@contextlib.contextmanager
def _exclusive(store: Store):
    """Hold ``DIR/server.lock``: one server per data folder (``BlockingIOError`` naming the
    holder's pid otherwise). The kernel releases it when the process dies, even killed."""
    import fcntl

    path = store.folder / "server.lock"
    with open(path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            raise BlockingIOError(f"{store.folder} is used by another keras-svs serve "
                                  f"(pid {lock.read().strip() or '?'})") from None
        lock.truncate(0)
        lock.write(str(os.getpid()))
        lock.flush()
        yield


__all__ = ["Settings", "create_app", "serve", "check_bind", "model_names", "job_json",
           "authorized", "probe", "openapi"]
