"""What every OptSAR Fusion algorithm shares: group, icon, help link, engine calls.

Algorithms stay thin: parameters in, one engine call, outputs out.  Algorithms that need
PyTorch call the engine through the worker process (:meth:`OptsarAlgorithm.run_worker`,
``worker_client``); numpy/GDAL-only ones call it in process (:meth:`OptsarAlgorithm.run_engine`).
Either way engine errors become ``QgsProcessingException`` with the engine's one-line message,
so ``qgis_process`` users see one line and a non-zero exit code.
"""

from __future__ import annotations

import os
import traceback
from typing import Callable

from qgis.core import (
    Qgis,
    QgsMessageLog,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingParameterBand,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingUtils,
)
from qgis.PyQt.QtCore import QUrl
from qgis.PyQt.QtGui import QIcon

PLUGIN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ICON_DIR = os.path.join(PLUGIN_DIR, "resources", "icons")
# No website: help opens the README shipped inside the plugin folder.
README_URL = QUrl.fromLocalFile(os.path.join(PLUGIN_DIR, "README.md")).toString()


class FeedbackAdapter:
    """Presents a ``QgsProcessingFeedback`` as the engine's :class:`optsar_plugin.progress.Feedback`."""

    def __init__(self, feedback, start: float = 0.0, end: float = 100.0):
        self._fb = feedback
        self._start = start
        self._span = end - start

    def progress(self, fraction, message=None):
        if self._fb is None:
            return
        self._fb.setProgress(self._start + self._span * max(0.0, min(1.0, float(fraction))))
        if message:
            self._fb.setProgressText(message)

    def info(self, message):
        if self._fb is not None:
            self._fb.pushInfo(message)

    def warning(self, message):
        if self._fb is not None:
            self._fb.reportError(message, fatalError=False)

    def is_canceled(self):
        return bool(self._fb is not None and self._fb.isCanceled())


