"""Tests of keras_svs.evaluation and `keras-svs evaluate` on synthesized audio."""
from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from keras_svs import evaluation
from keras_svs.cli import main

RATE = 16000


# -- synthesized data ---------------------------------------------------------------------
def _accompaniment(seconds: float, seed: int) -> np.ndarray:
    """A few steady sine tones and a little noise: ``(samples,)``."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    tones = sum(0.15 * np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3))
                for f in rng.uniform(80, 900, size=4))
    return (tones + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def _voice(seconds: float, seed: int) -> np.ndarray:
    """A vibrato harmonic tone, 5 harmonics, swelling in and out: ``(samples,)``."""
    rng = np.random.default_rng(100 + seed)
    t = np.arange(int(seconds * RATE)) / RATE
    f0 = rng.uniform(180, 320) * (1 + 0.03 * np.sin(2 * np.pi * 5.5 * t))
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    tone = sum(np.sin(k * phase) / k for k in range(1, 6))
    return (0.2 * tone * np.sin(np.pi * t / seconds) ** 2).astype(np.float32)


def _write_pairs(root, names, seconds=2.0, silent_voice=()):
    """Stereo-pair clips (left accompaniment, right voice) plus a splits.json."""
    root.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        voice = np.zeros(int(seconds * RATE), np.float32) if name in silent_voice \
            else _voice(seconds, i)
        sf.write(root / f"{name}.wav", np.stack([_accompaniment(seconds, i), voice], axis=1),
                 RATE, subtype="FLOAT")
    splits = {"splits": {"valid": ["clip0"], "empty": ["nothing_*"], "test": ["*"]}}
    (root / "splits.json").write_text(json.dumps(splits))
    return root


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return _write_pairs(tmp_path_factory.mktemp("pairs"), ["clip0", "clip1", "clip2"])


# -- metrics ------------------------------------------------------------------------------
def test_bss_metrics_match_mir_eval():
    import mir_eval.separation

    rng = np.random.default_rng(0)
    refs = rng.standard_normal((2, 4000))
    ests = refs + 0.3 * rng.standard_normal((2, 4000)) + 0.2 * refs[::-1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sdr, sir, sar, _ = mir_eval.separation.bss_eval_sources(refs, ests,
                                                                compute_permutation=False)
        base = mir_eval.separation.bss_eval_sources(refs, np.stack([refs.sum(0)] * 2),
                                                    compute_permutation=False)[0]
    ours = evaluation.bss_metrics(refs, ests)
    np.testing.assert_allclose(ours["SDR"], sdr, rtol=1e-12)
    np.testing.assert_allclose(ours["SIR"], sir, rtol=1e-12)
    np.testing.assert_allclose(ours["SAR"], sar, rtol=1e-12)
    clip = evaluation.clip_metrics(refs[0], refs[1], ests[0], ests[1])
    for j, source in enumerate(evaluation.SOURCES):
        assert clip[source]["SDR"] == pytest.approx(sdr[j], rel=1e-12)
        assert clip[source]["NSDR"] == pytest.approx(sdr[j] - base[j], rel=1e-12)


def test_global_metrics_weighted_by_length():
    def clip(samples, nsdr, sir, sar):
        scores = {"SDR": nsdr + 1, "SIR": sir, "SAR": sar, "NSDR": nsdr}
        return {"name": "c", "samples": samples, "voice": dict(scores),
                "accompaniment": dict(scores)}

    per_clip = [clip(1000, 1.0, 10.0, 5.0), clip(3000, 5.0, 20.0, 9.0),
                clip(0, 100.0, 100.0, 100.0), clip(1000, math.nan, math.inf, 7.0)]
    g = evaluation.global_metrics(per_clip)["voice"]
    assert g["GNSDR"] == pytest.approx((1000 * 1 + 3000 * 5) / 4000)
    assert g["GSIR"] == pytest.approx((1000 * 10 + 3000 * 20) / 4000)
    assert g["GSAR"] == pytest.approx((1000 * 5 + 3000 * 9 + 1000 * 7) / 5000)
    assert g["NSDR_mean"] == pytest.approx((1 + 5 + 100) / 3)
    assert g["NSDR_median"] == pytest.approx(5.0)
    assert g["SAR_median"] == pytest.approx(8.0)


def test_museval_sdr_is_median_of_frames():
    rng = np.random.default_rng(1)
    refs = rng.standard_normal((2, 1, 2 * 1000))
    ests = refs + 0.5 * rng.standard_normal(refs.shape)
    ests[0, :, 1000:] = 0.0  # a silent frame of the voice estimate: left out (NaN)
    v4 = evaluation.museval_sdr(refs, ests, 1000)
    assert v4.shape == (2,) and np.all(np.isfinite(v4)) and np.all(v4 > 0)
    first = evaluation.museval_sdr(refs[:, :, :1000], ests[:, :, :1000], 1000)
    assert v4[0] == pytest.approx(first[0])


def test_monitor_gnsdr_agrees_with_clip_metrics(tiny_model):
    """Validation during training scores as evaluation does: one clip's GNSDR/GSIR/GSAR
    are its clip metrics."""
    from conftest import TINY_RATE, synth_pair
    from test_pipeline import decoded_from

    from keras_svs import monitor

    voice, accompaniment = synth_pair(TINY_RATE, 0.5)
    scores = monitor.gnsdr(tiny_model, decoded_from([(voice, accompaniment)]))
    vocals = monitor.separate_voice(tiny_model, voice + accompaniment)
    clip = evaluation.clip_metrics(voice, accompaniment, vocals,
                                   voice + accompaniment - vocals)
    assert scores["clips"] == 1
    assert scores["voice_gnsdr"] == pytest.approx(clip["voice"]["NSDR"], abs=1e-9)
    assert scores["voice_gsir"] == pytest.approx(clip["voice"]["SIR"], abs=1e-9)
    assert scores["voice_gsar"] == pytest.approx(clip["voice"]["SAR"], abs=1e-9)
    assert scores["accompaniment_gnsdr"] == pytest.approx(clip["accompaniment"]["NSDR"],
                                                          abs=1e-9)


# -- estimates ----------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["ibm", "irm", "mixture", "repet"])
def test_estimates_sum_to_the_mixture(method):
    voice, accompaniment = _voice(1.0, 0), _accompaniment(1.0, 0)
    v, a = evaluation.estimate(method, voice, accompaniment, RATE, evaluation.default_config())
    assert v.shape == a.shape == voice.shape and v.dtype == np.float32
    if method == "mixture":
        np.testing.assert_array_equal(v, voice + accompaniment)
        np.testing.assert_array_equal(a, voice + accompaniment)
    else:
        np.testing.assert_allclose(v + a, voice + accompaniment, atol=1e-5)
    stereo = np.stack([voice, 0.5 * voice])
    v2, _ = evaluation.estimate(method, stereo, np.stack([accompaniment] * 2), RATE,
                                evaluation.default_config())
    assert v2.shape == stereo.shape


# -- evaluate -----------------------------------------------------------------------------
def test_mixture_nsdr_zero_and_ibm_better(pairs):
    mix = evaluation.evaluate(pairs, "test", "mixture", jobs=1, progress=False)
    assert mix["clips"] == 2 and mix["skipped"] == 0
    assert mix["seconds"] == pytest.approx(4.0)
    for clip in mix["per_clip"]:
        for source in evaluation.SOURCES:
            assert abs(clip[source]["NSDR"]) < 1e-6
    ibm = evaluation.evaluate(pairs, "test", "ibm", jobs=1, progress=False)
    assert ibm["voice"]["GNSDR"] > mix["voice"]["GNSDR"] + 3.0
    assert ibm["accompaniment"]["GNSDR"] > 3.0
    assert [c["name"] for c in ibm["per_clip"]] == ["clip1", "clip2"]


def test_silent_reference_is_skipped(tmp_path, capsys):
    root = _write_pairs(tmp_path / "d", ["clip0", "clip1"], silent_voice={"clip1"})
    result = evaluation.evaluate(root, "all", "irm", jobs=1, progress=False)
    assert result["clips"] == 1 and result["skipped"] == 1
    assert result["skipped_clips"] == ["clip1"]
    assert "clip1: skipped" in capsys.readouterr().err


def test_musdb_layout_gets_museval_sdr(tmp_path):
    track = tmp_path / "musdb" / "song"
    track.mkdir(parents=True)
    voice, bass, drums = _voice(2.0, 3), _accompaniment(2.0, 3), _accompaniment(2.0, 4)
    for name, mono in (("vocals", voice), ("bass", bass), ("drums", drums)):
        sf.write(track / f"{name}.wav", np.stack([mono, 0.7 * mono], axis=1), RATE,
                 subtype="FLOAT")
    result = evaluation.evaluate(tmp_path / "musdb", "all", "ibm", jobs=1, progress=False)
    clip = result["per_clip"][0]
    assert np.isfinite(clip["voice"]["museval_SDR"])
    assert np.isfinite(result["voice"]["museval_SDR"])
    assert clip["voice"]["NSDR"] > 3.0
    assert "accompaniment_museval_SDR" in evaluation.csv_columns(result)


def test_untrained_tiny_model(pairs, tmp_path):
    from keras_svs.models import build_model

    path = tmp_path / "m.keras"
    build_model("tiny").save(path)
    result = evaluation.evaluate(pairs, "valid", "model", model=path, jobs=1, limit=1,
                                 progress=False)
    assert result["clips"] == 1 and result["model"] == str(path)
    assert result["sample_rate"] == RATE  # the files' own, not the model's 8 kHz
    for source in evaluation.SOURCES:
        assert all(np.isfinite(v) for v in result["per_clip"][0][source].values())


def test_unknown_method(pairs):
    with pytest.raises(ValueError, match="method must be one of"):
        evaluation.evaluate(pairs, "test", "nmf", progress=False)


# -- the command line ---------------------------------------------------------------------
def test_cli_writes_json_and_csv(pairs, tmp_path):
    out, table = tmp_path / "r" / "ibm.json", tmp_path / "ibm.csv"
    result = CliRunner().invoke(main, ["evaluate", "--data", str(pairs), "--split", "test",
                                       "--method", "ibm", "--jobs", "2", "--json", str(out),
                                       "--csv", str(table)])
    assert result.exit_code == 0, result.output
    assert "GNSDR" in result.stdout and "voice" in result.stdout
    report = json.loads(out.read_text())
    for key in ("method", "model", "split", "clips", "seconds", "voice", "accompaniment",
                "per_clip", "skipped"):
        assert key in report
    assert report["method"] == "ibm" and report["split"] == "test" and report["clips"] == 2
    assert set(report["voice"]) >= {"GNSDR", "GSIR", "GSAR"}
    assert set(report["accompaniment"]) >= {"GNSDR", "GSIR", "GSAR"}
    assert report["seconds"] == pytest.approx(4.0)
    assert [c["name"] for c in report["per_clip"]] == ["clip1", "clip2"]
    clip = report["per_clip"][0]
    assert set(clip) >= {"name", "voice", "accompaniment"}
    assert set(clip["voice"]) >= {"SDR", "SIR", "SAR", "NSDR"}
    assert report["voice"]["GNSDR"] > 3.0
    rows = table.read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("name,samples,seconds,voice_SDR")


@pytest.mark.parametrize("args", [["--split", "empty"], ["--split", "nosuch"]])
def test_cli_bad_split_is_one_error_line(pairs, args):
    result = CliRunner().invoke(main, ["evaluate", "--data", str(pairs), "--method", "ibm",
                                       *args])
    assert result.exit_code != 0
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in result.output


def test_cli_mismatched_stems_name_the_file(tmp_path):
    track = tmp_path / "stems" / "song"
    track.mkdir(parents=True)
    sf.write(track / "vocals.wav", _voice(1.0, 0), RATE)
    sf.write(track / "accompaniment.wav", _accompaniment(0.5, 0), RATE)
    result = CliRunner().invoke(main, ["evaluate", "--data", str(tmp_path / "stems"),
                                       "--split", "all", "--method", "mixture"])
    assert result.exit_code != 0
    assert "accompaniment.wav" in result.output and "Error:" in result.output


def test_cli_plot(pairs, tmp_path):
    args = ["evaluate", "--data", str(pairs), "--split", "valid", "--method", "ibm",
            "--jobs", "1", "--plot", str(tmp_path / "nsdr.png")]
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        result = CliRunner().invoke(main, args)
        assert result.exit_code != 0 and evaluation.PLOT_HINT in result.output
    else:
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        assert (tmp_path / "nsdr.png").stat().st_size > 0
