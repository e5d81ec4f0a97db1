"""Accuracy assessment of classified maps, with honest statistics.

* :func:`assess_accuracy` (:mod:`.assess`): a classification against reference polygons or
  points -> confusion matrix, accuracies, kappa with variance, F1/IoU, and the area-adjusted
  estimators of Olofsson et al. (2014); HTML/CSV/JSON reports (:mod:`.report`).
* :func:`stratified_sample` (:mod:`.sampling`): a stratified random sample (strata = map
  classes) to label and feed back.
* :mod:`.stats`: the statistics as pure functions over a confusion matrix.

Modules: :mod:`.options` (:class:`AssessOptions`, :class:`SampleOptions`), :mod:`.matching`
(the classification's classes, reference values matched to them), :mod:`.rasterize` (the
reference burnt strip by strip), :mod:`.counting` (one pass over the map), :mod:`.assess`
(the assessment), :mod:`.stats` (the estimators), :mod:`.report` and :mod:`.html` (JSON, CSV,
HTML), :mod:`.sampling` (the sample), :mod:`.cli` and :mod:`.sample_cli` (the command lines).
Heavy imports (rasterio, GDAL) happen inside the functions.
"""

from .options import AssessOptions, SampleOptions
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
    "AssessOptions",
    "SampleOptions",
    "assess_accuracy",
    "stratified_sample",
    "confusion_matrix",
    "kappa",
    "overall_accuracy",
    "per_class_measures",
    "sample_measures",
    "stratified_estimates",
]
