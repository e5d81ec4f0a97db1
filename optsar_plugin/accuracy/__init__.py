"""Accuracy assessment of classified maps, with honest statistics.

* :func:`assess_accuracy` (:mod:`.assess`): a classification against reference polygons or
  points -> confusion matrix, accuracies, kappa with variance, F1/IoU, and the area-adjusted
  estimators of Olofsson et al. (2014); HTML/CSV/JSON reports (:mod:`.report`).
* :func:`stratified_sample` (:mod:`.sampling`): a stratified random sample (strata = map
  classes) to label and feed back.
* :mod:`.stats`: the statistics as pure functions over a confusion matrix.

Heavy imports (rasterio, GDAL) happen inside the functions.
"""

from .stats import confusion_matrix, kappa, overall_accuracy, per_class_measures, sample_measures, stratified_estimates


def assess_accuracy(*args, **kwargs):
    """See :func:`optsar_plugin.accuracy.assess.assess_accuracy`."""
    from .assess import assess_accuracy as _impl

    return _impl(*args, **kwargs)


def stratified_sample(*args, **kwargs):
    """See :func:`optsar_plugin.accuracy.sampling.stratified_sample`."""
    from .sampling import stratified_sample as _impl

    return _impl(*args, **kwargs)


__all__ = [
    "assess_accuracy",
    "stratified_sample",
    "confusion_matrix",
    "kappa",
    "overall_accuracy",
    "per_class_measures",
    "sample_measures",
    "stratified_estimates",
]
