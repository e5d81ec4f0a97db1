"""optsar:classify: land cover from an optical + SAR pair with a trained checkpoint (thin skin over the engine).

Everything happens in :func:`optsar_plugin.inference.classify`, run in the engine worker
process (torch never loads in QGIS); this file turns parameters into its arguments, checks
early what can be known before a run (:meth:`ClassifyAlgorithm.checkParameterValues`: the
engine's torch-free ``check_fit`` on the checkpoint's JSON header), and styles the loaded
outputs with layer post-processors.  No GUI calls: it runs the same from the Toolbox, the
graphical modeler and ``qgis_process``.
"""

from __future__ import annotations

import os

from qgis.core import (
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
)

from optsar_plugin.options import DEFAULT_BATCH, DEFAULT_TILE, DEVICES, MODELS, PRECISIONS, TTA_MODES  # torch-free

from .base import ImageryInputs, OptsarAlgorithm, check_band_numbers

PARAMETER_LABELS = {"model": "MODEL", "optical_bands": "OPTICAL_BANDS", "sar_bands": "SAR_BANDS"}

# Processing keeps only a C++ pointer to a post-processor; the Python object must stay
# referenced until the layer has been loaded and styled, or it is garbage-collected.
_POST_PROCESSORS = {}


class ClassStylePostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Applies an output's ``.qml`` (paletted classes, or the confidence colour ramp) to the layer Processing loads."""

    def __init__(self, qml_path):
        super().__init__()
        self.qml_path = qml_path

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 (QGIS API name)
        if layer is None or not self.qml_path or not os.path.isfile(self.qml_path):
            return
        message, ok = layer.loadNamedStyle(self.qml_path)
        if not ok and feedback is not None:
            feedback.reportError(f"Could not apply the class style {self.qml_path}: {message}", fatalError=False)
        layer.triggerRepaint()


def keep_post_processor(context, path, processor) -> None:
    """Attach ``processor`` to the output layer ``path`` loads as, keeping it referenced (see above)."""
    _POST_PROCESSORS[path] = processor
    context.layerToLoadOnCompletionDetails(path).setPostProcessor(processor)


