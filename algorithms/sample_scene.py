"""optsar:samplescene: the synthetic optical + SAR demo scene, loaded styled (try the plugin without data).

numpy, rasterio and GDAL only (no torch), so it runs in the QGIS process; the layers are
styled by post-processors when Processing loads them.
"""

from __future__ import annotations

from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsContrastEnhancement,
    QgsFillSymbol,
    QgsMultiBandColorRenderer,
    QgsPalettedRasterRenderer,
    QgsProcessingContext,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingOutputRasterLayer,
    QgsProcessingOutputVectorLayer,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsRasterMinMaxOrigin,
    QgsRendererCategory,
    QgsSingleBandGrayRenderer,
)
from qgis.PyQt.QtGui import QColor

from .base import OptsarAlgorithm

# Processing keeps only a C++ pointer to a post-processor: keep the Python objects alive.
_POST_PROCESSORS = []


class SceneStyle(QgsProcessingLayerPostProcessorInterface):
    """Styles one layer of the sample scene when it is loaded (``role`` picks the style)."""

    def __init__(self, role: str, truth_qml: str):
        super().__init__()
        self.role, self.truth_qml = role, truth_qml

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 (QGIS API name)
        if layer is None or not layer.isValid():
            return
        if self.role == "truth":
            layer.loadNamedStyle(self.truth_qml)
        elif self.role == "optical":  # true colour B4 B3 B2, 2-98 % stretch
            layer.setRenderer(QgsMultiBandColorRenderer(layer.dataProvider(), 3, 2, 1))
            layer.setContrastEnhancement(QgsContrastEnhancement.ContrastEnhancementAlgorithm.StretchToMinimumMaximum,
                                         QgsRasterMinMaxOrigin.Limits.CumulativeCut)
        elif self.role == "sar":  # VV in grey
            layer.setRenderer(QgsSingleBandGrayRenderer(layer.dataProvider(), 1))
            layer.setContrastEnhancement(QgsContrastEnhancement.ContrastEnhancementAlgorithm.StretchToMinimumMaximum,
                                         QgsRasterMinMaxOrigin.Limits.CumulativeCut)
        elif self.role == "cloud_mask":
            classes = [QgsPalettedRasterRenderer.Class(0, QColor(0, 0, 0, 0), "clear"),
                       QgsPalettedRasterRenderer.Class(1, QColor("#FFFFFF"), "cloud"),
                       QgsPalettedRasterRenderer.Class(2, QColor("#404040"), "cloud shadow")]
            layer.setRenderer(QgsPalettedRasterRenderer(layer.dataProvider(), 1, classes))
        elif self.role.startswith("reference"):
            layer.setRenderer(self._classes_renderer())
        layer.triggerRepaint()

    def _classes_renderer(self):
        from optsar_plugin.styles import read_qml_classes

        categories = []
        for c in read_qml_classes(self.truth_qml):
            symbol = QgsFillSymbol.createSimple({"color": c.color, "outline_color": "#202020", "outline_width": "0.2"})
            symbol.setOpacity(0.8)
            categories.append(QgsRendererCategory(c.name, symbol, c.name))
        return QgsCategorizedSymbolRenderer("class_name", categories)


