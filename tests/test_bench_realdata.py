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
