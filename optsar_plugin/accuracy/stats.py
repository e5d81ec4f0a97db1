"""Accuracy statistics of a classified map: pure functions over a confusion matrix.

Conventions used everywhere in :mod:`optsar_plugin.accuracy`:

* The confusion (error) matrix has the **map** classes in rows and the **reference**
  classes in columns (Congalton & Green 2009; Olofsson et al. 2014, Table 8): ``cm[i, j]``
  is the number of reference units mapped as class ``i`` whose reference label is ``j``.
* A value that is undefined (a class absent from the map or from the reference, a
  variance with a single unit in a stratum, ...) is ``None``, never NaN and never a
  division-by-zero warning: every ratio is guarded explicitly.

Measures
--------
*Sample-count measures* (what most papers print): overall accuracy, Cohen's kappa with its
large-sample (delta-method) variance, per-class producer's accuracy (recall), user's
accuracy (precision), F1 and intersection over union (IoU), and their unweighted means over
the classes where they are defined (macro-F1, mIoU).

*Area-adjusted (stratified) estimators* of Olofsson et al. (2014), Remote Sensing of
Environment 148:42-57 (section 4 and the worked example of section 5): with the mapped class
proportions ``W_i`` as stratum weights, the estimated area proportions
``p_ij = W_i n_ij / n_i.``, overall accuracy ``Σ p_ii`` with variance
``Σ W_i² U_i (1 - U_i) / (n_i. - 1)``, user's accuracy ``U_i = n_ii / n_i.`` with variance
``U_i (1 - U_i) / (n_i. - 1)``, producer's accuracy ``p_jj / p_.j`` with the variance of their
eq. 7, and the estimated area of each class ``A · p_.k`` with standard error
``A · sqrt(Σ_i (W_i p_ik - p_ik²) / (n_i. - 1))``; intervals are ``estimate ± z·SE``.  These
estimators assume that the reference units were selected by stratified random sampling with
the map classes as strata (simple random and systematic samples are analysed the same way,
as post-stratified).  Pixels inside hand-drawn polygons are *not* such a sample: the formulas
still run, but the standard errors do not describe the real uncertainty (neighbouring
pixels are correlated and polygons are placed where the analyst is confident).  The report
says so.

Choices where the paper is silent
---------------------------------
* A map class with mapped area but *no* reference unit (an unsampled stratum) makes the
  estimators for the whole map undefined.  We then estimate for the *sampled part of the
  map* (the union of the sampled strata, weights renormalised over them), record the
  share of the mapped area that this population covers (``population_fraction``) and list
  the unsampled classes, so the caller can warn.  Restricting the population is the only
  estimate that stays unbiased for what it claims to describe.
* A stratum with a single reference unit has no variance estimate (``n_i. - 1 = 0``): the
  point estimates stay, every standard error and interval that involves that stratum is
  ``None``.
* Intervals use the normal quantile for the requested confidence (1.95996 for 95 %; the
  paper rounds to 1.96).  No finite-population correction is applied (the paper's
  formulas have none).
"""

from __future__ import annotations

from statistics import NormalDist
from typing import Dict, List, Optional, Sequence

import numpy as np

Number = Optional[float]


# --------------------------------------------------------------------------------------
# small guarded helpers
# --------------------------------------------------------------------------------------
def _ratio(num: float, den: float) -> Number:
    """``num / den`` or ``None`` when the denominator is zero."""
    if den == 0:
        return None
    return float(num) / float(den)


def _mean_defined(values: Sequence[Number]) -> Number:
    vals = [v for v in values if v is not None]
    return float(sum(vals) / len(vals)) if vals else None


def z_value(confidence: float) -> float:
    """Two-sided normal quantile for ``confidence`` (0.95 -> 1.95996...)."""
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence}")
    return NormalDist().inv_cdf(1.0 - (1.0 - float(confidence)) / 2.0)


def _as_matrix(cm) -> np.ndarray:
    m = np.asarray(cm, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"a confusion matrix must be square, got shape {m.shape}")
    if (m < 0).any():
        raise ValueError("a confusion matrix cannot hold negative counts")
    return m


