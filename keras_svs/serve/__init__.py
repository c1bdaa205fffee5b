"""``keras-svs serve``: a self-hosted separation service and its web page.

* :mod:`keras_svs.serve.jobs`: the job store and queue (SQLite, WAL) under a data folder;
* :mod:`keras_svs.serve.workers`: the worker processes that separate, one model each;
* :mod:`keras_svs.serve.app`: the Starlette app (JSON API, the page in ``static/``) and
  :func:`serve`, which runs it on uvicorn.

Needs the ``[serve]`` extra (Starlette, uvicorn, python-multipart)::

    from keras_svs.serve import serve

    serve(port=8000, data="serve-data", workers=2)   # until SIGINT / SIGTERM
"""
from __future__ import annotations


def serve(*args, **kwargs) -> None:
    """:func:`keras_svs.serve.app.serve` (imported on call: Starlette loads only then)."""
    from .app import serve as run

    return run(*args, **kwargs)


__all__ = ["serve"]
