"""keras_svs.serve through Starlette's TestClient: every route, the token, the store and
queue, and the hostile-input table (RELIABILITY.md). Jobs are separated here by the
workers' own job function (keras_svs.serve.workers.run_job) in this process; the real
worker processes and server are tests/test_serve_process.py's."""
from __future__ import annotations

import errno
import io
from urllib.parse import unquote

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("starlette", reason="the [serve] extra (starlette) is not installed")
pytest.importorskip("httpx2", reason="httpx2 (Starlette's TestClient) is not installed")

from click.testing import CliRunner  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from conftest import TINY_RATE, synth_mixture  # noqa: E402
from keras_svs.cli import main  # noqa: E402
from keras_svs.options import STEMS  # noqa: E402
from keras_svs.serve import app as service  # noqa: E402
from keras_svs.serve.jobs import JobOptions, Store, check_options  # noqa: E402
from keras_svs.serve.workers import Separators, WorkerSettings, run_job  # noqa: E402

TOKEN = "s3cret-token-for-tests"


def wav_bytes(seconds: float = 2.0, channels: int = 2, fmt: str = "WAV",
              subtype: str = "PCM_16", seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, synth_mixture(TINY_RATE, seconds, channels, seed).T, TINY_RATE,
             format=fmt, subtype=subtype)
    return buffer.getvalue()


@pytest.fixture
def data(tmp_path):
    """The data folder, alone in its parent (so that a write outside it would show)."""
    return tmp_path / "data"


def make_client(data, serve_model, token=None, max_upload=10 * 2 ** 20, timeout=5.0):
    store = Store(data)
    models = {"tinystereo": str(serve_model["model"])}
    settings = service.Settings(models, JobOptions("tinystereo", None, "wav", STEMS),
                                max_upload, token, timeout)
    return store, settings, TestClient(service.create_app(store, settings))


@pytest.fixture
def served(data, serve_model, monkeypatch):
    """``(store, settings, client)`` of an app without a token; the LiteRT cache of the
    test model for the jobs run here."""
    monkeypatch.setenv("KERAS_SVS_CACHE", str(serve_model["cache"]))
    store, settings, client = make_client(data, serve_model)
    with client:
        yield store, settings, client


def run_all(store: Store, settings, plot: bool = False) -> list[str]:
    """Separate every queued job, oldest first, as a worker does; their new statuses."""
    separators = Separators(WorkerSettings(str(store.folder), settings.models, "litert"))
    statuses = []
    while (job := store.claim(worker=1)) is not None:
        statuses.append(run_job(store, job, separators, plot=plot))
    return statuses


def upload(client, content: bytes, name: str = "song.wav", **fields):
    return client.post("/api/jobs", files={"file": (name, content, "audio/wav")},
                       data=fields)


# -- the page ----------------------------------------------------------------------------
def test_page_static_files_health_and_openapi(served):
    _, settings, client = served
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert '<script src="/static/app.js"' in page.text
    for name, kind in (("app.js", "javascript"), ("style.css", "css")):
        response = client.get(f"/static/{name}")
        assert response.status_code == 200 and kind in response.headers["content-type"]
    for path in ("/static/", "/static/..%2Fapp.py", "/static/app.py", "/static/%2e%2e"):
        response = client.get(path)
        assert response.status_code == 404 and "error" in response.json(), path
    assert client.get("/health").json() == {"status": "ok", "workers": 0}
    spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    routes = {route.path for route in client.app.routes if route.path.startswith("/api")}
    assert routes == {p.replace("{id}", "{job_id}") for p in spec["paths"] if p.startswith("/api")}
    options = client.get("/api/options").json()
    assert options["models"] == ["tinystereo"] and options["defaults"]["codec"] == "wav"
    assert options["max_upload_bytes"] == settings.max_upload_bytes