class SampleSceneAlgorithm(OptsarAlgorithm):
    NAME = "samplescene"
    DISPLAY = "Generate a sample scene (synthetic optical + SAR)"
    GROUP = "Setup"
    GROUP_ID = "setup"
    HELP_ANCHOR = "optsarsamplescene"
    TAGS = ("demo", "sample", "synthetic", "tutorial", "try")

    OUTPUT_FOLDER = "OUTPUT_FOLDER"
    SIZE = "SIZE"
    SEED = "SEED"
    CLOUDS = "CLOUDS"
    OPTICAL = "OPTICAL"
    SAR = "SAR"
    CLOUD_MASK = "CLOUD_MASK"
    TRUTH = "TRUTH"
    REFERENCE_TRAIN = "REFERENCE_TRAIN"
    REFERENCE_TEST = "REFERENCE_TEST"

    HELP = (
        "Writes a small synthetic scene to try OptSAR Fusion without data of your own, and loads it styled: a "
        "Sentinel-2-like optical image (10 bands, true colour), a Sentinel-1-like SAR image (VV, VH in dB, on another "
        "grid and CRS), a cloud mask, the true class map (Dynamic World classes and colours) and reference polygons "
        "split into spatially separate training and test parts (field class_name).<br>"
        "Then: 'Train' with OPTICAL, SAR, CLOUD_MASK and REFERENCE_TRAIN (class field class_name, e.g. cloudlulc_net, "
        "a few epochs); 'Classify land cover' with the checkpoint; 'Assess classification accuracy' against "
        "REFERENCE_TEST.<br>"
        "<b>Output folder</b> (OUTPUT_FOLDER). <b>Size</b> (SIZE, pixels of 10 m; 256 trains in a few minutes on a "
        "CPU). <b>Seed</b> (SEED: the same seed gives the same scene). <b>Clouds</b> (CLOUDS: clouds, haze and "
        "shadows on the optical image).<br>"
        "Outputs (loaded, styled): OPTICAL, SAR, CLOUD_MASK (when CLOUDS), TRUTH, REFERENCE_TRAIN, REFERENCE_TEST."
    )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT_FOLDER, "Output folder"))
        self.addParameter(QgsProcessingParameterNumber(
            self.SIZE, "Size (pixels)", type=QgsProcessingParameterNumber.Type.Integer, defaultValue=256, minValue=64,
            maxValue=4096))
        self.addParameter(QgsProcessingParameterNumber(
            self.SEED, "Random seed", type=QgsProcessingParameterNumber.Type.Integer, defaultValue=0, minValue=0))
        self.addParameter(QgsProcessingParameterBoolean(self.CLOUDS, "Clouds on the optical image", defaultValue=True))
        for name, label in ((self.OPTICAL, "Optical (synthetic Sentinel-2)"), (self.SAR, "SAR (synthetic Sentinel-1)"),
                            (self.CLOUD_MASK, "Cloud mask"), (self.TRUTH, "True land cover")):
            self.addOutput(QgsProcessingOutputRasterLayer(name, label))
        self.addOutput(QgsProcessingOutputVectorLayer(self.REFERENCE_TRAIN, "Reference polygons (training)"))
        self.addOutput(QgsProcessingOutputVectorLayer(self.REFERENCE_TEST, "Reference polygons (test)"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from optsar_plugin.sample_scene import make_sample_scene

        folder = self.parameterAsString(parameters, self.OUTPUT_FOLDER, context)
        feedback.pushInfo(f"Writing the sample scene to {folder}")
        paths = self.run_engine(
            make_sample_scene, folder,
            size=self.parameterAsInt(parameters, self.SIZE, context),
            seed=self.parameterAsInt(parameters, self.SEED, context),
            clouds=self.parameterAsBoolean(parameters, self.CLOUDS, context),
        )
        roles = {self.OPTICAL: "optical", self.SAR: "sar", self.CLOUD_MASK: "cloud_mask", self.TRUTH: "truth",
                 self.REFERENCE_TRAIN: "reference_train", self.REFERENCE_TEST: "reference_test"}
        results = {self.OUTPUT_FOLDER: folder}
        for output, role in roles.items():
            path = paths.get(role)
            results[output] = path
            if path and context.project() is not None:
                self._load(context, path, role, paths["truth_style"])
        return results

    def _load(self, context, path, role, truth_qml):
        name = "sample " + role.replace("_", " ")
        details = QgsProcessingContext.LayerDetails(name, context.project(), name)
        context.addLayerToLoadOnCompletion(path, details)
        processor = SceneStyle(role, truth_qml)
        _POST_PROCESSORS.append(processor)
        context.layerToLoadOnCompletionDetails(path).setPostProcessor(processor)
