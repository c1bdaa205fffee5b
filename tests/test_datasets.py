"""keras_svs.datasets: layouts, loading, splits."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from conftest import synth_pair, write_musdb, write_pairs, write_splits, write_stems
from keras_svs.datasets import DatasetError, Track, discover, select_split, split_names
from keras_svs.datasets.splits import SPLITS_DIR, split_file_for


def test_discover_pairs(tmp_path):
    root = write_pairs(tmp_path / "mir", ["b_clip", "a_clip", "c_clip"], seconds=0.5)
    (root / "sub").mkdir()
    write_pairs(root / "sub", ["d_clip"], seconds=0.5, fmt="flac")
    (root / "notes.txt").write_text("not audio")
    tracks = discover(root)
    assert [t.name for t in tracks] == ["a_clip", "b_clip", "c_clip", "d_clip"]
    assert {t.layout for t in tracks} == {"pairs"}
    assert tracks[3].voice == root / "sub" / "d_clip.flac"
    assert tracks[0].accompaniment == ()


def test_pairs_load_splits_channels(tmp_path):
    root = write_pairs(tmp_path / "mir", ["one"], rate=16000, seconds=0.5)
    voice, accompaniment, rate = discover(root)[0].load()
    v, a = synth_pair(16000, 0.5, 0)
    assert rate == 16000
    assert voice.shape == accompaniment.shape == (1, 8000)
    np.testing.assert_allclose(voice[0], v, atol=1e-4)  # right channel
    np.testing.assert_allclose(accompaniment[0], a, atol=1e-4)  # left channel
    stereo, _ = sf.read(root / "one.wav", dtype="float32")
    np.testing.assert_allclose(voice[0] + accompaniment[0], stereo.sum(axis=1), atol=1e-6)


def test_pairs_need_two_channels(tmp_path):
    root = tmp_path / "mono"
    root.mkdir()
    sf.write(root / "solo.wav", np.zeros(800, np.float32), 8000)
    with pytest.raises(DatasetError, match="solo.wav"):
        discover(root)[0].load()


@pytest.mark.parametrize("mono", [True, False])
def test_musdb_layout_sums_other_stems(tmp_path, mono):
    root = write_musdb(tmp_path / "musdb", ["Song B", "Song A"], seconds=0.5, channels=2)
    tracks = discover(root)
    assert [t.name for t in tracks] == ["Song A", "Song B"]
    track = tracks[0]
    assert track.layout == "musdb"
    assert track.voice.name == "vocals.wav"
    assert sorted(p.name for p in track.accompaniment) == ["bass.wav", "drums.wav",
                                                           "other.wav"]
    voice, accompaniment, rate = track.load(mono=mono)
    assert rate == 16000
    assert voice.shape == accompaniment.shape == ((1, 8000) if mono else (2, 8000))
    mixture, _ = sf.read(root / "Song A" / "mixture.wav", dtype="float32", always_2d=True)
    mixture = mixture.T.mean(axis=0, keepdims=True) if mono else mixture.T
    np.testing.assert_allclose(voice + accompaniment, mixture, atol=1e-6)
    _, a = synth_pair(16000, 0.5, 1)
    np.testing.assert_allclose(accompaniment[0], a if not mono else a * 0.9, atol=1e-5)


def test_musdb_with_accompaniment_file_still_sums_stems(tmp_path):
    """MUSDB18-HQ folders may carry an accompaniment.wav too: the stems are used."""
    root = write_musdb(tmp_path / "musdb", ["x"], seconds=0.25, channels=1)
    shutil.copy(root / "x" / "bass.wav", root / "x" / "accompaniment.wav")
    track = discover(root)[0]
    assert track.layout == "musdb"
    assert "accompaniment.wav" not in [p.name for p in track.accompaniment]
    assert "mixture.wav" not in [p.name for p in track.accompaniment]


def test_stems_layout(tmp_path):
    root = write_stems(tmp_path / "stems", ["t2", "t1"], rate=16000, seconds=0.5)
    tracks = discover(root)
    assert [(t.name, t.layout) for t in tracks] == [("t1", "stems"), ("t2", "stems")]
    assert [p.name for p in tracks[0].accompaniment] == ["accompaniment.flac"]
    voice, accompaniment, rate = tracks[1].load()  # "t2", written first (seed 0)
    v, a = synth_pair(16000, 0.5, 0)
    np.testing.assert_allclose(voice[0], v, atol=1e-5)
    np.testing.assert_allclose(accompaniment[0], a, atol=1e-5)
    np.testing.assert_allclose(voice + accompaniment, (v + a)[None], atol=2e-5)


def test_load_resamples(tmp_path):
    root = write_stems(tmp_path / "stems", ["t"], rate=16000, seconds=0.5)
    voice, accompaniment, rate = discover(root)[0].load(sample_rate=8000)
    assert rate == 8000
    assert voice.shape == accompaniment.shape == (1, 4000)


def test_mismatched_stem_lengths_name_the_file(tmp_path):
    root = write_musdb(tmp_path / "musdb", ["song"], seconds=0.5, channels=2)
    drums = root / "song" / "drums.wav"
    x, rate = sf.read(drums)
    sf.write(drums, x[:-10], rate, subtype="FLOAT")
    with pytest.raises(DatasetError, match="drums.wav"):
        discover(root)[0].load()


def test_mismatched_stem_rate_names_the_file(tmp_path):
    root = write_stems(tmp_path / "stems", ["song"], rate=16000, seconds=0.5)
    acc = root / "song" / "accompaniment.flac"
    x, _ = sf.read(acc)
    sf.write(acc, x, 22050)
    with pytest.raises(DatasetError, match="accompaniment.flac"):
        discover(root)[0].load()


def test_unreadable_stem_is_a_dataset_error(tmp_path):
    root = write_stems(tmp_path / "stems", ["song"], seconds=0.25)
    (root / "song" / "vocals.flac").write_bytes(b"garbage" * 100)
    with pytest.raises(DatasetError, match="vocals.flac"):
        discover(root)[0].load()


def test_folder_with_vocals_only_is_an_error(tmp_path):
    folder = tmp_path / "ds" / "lonely"
    folder.mkdir(parents=True)
    sf.write(folder / "vocals.wav", np.zeros(100, np.float32), 8000)
    sf.write(folder / "mixture.wav", np.zeros(100, np.float32), 8000)
    with pytest.raises(DatasetError, match="lonely"):
        discover(tmp_path / "ds")


def test_empty_or_missing_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no audio")
    with pytest.raises(DatasetError, match="empty"):
        discover(tmp_path / "empty")
    with pytest.raises(DatasetError, match="nowhere"):
        discover(tmp_path / "nowhere")


def _names(n_abjones=5, n_amy=16, per_song=3, others=("Ani", "bobon", "yifen")):
    names = []
    for singer, songs in (("abjones", n_abjones), ("amy", n_amy)):
        names += [f"{singer}_{s}_{c:02d}" for s in range(1, songs + 1)
                  for c in range(1, per_song + 1)]
    names += [f"{o}_{s}_{c:02d}" for o in others for s in (1, 2) for c in (1, 2)]
    return names


def _tracks(names):
    return [Track(n, "pairs", None) for n in names]


def test_split_rule_first_matching_pattern_wins(tmp_path):
    rules = json.loads((SPLITS_DIR / "mir1k.json").read_text())["splits"]
    split_file = write_splits(tmp_path, rules)
    tracks = _tracks(_names())
    chosen = {s: [t.name for t in select_split(tracks, s, split_file)]
              for s in ("train", "valid", "test")}
    # valid = abjones song 5, amy songs 15 and 16 (3 clips each) even though
    # "abjones_*" / "amy_*" of train also match them: the first pattern wins
    assert sorted(chosen["valid"]) == sorted(
        [f"abjones_5_{c:02d}" for c in (1, 2, 3)] + [f"amy_{s}_{c:02d}" for s in (15, 16)
                                                     for c in (1, 2, 3)])
    assert len(chosen["train"]) == 4 * 3 + 14 * 3
    assert all(n.startswith(("abjones_", "amy_")) for n in chosen["train"])
    assert len(chosen["test"]) == 3 * 4
    assert not any(n.startswith(("abjones", "amy")) for n in chosen["test"])
    # a partition of the whole
    assert sorted(sum(chosen.values(), [])) == sorted(t.name for t in tracks)
    assert len(select_split(tracks, "all", split_file)) == len(tracks)


def test_split_order_matters(tmp_path):
    tracks = _tracks(["abjones_5_01", "abjones_1_01", "x_1_01"])
    first = write_splits(tmp_path, {"train": ["abjones_*"], "valid": ["abjones_5_*"],
                                    "test": ["*"]})
    with pytest.raises(DatasetError, match="valid"):
        select_split(tracks, "valid", first)  # train swallows abjones_5 when listed first
    assert [t.name for t in select_split(tracks, "train", first)] == ["abjones_5_01",
                                                                     "abjones_1_01"]


def test_split_patterns_are_case_sensitive(tmp_path):
    split_file = write_splits(tmp_path, {"train": ["amy_*"], "test": ["*"]})
    assert [t.name for t in select_split(_tracks(["Amy_1_01", "amy_1_01"]), "train",
                                         split_file)] == ["amy_1_01"]


def test_split_errors(tmp_path):
    tracks = _tracks(["a", "b"])
    with pytest.raises(DatasetError, match="no split file"):
        select_split(tracks, "test", None)
    split_file = write_splits(tmp_path, {"train": ["a"], "test": ["zzz"]})
    with pytest.raises(DatasetError, match="'valid'"):
        select_split(tracks, "valid", split_file)
    with pytest.raises(DatasetError, match="no tracks"):
        select_split(tracks, "test", split_file)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DatasetError, match="bad.json"):
        select_split(tracks, "train", bad)
    assert [t.name for t in select_split(tracks, "all", None)] == ["a", "b"]


def test_split_names_and_split_file_lookup(tmp_path):
    assert split_names(None) == ["train", "valid", "all"]
    root = tmp_path / "data"
    root.mkdir()
    assert split_file_for(root) is None
    path = write_splits(root, {"valid": ["x"], "train": ["*"]})
    assert split_file_for(root) == path
    assert split_names(path) == ["valid", "train", "all"]
    mir1k = tmp_path / "mir1k"
    mir1k.mkdir()
    assert split_file_for(mir1k) == SPLITS_DIR / "mir1k.json"


def test_holdout_split_without_a_split_file():
    tracks = _tracks([f"t{i:02d}" for i in range(25)])
    valid = select_split(tracks, "valid", None)
    train = select_split(tracks, "train", None)
    assert [t.name for t in valid] == ["t00", "t10", "t20"]
    assert len(train) == 22 and not {t.name for t in train} & {t.name for t in valid}


def test_joined_splits_are_a_union(tmp_path):
    tracks = _tracks(["a1", "a2", "b1", "c1"])
    split_file = write_splits(tmp_path, {"valid": ["a2"], "train": ["a*"], "test": ["*"]})
    assert [t.name for t in select_split(tracks, "train+valid", split_file)] == ["a1", "a2"]
    assert len(select_split(tracks, "train+valid+test", split_file)) == 4
    with pytest.raises(DatasetError, match="'nope'"):
        select_split(tracks, "train+nope", split_file)