# --------------------------------------------------------------------------------------
# the matrix
# --------------------------------------------------------------------------------------
def confusion_matrix(map_values, reference_values, classes: Sequence[int]) -> np.ndarray:
    """Counts of (map, reference) pairs over ``classes`` (rows = map, columns = reference).

    Pairs where either value is not in ``classes`` are ignored (the caller removes
    nodata and ignored values first and counts them).
    """
    classes = np.asarray(list(classes), dtype=np.int64)
    k = len(classes)
    order = np.argsort(classes)
    sorted_codes = classes[order]
    mv = np.asarray(map_values).ravel().astype(np.int64, copy=False)
    rv = np.asarray(reference_values).ravel().astype(np.int64, copy=False)
    if mv.shape != rv.shape:
        raise ValueError("map and reference values must have the same length")
    if k == 0 or mv.size == 0:
        return np.zeros((k, k), dtype=np.int64)
    mi = np.searchsorted(sorted_codes, mv).clip(0, k - 1)
    ri = np.searchsorted(sorted_codes, rv).clip(0, k - 1)
    ok = (sorted_codes[mi] == mv) & (sorted_codes[ri] == rv)
    mi = order[mi[ok]]
    ri = order[ri[ok]]
    return np.bincount(mi * k + ri, minlength=k * k).reshape(k, k).astype(np.int64)


def area_matrix(cm, pixel_area: float) -> np.ndarray:
    """The confusion matrix in area (pixel counts times the area of one pixel, map units²)."""
    return _as_matrix(cm) * float(pixel_area)


# --------------------------------------------------------------------------------------
# sample-count measures
# --------------------------------------------------------------------------------------
def overall_accuracy(cm) -> Number:
    m = _as_matrix(cm)
    return _ratio(np.trace(m), m.sum())


def kappa(cm) -> Dict[str, Number]:
    """Cohen's kappa and its large-sample variance.

    The variance is the delta-method estimate of Bishop, Fienberg & Holland (1975) as given
    by Congalton & Green (2009, chapter 5) — the same quantity as Fleiss, Cohen & Everitt
    (1969):

    ``var = 1/n [ t1(1-t1)/(1-t2)^2 + 2(1-t1)(2 t1 t2 - t3)/(1-t2)^3 + (1-t1)^2 (t4 - 4 t2^2)/(1-t2)^4 ]``

    with ``t1 = Σ n_ii/n``, ``t2 = Σ n_i+ n_+i / n²``, ``t3 = Σ n_ii (n_i+ + n_+i) / n²`` and
    ``t4 = Σ_ij n_ij (n_j+ + n_+i)² / n³``.  Kappa is undefined (``None``) for an empty
    matrix and when chance agreement is 1 (a single class in both map and reference).
    """
    m = _as_matrix(cm)
    n = m.sum()
    out = {"kappa": None, "variance": None, "se": None}
    if n == 0:
        return out
    rows = m.sum(axis=1)
    cols = m.sum(axis=0)
    t1 = np.trace(m) / n
    t2 = float((rows * cols).sum()) / n**2
    if t2 >= 1.0:
        return out
    t3 = float((np.diag(m) * (rows + cols)).sum()) / n**2
    # n_ij (n_j+ + n_+i)^2: row total of the column class plus column total of the row class
    t4 = float((m * (rows[np.newaxis, :] + cols[:, np.newaxis]) ** 2).sum()) / n**3
    k = (t1 - t2) / (1.0 - t2)
    a = t1 * (1 - t1) / (1 - t2) ** 2
    b = 2 * (1 - t1) * (2 * t1 * t2 - t3) / (1 - t2) ** 3
    c = (1 - t1) ** 2 * (t4 - 4 * t2**2) / (1 - t2) ** 4
    var = max(0.0, (a + b + c) / n)
    out.update(kappa=float(k), variance=float(var), se=float(np.sqrt(var)))
    return out


def per_class_measures(cm) -> Dict[str, List[Number]]:
    """Producer's and user's accuracy, F1 and IoU per class (``None`` where undefined).

    * producer's accuracy ``n_ii / n_+i`` (recall): undefined when the class is absent from the reference;
    * user's accuracy ``n_ii / n_i+`` (precision): undefined when the class is absent from the map's reference pixels;
    * F1 ``2 n_ii / (n_i+ + n_+i)`` and IoU ``n_ii / (n_i+ + n_+i - n_ii)``: undefined only when the
      class is absent from both (then there is nothing to score; sklearn would report 0 with a
      warning, we report ``None`` and leave the class out of the means).
    """
    m = _as_matrix(cm)
    diag = np.diag(m)
    rows = m.sum(axis=1)
    cols = m.sum(axis=0)
    pa, ua, f1, iou = [], [], [], []
    for i in range(m.shape[0]):
        pa.append(_ratio(diag[i], cols[i]))
        ua.append(_ratio(diag[i], rows[i]))
        f1.append(_ratio(2 * diag[i], rows[i] + cols[i]))
        iou.append(_ratio(diag[i], rows[i] + cols[i] - diag[i]))
    return {
        "producers_accuracy": pa,
        "users_accuracy": ua,
        "f1": f1,
        "iou": iou,
        "reference_total": [int(v) for v in cols],
        "map_total": [int(v) for v in rows],
    }


