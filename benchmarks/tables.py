"""Markdown tables from `keras-svs evaluate --json` results (what BENCHMARKS.md shows).

    python benchmarks/tables.py runs/eval/test_*.json            # GNSDR/GSIR/GSAR table
    python benchmarks/tables.py --museval runs/eval/examples_*.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def label(result: dict) -> str:
    """A row name: the method, and for models the model file and mask."""
    if result["method"] != "model":
        return result["method"]
    return f"model `{Path(result['model']).name}` ({result.get('mask')}, {result.get('mode')})"


def g_table(results: list[dict]) -> str:
    """Voice GNSDR/GSIR/GSAR and accompaniment GNSDR/GSIR/GSAR, one row per result."""
    lines = ["| method | clips | voice GNSDR | voice GSIR | voice GSAR | acc. GNSDR | acc. GSIR"
             " | acc. GSAR |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        v, a = r["voice"], r["accompaniment"]
        lines.append(f"| {label(r)} | {r['clips']} | {v['GNSDR']:.2f} | {v['GSIR']:.2f} | "
                     f"{v['GSAR']:.2f} | {a['GNSDR']:.2f} | {a['GSIR']:.2f} | {a['GSAR']:.2f} |")
    return "\n".join(lines)


def museval_table(results: list[dict]) -> str:
    """Per-excerpt museval-style SDR and NSDR, voice / accompaniment."""
    names = [c["name"] for c in results[0]["per_clip"]]
    head = "| method | " + " | ".join(f"{n}: SDR v / a" for n in names) + " | NSDR v / a (mean) |"
    lines = [head, "| --- |" + " ---: |" * (len(names) + 1)]
    for r in results:
        clips = {c["name"]: c for c in r["per_clip"]}
        cells = [f"{clips[n]['voice']['museval_SDR']:.2f} / "
                 f"{clips[n]['accompaniment']['museval_SDR']:.2f}" for n in names]
        cells.append(f"{r['voice']['NSDR_mean']:.2f} / {r['accompaniment']['NSDR_mean']:.2f}")
        lines.append(f"| {label(r)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path)
    parser.add_argument("--museval", action="store_true", help="per-excerpt museval SDR table")
    args = parser.parse_args()
    results = [json.loads(p.read_text()) for p in args.results]
    print(museval_table(results) if args.museval else g_table(results))


if __name__ == "__main__":
    main()