class OptsarAlgorithm(QgsProcessingAlgorithm):
    """Base class: subclasses set ``NAME``, ``DISPLAY``, ``GROUP``, ``GROUP_ID``, ``ICON``, ``HELP``, ``TAGS``."""

    NAME = ""
    DISPLAY = ""
    GROUP = "Land cover"
    GROUP_ID = "landcover"
    ICON = "optsar.svg"
    HELP = ""
    HELP_ANCHOR = "algorithm-reference"
    TAGS = ()

    def name(self):
        return self.NAME

    def displayName(self):
        return self.DISPLAY

    def group(self):
        return self.GROUP

    def groupId(self):
        return self.GROUP_ID

    def tags(self):
        return ["optsar", "sar", "optical", "fusion", "land cover", *self.TAGS]

    def shortHelpString(self):
        return self.HELP

    def helpUrl(self):
        return f"{README_URL}#{self.HELP_ANCHOR}"

    def icon(self):
        return QIcon(os.path.join(ICON_DIR, self.ICON))

    def svgIconPath(self):
        return os.path.join(ICON_DIR, self.ICON)

    def createInstance(self):
        return type(self)()

    # -- early checks ----------------------------------------------------------------------------

    def checkParameterValues(self, parameters, context):  # noqa: N802
        """Numbers outside their range are named with the range; then QGIS's checks and :meth:`check_parameters`.

        Nothing may escape from here: in the desktop an exception raised while the dialog
        checks its parameters takes QGIS down, so anything unforeseen is a one-line answer.
        """
        message = number_range_problem(self, parameters, context)
        if message:
            return False, message
        ok, message = super().checkParameterValues(parameters, context)
        if not ok:
            return ok, message
        from optsar_plugin.errors import OptsarError

        try:
            self.check_parameters(parameters, context)
        except OptsarError as exc:
            return False, str(exc)
        except Exception as exc:  # noqa: BLE001 - see the docstring
            return False, f"The parameters could not be checked ({type(exc).__name__}: {one_line(exc)})."
        return True, ""

    def check_parameters(self, parameters, context) -> None:
        """What a subclass can check before the run; raises :class:`~optsar_plugin.errors.OptsarError`."""

    # -- running the engine ----------------------------------------------------------------------

    @staticmethod
    def run_engine(call: Callable, *args, **kwargs):
        """Run a numpy/GDAL-only engine function in process; its errors become one-line ``QgsProcessingException``.

        An exception that is not an engine error is a bug: its traceback goes to QGIS's message log
        (OptSAR Fusion tab), the user sees one line naming it.
        """
        from optsar_plugin.errors import OptsarError

        try:
            return call(*args, **kwargs)
        except OptsarError as exc:
            raise QgsProcessingException(str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - one line for the user, the traceback to the log
            QgsMessageLog.logMessage(traceback.format_exc(), "OptSAR Fusion", Qgis.MessageLevel.Critical)
            raise QgsProcessingException(
                f"Unexpected error in the engine ({type(exc).__name__}: {one_line(exc)}); the traceback is in the "
                "log messages (OptSAR Fusion tab). Please report it.") from None

    @staticmethod
    def run_worker(function: str, kwargs: dict, feedback, outputs=(), temporary_inputs=()) -> dict:
        """Run an engine function in the worker process (see ``worker_client``); returns its result.

        ``outputs`` are removed (with their temporary siblings) if the run fails or is cancelled;
        ``temporary_inputs`` (layers exported for the worker) are removed after the run in any case.
        """
        from .worker_client import run_job

        try:
            return run_job(function, kwargs, feedback, outputs=outputs)
        finally:
            for path in temporary_inputs:
                remove_with_sidecars(path)

    def vector_file(self, parameters, name, context, feedback):
        """(path, layer name, temporary path or None): a file OGR reads for a vector parameter.

        The layer's own file when it is one; memory and database layers, selections and subsets
        are written to a temporary GeoPackage, which the caller removes after the run.
        """
        path, layer_name = self.parameterAsCompatibleSourceLayerPathAndLayerName(
            parameters, name, context, ["gpkg", "shp", "geojson"], "gpkg", feedback)
        temp_root = os.path.abspath(QgsProcessingUtils.tempFolder())
        temporary = path if path and os.path.abspath(path).startswith(temp_root + os.sep) else None
        return path, layer_name or None, temporary


def one_line(exc, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text[:limit] + ("..." if len(text) > limit else "")


def _number_text(value: float, integer: bool) -> str:
    return str(int(value)) if integer or float(value).is_integer() else f"{value:g}"


def number_range_problem(algorithm, parameters, context) -> str:
    """A message naming the first number parameter outside its range (or not a number) with the range, else ''.

    QGIS itself only says "Incorrect parameter value for X".
    """
    for definition in algorithm.parameterDefinitions():
        if not isinstance(definition, QgsProcessingParameterNumber):
            continue
        name = definition.name()
        value = parameters.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        integer = definition.dataType() == QgsProcessingParameterNumber.Type.Integer
        lo, hi = definition.minimum(), definition.maximum()
        bounds = [b for b in (lo, hi) if b is not None and abs(b) < 1e300]
        allowed = (f"from {_number_text(lo, integer)} to {_number_text(hi, integer)}" if len(bounds) == 2 else
                   f"at least {_number_text(lo, integer)}" if lo is not None and abs(lo) < 1e300 else
                   f"at most {_number_text(hi, integer)}" if hi is not None and abs(hi) < 1e300 else "a number")
        kind = "a whole number" if integer else "a number"
        try:
            number = float(value)
        except (TypeError, ValueError):
            if not isinstance(value, (str, int, float)):
                continue  # an expression or a model input: QGIS evaluates it
            return f"{name} (\"{definition.description()}\") must be {kind} {allowed}, got {str(value)[:40]!r}."
        if (integer and not number.is_integer()) or (lo is not None and number < lo) or (
                hi is not None and number > hi) or number != number:
            return f"{name} (\"{definition.description()}\") must be {kind} {allowed}, got {_number_text(number, False)}."
    return ""


def remove_with_sidecars(path) -> None:
    if not path:
        return
    for p in (path, path + "-wal", path + "-shm", path + ".aux.xml"):
        try:
            os.remove(p)
        except OSError:
            pass


def raster_path(layer, name: str) -> str:
    """The file behind a GDAL raster layer, or a clear error naming the layer."""
    if layer is None:
        raise QgsProcessingException(f"The {name} layer is missing or invalid.")
    if layer.providerType() != "gdal":
        raise QgsProcessingException(
            f"The {name} layer '{layer.name()}' is not a GDAL raster file (provider {layer.providerType()}); "
            "save it as a GeoTIFF first."
        )
    return layer.source().split("|")[0]


def check_band_numbers(bands, layer, parameter: str) -> None:
    """Every band number names a band of ``layer`` (1-based), else an ``InputError`` naming the parameter."""
    from optsar_plugin.errors import InputError

    count = layer.bandCount()
    for b in bands:
        if not 1 <= int(b) <= count:
            raise InputError(f"{parameter}: band {int(b)} does not exist in '{layer.name()}', which has {count} "
                             f"band(s) numbered from 1 to {count}.")
    if len(set(bands)) != len(bands):
        raise InputError(f"{parameter} names a band twice ({', '.join(map(str, bands))}).")


class ImageryInputs:
    """The optical + SAR (+ cloud mask) inputs that classify and train share: names, widgets, reading."""

    OPTICAL = "OPTICAL"
    OPTICAL_BANDS = "OPTICAL_BANDS"
    SAR = "SAR"
    SAR_BANDS = "SAR_BANDS"
    CLOUD_MASK = "CLOUD_MASK"

    def add_imagery_parameters(self, band_order: str) -> None:
        """``band_order`` describes the expected band order in the band parameters' labels."""
        self.addParameter(QgsProcessingParameterRasterLayer(self.OPTICAL, "Optical raster"))
        self.addParameter(QgsProcessingParameterBand(
            self.OPTICAL_BANDS, f"Optical bands, {band_order} (default: all)", parentLayerParameterName=self.OPTICAL,
            optional=True, allowMultiple=True))
        self.addParameter(QgsProcessingParameterRasterLayer(self.SAR, "SAR raster"))
        self.addParameter(QgsProcessingParameterBand(
            self.SAR_BANDS, f"SAR bands, {band_order} (default: all)", parentLayerParameterName=self.SAR,
            optional=True, allowMultiple=True))
        self.addParameter(QgsProcessingParameterRasterLayer(self.CLOUD_MASK, "Cloud mask (non-zero = cloud)", optional=True))

    def _bands(self, parameters, name, context):
        if not parameters.get(name):
            return None
        return [int(b) for b in self.parameterAsInts(parameters, name, context)] or None

    def check_imagery_bands(self, parameters, context) -> None:
        """OPTICAL_BANDS and SAR_BANDS name bands their layers have (layers from an earlier model step are skipped)."""
        for layer_param, bands_param in ((self.OPTICAL, self.OPTICAL_BANDS), (self.SAR, self.SAR_BANDS)):
            layer = self.parameterAsRasterLayer(parameters, layer_param, context)
            bands = self._bands(parameters, bands_param, context)
            if layer is not None and bands:
                check_band_numbers(bands, layer, bands_param)

    def imagery_inputs(self, parameters, context) -> dict:
        """File paths and 1-based band lists of the imagery, for the engine."""
        cloud = None
        if parameters.get(self.CLOUD_MASK):
            cloud = raster_path(self.parameterAsRasterLayer(parameters, self.CLOUD_MASK, context), "cloud mask")
        return {
            "optical": raster_path(self.parameterAsRasterLayer(parameters, self.OPTICAL, context), "optical"),
            "sar": raster_path(self.parameterAsRasterLayer(parameters, self.SAR, context), "SAR"),
            "cloud_mask": cloud,
            "optical_bands": self._bands(parameters, self.OPTICAL_BANDS, context),
            "sar_bands": self._bands(parameters, self.SAR_BANDS, context),
        }