def sample_measures(cm, confidence: float = 0.95) -> Dict:
    """All sample-count measures of a confusion matrix, JSON-ready."""
    m = _as_matrix(cm)
    pc = per_class_measures(m)
    k = kappa(m)
    z = z_value(confidence)
    kci = None
    if k["kappa"] is not None and k["se"] is not None:
        kci = [k["kappa"] - z * k["se"], k["kappa"] + z * k["se"]]
    oa = overall_accuracy(m)
    n = float(m.sum())
    oa_se = None if oa is None or n < 2 else float(np.sqrt(oa * (1 - oa) / (n - 1)))
    return {
        "n": int(m.sum()),
        "overall_accuracy": oa,
        "overall_accuracy_se": oa_se,
        "kappa": k["kappa"],
        "kappa_variance": k["variance"],
        "kappa_se": k["se"],
        "kappa_ci": kci,
        "miou": _mean_defined(pc["iou"]),
        "macro_f1": _mean_defined(pc["f1"]),
        "per_class": pc,
    }


# --------------------------------------------------------------------------------------
# area-adjusted (stratified) estimators, Olofsson et al. (2014)
# --------------------------------------------------------------------------------------
def stratified_estimates(cm, mapped_area, confidence: float = 0.95, total_area: Optional[float] = None) -> Dict:
    """Olofsson et al. (2014) stratified estimators from sample counts and mapped areas.

    Parameters
    ----------
    cm : (k, k) sample counts, rows = map class (= stratum), columns = reference class.
    mapped_area : length-k mapped area (or pixel count) of each map class over the whole map.
    confidence : confidence level of the intervals.
    total_area : area units of ``mapped_area`` are kept; the estimated areas are
        ``p_.k * total`` where ``total`` is the mapped area of the estimated population.
        ``total_area`` only changes the unit (e.g. pass pixel counts as ``mapped_area`` and
        ``total_area = pixels * pixel_area``).

    Returns a JSON-ready dict; every undefined value is ``None``.
    """
    m = _as_matrix(cm)
    k = m.shape[0]
    area = np.asarray(mapped_area, dtype=np.float64).ravel()
    if area.shape[0] != k:
        raise ValueError(f"mapped_area has {area.shape[0]} values for a {k}-class matrix")
    if (area < 0).any():
        raise ValueError("mapped areas cannot be negative")
    s = _Strata(m, area, z_value(confidence), total_area)
    out = s.empty_result(confidence)
    _users_accuracy(s, out)
    if s.pop_area == 0:
        return out
    out["weights"] = [float(v) if s.sampled[i] else (0.0 if area[i] == 0 else None) for i, v in enumerate(s.w)]
    out["proportions"] = [[float(s.p[i, j]) if s.sampled[i] or area[i] == 0 else None for j in range(k)]
                          for i in range(k)]
    _overall_accuracy(s, out)
    _areas(s, out)
    _producers_accuracy(s, out)
    return out


class _Strata:
    """The quantities every estimator shares: strata, weights ``W_i``, proportions ``p_ij``, variance denominators."""

    def __init__(self, m: np.ndarray, area: np.ndarray, z: float, total_area: Optional[float]):
        self.m, self.area, self.z, self.k = m, area, z, m.shape[0]
        self.n_i = m.sum(axis=1)
        self.sampled = (self.n_i > 0) & (area > 0)
        self.unsampled = (self.n_i == 0) & (area > 0)
        self.all_area = float(area.sum())
        self.pop_area = float(area[self.sampled].sum())
        self.scale = 1.0 if total_area is None or self.all_area == 0 else float(total_area) / self.all_area
        self.w = np.where(self.sampled, area / self.pop_area, 0.0) if self.pop_area else np.zeros(self.k)
        # within-stratum reference proportions n_ij / n_i.  (0 for unsampled strata: they carry no weight)
        self.q = np.zeros_like(m)
        self.q[self.sampled] = m[self.sampled] / self.n_i[self.sampled, np.newaxis]
        self.p = self.w[:, np.newaxis] * self.q  # p_ij = W_i n_ij / n_i.
        self.variance_ok = not bool((self.sampled & (self.n_i < 2)).any())
        self.denom = np.where(self.n_i > 1, self.n_i - 1, 1.0)  # only used where variance_ok

    def empty_result(self, confidence: float) -> Dict:
        k = self.k
        out: Dict = {"confidence": float(confidence), "z": float(self.z), "weights": [None] * k,
                     "proportions": [[None] * k for _ in range(k)], "overall_accuracy": None,
                     "overall_accuracy_se": None, "overall_accuracy_ci": None}
        for key in ("users_accuracy", "producers_accuracy"):
            out.update({key: [None] * k, f"{key}_se": [None] * k, f"{key}_ci": [None] * k})
        for key in ("area_proportion", "area_proportion_se", "area", "area_se", "area_ci"):
            out[key] = [None] * k
        out.update(
            mapped_area=[float(a) * self.scale for a in self.area],
            population_area=self.pop_area * self.scale,
            population_fraction=_ratio(self.pop_area, self.all_area),
            unsampled_classes=[int(i) for i in np.flatnonzero(self.unsampled)],
            single_unit_classes=[int(i) for i in np.flatnonzero(self.sampled & (self.n_i == 1))],
        )
        return out


