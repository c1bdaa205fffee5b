"""Checks on the real data next to the repository (../shared/data); skipped without it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from keras_svs import audio
from keras_svs.datasets import discover, select_split
from keras_svs.datasets.splits import SPLITS_DIR, split_file_for

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
EXAMPLES = SHARED / "examples"
MIR1K = SHARED / "mir1k"


def _need(folder: Path) -> None:
    if not folder.is_dir():
        pytest.skip(f"{folder} is not here (real data lives outside the repository)")


def test_examples_are_musdb_tracks():
    _need(EXAMPLES)
    tracks = discover(EXAMPLES)
    assert len(tracks) == 2
    assert {t.layout for t in tracks} == {"musdb"}
    for track in tracks:
        assert sorted(p.stem for p in track.accompaniment) == ["bass", "drums", "other"]


def test_example_stems_sum_to_the_mixture():
    _need(EXAMPLES)
    track = discover(EXAMPLES)[0]
    voice, accompaniment, rate = track.load(mono=False)
    assert rate == 44100 and voice.shape[0] == 2
    # the float mixture was summed before the stems were rounded to 16 bits: allow a few
    # LSBs of 16-bit (3.05e-5 each) between it and the sum of the decoded stems
    tolerance = 5 / 2 ** 15
    mixture, _ = audio.read(track.voice.parent / "mixture.wav")
    np.testing.assert_allclose(voice + accompaniment, mixture, atol=tolerance)
    shipped, _ = audio.read(track.voice.parent / "accompaniment.wav")
    np.testing.assert_allclose(accompaniment, shipped, atol=tolerance)


def test_mir1k_split_counts():
    _need(MIR1K)
    tracks = discover(MIR1K)
    assert len(tracks) == 1000
    split_file = split_file_for(MIR1K)
    assert split_file == SPLITS_DIR / "mir1k.json"
    counts = {s: len(select_split(tracks, s, split_file)) for s in ("train", "valid", "test")}
    assert counts == {"train": 146, "valid": 29, "test": 825}


def test_train_cli_runs_both_stages_on_mir1k(tmp_path):
    """A smoke test of `keras-svs train`, cut to two steps a stage: both stages on real MIR-1K
    clips."""
    _need(MIR1K)
    from click.testing import CliRunner

    from keras_svs.cli import main
    from keras_svs.models import load_model, settings

    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--data", str(MIR1K), "--preset", "small",
                                       "--epochs", "1", "--pretrain-epochs", "1",
                                       "--steps-per-epoch", "2", "-o", str(out)])
    assert result.exit_code == 0, result.output
    for stage in ("pretrain", "finetune"):
        assert (out / stage / "log.csv").read_text().count("\n") == 2  # header + 1 epoch
    assert settings(load_model(out / "model.keras")).sample_rate == 16000
