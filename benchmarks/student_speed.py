"""Which cheaper networks (students) would make a whole separation fast enough to be worth
distilling: each candidate's LiteRT float32 time per block against the shipped pair, in one
run on this CPU.

    python benchmarks/student_speed.py [--rounds 7] [--network-share 0.828] [--only NAME,...]

Every candidate is built untrained (the time of a network does not depend on its weights),
saved to a temporary ``.keras`` file and opened by the engine itself,
``Separator(path, runtime="litert")``: the same inference form, LiteRT conversion and
interpreter (XNNPACK, the engine's threads) as a separation. The shipped pair is
``keras_svs/assets/default.keras``. The converted forms go to a temporary cache
(``KERAS_SVS_CACHE``), not the user's.

Each candidate is called on a block of random magnitudes of its shape: the engine's block,
512 kept frames plus 128 of context on each side (768 frames), the 768 bins the shipped
networks see, 2 channels, unless the candidate is a shorter block. The candidates are
called in turn, one call each per round, for ``--rounds`` rounds after a warm-up round (the
cores are shared: interleaving spreads the load over all of them); the median per kept
frame is reported. From it, the whole 180 s separation's speed-up, with the networks'
share ``s`` of the shipped process (``--network-share``; ``profile_separate.py``'s 82.8 %):
``1 / ((1 - s) + s * t_candidate / t_pair)``. Candidates at or above ``--goal`` (2.5x) are
marked ``GPU``: they go to distillation.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from separate_speed import machine  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "keras_svs" / "assets" / "default.keras"
#: the engine's block: kept frames, context frames on each side
BLOCK, CONTEXT = 512, 128
FULL = (16, 32, 64, 128, 256, 512)
HALF = (8, 16, 32, 64, 128, 256)
QUARTER = (4, 8, 16, 32, 64, 128)
THREE_QUARTERS = (12, 24, 48, 96, 192, 384)


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A network to time: a preset name and ``arch`` (None: the shipped file), and the
    block it is called on (kept frames, context frames on each side)."""

    name: str
    preset: str | None = None
    arch: dict | None = None
    block: int = BLOCK
    context: int = CONTEXT

    @property
    def frames(self) -> int:
        return self.block + 2 * self.context


CANDIDATES = [
    Candidate("shipped pair (768 bins)"),
    Candidate("shipped pair, blocks 512 + 2 x 64", context=64),
    Candidate("shipped pair, blocks 256 + 2 x 64", block=256, context=64),
    Candidate("vocals net alone (spleeter1)", "spleeter1"),
    Candidate("pair, half width", "spleeter", dict(filters=HALF)),
    Candidate("one U-Net, two outputs", "student", dict(heads=2, filters=FULL)),
    Candidate("one U-Net, two outputs, 3/4 width", "student",
              dict(heads=2, filters=THREE_QUARTERS)),
    Candidate("one U-Net, two outputs, half width", "student", dict(heads=2, filters=HALF)),
    Candidate("one U-Net, two outputs, 1/4 width", "student", dict(heads=2, filters=QUARTER)),
    Candidate("one U-Net, two outputs, separable from level 2", "student",
              dict(heads=2, filters=FULL, separable=2)),
    Candidate("one U-Net, two outputs, half width, separable from level 3", "student",
              dict(heads=2, filters=HALF, separable=3)),
    Candidate("one U-Net, two outputs, half width, separable from level 2", "student",
              dict(heads=2, filters=HALF, separable=2)),
    Candidate("one U-Net, two outputs, 512 bins + learned extension", "student",
              dict(heads=2, filters=FULL, network_bins=512)),
    Candidate("one U-Net, two outputs, half width, 512 bins + extension", "student",
              dict(heads=2, filters=HALF, network_bins=512)),
    Candidate("one U-Net, two outputs, half width, 384 bins + extension", "student",
              dict(heads=2, filters=HALF, network_bins=384)),
    Candidate("one U-Net, two outputs, 1/4 width, 512 bins + extension", "student",
              dict(heads=2, filters=QUARTER, network_bins=512)),
    Candidate("one U-Net, two outputs, half width, blocks 256 + 2 x 64", "student",
              dict(heads=2, filters=HALF), block=256, context=64),
]


