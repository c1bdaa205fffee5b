"""keras_svs.runtime: the LiteRT form gives TensorFlow's stems; auto falls back cleanly."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from conftest import synth_pair
from keras_svs import runtime
from keras_svs.cli import main
from keras_svs.separation import Separator
from keras_svs.settings import WEIGHTS_MEMBER, ModelSettings

RATE = 8000
needs_litert = pytest.mark.skipif(not runtime.litert_installed(),
                                  reason="ai-edge-litert is not installed")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("KERAS_SVS_CACHE", str(folder))
    return folder


@pytest.fixture(scope="module")
def stereo_path(tmp_path_factory):
    import keras

    from keras_svs.models import build_model

    keras.utils.set_random_seed(3)
    path = tmp_path_factory.mktemp("runtime") / "tinystereo.keras"
    build_model("tinystereo").save(path)
    return path


def _song(seconds: float = 3.0) -> np.ndarray:
    v, a = synth_pair(RATE, seconds, 1)
    return np.stack([v + 0.6 * a, 0.5 * v + a]).astype(np.float32)


@needs_litert
def test_litert_stems_equal_tensorflow_and_the_form_is_cached(stereo_path, cache):
    song = _song()
    reference = Separator(stereo_path, runtime="tensorflow")
    converted = Separator(stereo_path, runtime="litert")
    assert reference.runtime == "tensorflow" and converted.runtime == "litert"
    assert len(list((cache / "litert").glob("*.tflite"))) == 1
    cached = Separator(stereo_path, runtime="litert")  # the cached form, no Keras model
    assert cached.runtime == "litert" and cached.model is None
    assert cached.settings.as_dict() == reference.settings.as_dict()
    assert cached.settings.stft == reference.config
    want = reference.separate(song, RATE)
    for separator in (converted, cached):
        got = separator.separate(song, RATE)
        for stem in want:
            np.testing.assert_allclose(got[stem], want[stem], atol=1e-4)


@needs_litert
def test_a_cached_separation_imports_neither_keras_nor_tensorflow(stereo_path, cache):
    Separator(stereo_path)  # auto: converts and caches its form
    code = ("import sys, numpy as np; from keras_svs.separation import Separator; "
            f"s = Separator({str(stereo_path)!r}); s.separate(np.zeros((2, 4000), np.float32), "
            "8000); print(s.runtime, 'keras' in sys.modules, 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)  # the environment, with KERAS_SVS_CACHE, is inherited
    auto = "litert-int8" if runtime.int8_pays() else "litert"
    assert out.stdout.split() == [auto, "False", "False"], out.stderr


@needs_litert
def test_auto_takes_the_int8_form_cached_beside_the_float_one(stereo_path, cache,
                                                              monkeypatch):
    song = _song(1.0)
    float_form = Separator(stereo_path, runtime="litert")
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"avx2", "avx512_vnni"}))
    auto = Separator(stereo_path)
    assert auto.runtime == "litert-int8"
    assert runtime.cached_form(stereo_path, "litert-int8")[0].name.endswith(
        f"-int8-v{runtime.FORM_VERSION}.tflite")
    assert len(list((cache / "litert").glob("*.tflite"))) == 2
    # the tiny model has no filter of INT8_MIN_WEIGHTS weights: both forms are one function
    want, got = float_form.separate(song, RATE), auto.separate(song, RATE)
    for stem in want:
        np.testing.assert_allclose(got[stem], want[stem], atol=1e-6)


@needs_litert
def test_quantize_filters_stores_the_large_filters_as_int8(stereo_path, cache):
    from tensorflow.lite.python import schema_py_generated as schema

    flatbuffer = runtime.convert(Separator(stereo_path, runtime="tensorflow").model,
                                 [None, 64, 2], stereo_path)[0].read_bytes()
    assert runtime.quantize_filters(flatbuffer) == flatbuffer  # no filter that large

    def filters(data):
        """(shape, type, scales, zero points) of every CONV_2D filter, in graph order."""
        model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))
        graph, codes = model.subgraphs[0], model.operatorCodes
        found = []
        for op in graph.operators:
            code = codes[op.opcodeIndex]
            if max(code.builtinCode, code.deprecatedBuiltinCode) == schema.BuiltinOperator.CONV_2D:
                t = graph.tensors[op.inputs[1]]
                q = t.quantization
                found.append((tuple(t.shape), t.type, None if q is None else q.scale,
                              None if q is None else q.zeroPoint))
        return found

    before = filters(flatbuffer)
    threshold = sorted(int(np.prod(f[0])) for f in before)[len(before) // 2]
    quantized = runtime.quantize_filters(flatbuffer, min_weights=threshold)
    after = filters(quantized)
    assert [f[0] for f in after] == [f[0] for f in before]
    large = [int(np.prod(f[0])) >= threshold for f in before]
    assert 0 < sum(large) < len(large)
    for (shape, kind, scales, zeros), big in zip(after, large):
        assert kind == (schema.TensorType.INT8 if big else schema.TensorType.FLOAT32)
        if big:  # one scale per output channel, no zero point
            assert len(scales) == shape[0] and not any(zeros)
    x = np.abs(np.random.default_rng(0).normal(0, 1, (64, 64, 2))).astype(np.float32)
    path = cache / "quantized.tflite"
    path.write_bytes(quantized)
    want, got = (runtime.litert_predict(f, 1)(x)
                 for f in (runtime.cached_form(stereo_path)[0], path))
    difference = np.abs(got - want)
    assert 0 < difference.max() < 0.05, difference.max()


@needs_litert
def test_quantize_filters_quantizes_a_shared_filter_buffer_once(stereo_path, cache):
    """Two convolutions whose filters share one buffer (the converter dedupes equal
    constants): the buffer becomes int8 once, and both tensors take its type and scales."""
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    flatbuffer = runtime.convert(Separator(stereo_path, runtime="tensorflow").model,
                                 [None, 64, 2], stereo_path)[0].read_bytes()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(flatbuffer, 0))
    graph, codes = model.subgraphs[0], model.operatorCodes
    filters = [graph.tensors[op.inputs[1]] for op in graph.operators
               if max(codes[op.opcodeIndex].builtinCode,
                      codes[op.opcodeIndex].deprecatedBuiltinCode)
               == schema.BuiltinOperator.CONV_2D]
    first, second = next((a, b) for i, a in enumerate(filters) for b in filters[i + 1:]
                         if list(a.shape) == list(b.shape))  # the two nets' same level
    second.buffer = first.buffer
    original = np.frombuffer(bytes(model.buffers[first.buffer].data), np.float32)
    builder = flatbuffers.Builder(len(flatbuffer))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    shared = bytes(builder.Output())

    size = int(np.prod(first.shape))
    out = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(
        runtime.quantize_filters(shared, min_weights=size), 0))
    tensors = [out.subgraphs[0].tensors[i] for i, t in enumerate(graph.tensors)
               if t is first or t is second]
    assert [t.buffer for t in tensors] == [first.buffer] * 2
    assert all(t.type == schema.TensorType.INT8 for t in tensors)
    np.testing.assert_array_equal(tensors[0].quantization.scale, tensors[1].quantization.scale)
    levels = np.frombuffer(bytes(out.buffers[first.buffer].data), np.int8)
    assert levels.size == size  # quantized once: a second pass would have read int8 as float
    scale = np.repeat(tensors[0].quantization.scale, size // first.shape[0])
    np.testing.assert_allclose(levels * scale, original, atol=scale.max() / 2 + 1e-7)


def test_auto_falls_back_to_tensorflow_without_litert(stereo_path, cache, monkeypatch):
    monkeypatch.setattr(runtime, "litert_installed", lambda: False)
    assert Separator(stereo_path).runtime == "tensorflow"
    assert not cache.exists()  # nothing converted
    with pytest.raises(ImportError, match="ai-edge-litert"):
        Separator(stereo_path, runtime="litert")


def test_litert_where_it_does_not_apply(tiny_model_path, tiny_model, stereo_path, cache):
    assert Separator(tiny_model_path).runtime == "tensorflow"  # a patch model: auto
    assert Separator(stereo_path, precision="bfloat16").runtime == "tensorflow"
    for model, options in ((tiny_model_path, {}), (stereo_path, {"precision": "bfloat16"}),
                           (stereo_path, {"inference_form": False})):
        with pytest.raises(ValueError, match="litert"):
            Separator(model, runtime="litert", **options)
    with pytest.raises(ValueError, match="runtime must be one of"):
        Separator(stereo_path, runtime="onnx")


def _truncate(flatbuffer, record):
    flatbuffer.write_bytes(flatbuffer.read_bytes()[:1000])


def _flip_bytes(flatbuffer, record):
    data = bytearray(flatbuffer.read_bytes())
    rng = np.random.default_rng(0)
    for i in rng.choice(np.arange(len(data) // 4, len(data)), 200, replace=False):
        data[i] ^= 0xFF
    flatbuffer.write_bytes(bytes(data))


def _drop_record(flatbuffer, record):
    record.unlink()


def _record_of_another_model(flatbuffer, record):
    stored = json.loads(record.read_text())
    stored["model_sha256"] = "0" * 64
    stored["settings"]["preset"] = "another"  # the record of another model file
    record.write_text(json.dumps(stored))


@pytest.fixture(scope="module")
def clean_entry(stereo_path, tmp_path_factory):
    """A sound cache entry of the stereo model's ``litert`` form (``{suffix: bytes}``) and
    the stems of its separation of ``_song(1.0)``."""
    patch = pytest.MonkeyPatch()
    patch.setenv("KERAS_SVS_CACHE", str(tmp_path_factory.mktemp("clean-cache")))
    try:
        stems = Separator(stereo_path, runtime="litert").separate(_song(1.0), RATE)
        flatbuffer, _ = runtime.cached_form(stereo_path)
        files = {suffix: flatbuffer.with_suffix(suffix).read_bytes()
                 for suffix in (".tflite", ".json")}
    finally:
        patch.undo()
    return files, stems


@needs_litert
@pytest.mark.parametrize("damage", [_truncate, _flip_bytes, _drop_record,
                                    _record_of_another_model])
def test_a_damaged_cache_entry_is_removed_and_made_again(stereo_path, clean_entry, cache,
                                                         capfd, damage):
    files, want = clean_entry
    base = cache / "litert" / runtime.form_key(stereo_path, "litert")
    base.parent.mkdir(parents=True)
    for suffix, data in files.items():
        base.with_suffix(suffix).write_bytes(data)
    assert runtime.cached_form(stereo_path) is not None  # the sound entry is taken
    flatbuffer, record = base.with_suffix(".tflite"), base.with_suffix(".json")
    damage(flatbuffer, record)
    capfd.readouterr()
    separator = Separator(stereo_path, runtime="litert")  # finds it damaged, makes it again
    warning = [line for line in capfd.readouterr().err.splitlines() if "Warning" in line]
    assert len(warning) == 1 and "damaged" in warning[0] and str(stereo_path) in warning[0]
    assert separator.runtime == "litert"
    got = separator.separate(_song(1.0), RATE)
    for stem in want:
        np.testing.assert_allclose(got[stem], want[stem], atol=1e-4)
    assert runtime.cached_form(stereo_path) is not None  # a sound entry again
    assert flatbuffer.read_bytes() == files[".tflite"]
    assert "damaged" not in capfd.readouterr().err


@needs_litert
def test_two_processes_converting_one_model_at_once(stereo_path, cache, tmp_path):
    code = ("import sys, numpy as np; from keras_svs.separation import Separator; "
            f"s = Separator({str(stereo_path)!r}, runtime='litert'); "
            "x = np.stack([np.sin(np.arange(8000) / 7.0)] * 2).astype(np.float32); "
            "np.save(sys.argv[1], s.separate(x, 8000)['vocals'])")
    outs = [tmp_path / f"vocals{i}.npy" for i in range(2)]
    runs = [subprocess.Popen([sys.executable, "-c", code, str(out)], stderr=subprocess.PIPE,
                             text=True) for out in outs]  # KERAS_SVS_CACHE is inherited
    errors = [run.communicate(timeout=300)[1] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], errors
    assert not any("damaged" in e for e in errors), errors
    assert len(list((cache / "litert").glob("*.tflite"))) == 1
    want = Separator(stereo_path, runtime="tensorflow").separate(
        np.stack([np.sin(np.arange(8000) / 7.0)] * 2).astype(np.float32), 8000)["vocals"]
    for out in outs:
        np.testing.assert_allclose(np.load(out), want, atol=1e-4)
    assert runtime.cached_form(stereo_path) is not None


def test_the_stable_ratio_logit_is_the_pair_ratio_logit():
    from keras_svs.models.inference import StableRatioLogit
    from keras_svs.models.spleeter import PairRatioLogit

    rng = np.random.default_rng(0)
    voice, accompaniment = (rng.normal(0, 30, (1, 8, 16, 2)).astype(np.float32)
                            for _ in range(2))
    want = np.asarray(PairRatioLogit()([voice, accompaniment]))
    got = np.asarray(StableRatioLogit()([voice, accompaniment]))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    extreme = np.asarray(StableRatioLogit()([np.float32([[-500.0, 500.0]]),
                                              np.float32([[-400.0, -500.0]])]))
    np.testing.assert_allclose(extreme, [[-200.0, 1000.0]])


def test_separate_runtime_option(tiny_model_path, tmp_path):
    song = tmp_path / "song.wav"
    sf.write(song, _song(1.0).T, RATE)
    result = CliRunner().invoke(main, ["separate", str(song), "--model", str(tiny_model_path),
                                       "-o", str(tmp_path / "out"), "--runtime", "litert"])
    assert result.exit_code == 1 and "Error: runtime litert takes" in result.output
    result = CliRunner().invoke(main, ["separate", str(song), "--model", str(tiny_model_path),
                                       "-o", str(tmp_path / "out"), "--runtime", "tensorflow"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "song" / "vocals.wav").is_file()


def test_int8_pays_only_where_the_cpu_has_int8_dot_products(tmp_path):
    assert not runtime.int8_pays(frozenset({"sse4_2", "avx", "fma", "avx2", "f16c"}))
    for flag in ("avx512_vnni", "avx_vnni", "amx_int8"):
        assert runtime.int8_pays(frozenset({"avx2", "avx512f", flag}))
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 fma\n\n"
                    "processor\t: 1\nflags\t\t: fpu avx2 fma\n")
    assert runtime.cpu_flags(info) == frozenset({"fpu", "avx2", "fma"})
    assert runtime.cpu_flags(tmp_path / "absent") is None  # not Linux: flags unknown
    info.write_text("processor\t: 0\nFeatures\t: fp asimd asimddp\n")  # aarch64's field
    assert runtime.cpu_flags(info) is None
    assert runtime.int8_pays(None) is runtime.int8_pays(runtime.cpu_flags())


@pytest.mark.parametrize("flags, want", [({"avx2"}, "litert"),
                                         ({"avx2", "avx512_vnni"}, "litert-int8")])
def test_auto_resolves_by_the_cpu(monkeypatch, flags, want):
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(runtime, "litert_installed", lambda: True)
    got = runtime.resolve("auto", from_file=True, precision="float32", inference_form=True)
    assert got == want
    assert runtime.resolve("auto", from_file=False, precision="float32",
                           inference_form=True) == "tensorflow"


# -- the packaged form ----------------------------------------------------------------------
def test_the_shipped_models_packaged_forms_are_of_it(cache, capfd):
    """The committed packaged forms were made from this very default.keras (its SHA-256)
    at this FORM_VERSION, and assemble without TensorFlow to their recorded checksum; a
    changed default.keras needs `make package-form`."""
    from keras_svs.settings import DEFAULT_MODEL

    digest = runtime.file_sha256(DEFAULT_MODEL)
    with zipfile.ZipFile(DEFAULT_MODEL) as archive:  # its weights are read where they lie
        assert archive.getinfo(WEIGHTS_MEMBER).compress_type == zipfile.ZIP_STORED
    for flavour in runtime.LITERT_RUNTIMES:
        record_path, skeleton = runtime.packaged_paths(DEFAULT_MODEL, flavour)
        record = json.loads(record_path.read_text())
        assert record["model_sha256"] == digest, "default.keras changed: make package-form"
        assert (record["form_version"], record["runtime"]) == (runtime.FORM_VERSION, flavour)
        assert runtime.file_sha256(skeleton) == record["skeleton_sha256"]
        assert skeleton.stat().st_size < 1e6  # the weights come from default.keras
        flatbuffer, stored = runtime.packaged_form(DEFAULT_MODEL, flavour)
        assert runtime.file_sha256(flatbuffer) == record["sha256"]
        assert stored == ModelSettings.from_dict(stored).as_dict()
    assert "Warning" not in capfd.readouterr().err


@needs_litert
def test_the_shipped_models_packaged_form_separates_as_tensorflow(cache):
    """The packaged float32 form's stems equal the Keras model's on TensorFlow."""
    from keras_svs.settings import DEFAULT_MODEL

    packaged = Separator(DEFAULT_MODEL, runtime="litert")
    assert packaged.model is None  # no Keras model loaded: nothing converted
    v, a = synth_pair(44100, 2.0, 2)
    song = np.stack([v + 0.6 * a, 0.5 * v + a]).astype(np.float32)
    want = Separator(DEFAULT_MODEL, runtime="tensorflow").separate(song, 44100)
    got = packaged.separate(song, 44100)
    for stem in want:
        np.testing.assert_allclose(got[stem], want[stem], atol=1e-4)


def test_weights_are_read_where_they_lie_before_and_after_storing_them_uncompressed(
        stereo_path, tmp_path):
    """``read_weights_at`` gives h5py's weights from the member's bytes, deflated or
    stored; storing the member uncompressed keeps the model (Keras loads the same weights)
    and is done once; a location outside the member is a ValueError."""
    import keras

    from keras_svs.settings import (read_settings, read_weights, read_weights_at,
                                    store_weights_uncompressed, weight_locations)

    model = tmp_path / "model.keras"
    with zipfile.ZipFile(stereo_path) as source, zipfile.ZipFile(model, "w") as target:
        for name in source.namelist():  # every member deflated
            target.writestr(name, source.read(name), compress_type=zipfile.ZIP_DEFLATED)
    want, locations = read_weights(model), weight_locations(model)
    assert set(locations) == set(want)  # every weight Keras wrote lies contiguously
    for stored in (False, True):
        if stored:
            assert store_weights_uncompressed(model) is True
            assert store_weights_uncompressed(model) is False  # already so
        got = read_weights_at(model, locations)
        for name, weight in want.items():
            np.testing.assert_array_equal(got[name].astype(np.float32), weight)
    with zipfile.ZipFile(model) as archive:
        assert archive.getinfo(WEIGHTS_MEMBER).compress_type == zipfile.ZIP_STORED
        assert archive.testzip() is None
    assert read_settings(model) == read_settings(stereo_path)
    for saved, loaded in zip(keras.saving.load_model(stereo_path).weights,
                             keras.saving.load_model(model).weights):
        np.testing.assert_array_equal(np.asarray(saved), np.asarray(loaded))
    name, where = next(iter(locations.items()))
    with pytest.raises(ValueError):
        read_weights_at(model, {name: {**where, "offset": model.stat().st_size}})


@needs_litert
def test_a_packaged_form_is_used_without_tensorflow_and_only_with_its_model(
        stereo_path, cache, tmp_path, capfd):
    import keras

    from keras_svs.models import build_model

    model = tmp_path / "model.keras"
    shutil.copy(stereo_path, model)
    for flavour in runtime.LITERT_RUNTIMES:
        record = json.loads(runtime.package_form(model, flavour, min_bytes=1024).read_text())
        assert record["fills"] and any(fill["taps"] for fill in record["fills"])
    shutil.rmtree(cache)  # the conversions package_form made: gone
    code = ("import sys, numpy as np; from keras_svs.separation import Separator; "
            "s = Separator(sys.argv[1], runtime=sys.argv[2]); "
            "x = np.stack([np.sin(np.arange(8000) / 7.0)] * 2).astype(np.float32); "
            "np.save(sys.argv[3], s.separate(x, 8000)['vocals']); "
            "print('tensorflow' in sys.modules, s.model is None)")
    song = np.stack([np.sin(np.arange(8000) / 7.0)] * 2).astype(np.float32)
    for flavour in runtime.LITERT_RUNTIMES:
        out = subprocess.run([sys.executable, "-c", code, str(model), flavour,
                              str(tmp_path / "v.npy")], capture_output=True, text=True,
                             timeout=300)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["False", "True"], out.stderr  # assembled, not converted
        assert "converting" not in out.stderr and "Warning" not in out.stderr
        want = Separator(model, runtime=flavour).separate(song, 8000)["vocals"]  # the cache
        np.testing.assert_array_equal(np.load(tmp_path / "v.npy"), want)
    tensorflow = Separator(model, runtime="tensorflow").separate(song, 8000)["vocals"]
    np.testing.assert_allclose(want, tensorflow, atol=1e-4)  # int8: no filter is that large

    record_path = runtime.packaged_paths(model, "litert")[0]  # a weight read from elsewhere
    record = json.loads(record_path.read_text())
    where = next(iter(record["weights"].values()))
    where["offset"] += 2
    record_path.write_text(json.dumps(record))
    shutil.rmtree(cache)
    capfd.readouterr()
    assert runtime.packaged_form(model, "litert") is None
    err = capfd.readouterr().err
    assert err.count("Warning") == 1 and "recorded checksum" in err
    assert [p.suffix for p in cache.rglob("*") if p.is_file()] == [".lock"]  # nothing half-made

    keras.utils.set_random_seed(4)
    build_model("tinystereo").save(model)  # another model in the same file: stale forms
    shutil.rmtree(cache)
    capfd.readouterr()
    assert runtime.packaged_form(model, "litert") is None
    err = capfd.readouterr().err
    assert err.count("Warning") == 1 and "another model file" in err
    separator = Separator(model, runtime="litert")  # converts the model it has
    assert "converting" in capfd.readouterr().err
    np.testing.assert_allclose(
        separator.separate(song, 8000)["vocals"],
        Separator(model, runtime="tensorflow").separate(song, 8000)["vocals"], atol=1e-4)
