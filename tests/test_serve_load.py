"""``keras-svs serve`` under load: 20 uploads at once of 30 s songs, two workers; every job
is done, its stems equal ``keras-svs separate``'s of the same file (within 1e-4), and the
server and its workers stay within 1.5 GB of resident memory per worker (the peak is
reported in the test summary). The model is the test ``tinystereo`` (conftest
``serve_model``), so the test takes seconds."""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from concurrent import futures

import numpy as np
import pytest
import soundfile as sf

from conftest import TINY_RATE, synth_pair
from test_serve_process import Server, wait_for

psutil = pytest.importorskip("psutil")

SONGS, SECONDS, WORKERS = 20, 30.0, 2
#: The acceptance limit: resident memory of the server and its workers, per worker.
LIMIT = 1.5e9


class PeakMemory(threading.Thread):
    """Samples the resident memory of a process and its children every 50 ms (the list of
    children renewed every 0.5 s):
    :attr:`total` the peak of their sum, :attr:`each` each process's own peak."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.root, self.total, self.each = psutil.Process(pid), 0, {}
        self.done = threading.Event()

    def run(self):
        processes, listed = [], 0.0
        while not self.done.wait(0.05):
            total = 0
            if time.monotonic() - listed > 0.5:  # listing children scans all of /proc
                try:
                    processes = [self.root, *self.root.children(recursive=True)]
                except psutil.Error:  # the server has exited
                    return
                listed = time.monotonic()
            for process in processes:
                try:
                    rss = process.memory_info().rss
                except psutil.Error:
                    continue
                total += rss
                self.each[process.pid] = max(self.each.get(process.pid, 0), rss)
            self.total = max(self.total, total)


@pytest.fixture(scope="module")
def songs(tmp_path_factory):
    """20 different 30 s stereo songs: 4 voices x 5 accompaniment gains and pans."""
    folder = tmp_path_factory.mktemp("load")
    pairs = [synth_pair(TINY_RATE, SECONDS, seed) for seed in range(4)]
    paths = []
    for i in range(SONGS):
        voice, accompaniment = pairs[i % 4]
        gain = 0.5 + 0.25 * (i // 4)
        song = np.stack([voice + gain * accompaniment, 0.8 * voice + accompaniment / gain])
        paths.append(folder / f"song{i:02d}.wav")
        sf.write(paths[-1], (0.8 * song / np.abs(song).max()).T, TINY_RATE, subtype="PCM_16")
    return paths


def test_twenty_uploads_at_once(tmp_path, serve_model, songs, record_property):
    server = Server(tmp_path / "data", serve_model, workers=WORKERS)
    memory = PeakMemory(server.process.pid)
    memory.start()
    try:
        with futures.ThreadPoolExecutor(SONGS) as pool:
            jobs = list(pool.map(server.upload, songs))
        assert len({job["id"] for job in jobs}) == SONGS
        wait_for(lambda: all(server.job(j["id"])["status"] == "done" for j in jobs), 240,
                 "every job to finish", 0.5)
    finally:
        memory.done.set()
        memory.join()
        assert server.stop(signal.SIGTERM) == 0

    separated = tmp_path / "separated"
    command = [sys.executable, "-m", "keras_svs.cli", "separate", *map(str, songs), "-o",
               str(separated), "-m", str(serve_model["model"]), "--runtime", "litert"]
    result = subprocess.run(command, env=serve_model["env"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for job, song in zip(jobs, songs):
        assert job["name"] == song.name
        for stem in ("vocals", "accompaniment"):
            served, rate = sf.read(tmp_path / "data" / "jobs" / job["id"] / "stems"
                                   / f"{stem}.wav")
            expected, _ = sf.read(separated / song.stem / f"{stem}.wav")
            assert rate == TINY_RATE and served.shape == expected.shape
            np.testing.assert_allclose(served, expected, atol=1e-4)

    others = [rss for pid, rss in sorted(memory.each.items()) if pid != server.process.pid]
    report = (f"peak RSS of the server and its {WORKERS} workers under {SONGS} uploads: "
              f"{memory.total / 1e6:.0f} MB in all (server "
              f"{memory.each[server.process.pid] / 1e6:.0f} MB; its children "
              f"{', '.join(f'{rss / 1e6:.0f}' for rss in others)} MB)")
    record_property("serve_load_memory", report)
    assert memory.total < LIMIT * WORKERS and max(others) < LIMIT, report
