"""Input units (Sentinel-2 encodings, SAR dB / linear) and the robust normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from optsar_plugin import normalisation as nm


def _reflectance(rng, n=5000, bands=4):
    """Plausible surface reflectance, 0-0.6, with some dark (water) pixels."""
    r = rng.uniform(0.02, 0.45, (bands, n))
    r[:, : n // 10] = rng.uniform(0.0, 0.03, (bands, n // 10))
    return r


def test_optical_encodings_are_recognised_and_give_the_same_normalised_values():
    rng = np.random.default_rng(0)
    refl = _reflectance(rng)
    dn = np.round(refl * 10000)
    offset = dn + 1000
    u_float = nm.detect_optical_units(refl.astype(np.float32), is_float=True)
    u_dn = nm.detect_optical_units(dn, is_float=False)
    u_tag = nm.detect_optical_units(offset, tags={"BOA_ADD_OFFSET_B2": "-1000"}, is_float=False)
    u_baseline = nm.detect_optical_units(offset, tags={"PROCESSING_BASELINE": "05.09"}, is_float=False)
    u_gdal = nm.detect_optical_units(offset, scales=[1e-4] * 4, offsets=[-0.1] * 4, is_float=False)
    assert u_float["source"] == "reflectance (values 0-1)" and u_dn["scale"] == [1e-4] * 4
    assert u_tag["offset"] == [-0.1] * 4 and u_baseline["offset"] == [-0.1] * 4
    assert nm.detect_optical_units(dn, tags={"PROCESSING_BASELINE": "03.01"}, is_float=False)["offset"] == [0.0] * 4
    stats = nm.compute_stats(dn, "optical", units=u_dn)
    assert 0.0 < stats["center"][0] < 0.5 and stats["units"]["scale"] == [1e-4] * 4  # statistics in reflectance
    ref = nm.apply(dn.reshape(4, 50, 100), stats)
    for data, units in ((refl, u_float), (offset, u_tag), (offset, u_baseline), (offset, u_gdal)):
        np.testing.assert_allclose(nm.apply(data.reshape(4, 50, 100), stats, units=units), ref, atol=1e-3)


def test_offset_without_metadata_is_a_hint_not_a_guess():
    rng = np.random.default_rng(1)
    offset = np.round(_reflectance(rng) * 10000) + 1000
    units = nm.detect_optical_units(offset, is_float=False)
    assert units["offset"] == [0.0] * 4 and "offset of 1000" in units["hint"]
    assert nm.detect_optical_units(offset - 1000, is_float=False)["hint"] is None


def test_sar_linear_bands_go_to_db_one_by_one():
    rng = np.random.default_rng(2)
    vv_db = rng.normal(-11, 4, 4000)
    vh_lin = 10 ** (rng.normal(-19, 4, 4000) / 10)
    units = nm.detect_sar_units(np.stack([vv_db, vh_lin]))
    assert units["to_db"] == [False, True]
    stats = nm.compute_stats(np.stack([vv_db, vh_lin]), "sar")
    assert stats["to_db"] is True and stats["center"][1] == pytest.approx(-19, abs=0.5)
    # The same scene in dB for both bands classifies as trained once its own units are used.
    both_db = np.stack([vv_db, 10 * np.log10(vh_lin)])
    given = nm.detect_sar_units(both_db)
    a = nm.apply(np.stack([vv_db, vh_lin]).reshape(2, 40, 100), stats)
    b = nm.apply(both_db.reshape(2, 40, 100), stats, units=given)
    np.testing.assert_allclose(a, b, atol=1e-4)
    warnings = nm.unit_warnings(stats["units"], given, ["VV", "VH"], "sar")
    assert len(warnings) == 1 and "VH" in warnings[0] and "VV" not in warnings[0]
    assert nm.unit_warnings(stats["units"], stats["units"], ["VV", "VH"], "sar") == []


def test_statistics_without_units_apply_to_raw_values_as_before():
    old = {"method": "robust_zscore", "to_db": False, "center": [1000.0, 2000.0], "scale": [100.0, 200.0], "clip": 6.0}
    x = np.array([[[1100.0]], [[1600.0]]], np.float32)
    np.testing.assert_allclose(nm.apply(x, old)[:, 0, 0], [1.0, -2.0])
    nan = np.full((2, 1, 1), np.nan, np.float32)
    assert (nm.apply(nan, old) == 0).all()