# -- a job from upload to stems -----------------------------------------------------------
def test_a_job_from_upload_to_stems_equal_to_the_engine(served, serve_model, tmp_path):
    store, settings, client = served
    song = wav_bytes(3.0)
    created = upload(client, song, "My Song.wav", codec="flac")
    assert created.status_code == 201, created.text
    job = created.json()
    assert job["status"] == "queued" and job["position"] == 0 and job["name"] == "My Song.wav"
    assert (job["rate"], job["channels"], job["duration"]) == (TINY_RATE, 2, 3.0)
    assert created.headers["location"] == job["url"]
    assert client.get(f"{job['url']}/stems/vocals").status_code == 404  # not done yet
    assert [j["id"] for j in client.get("/api/jobs").json()] == [job["id"]]

    assert run_all(store, settings, plot=True) == ["done"]
    done = client.get(job["url"]).json()
    assert done["status"] == "done" and done["progress"] == 1 and done["finished"]
    assert set(done["stems"]) == set(STEMS) and done["plot"] == f"{job['url']}/plot"

    from keras_svs.separation import Separator

    (tmp_path / "song.wav").write_bytes(song)
    expected = Separator(serve_model["model"], runtime="litert").separate_file(
        tmp_path / "song.wav", tmp_path / "engine", codec="flac")
    for stem, url in done["stems"].items():
        response = client.get(url)
        assert response.status_code == 200 and response.headers["content-type"] == "audio/flac"
        assert f"My Song ({stem}).flac" in unquote(response.headers["content-disposition"])
        served_audio, rate = sf.read(io.BytesIO(response.content), always_2d=True)
        engine, _ = sf.read(expected[stem], always_2d=True)
        assert rate == TINY_RATE and served_audio.shape == engine.shape
        np.testing.assert_allclose(served_audio, engine, atol=1e-4)
    picture = client.get(done["plot"])
    assert picture.status_code == 200 and picture.content.startswith(b"\x89PNG")

    deleted = client.delete(job["url"])
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    assert client.get(job["url"]).status_code == 404
    assert not store.job_dir(job["id"]).exists() and client.get("/api/jobs").json() == []


def test_a_job_that_fails_says_why_in_one_line(served):
    store, settings, client = served
    nan = io.BytesIO()  # NaN in the first second: the upload's check reads only the last
    samples = np.zeros((3 * TINY_RATE, 1), np.float32)
    samples[100:200] = np.nan
    sf.write(nan, samples, TINY_RATE, format="WAV", subtype="FLOAT")
    job = upload(client, nan.getvalue(), "nan.wav").json()
    assert run_all(store, settings) == ["failed"]
    failed = client.get(job["url"]).json()
    assert failed["status"] == "failed" and "NaN" in failed["error"]
    assert "\n" not in failed["error"] and str(store.folder) not in failed["error"]
    assert "nan.wav" in failed["error"]
    assert client.get(f"{job['url']}/stems/vocals").status_code == 404


def test_options_per_job(served):
    store, settings, client = served
    job = upload(client, wav_bytes(1.0), stems="accompaniment", codec="ogg",
                 mask="binary").json()
    assert job["options"] == {"model": "tinystereo", "mask": "binary", "codec": "ogg",
                              "stems": ["accompaniment"]}
    assert run_all(store, settings) == ["done"]
    done = client.get(job["url"]).json()
    assert list(done["stems"]) == ["accompaniment"]
    assert client.get(done["stems"]["accompaniment"]).headers["content-type"] == "audio/ogg"
    response = client.get(f"{job['url']}/stems/vocals")
    assert response.status_code == 404 and "accompaniment" in response.json()["error"]


# -- the token ----------------------------------------------------------------------------
def test_a_token_guards_every_api_route(data, serve_model):
    store, _, client = make_client(data, serve_model, token=TOKEN)
    with client:
        calls = [("get", "/api/options"), ("get", "/api/jobs"), ("post", "/api/jobs"),
                 ("get", f"/api/jobs/{'0' * 32}"), ("delete", f"/api/jobs/{'0' * 32}"),
                 ("get", f"/api/jobs/{'0' * 32}/stems/vocals"),
                 ("get", f"/api/jobs/{'0' * 32}/plot")]
        for header in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                       {"Authorization": f"Basic {TOKEN}"}):
            for method, path in calls:
                response = getattr(client, method)(path, headers=header)
                assert response.status_code == 401, (header, method, path)
                assert "Bearer" in response.json()["error"]
        good = {"Authorization": f"Bearer {TOKEN}"}
        assert client.get("/api/jobs", headers=good).json() == []
        created = client.post("/api/jobs", headers=good,
                              files={"file": ("a.wav", wav_bytes(1.0), "audio/wav")})
        assert created.status_code == 201
        assert client.get("/").status_code == 200 and client.get("/health").status_code == 200
        assert client.get("/openapi.json").json()["security"] == [{"bearer": []}]


def test_only_loopback_without_a_token():
    for host in ("127.0.0.1", "::1", "[::1]", "localhost", "127.0.0.2"):
        service.check_bind(host, None)
    service.check_bind("0.0.0.0", TOKEN)
    for host in ("0.0.0.0", "192.168.1.5", "::", "example.org"):
        with pytest.raises(ValueError, match="not a loopback address.*--token"):
            service.check_bind(host, None)
    result = CliRunner().invoke(main, ["serve", "--host", "0.0.0.0", "--port", "0"])
    assert result.exit_code == 1
    assert "Error: --host 0.0.0.0 is not a loopback address" in result.output