class ClassifyAlgorithm(ImageryInputs, OptsarAlgorithm):
    NAME = "classify"
    DISPLAY = "Classify land cover (optical + SAR)"
    GROUP = "Land cover"
    GROUP_ID = "landcover"
    HELP_ANCHOR = "optsarclassify"
    TAGS = ("classification", "segmentation", "inference", "sentinel-1", "sentinel-2", "deep learning", "mosfnet",
            "specsar-former", "cloudlulc-net")

    MODEL = "MODEL"
    CHECKPOINT = "CHECKPOINT"
    EXTENT = "EXTENT"
    DEVICE = "DEVICE"
    TILE_SIZE = "TILE_SIZE"
    OVERLAP = "OVERLAP"
    BATCH_SIZE = "BATCH_SIZE"
    PRECISION = "PRECISION"
    TTA = "TTA"
    OUTPUT = "OUTPUT"
    OUTPUT_CONFIDENCE = "OUTPUT_CONFIDENCE"
    OUTPUT_PROBABILITIES = "OUTPUT_PROBABILITIES"

    HELP = (
        "Maps land cover from an optical image and a SAR image with a trained OptSAR Fusion network "
        "(MOSFNet, SpecSAR-Former or CloudLULC-Net). The scene is processed in overlapping windows whose class "
        "probabilities are blended with weights that fall towards the window edges, which softens tile seams "
        "without removing them all (on a real Sentinel-1/2 chip, tiled and single-pass maps agreed on 97-99 % of "
        "the pixels); memory grows with the scene's width, never with its height.<br><br>"
        "<b>Optical raster</b> (OPTICAL): e.g. Sentinel-2. Its pixel grid and CRS are the output's grid.<br>"
        "<b>Optical bands</b> (OPTICAL_BANDS, optional): the bands to use, <i>in the order the checkpoint was trained "
        "with</i> (default: all bands in file order). Their number must match the checkpoint.<br>"
        "<b>SAR raster</b> (SAR): e.g. Sentinel-1 VV/VH. It may have another CRS, resolution or extent: it is "
        "reprojected bilinearly onto the optical grid window by window. It must overlap the optical raster and both "
        "must have a CRS.<br>"
        "<b>SAR bands</b> (SAR_BANDS, optional): as for the optical bands.<br>"
        "<b>Cloud mask</b> (CLOUD_MASK, optional): a raster (any grid; nearest neighbour) where non-zero means cloud "
        "or shadow. Cloudy pixels keep their prediction (the SAR fills in). CloudLULC-Net sees the optical data as is "
        "(it is trained on cloudy scenes); for MOSFNet and SpecSAR-Former the cloudy optical pixels are set to the "
        "training median so the network relies on the SAR there. The mask and the cloudy share are recorded in the "
        "output's metadata.<br>"
        "<b>Model</b> (MODEL, optional): the network the checkpoint must hold; left empty, the checkpoint's network "
        "is used.<br>"
        "<b>Checkpoint</b> (CHECKPOINT): a .safetensors file written by 'Train'; it holds the weights, band names, "
        "normalisation and classes.<br>"
        "<b>Extent</b> (EXTENT, optional): classify only this area (snapped outwards to optical pixels).<br>"
        "<b>Advanced</b>: <b>Device</b> (DEVICE: auto uses a CUDA GPU when there is one and warns when it falls back "
        "to the CPU; cuda; cpu). <b>Tile size</b> (TILE_SIZE, default 512 px): window edge, a multiple of 32 (at "
        "least 64); larger tiles give the network more context but need more memory. <b>Overlap</b> (OVERLAP, "
        "optional, default the smaller of 64 px and a quarter of the tile): pixels shared by neighbouring windows, "
        "less than half the tile. <b>Batch size</b> (BATCH_SIZE, default 4): windows per forward pass. <b>Precision</b> "
        "(PRECISION: fp32, or bf16/fp16 mixed precision on a CUDA GPU; on the CPU always fp32). If the GPU runs out "
        "of memory the batch and then the tile are halved automatically, with a warning. <b>Test-time augmentation</b> "
        "(TTA: off; flips = 4 passes; d4 = 8 passes, flips and quarter turns): the network also sees flipped and "
        "rotated copies of every window and the probabilities are averaged - slower by the number of passes; "
        "what it changes is measured in the README.<br><br>"
        "Outputs: <b>Land cover</b> (OUTPUT): a tiled, compressed 8-bit GeoTIFF with the checkpoint's class codes "
        "(class 0 is an ordinary class; 255 = nodata, where all optical bands or all SAR bands are nodata), a colour "
        "table and class names, metadata (model, checkpoint hash, date) and a .qml style beside it. "
        "<b>Confidence</b> (OUTPUT_CONFIDENCE, optional): the highest class probability per pixel. "
        "<b>Class probabilities</b> (OUTPUT_PROBABILITIES, optional): one band per class, named after it.<br>"
        "A failed or cancelled run leaves no partial output."
    )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.add_imagery_parameters("in training order")
        self.addParameter(
            QgsProcessingParameterEnum(
                self.MODEL, "Model (must match the checkpoint; empty = the checkpoint's)", options=list(MODELS),
                allowMultiple=False, defaultValue=None, optional=True, usesStaticStrings=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterFile(
                self.CHECKPOINT, "Checkpoint", behavior=QgsProcessingParameterFile.Behavior.File,
                fileFilter="OptSAR Fusion checkpoints (*.safetensors);;All files (*.*)",
            )
        )
        self.addParameter(QgsProcessingParameterExtent(self.EXTENT, "Extent (default: the whole optical raster)", optional=True))
        advanced = [
            QgsProcessingParameterEnum(
                self.DEVICE, "Device", options=list(DEVICES), defaultValue="auto", usesStaticStrings=True,
            ),
            QgsProcessingParameterNumber(
                self.TILE_SIZE, "Tile size (px, multiple of 32)", type=QgsProcessingParameterNumber.Type.Integer,
                defaultValue=DEFAULT_TILE, minValue=64, maxValue=4096,
            ),
            QgsProcessingParameterNumber(
                self.OVERLAP, "Overlap between tiles (px, < tile/2; default min(64, tile/4))",
                type=QgsProcessingParameterNumber.Type.Integer, defaultValue=None, minValue=0, maxValue=2047,
                optional=True,
            ),
            QgsProcessingParameterNumber(
                self.BATCH_SIZE, "Batch size (tiles per forward pass)", type=QgsProcessingParameterNumber.Type.Integer,
                defaultValue=DEFAULT_BATCH, minValue=1, maxValue=256,
            ),
            QgsProcessingParameterEnum(
                self.PRECISION, "Precision (bf16/fp16 on CUDA only)", options=list(PRECISIONS), defaultValue="fp32",
                usesStaticStrings=True,
            ),
            QgsProcessingParameterEnum(
                self.TTA, "Test-time augmentation (flips: 4 passes, d4: 8 passes)", options=list(TTA_MODES),
                defaultValue="off", usesStaticStrings=True,
            ),
        ]
        for p in advanced:
            p.setFlags(p.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
            self.addParameter(p)
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "Land cover"))
        self.addParameter(
            QgsProcessingParameterRasterDestination(
                self.OUTPUT_CONFIDENCE, "Confidence (max class probability)", optional=True, createByDefault=False,
            )
        )
        self.addParameter(
            QgsProcessingParameterRasterDestination(
                self.OUTPUT_PROBABILITIES, "Class probabilities", optional=True, createByDefault=False,
            )
        )

    # -- parameters --------------------------------------------------------------------------

    def _overlap(self, parameters, context):
        value = parameters.get(self.OVERLAP)
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return self.parameterAsInt(parameters, self.OVERLAP, context)

    def check_parameters(self, parameters, context):
        """The engine's own validator (torch-free): tiling, then the checkpoint against MODEL and the bands."""
        from optsar_plugin.checkpoints import load_metadata
        from optsar_plugin.errors import InputError
        from optsar_plugin.metadata import check_fit
        from optsar_plugin.options import check_tiling, default_overlap

        tile = self.parameterAsInt(parameters, self.TILE_SIZE, context)
        overlap = self._overlap(parameters, context)
        check_tiling(tile, default_overlap(tile) if overlap is None else overlap)
        checkpoint = self.parameterAsFile(parameters, self.CHECKPOINT, context)
        if not checkpoint or not os.path.isfile(checkpoint):
            raise InputError(f"The checkpoint '{checkpoint}' does not exist; choose a .safetensors file written by "
                             "'Train'.")
        model = self.parameterAsEnumString(parameters, self.MODEL, context) if parameters.get(self.MODEL) else None
        check_fit(load_metadata(checkpoint), model=model, tile_size=tile, overlap=overlap,
                  optical=self._band_choice(parameters, self.OPTICAL, self.OPTICAL_BANDS, context),
                  sar=self._band_choice(parameters, self.SAR, self.SAR_BANDS, context),
                  checkpoint=os.path.basename(checkpoint), labels=PARAMETER_LABELS)

    def _band_choice(self, parameters, layer_param, bands_param, context):
        """The bands chosen of a layer (None when the layer comes from an earlier step of a model)."""
        from optsar_plugin.metadata import BandChoice

        layer = self.parameterAsRasterLayer(parameters, layer_param, context)
        if layer is None:
            return None  # the engine checks it when it runs
        chosen = self._bands(parameters, bands_param, context) or list(range(1, layer.bandCount() + 1))
        check_band_numbers(chosen, layer, bands_param)
        return BandChoice.of(chosen, source=layer.name())

    # -- run ---------------------------------------------------------------------------------

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        optical_layer = self.parameterAsRasterLayer(parameters, self.OPTICAL, context)
        imagery = self.imagery_inputs(parameters, context)
        extent = None
        if parameters.get(self.EXTENT):
            rect = self.parameterAsExtent(parameters, self.EXTENT, context, optical_layer.crs())
            if not rect.isNull() and not rect.isEmpty():
                extent = [rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum()]
        model = self.parameterAsEnumString(parameters, self.MODEL, context) if parameters.get(self.MODEL) else None
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        confidence = self.parameterAsOutputLayer(parameters, self.OUTPUT_CONFIDENCE, context) or None
        probabilities = self.parameterAsOutputLayer(parameters, self.OUTPUT_PROBABILITIES, context) or None
        kwargs = dict(
            optical=imagery["optical"],
            sar=imagery["sar"],
            checkpoint=self.parameterAsFile(parameters, self.CHECKPOINT, context),
            output=output,
            optical_bands=imagery["optical_bands"],
            sar_bands=imagery["sar_bands"],
            cloud_mask=imagery["cloud_mask"],
            model=model,
            extent=extent,
            extent_crs=None,
            device=self.parameterAsEnumString(parameters, self.DEVICE, context) or "auto",
            tile_size=self.parameterAsInt(parameters, self.TILE_SIZE, context),
            overlap=self._overlap(parameters, context),
            batch_size=self.parameterAsInt(parameters, self.BATCH_SIZE, context),
            precision=self.parameterAsEnumString(parameters, self.PRECISION, context) or "fp32",
            tta=self.parameterAsEnumString(parameters, self.TTA, context) or "off",
            output_confidence=confidence,
            output_probabilities=probabilities,
        )
        result = self.run_worker("classify", kwargs, feedback, outputs=[output, confidence, probabilities])
        share = result["seconds_model"] / result["seconds"] if result["seconds"] else 0.0
        feedback.pushInfo(
            f"Classified {result['width']} x {result['height']} px in {result['windows']} window(s) in "
            f"{result['seconds']:.1f} s ({100 * share:.0f} % in the network) on {result['device']}."
        )
        for path, style in ((output, result["qml"]), (confidence, result.get("confidence_qml"))):
            if path and style and context.willLoadLayerOnCompletion(path):
                keep_post_processor(context, path, ClassStylePostProcessor(style))
        return {
            self.OUTPUT: result["output"],
            self.OUTPUT_CONFIDENCE: result["confidence"],
            self.OUTPUT_PROBABILITIES: result["probabilities"],
        }