def _users_accuracy(s: _Strata, out: Dict) -> None:
    """A within-stratum ratio: defined wherever the stratum has units; variance ``U (1 - U) / (n_i. - 1)``."""
    for i in range(s.k):
        if s.n_i[i] > 0:
            u = float(s.m[i, i] / s.n_i[i])
            out["users_accuracy"][i] = u
            if s.n_i[i] > 1:
                se = float(np.sqrt(u * (1 - u) / (s.n_i[i] - 1)))
                out["users_accuracy_se"][i] = se
                out["users_accuracy_ci"][i] = [u - s.z * se, u + s.z * se]


def _overall_accuracy(s: _Strata, out: Dict) -> None:
    """``Σ p_ii`` with variance ``Σ W_i² U_i (1 - U_i) / (n_i. - 1)``."""
    oa = float(np.trace(s.p))
    out["overall_accuracy"] = oa
    if s.variance_ok:
        u_diag = np.diag(s.q)
        v = float(np.sum(np.where(s.sampled, s.w**2 * u_diag * (1 - u_diag) / s.denom, 0.0)))
        se = float(np.sqrt(v))
        out["overall_accuracy_se"] = se
        out["overall_accuracy_ci"] = [oa - s.z * se, oa + s.z * se]


def _areas(s: _Strata, out: Dict) -> None:
    """Area proportions ``p_.k`` and areas, ``S(p_.k) = sqrt(Σ_i (W_i p_ik - p_ik²) / (n_i. - 1))``."""
    col = s.p.sum(axis=0)
    total = s.pop_area * s.scale
    for j in range(s.k):
        out["area_proportion"][j] = float(col[j])
        out["area"][j] = float(col[j] * total)
        if s.variance_ok:
            terms = np.where(s.sampled, (s.w * s.p[:, j] - s.p[:, j] ** 2) / s.denom, 0.0)
            se_p = float(np.sqrt(max(0.0, terms.sum())))
            out["area_proportion_se"][j] = se_p
            out["area_se"][j] = se_p * total
            out["area_ci"][j] = [(col[j] - s.z * se_p) * total, (col[j] + s.z * se_p) * total]


def _producers_accuracy(s: _Strata, out: Dict) -> None:
    """``p_jj / p_.j`` with the variance of eq. 7 (its ``N_i.`` replaced by the weights ``W_i``: the ratio is
    unchanged by the common factor; ``N_.j`` estimated in weight units as ``Σ_i W_i n_ij / n_i. = p_.j``)."""
    col = s.p.sum(axis=0)
    for j in range(s.k):
        nj = col[j]
        if nj <= 0:
            continue
        pj = float(s.p[j, j] / nj)
        out["producers_accuracy"][j] = pj
        if not s.variance_ok:
            continue
        uj = s.q[j, j]
        first = s.w[j] ** 2 * (1 - pj) ** 2 * uj * (1 - uj) / s.denom[j] if s.sampled[j] else 0.0
        second = sum(s.w[i] ** 2 * s.q[i, j] * (1 - s.q[i, j]) / s.denom[i]
                     for i in range(s.k) if i != j and s.sampled[i])
        se = float(np.sqrt(max(0.0, (first + pj**2 * second) / nj**2)))
        out["producers_accuracy_se"][j] = se
        out["producers_accuracy_ci"][j] = [pj - s.z * se, pj + s.z * se]