def whole_speedup(ratio: float, share: float) -> float:
    """The whole process's speed-up when the networks (``share`` of it) take ``ratio`` of
    their time."""
    return 1.0 / ((1.0 - share) + share * ratio)


def open_candidate(candidate: Candidate, folder: Path):
    """``(predict, parameters)``: the engine's LiteRT predict of the candidate."""
    import keras

    from keras_svs.models import build_model, get_preset, load_model, with_network_input
    from keras_svs.separation import Separator

    if candidate.preset is None:
        path = SHIPPED
        parameters = load_model(path).count_params()
    else:
        base = with_network_input(get_preset(candidate.preset), bins=768)
        preset = dataclasses.replace(base, name=candidate.preset,
                                     arch=base.arch if candidate.arch is None else candidate.arch)
        keras.utils.set_random_seed(0)
        model = build_model(preset)
        parameters = model.count_params()
        path = folder / f"{abs(hash(candidate.name))}.keras"
        model.save(path)
    separator = Separator(path, runtime="litert")
    return separator.predict, parameters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--network-share", type=float, default=0.828)
    parser.add_argument("--goal", type=float, default=2.5)
    parser.add_argument("--only", default="", help="comma-separated candidate numbers "
                        "(1-based; the shipped pair, 1, is always timed)")
    args = parser.parse_args()
    chosen = CANDIDATES
    if args.only:
        keep = {1, *(int(k) for k in args.only.split(","))}
        chosen = [c for i, c in enumerate(CANDIDATES, 1) if i in keep]
    m = machine()
    print(f"machine: {m['cpu']} ({' '.join(m['simd'])}), {m['cores']} cores "
          f"({m['usable_cores']} usable); {m['date']}; 1-min load at start "
          f"{m['load_average_1min']:.2f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["KERAS_SVS_CACHE"] = str(Path(tmp) / "cache")
        opened = []
        for candidate in chosen:
            began = time.perf_counter()
            predict, parameters = open_candidate(candidate, Path(tmp))
            print(f"  converted {candidate.name}: {parameters:,} parameters, "
                  f"{time.perf_counter() - began:.1f} s", flush=True)
            opened.append((candidate, predict, parameters))
        rng = np.random.default_rng(0)
        blocks = {c.frames: (rng.random((c.frames, 768, 2), dtype=np.float32) * 0.05)
                  for c, _, _ in opened}
        times: dict[str, list[float]] = {c.name: [] for c, _, _ in opened}
        loads = []
        for round_ in range(args.rounds + 1):
            loads.append(os.getloadavg()[0])
            for candidate, predict, _ in opened:
                began = time.perf_counter()
                predict(blocks[candidate.frames])
                if round_:  # the first round warms up (tensor allocation)
                    times[candidate.name].append(time.perf_counter() - began)
    base = opened[0][0]
    base_per_frame = statistics.median(times[base.name]) / base.block
    print(f"1-min load during the rounds: {min(loads):.2f}-{max(loads):.2f}; "
          f"{args.rounds} rounds, medians; networks' share of the whole process "
          f"{args.network_share:.3f}")
    print(f"| candidate | parameters | block (kept + context) | block call (median, min-max) "
          f"| ms per kept frame | network speed-up | whole 180 s speed-up | |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | --- |")
    for candidate, _, parameters in opened:
        t = times[candidate.name]
        per_frame = statistics.median(t) / candidate.block
        ratio = per_frame / base_per_frame
        whole = whole_speedup(ratio, args.network_share)
        mark = "GPU" if whole >= args.goal else ""
        print(f"| {candidate.name} | {parameters:,} | {candidate.block} + 2 x "
              f"{candidate.context} | {statistics.median(t):.3f} s ({min(t):.3f}-{max(t):.3f}) "
              f"| {1000 * per_frame:.3f} | {1 / ratio:.2f}x | {whole:.2f}x | {mark} |")


if __name__ == "__main__":
    main()
