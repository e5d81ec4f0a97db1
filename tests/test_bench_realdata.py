"""The real-data benchmark's paired spatial block bootstrap (tests/benchmarks/bench_realdata.py)."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent / "benchmarks"))
import bench_realdata as br  # noqa: E402


@pytest.fixture
def scene():
    rng = np.random.default_rng(1)
    truth = np.zeros((256, 256), np.int16)
    truth[:, 100:180] = br.WATER
    truth[rng.random(truth.shape) < 0.05] = -1  # unlabelled pixels are never scored
    sel = np.zeros(truth.shape, bool)
    sel[:, 128:] = True
    return truth, sel


def test_identical_maps_differ_by_nothing(scene):
    truth, sel = scene
    r = br.block_bootstrap_difference(truth, truth, truth, sel)
    assert (r["difference"], r["low"], r["high"]) == (0.0, 0.0, 0.0)
    assert r["blocks"] == 8 * 4  # only blocks that hold assessed pixels are drawn


def test_point_estimate_is_the_water_iou_difference(scene):
    truth, sel = scene
    rng = np.random.default_rng(2)
    a = np.where(rng.random(truth.shape) < 0.1, 1 - np.clip(truth, 0, 1), np.clip(truth, 0, 1))
    r = br.block_bootstrap_difference(truth, a, truth, sel)
    want = br.scores(truth, a, sel)["iou_water"] - 1.0
    assert r["difference"] == pytest.approx(want)
    assert r["low"] < r["difference"] < r["high"] < 0  # errors everywhere: the gap is beyond resampling


def test_errors_in_one_block_are_not_significant(scene):
    """A pixel bootstrap would call a gap made in one block certain; blocks resampled whole do not."""
    truth, sel = scene
    b = np.clip(truth, 0, 1).copy()
    b[0:32, 160:192] = 0  # one block's water missed
    r = br.block_bootstrap_difference(truth, np.clip(truth, 0, 1), b, sel)
    assert r["difference"] > 0.04
    assert r["low"] == 0.0 < r["high"]  # about a third of the draws leave that block out


def test_ensemble_map_is_the_argmax_of_the_averaged_probabilities():
    a = np.array([[[0.9, 0.4]], [[0.1, 0.6]]], np.float32)  # (K=2, 1, 2): class 0 then class 1
    b = np.array([[[0.3, 0.45]], [[0.7, 0.55]]], np.float32)  # class 1 then class 1
    assert br.ensemble_map([a, b]).tolist() == [[0, 1]]  # means 0.6/0.4 and 0.425/0.575
    assert br.ensemble_map([b]).tolist() == [[1, 1]]


def test_seed_summary_gives_the_sample_spread():
    s = br.seed_summary([0.70, 0.80, 0.75])
    assert s["seeds"] == 3 and s["mean"] == pytest.approx(0.75) and s["sd"] == pytest.approx(0.05)
    assert (s["min"], s["max"]) == (0.70, 0.80)
    assert br.seed_summary([0.7])["sd"] == 0.0


def test_over_seeds_scores_each_seed_their_mean_and_their_ensemble(scene, tmp_path, monkeypatch):
    truth, sel = scene
    water = np.clip(truth, 0, 1).astype(np.float32)
    rng = np.random.default_rng(3)

    def fake_run(model, p, labels_tif, out, train_args, seed, quiet):  # each seed: the truth plus its own noise
        p_water = np.clip(water * 0.8 + 0.1 + rng.normal(0, 0.3, water.shape), 0, 1).astype(np.float32)
        prob = np.stack([1 - p_water, p_water])
        return {"pred": prob.argmax(0).astype(np.int16), "probabilities": prob, "train_seconds": 1.0,
                "result": {"seed": seed}}

    monkeypatch.setattr(br, "run_network", fake_run)
    chip = {"p": None, "labels_tif": None, "lab": truth, "test_mask": sel, "forest": np.clip(truth, 0, 1)}
    rows = br.over_seeds("net", [0, 1, 2], chip, tmp_path, {}, True)
    singles = [rows[f"net, seed {s}"]["iou_water"] for s in (0, 1, 2)]
    mean = rows["net, mean of 3 seeds"]
    assert mean["iou_water"] == pytest.approx(np.mean(singles))
    assert mean["water_iou_over_seeds"]["sd"] > 0
    ens = rows["net, ensemble of 3 seeds"]
    assert ens["iou_water"] > max(singles)  # independent noise averages out
    assert ens["against_forest"]["difference"] == pytest.approx(ens["iou_water"] - 1.0)
