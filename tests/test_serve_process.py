"""``keras-svs serve`` as a real server process on a free loopback port: stopped with
SIGTERM and killed with SIGKILL in the middle of a job, then started again (no job lost,
none stuck, the queue's order kept, no partial stem); a running job deleted; request bodies
shorter than they say; a worker killed mid-job. The model is the test ``tinystereo`` in LiteRT (conftest
``serve_model``), so the workers start without TensorFlow."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf

pytest.importorskip("uvicorn", reason="the [serve] extra (uvicorn) is not installed")
httpx = pytest.importorskip("httpx2", reason="httpx2 is not installed")

from conftest import TINY_RATE, synth_mixture  # noqa: E402
from keras_svs.serve.jobs import Store  # noqa: E402

#: Seconds of the long song: past the 5 minutes from which a job is streamed, so that its
#: progress is reported while it runs.
LONG = 310


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout: float, what: str, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Server:
    """``python -m keras_svs.cli serve`` on a free loopback port, with its log in a file."""

    def __init__(self, data: Path, serve_model: dict, *options: str, workers: int = 1,
                 plot: bool = False, token: str | None = None):
        self.data, self.port = data, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data.parent / f"server-{self.port}.log"
        command = [sys.executable, "-m", "keras_svs.cli", "serve", "--port", str(self.port),
                   "--data", str(data), "-m", str(serve_model["model"]), "--runtime",
                   "litert", "--workers", str(workers), "--plot" if plot else "--no-plot",
                   *options, *(["--token", token] if token else [])]
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(command, env=serve_model["env"], stdout=log,
                                            stderr=subprocess.STDOUT)
        self.client = httpx.Client(base_url=self.url, timeout=30, headers={
            "Authorization": f"Bearer {token}"} if token else {})
        wait_for(self.ready, 90, f"the server to start ({self.log.read_text()[-2000:]})", 0.2)

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"the server exited: {self.log.read_text()[-3000:]}")
        try:
            return self.client.get("/health").json()["workers"] > 0
        except httpx.TransportError:
            return False

    def upload(self, path: Path) -> dict:
        with open(path, "rb") as f:
            response = self.client.post("/api/jobs", files={"file": (path.name, f)})
        assert response.status_code == 201, response.text
        return response.json()

    def job(self, job_id: str) -> dict:
        return self.client.get(f"/api/jobs/{job_id}").json()

    def stop(self, sig=signal.SIGTERM, timeout: float = 60) -> int:
        self.process.send_signal(sig)
        code = self.process.wait(timeout)
        self.client.close()
        return code


@pytest.fixture(scope="module")
def songs(tmp_path_factory) -> dict:
    """A long song (streamed, progress reported) and three short ones, 8 kHz."""
    folder = tmp_path_factory.mktemp("songs")
    lengths = {"long.wav": (LONG, 1), "short1.wav": (2.0, 2), "short2.wav": (3.0, 2),
               "short3.wav": (1.0, 1)}
    for i, (name, (seconds, channels)) in enumerate(lengths.items()):
        sf.write(folder / name, synth_mixture(TINY_RATE, seconds, channels, seed=i).T,
                 TINY_RATE, subtype="PCM_16")
    return {name: folder / name for name in lengths}


def running_with_progress(server: Server, job_id: str):
    return lambda: (lambda j: j["status"] == "running" and j["progress"] > 0)(
        server.job(job_id))


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # a zombie (killed, not yet reaped by whoever inherited it) counts as gone
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[-1].startswith("Z")
    except FileNotFoundError:
        return True


def stem_files(store: Store, job_id: str) -> list[str]:
    folder = store.stems_dir(job_id)
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_sigterm_and_sigkill_mid_job_lose_no_job(tmp_path, serve_model, songs):
    data = tmp_path / "data"
    store = Store(data)
    server = Server(data, serve_model)
    order = [server.upload(songs[n])["id"] for n in ("long.wav", "short1.wav", "short2.wav")]
    first = order[0]
    wait_for(running_with_progress(server, first), 60, "the long job to run")

    # SIGTERM: a clean stop; the running job goes back to the queue, at its place
    worker = store.get(first).worker
    assert server.stop(signal.SIGTERM) == 0
    assert [store.get(i).status for i in order] == ["queued"] * 3
    assert [job.id for job in store.jobs()] == order and gone(worker)
    assert stem_files(store, first) == [] or all(n.startswith(".") for n in
                                                  stem_files(store, first))

    # SIGKILL: no clean-up runs; the worker dies with the server, and no stem is in place
    server = Server(data, serve_model)
    wait_for(running_with_progress(server, first), 60, "the long job to run again")
    worker = store.get(first).worker
    server.stop(signal.SIGKILL)
    wait_for(lambda: gone(worker), 10, "the worker to die with the server")
    assert store.get(first).status == "running"  # as the killed server left it
    assert not [n for n in stem_files(store, first) if not n.startswith(".")]

    # started again: every job runs, in the order of upload, and completes
    server = Server(data, serve_model)
    wait_for(lambda: all(server.job(i)["status"] == "done" for i in order), 120,
             "every job to finish")
    jobs = [store.get(i) for i in order]
    assert [j.started for j in jobs] == sorted(j.started for j in jobs)
    assert jobs[0].attempts == 2 and [j.attempts for j in jobs[1:]] == [1, 1]
    for job, name in zip(jobs, ("long.wav", "short1.wav", "short2.wav")):
        assert stem_files(store, job.id) == ["accompaniment.wav", "vocals.wav"]  # no temps
        for stem in ("vocals", "accompaniment"):
            info = sf.info(store.stems_dir(job.id) / f"{stem}.wav")
            assert info.frames == sf.info(songs[name]).frames
            response = server.client.get(f"/api/jobs/{job.id}/stems/{stem}")
            assert response.status_code == 200 and len(response.content) > info.frames
    assert sorted(p.name for p in (data / "jobs").iterdir()) == sorted(order)
    assert server.stop(signal.SIGTERM) == 0


def test_delete_short_bodies_and_a_killed_worker(tmp_path, serve_model, songs):
    data = tmp_path / "data"
    store = Store(data)
    server = Server(data, serve_model, "--upload-timeout", "1")
    try:
        long_job = server.upload(songs["long.wav"])["id"]
        wait_for(running_with_progress(server, long_job), 60, "the long job to run")
        worker = store.get(long_job).worker
        response = server.client.delete(f"/api/jobs/{long_job}")
        assert response.status_code == 200 and response.json()["deleted"]
        assert server.client.get(f"/api/jobs/{long_job}").status_code == 404
        short = server.upload(songs["short3.wav"])["id"]
        wait_for(lambda: server.job(short)["status"] == "done", 60, "the next job")
        assert store.get(long_job) is None and not store.job_dir(long_job).exists()
        assert not gone(worker)  # the same worker stopped the job and went on

        # a body shorter than its Content-Length: kept open, it times out (408) ...
        body = (b'--XX\r\nContent-Disposition: form-data; name="file"; filename="a.wav"'
                b"\r\n\r\nRIFF" + b"\0" * 500)
        head = (b"POST /api/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                b"boundary=XX\r\nContent-Length: %d\r\n\r\n" % (len(body) + 10_000))
        for half_close in (False, True):
            with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
                s.sendall(head + body)
                if half_close:  # ... and cut short, it is dropped: no one reads a reply
                    s.shutdown(socket.SHUT_WR)
                reply = b""
                while chunk := s.recv(65536):
                    reply += chunk
            if half_close:
                assert reply == b""
            else:
                assert reply.startswith(b"HTTP/1.1 408 ") and b'"error":"the upload stalled' \
                    in reply
        assert [job.id for job in store.jobs()] == [short]
        # the server removes a dropped upload's folder once its handler sees the disconnect
        wait_for(lambda: sorted(p.name for p in (data / "jobs").iterdir()) == [short], 10,
                 "the dropped upload's folder to go")
        assert server.client.get("/health").status_code == 200

        # a worker killed mid-job (as the out-of-memory killer would): another takes its
        # place and the job runs again to the end
        again = server.upload(songs["long.wav"])["id"]
        wait_for(running_with_progress(server, again), 60, "the long job to run")
        worker = store.get(again).worker
        os.kill(worker, signal.SIGKILL)
        wait_for(lambda: server.job(again)["status"] == "done", 90, "the job to run again")
        job = store.get(again)
        assert job.attempts == 2 and stem_files(store, again) == ["accompaniment.wav",
                                                                  "vocals.wav"]
        assert server.client.get("/health").json()["workers"] == 1
    finally:
        assert server.stop(signal.SIGTERM) == 0