def test_serve_refuses_a_data_folder_it_cannot_use(tmp_path):
    import fcntl

    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    result = CliRunner().invoke(main, ["serve", "--data", str(not_a_folder), "--port", "0"])
    assert result.exit_code == 1 and "cannot keep the job store there" in result.output
    data = tmp_path / "data"
    data.mkdir()
    with open(data / "server.lock", "w") as held:  # another server holds the folder
        held.write("4242")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX)
        result = CliRunner().invoke(main, ["serve", "--data", str(data), "--port", "0"])
    assert result.exit_code == 1
    assert "is used by another keras-svs serve (pid 4242)" in result.output
    result = CliRunner().invoke(main, ["serve", "-m", str(tmp_path / "none.keras")])
    assert result.exit_code == 1 and "none.keras: no such model file" in result.output


# -- the store and its queue --------------------------------------------------------------
def test_the_queue_keeps_its_order_across_claims_and_recovery(tmp_path):
    store = Store(tmp_path)
    options = JobOptions("default", None, "wav", STEMS)
    ids = [f"{i:032x}" for i in range(4)]
    for job_id in ids:
        store.add(job_id, "x.wav", "input.wav", options, 1.0, 8000, 1)
    assert [store.claim(worker=11).id, store.claim(worker=12).id] == ids[:2]
    assert store.position(store.get(ids[3])) == 1
    assert store.recover(worker=12) == [ids[1]]  # worker 12 died
    assert store.recover() == [ids[0]]  # the server was killed
    assert [store.claim(worker=13).id for _ in range(4)] == ids
    assert store.claim(worker=13) is None
    assert store.finish(ids[0], {"vocals": "vocals.wav"}) and not store.finish(ids[0], {})
    for _ in range(3):  # interrupted again and again: it fails instead of looping
        store.recover()
        while (job := store.claim(worker=14)) is not None and job.id != ids[1]:
            store.finish(job.id, {})
    assert store.recover() == [] and store.get(ids[1]).status == "failed"
    assert "interrupted 3 times" in store.get(ids[1]).error


def test_check_options_refuses_unknown_choices():
    models = {"default": None}
    defaults = JobOptions("default", None, "wav", STEMS)
    assert check_options({}, models, defaults) == defaults
    assert check_options({"stems": "vocals, vocals"}, models, defaults).stems == ("vocals",)
    for fields, word in (({"model": "other"}, "model"), ({"mask": "fuzzy"}, "mask"),
                         ({"codec": "aac"}, "codec"), ({"stems": "drums"}, "stem")):
        with pytest.raises(ValueError, match=f"unknown {word}"):
            check_options(fields, models, defaults)


