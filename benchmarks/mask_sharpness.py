"""Voice GNSDR of the soft mask made sharper or softer: ``m = sigmoid(a * logit(p))``.

    python benchmarks/mask_sharpness.py [--model PATH] [--split valid] [--values 0.5,1,2]

``a = 1`` is the model's voice probability itself, ``a -> inf`` the binary mask at 0.5.
Each clip is separated once (the probabilities), then every ``a`` is scored with BSS-Eval v3
(``keras_svs.evaluation.clip_metrics``) at the model's rate; prints GNSDR / GSIR / GSAR of
the voice and the accompaniment's GNSDR per value. Tune on ``valid`` only.
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="default: the shipped model")
    parser.add_argument("--data", default="../shared/data/mir1k")
    parser.add_argument("--split", default="valid")
    parser.add_argument("--values", default="0.5,0.75,1,1.25,1.5,2")
    args = parser.parse_args()
    from keras_svs import Separator, spectral
    from keras_svs.evaluation import _tracks, clip_metrics, global_metrics

    values = [float(v) for v in args.values.split(",")]
    separator = Separator(args.model)
    config = separator.config
    tracks, _ = _tracks(args.data, args.split, None, None)
    scores: dict[float, list] = {a: [] for a in values}
    for track in tracks:
        voice, accompaniment, _ = track.load(sample_rate=config.sample_rate, mono=True)
        voice, accompaniment = voice.mean(axis=0), accompaniment.mean(axis=0)
        mixture = voice + accompaniment
        spectrum = spectral.stft_numpy(mixture, config)
        p = np.clip(separator.voice_probability(np.abs(spectrum)), 1e-6, 1 - 1e-6)
        logit = np.log(p) - np.log1p(-p)
        for a in values:
            mask = spectral.fit_bins(1 / (1 + np.exp(-a * logit)), config.bins)
            estimate = spectral.istft_numpy(spectrum * mask, config, len(mixture))
            clip = clip_metrics(voice, accompaniment, estimate, mixture - estimate)
            scores[a].append({**clip, "samples": len(mixture)})
    print(f"{len(tracks)} clips of {args.split}; model {args.model or 'shipped'}")
    print("     a  voice GNSDR   GSIR   GSAR  acc. GNSDR")
    for a in values:
        g = global_metrics(scores[a])
        print(f"{a:6.2f}  {g['voice']['GNSDR']:11.2f}  {g['voice']['GSIR']:5.2f}  "
              f"{g['voice']['GSAR']:5.2f}  {g['accompaniment']['GNSDR']:10.2f}")


if __name__ == "__main__":
    main()
