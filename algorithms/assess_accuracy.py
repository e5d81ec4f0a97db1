"""optsar:assessaccuracy: a classification against reference polygons or points (thin skin over the engine)."""

from __future__ import annotations

import os

from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBand,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from .base import FeedbackAdapter, OptsarAlgorithm, raster_path


def layer_classes(layer):
    """The classes of a raster layer's paletted renderer (a :class:`~optsar_plugin.classes.ClassScheme`), or None."""
    from optsar_plugin.classes import ClassScheme, LandCoverClass

    renderer = layer.renderer() if layer is not None else None
    if renderer is None or renderer.type() != "paletted":
        return None
    out = []
    for c in renderer.classes():
        value = float(c.value)
        if value != int(value) or not 0 <= int(value) <= 254:
            continue
        out.append(LandCoverClass(int(value), c.label or str(int(value)), c.color.name().upper()))
    return ClassScheme(out, source="the layer's style") if out else None


def file_has_classes(path: str) -> bool:
    """Whether the raster file names its classes itself (a .qml beside it, or GDAL category names).

    Those take precedence over the layer's renderer: a layer loaded by Processing gets QGIS's default
    paletted renderer built from the GDAL colour table, which lists all 256 entries, named or not.
    """
    from optsar_plugin.styles import qml_path_for, read_raster_classes

    return os.path.isfile(qml_path_for(path)) or read_raster_classes(path) is not None


