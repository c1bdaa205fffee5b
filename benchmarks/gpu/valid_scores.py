"""Validation GNSDR of trained models, on any Keras backend (used on the lent GPU machine).

    python benchmarks/gpu/valid_scores.py --data DATA --json out.json \
        runs/a/model.keras:soft:average runs/p/model.keras:thresholded:centre

Each argument is ``MODEL[:MASK[:MODE]]`` (default ``soft``, ``average``): the voice and
accompaniment GNSDR on every clip of the split, with that mask and slide (patch models).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from keras_svs import monitor
from keras_svs.datasets import discover, select_split
from keras_svs.datasets.splits import split_file_for
from keras_svs.models import load_model, settings
from keras_svs.pipeline import decode


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="+")
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="valid")
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    tracks = select_split(discover(args.data), args.split, split_file_for(args.data))
    cache, results = {}, {}
    for spec in args.models:
        path, *options = spec.split(":")
        mask, mode = (options + ["soft", "average"][len(options):])[:2]
        try:
            model = load_model(path)
            rate = settings(model).sample_rate
            if rate not in cache:
                cache[rate] = decode(tracks, rate)
            for mask, mode in [(mask, mode)]:
                start = time.time()
                scores = monitor.gnsdr(model, cache[rate], None, mask, None, mode, args.jobs)
                scores["seconds"] = round(time.time() - start, 1)
                results[f"{path} {mask} {mode}"] = scores
                print(path, mask, mode, json.dumps(scores), flush=True)
        except Exception as error:  # one broken model must not lose the others' numbers
            print(f"{path}: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
