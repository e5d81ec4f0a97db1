"""optsar:stratifiedsample: stratified random sample points from a classification, to label and assess."""

from __future__ import annotations

from qgis.core import (
    QgsProcessing,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBand,
    QgsProcessingParameterEnum,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
)

from optsar_plugin.options import ALLOCATIONS  # torch-free

from .assess_accuracy import layer_classes
from .base import FeedbackAdapter, OptsarAlgorithm, raster_path


class StratifiedSampleAlgorithm(OptsarAlgorithm):
    NAME = "stratifiedsample"
    DISPLAY = "Stratified random sample"
    GROUP = "Accuracy assessment"
    GROUP_ID = "accuracy"
    HELP_ANCHOR = "optsarstratifiedsample"
    TAGS = ("accuracy", "sampling", "stratified", "validation", "olofsson", "reference data")

    CLASSIFICATION = "CLASSIFICATION"
    BAND = "BAND"
    ALLOCATION = "ALLOCATION"
    TOTAL = "TOTAL"
    TARGET_SE = "TARGET_SE"
    EXPECTED_UA = "EXPECTED_UA"
    MIN_PER_CLASS = "MIN_PER_CLASS"
    SEED = "SEED"
    IGNORE_VALUES = "IGNORE_VALUES"
    OUTPUT = "OUTPUT"
    SAMPLE_SIZE = "SAMPLE_SIZE"
    ANTICIPATED_SE = "ANTICIPATED_SE"

    ALLOCATIONS = ALLOCATIONS  # the engine's names, in the order of ALLOCATION_LABELS
    ALLOCATION_LABELS = (
        "Proportional to mapped area",
        "Equal per class",
        "Olofsson et al. (2014): minimum for rare classes, rest proportional",
    )

    HELP = (
        "Draws a stratified random sample of pixels from a classification (the map classes are the strata) and "
        "writes it as points at the pixel centres, with the mapped class code (map_code) and name (map_class) and an "
        "empty 'reference' field to fill in from imagery or field visits. Labelled, the layer goes into "
        "'Assess classification accuracy' (class field 'reference', names or codes), whose area-adjusted "
        "estimators (Olofsson et al. 2014) are exactly those of this design.<br><br>"
        "<b>Classification</b> (CLASSIFICATION) and <b>Band</b> (BAND): the map to sample; nodata is never sampled.<br>"
        "<b>Allocation</b> (ALLOCATION): proportional to mapped area; equal per class; or Olofsson et al. (2014, "
        "section 5.1.1): classes whose proportional share is below the minimum get the minimum, the rest of the "
        "total is shared proportionally.<br>"
        "<b>Sample size</b> (TOTAL): number of points; 0 computes it from the target standard error of overall "
        "accuracy with Cochran's formula as in Olofsson et al. (2014, eq. 13): n = (Σ W_i S_i / S(Ô))², "
        "S_i = sqrt(U_i (1 - U_i)).<br>"
        "<b>Target SE</b> (TARGET_SE, default 0.01): the standard error of overall accuracy aimed at when TOTAL is 0.<br>"
        "<b>Expected user's accuracy</b> (EXPECTED_UA, default 0.8): one value for all classes, or code:value pairs "
        "such as '1:0.7, 2:0.6, 0.9' (a bare number sets the others).<br>"
        "<b>Minimum per class</b> (MIN_PER_CLASS, default 50; the paper suggests 50-100 for rare classes). A class "
        "with fewer pixels is taken whole.<br>"
        "<b>Seed</b> (SEED): the same seed on the same map gives the same sample.<br>"
        "<b>Ignore values</b> (IGNORE_VALUES, optional): class codes never sampled.<br>"
        "<b>Output</b> (OUTPUT): a GeoPackage point layer (GeoJSON or FlatGeobuf also accepted); its metadata records "
        "the strata. Outputs SAMPLE_SIZE and ANTICIPATED_SE (the standard error of overall accuracy the design should "
        "give if the expected user's accuracies hold)."
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
            QgsProcessingParameterEnum(self.ALLOCATION, "Allocation", options=list(self.ALLOCATION_LABELS), defaultValue=2)
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.TOTAL, "Sample size (0 = from the target SE)", type=QgsProcessingParameterNumber.Type.Integer,
                defaultValue=0, minValue=0,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.TARGET_SE, "Target standard error of overall accuracy", type=QgsProcessingParameterNumber.Type.Double,
                defaultValue=0.01, minValue=0.0001, maxValue=0.5,
            )
        )
        self.addParameter(
            QgsProcessingParameterString(self.EXPECTED_UA, "Expected user's accuracy (value or code:value pairs)", defaultValue="0.8")
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.MIN_PER_CLASS, "Minimum sample size per class", type=QgsProcessingParameterNumber.Type.Integer,
                defaultValue=50, minValue=0,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(self.SEED, "Random seed", type=QgsProcessingParameterNumber.Type.Integer, defaultValue=0, minValue=0)
        )
        self.addParameter(
            QgsProcessingParameterString(self.IGNORE_VALUES, "Class codes never sampled (comma-separated)", optional=True)
        )
        self.addParameter(
            QgsProcessingParameterVectorDestination(
                self.OUTPUT, "Sample points", type=QgsProcessing.SourceType.TypeVectorPoint
            )
        )
        self.addOutput(QgsProcessingOutputNumber(self.SAMPLE_SIZE, "Sample size"))
        self.addOutput(QgsProcessingOutputNumber(self.ANTICIPATED_SE, "Anticipated SE of overall accuracy"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from optsar_plugin.accuracy.sampling import stratified_sample

        layer = self.parameterAsRasterLayer(parameters, self.CLASSIFICATION, context)
        classification = raster_path(layer, "classification")
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        result = self.run_engine(
            stratified_sample,
            classification,
            output,
            band=self.parameterAsInt(parameters, self.BAND, context),
            allocation=self.ALLOCATIONS[self.parameterAsEnum(parameters, self.ALLOCATION, context)],
            total=self.parameterAsInt(parameters, self.TOTAL, context),
            target_se=self.parameterAsDouble(parameters, self.TARGET_SE, context),
            expected_ua=self.parameterAsString(parameters, self.EXPECTED_UA, context),
            min_per_class=self.parameterAsInt(parameters, self.MIN_PER_CLASS, context),
            seed=self.parameterAsInt(parameters, self.SEED, context),
            ignore_values=self.parameterAsString(parameters, self.IGNORE_VALUES, context) or None,
            classes=layer_classes(layer),
            feedback=FeedbackAdapter(feedback),
        )
        feedback.pushInfo(result.table())
        return {self.OUTPUT: result.path, self.SAMPLE_SIZE: result.total, self.ANTICIPATED_SE: result.anticipated_oa_se}