class AssessAccuracyAlgorithm(OptsarAlgorithm):
    NAME = "assessaccuracy"
    DISPLAY = "Assess classification accuracy"
    GROUP = "Accuracy assessment"
    GROUP_ID = "accuracy"
    HELP_ANCHOR = "optsarassessaccuracy"
    TAGS = ("accuracy", "confusion matrix", "error matrix", "kappa", "iou", "f1", "olofsson", "area estimation", "validation")

    CLASSIFICATION = "CLASSIFICATION"
    BAND = "BAND"
    REFERENCE = "REFERENCE"
    CLASS_FIELD = "CLASS_FIELD"
    ALL_TOUCHED = "ALL_TOUCHED"
    IGNORE_VALUES = "IGNORE_VALUES"
    CONFIDENCE = "CONFIDENCE"
    CHECKPOINT = "CHECKPOINT"
    OUTPUT_REPORT = "OUTPUT_REPORT"
    OUTPUT_MATRIX = "OUTPUT_MATRIX"
    OUTPUT_METRICS = "OUTPUT_METRICS"
    OA = "OA"
    KAPPA = "KAPPA"
    MIOU = "MIOU"
    MACRO_F1 = "MACRO_F1"

    HELP = (
        "Assesses a classified raster (ours or anyone's) against reference polygons or points, with the numbers "
        "accuracy-assessment good practice asks for.<br><br>"
        "<b>Classification</b> (CLASSIFICATION): the classified raster; <b>Band</b> (BAND, default 1).<br>"
        "<b>Reference</b> (REFERENCE): polygons or points with a class attribute. Polygons are rasterised on the "
        "classification's grid (reprojected first when the CRS differs); each point is the pixel it falls in. "
        "Invalid geometries are repaired (or skipped) and reported by feature id; features outside the raster are "
        "counted and reported; pixels where overlapping polygons of different classes disagree are excluded and "
        "counted; nodata pixels are excluded.<br>"
        "<b>Class field</b> (CLASS_FIELD): integer class codes, or class names matched (ignoring case, spaces and "
        "underscores) to the classification's classes, taken from the checkpoint (if given), the layer's paletted "
        "style, the .qml beside the raster or its GDAL category names. An unknown name is an error listing the known "
        "names. Class 0 is an ordinary class.<br>"
        "<b>All touched</b> (ALL_TOUCHED): burn every pixel a polygon touches instead of pixels whose centre is inside.<br>"
        "<b>Ignore values</b> (IGNORE_VALUES, optional): comma-separated class codes left out of map and reference "
        "(e.g. clouds, or 0 where a map uses 0 for 'unclassified' without declaring it nodata).<br>"
        "<b>Confidence</b> (CONFIDENCE, default 0.95): level of the confidence intervals.<br>"
        "<b>Checkpoint</b> (CHECKPOINT, optional): an OptSAR Fusion checkpoint whose metadata names the classes.<br><br>"
        "Outputs: an HTML report (OUTPUT_REPORT: inputs, heatmap of the matrix, per-class table, area table, "
        "warnings), a CSV (OUTPUT_MATRIX: the matrix in pixels and area, per-class and area tables) and a JSON "
        "(OUTPUT_METRICS) with the same numbers; numbers OA, KAPPA, MIOU and MACRO_F1 for graphical models "
        "(empty when undefined).<br>"
        "Statistics: confusion matrix (pixels and area), overall accuracy, Cohen's kappa with its delta-method "
        "variance, producer's and user's accuracy, F1, IoU, mIoU, macro-F1; and the area-adjusted estimators of "
        "Olofsson et al. (2014) with the mapped class proportions of the whole map as weights: overall, user's and "
        "producer's accuracies with standard errors and confidence intervals, and the estimated area of each class "
        "with its interval. These assume the reference units were a random sample within each mapped class - pixels "
        "inside hand-drawn polygons are not; use 'Stratified random sample' to make such a sample."
    )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.CLASSIFICATION, "Classification"))
        self.addParameter(
            QgsProcessingParameterBand(
                self.BAND, "Band", defaultValue=1, parentLayerParameterName=self.CLASSIFICATION,
                optional=True,  # QGIS 3.22 rejects a missing non-optional band even with a default
            )
        )
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                self.REFERENCE,
                "Reference polygons or points",
                [QgsProcessing.SourceType.TypeVectorPolygon, QgsProcessing.SourceType.TypeVectorPoint],
            )
        )
        self.addParameter(
            QgsProcessingParameterField(
                self.CLASS_FIELD,
                "Reference class field (codes or names)",
                parentLayerParameterName=self.REFERENCE,
                type=QgsProcessingParameterField.DataType.Any,
            )
        )
        self.addParameter(QgsProcessingParameterBoolean(self.ALL_TOUCHED, "Burn all touched pixels", defaultValue=False))
        self.addParameter(
            QgsProcessingParameterString(self.IGNORE_VALUES, "Class codes to ignore (comma-separated)", optional=True)
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.CONFIDENCE, "Confidence level", type=QgsProcessingParameterNumber.Type.Double,
                defaultValue=0.95, minValue=0.5, maxValue=0.999,
            )
        )
        self.addParameter(
            QgsProcessingParameterFile(
                self.CHECKPOINT, "Checkpoint naming the classes", optional=True,
                fileFilter="OptSAR Fusion checkpoints (*.safetensors);;All files (*.*)",
            )
        )
        self.addParameter(QgsProcessingParameterFileDestination(self.OUTPUT_REPORT, "Accuracy report", "HTML files (*.html)"))
        self.addParameter(
            QgsProcessingParameterFileDestination(self.OUTPUT_MATRIX, "Confusion matrix and tables", "CSV files (*.csv)")
        )
        self.addParameter(QgsProcessingParameterFileDestination(self.OUTPUT_METRICS, "Metrics", "JSON files (*.json)"))
        self.addOutput(QgsProcessingOutputNumber(self.OA, "Overall accuracy"))
        self.addOutput(QgsProcessingOutputNumber(self.KAPPA, "Cohen's kappa"))
        self.addOutput(QgsProcessingOutputNumber(self.MIOU, "Mean IoU"))
        self.addOutput(QgsProcessingOutputNumber(self.MACRO_F1, "Macro F1"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from optsar_plugin.accuracy.assess import assess_accuracy

        layer = self.parameterAsRasterLayer(parameters, self.CLASSIFICATION, context)
        classification = raster_path(layer, "classification")
        band = self.parameterAsInt(parameters, self.BAND, context)
        source = self.parameterAsSource(parameters, self.REFERENCE, context)
        if source is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, self.REFERENCE))
        # A file path OGR can read: the layer's own file when it is one, else a temporary GeoPackage
        # (memory layers, selections, subsets, database layers).
        ref_path, ref_layer = self.parameterAsCompatibleSourceLayerPathAndLayerName(
            parameters, self.REFERENCE, context, ["gpkg", "shp", "geojson"], "gpkg", feedback
        )
        fields = self.parameterAsFields(parameters, self.CLASS_FIELD, context)
        if not fields:
            raise QgsProcessingException("Choose the reference field that holds the classes (CLASS_FIELD).")
        checkpoint = self.parameterAsFile(parameters, self.CHECKPOINT, context) or None
        result = self.run_engine(
            assess_accuracy,
            classification,
            ref_path,
            fields[0],
            band=band,
            reference_layer=ref_layer or None,
            all_touched=self.parameterAsBoolean(parameters, self.ALL_TOUCHED, context),
            ignore_values=self.parameterAsString(parameters, self.IGNORE_VALUES, context) or None,
            confidence=self.parameterAsDouble(parameters, self.CONFIDENCE, context),
            checkpoint=checkpoint,
            classes=None if checkpoint or file_has_classes(classification) else layer_classes(layer),
            output_report=self.parameterAsFileOutput(parameters, self.OUTPUT_REPORT, context),
            output_matrix=self.parameterAsFileOutput(parameters, self.OUTPUT_MATRIX, context),
            output_metrics=self.parameterAsFileOutput(parameters, self.OUTPUT_METRICS, context),
            feedback=FeedbackAdapter(feedback),
        )
        s = result.metrics["summary"]
        feedback.pushInfo(
            f"Overall accuracy {_fmt(s['overall_accuracy'])}, kappa {_fmt(s['kappa'])}, "
            f"mIoU {_fmt(s['miou'])}, macro F1 {_fmt(s['macro_f1'])} over {s['n_pixels']} reference pixels."
        )
        return {
            self.OUTPUT_REPORT: result.outputs.get("report"),
            self.OUTPUT_MATRIX: result.outputs.get("matrix"),
            self.OUTPUT_METRICS: result.outputs.get("metrics"),
            self.OA: s["overall_accuracy"],
            self.KAPPA: s["kappa"],
            self.MIOU: s["miou"],
            self.MACRO_F1: s["macro_f1"],
        }


def _fmt(v):
    return "n/a" if v is None else f"{v:.4f}"
