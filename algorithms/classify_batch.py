"""optsar:classifybatch: many optical + SAR scenes classified on a Dask cluster into maps, a manifest and a mosaic.

Everything happens in :func:`optsar_plugin.batch.classify_batch`, run in the engine worker
process (``python -m optsar_plugin worker``, function ``batch``): the worker is the Dask
client, and the scenes run in Dask worker processes (a LocalCluster by default, or the
cluster at SCHEDULER).  Progress counts scenes; cancel terminates the engine worker, which
stops the cluster work and removes what it was writing, so only complete maps remain.
"""

from __future__ import annotations

import os

from qgis.core import (
    QgsProcessingOutputFile,
    QgsProcessingOutputNumber,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterString,
)

from optsar_plugin.options import CLOUD_MODES, DEFAULT_BATCH, DEFAULT_TILE, DEVICES, MODELS, PRECISIONS  # torch-free

from .base import OptsarAlgorithm
from .classify import ClassStylePostProcessor, keep_post_processor


class ClassifyBatchAlgorithm(OptsarAlgorithm):
    NAME = "classifybatch"
    DISPLAY = "Classify many scenes (batch, Dask)"
    GROUP = "Land cover"
    GROUP_ID = "landcover"
    HELP_ANCHOR = "optsarclassifybatch"
    TAGS = ("batch", "mosaic", "dask", "cluster", "region", "classification", "sentinel-1", "sentinel-2")

    SCENES = "SCENES"
    CHECKPOINT = "CHECKPOINT"
    MODEL = "MODEL"
    OPTICAL_BANDS = "OPTICAL_BANDS"
    SAR_BANDS = "SAR_BANDS"
    SCHEDULER = "SCHEDULER"
    WORKERS = "WORKERS"
    DEVICE = "DEVICE"
    TILE_SIZE = "TILE_SIZE"
    OVERLAP = "OVERLAP"
    BATCH_SIZE = "BATCH_SIZE"
    PRECISION = "PRECISION"
    CLOUD_MODE = "CLOUD_MODE"
    OUTPUT_FOLDER = "OUTPUT_FOLDER"
    OUTPUT_MOSAIC = "OUTPUT_MOSAIC"
    OUTPUT_MANIFEST = "OUTPUT_MANIFEST"
    OUTPUT_AREAS = "OUTPUT_AREAS"
    DONE, SKIPPED, FAILED = "DONE", "SKIPPED", "FAILED"

    HELP = (
        "Classifies every scene of a table with one checkpoint, on a Dask cluster: by default a local cluster of "
        "worker processes on this computer (one per GPU; without a GPU a quarter of the cores), or an existing "
        "cluster of GPU machines.<br><br>"
        "<b>Scenes</b> (SCENES): a CSV (or any table GDAL reads: GeoPackage, spreadsheet) with the columns "
        "<i>optical</i> and <i>sar</i> (raster paths) and optionally <i>cloud_mask</i> and <i>name</i>; relative paths "
        "are relative to the table. Each scene's map is written to OUTPUT_FOLDER/&lt;name&gt;.tif (default name: the "
        "optical file's), styled exactly as 'Classify land cover' writes it.<br>"
        "<b>Checkpoint</b> (CHECKPOINT), <b>Model</b> (MODEL, optional), <b>Optical bands</b> / <b>SAR bands</b> "
        "(OPTICAL_BANDS, SAR_BANDS: e.g. 2,3,4,8; empty = all) and the advanced <b>Device</b>, <b>Tile size</b>, "
        "<b>Overlap</b>, <b>Batch size</b>, <b>Precision</b> and <b>Cloud mode</b> apply to every scene, as in "
        "'Classify land cover'.<br>"
        "<b>Dask scheduler</b> (SCHEDULER, optional): e.g. tcp://host:8786; its workers need the engine installed "
        "(pip install of the plugin folder). <b>Workers</b> (WORKERS, 0 = automatic): local worker processes.<br><br>"
        "Outputs: the maps; <b>manifest</b> (OUTPUT_MANIFEST, OUTPUT_FOLDER/manifest.jsonl): one line per scene with "
        "its status (done, skipped, failed), time, device, valid pixels, class areas and the error of a failed scene; "
        "<b>class areas</b> (OUTPUT_AREAS, OUTPUT_FOLDER/class_areas.csv) per scene and in total; optional "
        "<b>mosaic</b> (OUTPUT_MOSAIC: .vrt, or .tif for a Cloud Optimized GeoTIFF) that opens as one styled layer. "
        "DONE, SKIPPED and FAILED count the scenes.<br>"
        "One bad scene never stops the others. Running again skips scenes whose map was made from the same "
        "checkpoint, inputs and settings, and retries the failed ones. Cancel stops the cluster's work and leaves "
        "only complete maps."
    )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterFile(
            self.SCENES, "Scenes table (columns optical, sar, optional cloud_mask and name)",
            behavior=QgsProcessingParameterFile.Behavior.File,
            fileFilter="Tables (*.csv *.txt *.gpkg *.xlsx *.ods *.dbf);;All files (*.*)"))
        self.addParameter(QgsProcessingParameterFile(
            self.CHECKPOINT, "Checkpoint", behavior=QgsProcessingParameterFile.Behavior.File,
            fileFilter="OptSAR Fusion checkpoints (*.safetensors);;All files (*.*)"))
        self.addParameter(QgsProcessingParameterEnum(
            self.MODEL, "Model (must match the checkpoint; empty = the checkpoint's)", options=list(MODELS),
            defaultValue=None, optional=True, usesStaticStrings=True))
        self.addParameter(QgsProcessingParameterString(
            self.OPTICAL_BANDS, "Optical bands in training order, e.g. 2,3,4,8 (empty = all)", optional=True))
        self.addParameter(QgsProcessingParameterString(
            self.SAR_BANDS, "SAR bands in training order, e.g. 1,2 (empty = all)", optional=True))
        self.addParameter(QgsProcessingParameterString(
            self.SCHEDULER, "Dask scheduler address (empty = a local cluster on this computer)", optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            self.WORKERS, "Local worker processes (0 = one per GPU, else a quarter of the cores)",
            type=QgsProcessingParameterNumber.Type.Integer, defaultValue=0, minValue=0, maxValue=256))
        for p in self._advanced():
            p.setFlags(p.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
            self.addParameter(p)
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT_FOLDER, "Output folder"))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT_MOSAIC, "Mosaic of all maps (.vrt, or .tif for a COG)", optional=True, createByDefault=False,
            defaultValue=None))
        self.addOutput(QgsProcessingOutputFile(self.OUTPUT_MANIFEST, "Manifest (one JSON line per scene)"))
        self.addOutput(QgsProcessingOutputFile(self.OUTPUT_AREAS, "Class areas per scene and in total (CSV)"))
        for name, label in ((self.DONE, "Scenes classified"), (self.SKIPPED, "Scenes already current"),
                            (self.FAILED, "Scenes failed")):
            self.addOutput(QgsProcessingOutputNumber(name, label))

    def _advanced(self):
        integer = QgsProcessingParameterNumber.Type.Integer
        return [
            QgsProcessingParameterEnum(self.DEVICE, "Device", options=list(DEVICES), defaultValue="auto",
                                       usesStaticStrings=True),
            QgsProcessingParameterNumber(self.TILE_SIZE, "Tile size (px, multiple of 32)", type=integer,
                                         defaultValue=DEFAULT_TILE, minValue=64, maxValue=4096),
            QgsProcessingParameterNumber(self.OVERLAP, "Overlap between tiles (px; default min(64, tile/4))", type=integer,
                                         defaultValue=None, minValue=0, maxValue=2047, optional=True),
            QgsProcessingParameterNumber(self.BATCH_SIZE, "Batch size (tiles per forward pass)", type=integer,
                                         defaultValue=DEFAULT_BATCH, minValue=1, maxValue=256),
            QgsProcessingParameterEnum(self.PRECISION, "Precision (bf16/fp16 on CUDA only)", options=list(PRECISIONS),
                                       defaultValue="fp32", usesStaticStrings=True),
            QgsProcessingParameterEnum(self.CLOUD_MODE, "Optical data under clouds", options=list(CLOUD_MODES),
                                       defaultValue="auto", usesStaticStrings=True),
        ]

    def _options(self, parameters, context) -> dict:
        def text(name):
            return (self.parameterAsString(parameters, name, context) or "").strip()

        overlap = parameters.get(self.OVERLAP)
        return {
            "optical_bands": text(self.OPTICAL_BANDS) or None,
            "sar_bands": text(self.SAR_BANDS) or None,
            "model": self.parameterAsEnumString(parameters, self.MODEL, context) if parameters.get(self.MODEL) else None,
            "device": self.parameterAsEnumString(parameters, self.DEVICE, context) or "auto",
            "tile_size": self.parameterAsInt(parameters, self.TILE_SIZE, context),
            "overlap": None if overlap in (None, "") else self.parameterAsInt(parameters, self.OVERLAP, context),
            "batch_size": self.parameterAsInt(parameters, self.BATCH_SIZE, context),
            "precision": self.parameterAsEnumString(parameters, self.PRECISION, context) or "fp32",
            "cloud_mode": self.parameterAsEnumString(parameters, self.CLOUD_MODE, context) or "auto",
        }

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        folder = self.parameterAsString(parameters, self.OUTPUT_FOLDER, context)
        mosaic = self.parameterAsOutputLayer(parameters, self.OUTPUT_MOSAIC, context) or None
        if mosaic and not mosaic.lower().endswith((".vrt", ".tif", ".tiff")):
            mosaic = os.path.splitext(mosaic)[0] + ".vrt"
        kwargs = {
            "scenes": self.parameterAsFile(parameters, self.SCENES, context),
            "checkpoint": self.parameterAsFile(parameters, self.CHECKPOINT, context),
            "output_dir": folder,
            "scheduler": (self.parameterAsString(parameters, self.SCHEDULER, context) or "").strip() or None,
            "workers": self.parameterAsInt(parameters, self.WORKERS, context) or None,
            "mosaic": mosaic,
            "options": self._options(parameters, context),
        }
        result = self.run_worker("batch", kwargs, feedback)
        feedback.pushInfo(f"{result['done']} scene(s) classified, {result['skipped']} already current, "
                          f"{result['failed']} failed in {result['seconds']:.0f} s; manifest: {result['manifest']}")
        if result.get("mosaic") and context.willLoadLayerOnCompletion(mosaic):
            keep_post_processor(context, mosaic, ClassStylePostProcessor(result["mosaic_qml"]))
        return {
            self.OUTPUT_FOLDER: folder,
            self.OUTPUT_MOSAIC: result.get("mosaic"),
            self.OUTPUT_MANIFEST: result["manifest"],
            self.OUTPUT_AREAS: result["area_table"],
            self.DONE: result["done"],
            self.SKIPPED: result["skipped"],
            self.FAILED: result["failed"],
        }
