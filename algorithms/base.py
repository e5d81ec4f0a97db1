"""What every OptSAR Fusion algorithm shares: group, icon, help link, engine calls.

Algorithms stay thin: parameters in, one engine call, outputs out.  Algorithms that need
PyTorch call the engine through the worker process (:meth:`OptsarAlgorithm.run_worker`,
``worker_client``); numpy/GDAL-only ones call it in process (:meth:`OptsarAlgorithm.run_engine`).
Either way engine errors become ``QgsProcessingException`` with the engine's one-line message,
so ``qgis_process`` users see one line and a non-zero exit code.
"""

from __future__ import annotations

import os
from typing import Callable

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingParameterBand,
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

    @staticmethod
    def run_engine(call: Callable, *args, **kwargs):
        """Run a numpy/GDAL-only engine function in process; its user errors become ``QgsProcessingException``."""
        from optsar_plugin.errors import OptsarError

        try:
            return call(*args, **kwargs)
        except OptsarError as exc:
            raise QgsProcessingException(str(exc)) from None

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
