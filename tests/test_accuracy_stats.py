"""The accuracy statistics (pure functions) against sklearn, an independent kappa variance,
the published worked example of Olofsson et al. (2014), and a coverage simulation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from optsar_plugin.accuracy import stats


def _random_labels(seed, n=5000, k=6, agreement=0.6):
    rng = np.random.default_rng(seed)
    ref = rng.integers(0, k, n)
    mapped = np.where(rng.random(n) < agreement, ref, rng.integers(0, k, n))
    return mapped, ref


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_sample_measures_match_sklearn(seed):
    from sklearn import metrics

    mapped, ref = _random_labels(seed)
    classes = list(range(6))
    cm = stats.confusion_matrix(mapped, ref, classes)
    # sklearn's confusion_matrix has the true (reference) labels in rows: transpose
    np.testing.assert_array_equal(cm, metrics.confusion_matrix(ref, mapped, labels=classes).T)
    m = stats.sample_measures(cm)
    assert m["overall_accuracy"] == pytest.approx(metrics.accuracy_score(ref, mapped), abs=1e-12)
    assert m["kappa"] == pytest.approx(metrics.cohen_kappa_score(ref, mapped), abs=1e-12)
    pc = m["per_class"]
    np.testing.assert_allclose(pc["f1"], metrics.f1_score(ref, mapped, labels=classes, average=None), atol=1e-12)
    np.testing.assert_allclose(pc["iou"], metrics.jaccard_score(ref, mapped, labels=classes, average=None), atol=1e-12)
    np.testing.assert_allclose(pc["producers_accuracy"], metrics.recall_score(ref, mapped, labels=classes, average=None), atol=1e-12)
    np.testing.assert_allclose(pc["users_accuracy"], metrics.precision_score(ref, mapped, labels=classes, average=None), atol=1e-12)
    assert m["macro_f1"] == pytest.approx(metrics.f1_score(ref, mapped, labels=classes, average="macro"), abs=1e-12)
    assert m["miou"] == pytest.approx(metrics.jaccard_score(ref, mapped, labels=classes, average="macro"), abs=1e-12)


def test_confusion_matrix_ignores_values_outside_the_classes_and_keeps_code_order():
    cm = stats.confusion_matrix([5, 0, 0, 7, 255], [5, 0, 5, 7, 0], classes=[7, 0, 5])
    # rows/cols in the given order 7, 0, 5; the pair (255, 0) is dropped
    np.testing.assert_array_equal(cm, [[1, 0, 0], [0, 1, 1], [0, 0, 1]])


def _fleiss_kappa_variance(cm):
    """Fleiss, Cohen & Everitt (1969) large-sample variance, written independently of stats.kappa."""
    p = np.asarray(cm, dtype=float)
    n = p.sum()
    p = p / n
    r = p.sum(axis=1)
    c = p.sum(axis=0)
    po = np.trace(p)
    pe = float((r * c).sum())
    a = sum(p[i, i] * ((1 - pe) - (c[i] + r[i]) * (1 - po)) ** 2 for i in range(len(p)))
    b = (1 - po) ** 2 * sum(p[i, j] * (c[i] + r[j]) ** 2 for i in range(len(p)) for j in range(len(p)) if i != j)
    cc = (po * pe - 2 * pe + po) ** 2
    return (a + b - cc) / (n * (1 - pe) ** 4)


@pytest.mark.parametrize("seed", [0, 5, 9])
def test_kappa_variance_matches_the_fleiss_formula(seed):
    mapped, ref = _random_labels(seed, n=800, k=4, agreement=0.5)
    cm = stats.confusion_matrix(mapped, ref, range(4))
    k = stats.kappa(cm)
    assert k["variance"] == pytest.approx(_fleiss_kappa_variance(cm), rel=1e-10)
    assert k["se"] == pytest.approx(np.sqrt(k["variance"]))


def test_kappa_variance_is_close_to_the_simulated_variance():
    """The delta-method variance describes the spread of kappa over repeated multinomial samples."""
    rng = np.random.default_rng(42)
    p = np.array([[0.30, 0.05, 0.02], [0.04, 0.25, 0.06], [0.03, 0.05, 0.20]])
    n = 600
    sims = [stats.kappa(rng.multinomial(n, p.ravel()).reshape(3, 3))["kappa"] for _ in range(3000)]
    predicted = stats.kappa(p * n)["variance"]
    assert np.var(sims) == pytest.approx(predicted, rel=0.1)


# --------------------------------------------------------------------------------------
# Olofsson, P., Foody, G.M., Herold, M., Stehman, S.V., Woodcock, C.E., Wulder, M.A. (2014).
# Good practices for estimating area and assessing accuracy of land change. Remote Sensing of
# Environment 148: 42-57. doi:10.1016/j.rse.2014.02.015. Section 5 (worked example).
# Table 8: sample counts, rows = map class (stratum), columns = reference class, in the order
# deforestation, forest gain, stable forest, stable non-forest; mapped areas in 30 m pixels.
# --------------------------------------------------------------------------------------
OLOFSSON_COUNTS = [[66, 0, 5, 4], [0, 55, 8, 12], [1, 0, 153, 11], [2, 1, 9, 313]]
OLOFSSON_PIXELS = [200_000, 150_000, 3_200_000, 6_450_000]
HA_PER_PIXEL = 0.09
# Table 9: estimated area proportions p_ij, printed to 4 decimals.
OLOFSSON_P = [
    [0.0176, 0.0, 0.0013, 0.0011],
    [0.0, 0.0110, 0.0016, 0.0024],
    [0.0019, 0.0, 0.2967, 0.0213],
    [0.0040, 0.0020, 0.0179, 0.6212],
]
# Section 5.2 (accuracy, "estimate ± 95 % CI", 2 decimals).
PUBLISHED_UA = [(0.88, 0.07), (0.73, 0.10), (0.93, 0.04), (0.96, 0.02)]
# Producer's accuracy as printed: 0.75 ± 0.21, 0.85 ± 0.23, 0.93 ± 0.03, 0.96 ± 0.01.  The paper's
# own eq. 7 gives half-widths 0.254 (forest gain) and 0.018 (stable non-forest); independent
# re-implementations (R mapaccuracy, sits) report the eq. 7 values too, so those two printed
# half-widths are taken as typos and the eq. 7 values are asserted below.
PUBLISHED_PA = [(0.75, 0.21), (0.85, None), (0.93, 0.03), (0.96, None)]
EQ7_PA_HALF_WIDTH = {1: 0.254, 3: 0.018}
PUBLISHED_OA = (0.95, 0.02)  # section 5.2.1: 0.95 ± 0.02; unrounded in the text: 0.947
# Section 5.2.2: error-adjusted area ± 95 % CI in hectares.
PUBLISHED_AREA_HA = [(21_158, 6_158), (11_686, 3_756), (285_770, 15_510), (581_386, 16_282)]


@pytest.fixture(scope="module")
def olofsson():
    total_ha = sum(OLOFSSON_PIXELS) * HA_PER_PIXEL
    return stats.stratified_estimates(OLOFSSON_COUNTS, OLOFSSON_PIXELS, 0.95, total_area=total_ha)


def test_olofsson_proportions_table9(olofsson):
    np.testing.assert_allclose(np.asarray(olofsson["proportions"]), OLOFSSON_P, atol=5e-5)


def test_olofsson_overall_accuracy(olofsson):
    assert round(olofsson["overall_accuracy"], 3) == 0.947
    assert round(olofsson["overall_accuracy"], 2) == PUBLISHED_OA[0]
    assert round(1.96 * olofsson["overall_accuracy_se"], 2) == PUBLISHED_OA[1]


def test_olofsson_users_accuracy(olofsson):
    for i, (ua, hw) in enumerate(PUBLISHED_UA):
        assert round(olofsson["users_accuracy"][i], 2) == ua
        assert round(1.96 * olofsson["users_accuracy_se"][i], 2) == hw


def test_olofsson_producers_accuracy(olofsson):
    for j, (pa, hw) in enumerate(PUBLISHED_PA):
        assert round(olofsson["producers_accuracy"][j], 2) == pa
        if hw is not None:
            assert round(1.96 * olofsson["producers_accuracy_se"][j], 2) == hw
    for j, hw in EQ7_PA_HALF_WIDTH.items():
        assert 1.96 * olofsson["producers_accuracy_se"][j] == pytest.approx(hw, abs=5e-4)


def test_olofsson_area_estimates_and_intervals(olofsson):
    for k, (area, hw) in enumerate(PUBLISHED_AREA_HA):
        assert round(olofsson["area"][k]) == area
        assert round(1.96 * olofsson["area_se"][k]) == pytest.approx(hw, abs=1)
        lo, hi = olofsson["area_ci"][k]
        # the interval uses z(0.975) = 1.95996 rather than the paper's rounded 1.96
        assert (hi - lo) / 2 == pytest.approx(hw, rel=2e-4)
    # the mapped area of deforestation (18,000 ha) is an underestimate: the point of the paper
    assert olofsson["mapped_area"][0] == pytest.approx(18_000)
    assert olofsson["population_fraction"] == 1.0


def test_undefined_values_are_none_without_warnings():
    # class 2 is absent from the reference (column of zeros), class 3 absent from the map (row of
    # zeros), class 4 absent from both
    cm = np.array(
        [
            [10, 2, 0, 1, 0],
            [3, 12, 0, 2, 0],
            [1, 1, 0, 0, 0],
            [0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0],
        ]
    )
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        m = stats.sample_measures(cm)
        est = stats.stratified_estimates(cm, [100, 200, 50, 0, 0])
    pc = m["per_class"]
    assert pc["producers_accuracy"][2] is None
    assert pc["users_accuracy"][3] is None
    assert pc["producers_accuracy"][4] is None and pc["users_accuracy"][4] is None
    assert pc["f1"][4] is None and pc["iou"][4] is None
    assert pc["f1"][2] == 0.0 and pc["iou"][3] == 0.0  # scored: present on one side, never right
    assert m["macro_f1"] == pytest.approx(np.mean([v for v in pc["f1"] if v is not None]))
    assert est["users_accuracy"][3] is None
    assert est["producers_accuracy"][2] is None  # no reference of class 2: PA undefined
    assert est["area"][2] == 0.0 and est["area"][4] == 0.0  # but its estimated area is 0


def test_empty_and_single_class_matrices():
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        empty = stats.sample_measures(np.zeros((3, 3)))
        single = stats.sample_measures(np.array([[5]]))
    assert empty["overall_accuracy"] is None and empty["kappa"] is None and empty["miou"] is None
    assert single["overall_accuracy"] == 1.0
    assert single["kappa"] is None  # chance agreement is 1: kappa undefined, not NaN


def test_unsampled_stratum_restricts_the_population():
    cm = np.array([[40, 10, 0], [5, 45, 0], [0, 0, 0]])
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        est = stats.stratified_estimates(cm, [600, 300, 100])
    assert est["unsampled_classes"] == [2]
    assert est["population_fraction"] == pytest.approx(0.9)
    assert est["weights"][0] == pytest.approx(600 / 900)
    assert sum(est["area"]) == pytest.approx(900)  # the estimate covers the sampled strata only
    assert est["overall_accuracy"] == pytest.approx(600 / 900 * 0.8 + 300 / 900 * 0.9)


def test_single_unit_stratum_has_no_variance():
    cm = np.array([[40, 10], [1, 0]])
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        est = stats.stratified_estimates(cm, [800, 200])
    assert est["single_unit_classes"] == [1]
    assert est["overall_accuracy"] is not None and est["overall_accuracy_se"] is None
    assert est["area_se"] == [None, None] and est["producers_accuracy_se"] == [None, None]
    assert est["users_accuracy_se"][0] is not None and est["users_accuracy_se"][1] is None


def test_z_value():
    assert stats.z_value(0.95) == pytest.approx(1.959964, abs=1e-6)
    assert stats.z_value(0.90) == pytest.approx(1.644854, abs=1e-6)
    with pytest.raises(ValueError):
        stats.z_value(1.0)


def test_stratified_estimator_is_unbiased_and_its_intervals_cover():
    """Stratified random samples from a known population: the area CI covers the truth ~95 % of the time."""
    rng = np.random.default_rng(7)
    n_pix = 200_000
    mapped = rng.choice(3, size=n_pix, p=[0.05, 0.35, 0.60])
    truth = mapped.copy()
    flip = rng.random(n_pix) < np.array([0.3, 0.1, 0.05])[mapped]
    truth[flip] = rng.integers(0, 3, flip.sum())
    true_area = np.bincount(truth, minlength=3)
    mapped_px = np.bincount(mapped, minlength=3)
    strata = [np.flatnonzero(mapped == c) for c in range(3)]
    sizes = [60, 80, 100]
    cover = np.zeros(3)
    estimates = []
    reps = 400
    for _ in range(reps):
        idx = np.concatenate([rng.choice(s, n, replace=False) for s, n in zip(strata, sizes)])
        cm = stats.confusion_matrix(mapped[idx], truth[idx], range(3))
        est = stats.stratified_estimates(cm, mapped_px, 0.95)
        estimates.append(est["area"])
        for k in range(3):
            lo, hi = est["area_ci"][k]
            cover[k] += lo <= true_area[k] <= hi
    estimates = np.asarray(estimates)
    # unbiased: the mean estimate is within 3 standard errors of the mean of the true area
    se_mean = estimates.std(axis=0) / np.sqrt(reps)
    assert (np.abs(estimates.mean(axis=0) - true_area) < 3 * se_mean + 1).all()
    assert ((cover / reps) > 0.9).all() and ((cover / reps) < 0.99).all()