# -- hostile input ------------------------------------------------------------------------
def multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "b0undary") -> bytes:
    out = b""
    for name, file_name, content in parts:
        disposition = f'form-data; name="{name}"'
        if file_name is not None:
            disposition += f'; filename="{file_name}"'
        out += (f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n").encode("latin-1")
        out += content + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


FORM = {"Content-Type": "multipart/form-data; boundary=b0undary"}
WAV = wav_bytes(1.0)
GONE = "0" * 32

#: The hostile-input table (RELIABILITY.md): case -> (request, status, words of the error).
HOSTILE = {
    "not audio": (("post", dict(files={"file": ("notes.wav", b"hello, not audio" * 40)})),
                  415, "not an audio file"),
    "truncated FLAC": (("post", dict(files={"file": ("cut.flac", wav_bytes(
        2.0, fmt="FLAC")[:6000])})), 422, "damaged or truncated"),
    "empty file": (("post", dict(files={"file": ("empty.wav", b"")})), 400, "empty"),
    "no file": (("post", dict(content=multipart([("codec", None, b"wav")]), headers=FORM)),
                400, "field 'file'"),
    "two files": (("post", dict(content=multipart([("file", "a.wav", WAV),
                                                   ("file", "b.wav", WAV)]),
                                headers=FORM)), 400, "one file per job"),
    "unknown form field": (("post", dict(content=multipart([("path", None, b"/etc"),
                                                            ("file", "a.wav", WAV)]),
                                         headers=FORM)), 400, "unknown form field"),
    "bogus multipart body": (("post", dict(content=b"--b0undary\r\nthis is not a part\r\n\r\n"
                                           b"\x00\xff" * 50, headers=FORM)), 400,
                             "multipart body"),
    "unclosed multipart body": (("post", dict(content=multipart([("file", "a.wav", WAV)])[:-20],
                                              headers=FORM)), 400, "multipart body"),
    "not multipart": (("post", dict(content=WAV, headers={"Content-Type": "audio/wav"})),
                      415, "multipart/form-data"),
    "multipart without boundary": (("post", dict(content=WAV, headers={
        "Content-Type": "multipart/form-data"})), 415, "multipart/form-data"),
    "../ in the file name": (("post", dict(files={"file": ("../../evil.wav", WAV)})), 400,
                             "not a path"),
    "NUL in the file name": (("post", dict(content=multipart([("file", "a\x00.wav", WAV)]),
                                           headers=FORM)), 400, "NUL"),
    "unknown codec": (("post", dict(files={"file": ("a.wav", WAV)}, data={"codec": "aac"})),
                      400, "unknown codec"),
    "unknown stem (upload)": (("post", dict(files={"file": ("a.wav", WAV)},
                                            data={"stems": "drums"})), 400, "unknown stem"),
    "unknown mask": (("post", dict(files={"file": ("a.wav", WAV)}, data={"mask": "x"})), 400,
                     "unknown mask"),
    "unknown model": (("post", dict(files={"file": ("a.wav", WAV)},
                                    data={"model": "../../model"})), 400, "unknown model"),
    "declared length over the cap": (("post", dict(content=multipart([("file", "a.wav", WAV)]),
                                                   headers={**FORM, "Content-Length": str(
                                                       2 ** 31)})), 413, "limit"),
    "file over the cap (streamed)": (("post", dict(content=iter([multipart(
        [("file", "big.wav", b"\0" * 300_000)])]), headers=FORM)), 413, "limit"),
    "id that does not exist": (("get", dict(url=f"/api/jobs/{GONE}")), 404, "no job"),
    "id that is not an id": (("get", dict(url="/api/jobs/jobs.sqlite3")), 400,
                             "not a job id"),
    "path as an id": (("get", dict(url="/api/jobs/..%2F..%2Fjobs.sqlite3")), 404,
                      "no such page"),
    "delete of an id that does not exist": (("delete", dict(url=f"/api/jobs/{GONE}")), 404,
                                            "no job"),
    "stem of an id that does not exist": (("get", dict(url=f"/api/jobs/{GONE}/stems/vocals")),
                                          404, "no job"),
    "unknown route": (("get", dict(url="/api/nothing")), 404, "no such page"),
    "wrong method": (("put", dict(url="/api/jobs")), 405, "not allowed"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_input_gets_a_4xx_and_the_server_goes_on(case, data, serve_model, tmp_path):
    store, _, client = make_client(data, serve_model, max_upload=200_000)
    (method, request), status, words = HOSTILE[case]
    request = dict(request)
    with client:
        response = getattr(client, method)(request.pop("url", "/api/jobs"), **request)
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert words in error and "\n" not in error and str(data) not in error
        # nothing stored, nothing written outside the data folder; the server serves
        assert store.jobs() == [] and list((data / "jobs").iterdir()) == []
        assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
        assert client.get("/health").status_code == 200
        assert upload(client, WAV).status_code == 201


def test_an_unknown_stem_of_a_done_job_is_a_404(served):
    store, settings, client = served
    job = upload(client, WAV).json()
    run_all(store, settings)
    for stem in ("drums", "vocals.wav", "plot", "%2e%2e"):
        response = client.get(f"{job['url']}/stems/{stem}")
        assert response.status_code == 404 and "no stem" in response.json()["error"]


def test_a_full_disk_or_an_unwritable_folder_is_a_507_and_the_server_goes_on(served,
                                                                          monkeypatch):
    store, _, client = served

    def full(self, data, start, end):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(service._Form, "_data", full)
        response = upload(client, WAV)
    assert response.status_code == 507 and "disk is full" in response.json()["error"]
    jobs = store.folder / "jobs"
    jobs.rmdir()
    jobs.write_text("a file where the jobs folder was")  # unwritable, even by root
    response = upload(client, WAV)
    assert response.status_code == 507 and "cannot write" in response.json()["error"]
    assert client.get("/api/jobs").status_code == 200
    jobs.unlink()
    jobs.mkdir()
    assert upload(client, WAV).status_code == 201


def test_the_page_lists_its_static_files_in_the_package_data():
    """A wheel ships the page: setup.cfg's package_data names the static files."""
    import configparser
    from pathlib import Path

    config = configparser.ConfigParser()
    config.read(Path(__file__).parents[1] / "setup.cfg")
    patterns = config["options.package_data"]["keras_svs.serve.static"]
    suffixes = {p.strip().lstrip("*") for p in patterns.split(",")}
    assert {Path(name).suffix for name in service.STATIC_FILES} <= suffixes
    assert all((service.STATIC / name).is_file() for name in service.STATIC_FILES)
