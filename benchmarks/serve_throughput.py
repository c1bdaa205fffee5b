"""Throughput of `keras-svs serve` beside `keras-svs separate` on the same files.

    python benchmarks/serve_throughput.py [--files 6] [--seconds 30] [--workers 1]
                                          [--repeats 1] [--json OUT]

Makes FILES stereo 44.1 kHz FLAC songs of SECONDS seconds each (the demo clip repeated),
warms the converted-model cache with one untimed `separate`, then, REPEATS times in turn:

* `keras-svs separate FILES -o OUT --jobs WORKERS` (one process; start-up, imports and
  model load included in its wall time);
* `keras-svs serve --workers WORKERS --no-plot` on a free loopback port: the server's
  start until its workers are up (``start_s``), then every file uploaded at once (one
  thread each, over HTTP) until the last job is done, seen by polling ``/api/jobs`` every
  0.25 s (``wall_s``: the service's throughput; the workers load their model as they
  start, so the part of that load still running when ``/health`` reports them falls in
  ``wall_s``); ``with_start_s`` adds the two, comparable with `separate`'s wall time;
  ``jobs_s`` sums each job's time in its worker (claimed to done, the store's times);

and prints, as one JSON line, each one's wall seconds, songs per minute and real-time
factor (seconds of audio per wall second), the peak resident memory of the service (server
and workers together, sampled every 50 ms; the list of processes renewed every second), and
the machine (CPU features, load, date).
"""
from __future__ import annotations

import argparse
import datetime
import glob
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from concurrent import futures
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).parent))
from beam_throughput import KERAS_SVS, catalogue, timed  # noqa: E402
from separate_speed import machine  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str):
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.loads(response.read())


def upload(base: str, path: Path) -> str:
    """POST one file as multipart/form-data; the job's id."""
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{path.name}"\r\n\r\n').encode() + path.read_bytes() + \
        f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"{base}/api/jobs", data=body, method="POST", headers={
        "Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=600) as response:
        return json.loads(response.read())["id"]


def served(files: list[Path], data: Path, workers: int) -> dict:
    """Start a server, upload ``files`` at once, wait for every job; its timings."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    began = time.perf_counter()
    process = subprocess.Popen([KERAS_SVS, "serve", "--port", str(port), "--data", str(data),
                                "--workers", str(workers), "--no-plot"],
                               stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    peak, stop = [0], threading.Event()

    def sample():
        root, processes, listed = psutil.Process(process.pid), [], 0.0
        while not stop.wait(0.05):
            total = 0
            if time.monotonic() - listed > 1.0:  # listing children scans all of /proc
                try:
                    processes = [root, *root.children(recursive=True)]
                except psutil.Error:  # the server has exited
                    return
                listed = time.monotonic()
            for p in processes:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            peak[0] = max(peak[0], total)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        while True:
            try:
                if get(f"{base}/health")["workers"] == workers:
                    break
            except OSError:
                pass
            if process.poll() is not None:
                raise RuntimeError("the server exited")
            time.sleep(0.1)
        start = time.perf_counter() - began
        began = time.perf_counter()
        with futures.ThreadPoolExecutor(len(files)) as pool:
            ids = list(pool.map(lambda f: upload(base, f), files))
        while True:
            jobs = {job["id"]: job for job in get(f"{base}/api/jobs")}
            if all(jobs[i]["status"] in ("done", "failed") for i in ids):
                break
            time.sleep(0.25)
        wall = time.perf_counter() - began
        statuses = {i: job["status"] for i, job in jobs.items()}
        moment = lambda text: datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))  # noqa
        separating = sum((moment(j["finished"]) - moment(j["started"])).total_seconds()
                         for j in jobs.values())
        failed = [i for i in ids if statuses[i] != "done"]
        if failed:
            raise RuntimeError(f"{len(failed)} jobs failed")
    finally:
        process.terminate()
        process.wait(60)
        stop.set()
        sampler.join()
    return {"start_s": start, "wall_s": wall, "peak_rss_mb": round(peak[0] / 1e6),
            "jobs_s": separating}


def rates(files: int, audio_seconds: float, wall: float) -> dict:
    return {"wall_s": round(wall, 2), "songs_per_min": round(files * 60 / wall, 2),
            "x_real_time": round(audio_seconds / wall, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=1,
                        help="serve --workers and separate --jobs")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = {"machine": machine(), "files": args.files, "seconds_each": args.seconds,
              "workers": args.workers, "separate": [], "serve": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        audio_seconds = catalogue(folder, args.files, args.seconds)
        result["audio_seconds"] = audio_seconds
        files = sorted(Path(p) for p in glob.glob(str(folder / "*.flac")))
        timed([KERAS_SVS, "separate", str(files[0]), "-o", str(Path(tmp) / "warm")])
        for repeat in range(args.repeats):
            wall = timed([KERAS_SVS, "separate", *map(str, files), "-o",
                          str(Path(tmp) / f"separate{repeat}"), "--jobs", str(args.workers)])
            result["separate"].append(rates(args.files, audio_seconds, wall))
            service = served(files, Path(tmp) / f"serve{repeat}", args.workers)
            run = rates(args.files, audio_seconds, service["wall_s"])
            run.update(start_s=round(service["start_s"], 2),
                       with_start_s=round(service["start_s"] + service["wall_s"], 2),
                       peak_rss_mb=service["peak_rss_mb"],
                       jobs_s=round(service["jobs_s"], 2))
            result["serve"].append(run)
    line = json.dumps(result)
    print(line)
    if args.json:
        args.json.write_text(line + "\n")


if __name__ == "__main__":
    main()
