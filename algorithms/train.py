"""optsar:train: train or fine-tune a network and write a checkpoint (thin skin over the engine).

Everything happens in :func:`optsar_plugin.training.train`, run in the engine worker process
(torch never loads in QGIS); this file turns
parameters into its arguments, checks early what can be known before a run, and
reports the best epoch.  No GUI calls: it runs the same from the Toolbox, the
graphical modeler and ``qgis_process``.
"""

from __future__ import annotations

from qgis.core import (
    QgsProcessing,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
)

from optsar_plugin.options import CLASS_BALANCE, CLOUD_SIMULATION, DEVICES, MODEL_SIZES, MODELS  # torch-free
from optsar_plugin.options import TRAIN_PRECISIONS as PRECISIONS

from .base import ImageryInputs, OptsarAlgorithm, raster_path


class TrainAlgorithm(ImageryInputs, OptsarAlgorithm):
    NAME = "train"
    DISPLAY = "Train or fine-tune a network"
    GROUP = "Training"
    GROUP_ID = "training"
    HELP_ANCHOR = "optsartrain"
    TAGS = ("training", "fine-tuning", "deep learning", "checkpoint", "sentinel-1", "sentinel-2", "mosfnet",
            "specsar-former", "cloudlulc-net")

    REFERENCE = "REFERENCE"
    CLASS_FIELD = "CLASS_FIELD"
    NAME_FIELD = "NAME_FIELD"
    LABELS = "LABELS"
    MODEL = "MODEL"
    MODEL_SIZE = "MODEL_SIZE"
    INIT_CHECKPOINT = "INIT_CHECKPOINT"
    MAX_STEPS = "MAX_STEPS"
    PATIENCE = "PATIENCE"
    MAX_MINUTES = "MAX_MINUTES"
    EPOCHS = "EPOCHS"
    TILE_SIZE = "TILE_SIZE"
    BATCH_SIZE = "BATCH_SIZE"
    LEARNING_RATE = "LEARNING_RATE"
    VALIDATION_FRACTION = "VALIDATION_FRACTION"
    SEED = "SEED"
    DEVICE = "DEVICE"
    STEPS_PER_EPOCH = "STEPS_PER_EPOCH"
    CLOUD_SIMULATION = "CLOUD_SIMULATION"
    PRECISION = "PRECISION"
    CLASS_BALANCE = "CLASS_BALANCE"
    RESUME = "RESUME"
    OUTPUT_CHECKPOINT = "OUTPUT_CHECKPOINT"
    OUTPUT_LOG = "OUTPUT_LOG"
    OUTPUT_CURVE = "OUTPUT_CURVE"
    BEST_EPOCH = "BEST_EPOCH"
    BEST_MIOU = "BEST_MIOU"
    BEST_OA = "BEST_OA"
    STOPPED = "STOPPED"

    HELP = (
        "Trains one of the three networks (MOSFNet, SpecSAR-Former, CloudLULC-Net) - or fine-tunes a checkpoint - "
        "from your optical and SAR layers and reference polygons, and writes a checkpoint for 'Classify land "
        "cover'. No trained weights for these papers can be downloaded, so this is how a network is obtained.<br><br>"
        "<b>Optical raster</b> (OPTICAL): e.g. Sentinel-2 reflectances; its pixel grid is the training grid. "
        "<b>Optical bands</b> (OPTICAL_BANDS, optional): the bands to use, in this order (default all); classification "
        "must later use the same bands in the same order.<br>"
        "<b>SAR raster</b> (SAR): e.g. Sentinel-1 VV/VH backscatter (dB or linear; linear is converted to dB); any "
        "CRS or resolution - it is warped bilinearly onto the optical grid. <b>SAR bands</b> (SAR_BANDS, optional).<br>"
        "<b>Cloud mask</b> (CLOUD_MASK, optional, non-zero = cloud): cloudy pixels are left out of the optical "
        "normalisation statistics; MOSFNet and SpecSAR-Former see their optical input set to the training median "
        "under the mask (as 'Classify' feeds them), CloudLULC-Net sees the data as they are.<br>"
        "<b>Reference polygons</b> (REFERENCE) with <b>Class field</b> (CLASS_FIELD): class codes (integers; 0 is "
        "a class, 255 is not allowed) or class names. With names, a known scheme's codes and colours are used when "
        "all names belong to it (Dynamic World, WHU-OPT-SAR, CloudLULC-Set, ESA WorldCover), otherwise codes "
        "0..n-1 in sorted order and generated colours. <b>Name field</b> (NAME_FIELD, optional): class names when "
        "CLASS_FIELD holds codes. Polygons are rasterised on the optical grid (reprojected when the CRS differs); "
        "pixels of overlapping polygons of different classes are left out; unlabelled pixels are ignored by the loss. "
        "Or <b>Label raster</b> (LABELS): class codes per pixel (its nodata and 255 = unlabelled), warped by nearest "
        "neighbour; names from its category names. Give one of REFERENCE and LABELS.<br>"
        "<b>Model</b> (MODEL) and <b>Model size</b> (MODEL_SIZE): <i>auto</i> (default) is the published size on a "
        "CUDA GPU and <i>small</i> on the CPU; <i>small</i> is a narrow, shallow variant of the same architecture "
        "that trains in minutes on a CPU; <i>paper</i> is the published size (use a GPU). "
        "<b>Initial checkpoint</b> (INIT_CHECKPOINT, optional): fine-tune it instead of starting from random weights. "
        "It must hold the same network and the same number of bands; its size and normalisation are kept. If the "
        "classes differ, the class-dependent layers (classifier, auxiliary heads) are re-initialised and the rest "
        "continues from the checkpoint.<br>"
        "Every setting below left at 0 is chosen for your data and device when the run starts, and the log and the "
        "training report say what was chosen. <b>Step budget</b> (MAX_STEPS, 0 = automatic: on a CPU a budget a "
        "small network finishes within about ten minutes, on a GPU a longer one): training stops there at the "
        "latest. Every <b>Steps per epoch</b> (STEPS_PER_EPOCH, advanced) steps the held-out blocks are classified; "
        "<b>Patience</b> (PATIENCE, advanced, -1 = automatic, 0 = never): training stops early when the validation "
        "mIoU has not improved for that many validations. <b>Time limit</b> (MAX_MINUTES, advanced, -1 = automatic: "
        "9 minutes for an automatic budget on a CPU, none otherwise; 0 = none): when the pace of the first "
        "validations shows that the step budget would not fit, the budget is lowered and the learning-rate schedule "
        "fitted to it, and training stops at the limit at the latest (set 0 for weights that are the same on every "
        "machine). The log and the report say why training stopped. "
        "<b>Epochs</b> (EPOCHS, advanced, 0 = from the step budget): a fixed number of epochs of STEPS_PER_EPOCH "
        "steps instead. <b>Tile size</b> (TILE_SIZE, px, multiple of 32, at least 64, 0 = automatic: 128 on a CPU, "
        "512 on a GPU, at most the raster) and <b>Batch size</b> (BATCH_SIZE, 0 = automatic). <b>Learning rate</b> "
        "(LEARNING_RATE, 0 = the model's recipe: AdamW with warm-up and poly/cosine decay; 1e-3 for small models, 1e-2 for MOSFNet small). "
        "<b>Validation fraction</b> (VALIDATION_FRACTION): share of the labelled pixels held out as whole spatial "
        "blocks (two tiles wide, smaller when the labels cover only a few tiles, so that a single labelled chip "
        "still trains), never random pixels, which would inflate the accuracy; 0 = no validation, keep the last "
        "epoch. <b>Seed</b> (SEED): the same seed and data give the same result on the CPU. <b>Device</b> (DEVICE): "
        "auto uses a CUDA GPU when there is one. <b>Resume</b> (RESUME): continue an interrupted run of the same "
        "checkpoint with the same inputs and settings; a resumable state is written beside the checkpoint after "
        "every epoch and removed when a run completes.<br>"
        "<b>Advanced</b>: <b>Class balance</b> (CLASS_BALANCE: auto, none, sqrt, inverse - class weights of the "
        "loss from the class frequencies; auto = inverse for SpecSAR-Former and CloudLULC-Net, none for MOSFNet); "
        "<b>Cloud simulation</b> (CLOUD_SIMULATION: auto = simulated clouds and "
        "shadows on half of the training tiles for CloudLULC-Net only; on; off); <b>Precision</b> (PRECISION: bf16 "
        "mixed precision on a CUDA GPU).<br><br>"
        "Each network trains with its paper's loss (cross-entropy for MOSFNet, focal loss for SpecSAR-Former, the "
        "semantic-anchor loss for CloudLULC-Net) and random flips/rotations; training tiles are centred on labelled "
        "pixels with rarer classes drawn more often. The epoch with the best validation mIoU is kept. Cancelling "
        "keeps and writes the best epoch so far (and the resumable state).<br>"
        "Outputs: <b>Checkpoint</b> (OUTPUT_CHECKPOINT, .safetensors: weights, classes with colours, band names, "
        "normalisation statistics and the training record); <b>Training log</b> (OUTPUT_LOG, CSV: per epoch the "
        "loss, validation loss, OA, mIoU, macro F1, mIoU under clouds and per-class IoU); <b>Training curve</b> "
        "(OUTPUT_CURVE, a self-contained HTML report: model, inputs, classes, why training stopped, the curves, the "
        "settings used). Numbers BEST_EPOCH, BEST_MIOU, BEST_OA; STOPPED says why training stopped. "
        "A failed run leaves no output."
    )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.add_imagery_parameters("in order")
        self._add_reference_parameters()
        self._add_model_parameters()
        for p in self._advanced_parameters():
            p.setFlags(p.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
            self.addParameter(p)
        self._add_outputs()

    def _add_reference_parameters(self):
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.REFERENCE, "Reference polygons",
            [QgsProcessing.SourceType.TypeVectorPolygon, QgsProcessing.SourceType.TypeVectorPoint], optional=True))
        self.addParameter(QgsProcessingParameterField(
            self.CLASS_FIELD, "Class field (codes or names)", parentLayerParameterName=self.REFERENCE,
            type=QgsProcessingParameterField.DataType.Any, optional=True))
        self.addParameter(QgsProcessingParameterField(
            self.NAME_FIELD, "Class name field (when the class field holds codes)", parentLayerParameterName=self.REFERENCE,
            type=QgsProcessingParameterField.DataType.Any, optional=True))
        self.addParameter(QgsProcessingParameterRasterLayer(
            self.LABELS, "Label raster (instead of reference polygons)", optional=True))

    def _add_model_parameters(self):
        """The network, its start, and the everyday training settings (0 = chosen for the data and device)."""
        self.addParameter(QgsProcessingParameterEnum(
            self.MODEL, "Model", options=list(MODELS), defaultValue="specsar_former", usesStaticStrings=True))
        self.addParameter(QgsProcessingParameterEnum(
            self.MODEL_SIZE, "Model size (auto: paper on a GPU, small on the CPU)", options=list(MODEL_SIZES),
            defaultValue="auto", usesStaticStrings=True))
        self.addParameter(QgsProcessingParameterFile(
            self.INIT_CHECKPOINT, "Initial checkpoint to fine-tune", behavior=QgsProcessingParameterFile.Behavior.File,
            fileFilter="OptSAR Fusion checkpoints (*.safetensors);;All files (*.*)", optional=True))
        integer, double = QgsProcessingParameterNumber.Type.Integer, QgsProcessingParameterNumber.Type.Double
        self.addParameter(QgsProcessingParameterNumber(
            self.MAX_STEPS, "Step budget (0 = automatic for the device)", type=integer, defaultValue=0, minValue=0))
        self.addParameter(QgsProcessingParameterNumber(
            self.TILE_SIZE, "Tile size (px, multiple of 32; 0 = automatic)", type=integer, defaultValue=0, minValue=0,
            maxValue=2048))
        self.addParameter(QgsProcessingParameterNumber(
            self.BATCH_SIZE, "Batch size (0 = automatic)", type=integer, defaultValue=0, minValue=0, maxValue=256))
        self.addParameter(QgsProcessingParameterNumber(
            self.LEARNING_RATE, "Learning rate (0 = the model's recipe)", type=double, defaultValue=0.0, minValue=0.0,
            maxValue=1.0))
        self.addParameter(QgsProcessingParameterNumber(
            self.VALIDATION_FRACTION, "Validation fraction (held out in spatial blocks)", type=double, defaultValue=0.2,
            minValue=0.0, maxValue=0.5))
        self.addParameter(QgsProcessingParameterNumber(self.SEED, "Random seed", type=integer, defaultValue=0, minValue=0))
        self.addParameter(QgsProcessingParameterEnum(
            self.DEVICE, "Device", options=list(DEVICES), defaultValue="auto", usesStaticStrings=True))
        self.addParameter(QgsProcessingParameterBoolean(
            self.RESUME, "Resume an interrupted run of this checkpoint", defaultValue=False))

    def _advanced_parameters(self):
        integer, double = QgsProcessingParameterNumber.Type.Integer, QgsProcessingParameterNumber.Type.Double
        return [
            QgsProcessingParameterNumber(
                self.STEPS_PER_EPOCH, "Steps per epoch: steps between validations (0 = automatic)", type=integer,
                defaultValue=0, minValue=0),
            QgsProcessingParameterNumber(
                self.PATIENCE, "Patience: validations without improvement before stopping (-1 = automatic, 0 = never)",
                type=integer, defaultValue=-1, minValue=-1),
            QgsProcessingParameterNumber(
                self.MAX_MINUTES, "Time limit in minutes (-1 = automatic: 9 on a CPU with an automatic budget; 0 = none)",
                type=double, defaultValue=-1.0, minValue=-1.0),
            QgsProcessingParameterNumber(
                self.EPOCHS, "Epochs (0 = from the step budget)", type=integer, defaultValue=0, minValue=0),
            QgsProcessingParameterEnum(
                self.CLASS_BALANCE, "Class balance of the loss (auto: the network's recipe)", options=list(CLASS_BALANCE),
                defaultValue="auto", usesStaticStrings=True),
            QgsProcessingParameterEnum(
                self.CLOUD_SIMULATION, "Simulated clouds on training tiles (auto: CloudLULC-Net only)",
                options=list(CLOUD_SIMULATION), defaultValue="auto", usesStaticStrings=True),
            QgsProcessingParameterEnum(
                self.PRECISION, "Precision (bf16 on CUDA only)", options=list(PRECISIONS), defaultValue="fp32",
                usesStaticStrings=True),
        ]

    def _add_outputs(self):
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_CHECKPOINT, "Checkpoint", "OptSAR Fusion checkpoints (*.safetensors)"))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_LOG, "Training log", "CSV files (*.csv)", optional=True, createByDefault=True))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_CURVE, "Training curve", "HTML files (*.html)", optional=True, createByDefault=True))
        self.addOutput(QgsProcessingOutputNumber(self.BEST_EPOCH, "Best epoch"))
        self.addOutput(QgsProcessingOutputNumber(self.BEST_MIOU, "Best validation mIoU"))
        self.addOutput(QgsProcessingOutputNumber(self.BEST_OA, "Validation overall accuracy at the best epoch"))
        self.addOutput(QgsProcessingOutputString(self.STOPPED, "Why training stopped"))

    # -- parameters ----------------------------------------------------------------------------

    def _field(self, parameters, name, context):
        fields = self.parameterAsFields(parameters, name, context) if parameters.get(name) else []
        return fields[0] if fields else None

    def check_parameters(self, parameters, context):
        """Inputs given once, the class field, the tile, the bands and the initial checkpoint (read through the
        engine's bounded, schema-checked reader) - before the worker starts."""
        from optsar_plugin.errors import InputError

        has_ref = bool(parameters.get(self.REFERENCE))
        has_labels = bool(parameters.get(self.LABELS))
        if has_ref == has_labels:
            raise InputError("Give either reference polygons (REFERENCE with CLASS_FIELD) or a label raster (LABELS), "
                             "not both.")
        if has_ref and not self._field(parameters, self.CLASS_FIELD, context):
            raise InputError("Choose the reference field that holds the classes (CLASS_FIELD).")
        tile = self.parameterAsInt(parameters, self.TILE_SIZE, context)
        if tile and (tile % 32 or tile < 64):
            raise InputError(f"Tile size {tile} is not allowed: the networks need a multiple of 32 pixels (e.g. 128 or "
                             "256).")
        self.check_imagery_bands(parameters, context)
        init = self.parameterAsFile(parameters, self.INIT_CHECKPOINT, context) if parameters.get(
            self.INIT_CHECKPOINT) else None
        if init:
            from optsar_plugin.checkpoints import load_metadata

            load_metadata(init)

    # -- run -----------------------------------------------------------------------------------

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        imagery = self.imagery_inputs(parameters, context)
        reference = reference_layer = labels = temporary = None
        if parameters.get(self.REFERENCE):
            reference, reference_layer, temporary = self.vector_file(parameters, self.REFERENCE, context, feedback)
        if parameters.get(self.LABELS):
            labels = raster_path(self.parameterAsRasterLayer(parameters, self.LABELS, context), "label raster")
        outputs = {
            "output_checkpoint": self.parameterAsFileOutput(parameters, self.OUTPUT_CHECKPOINT, context),
            "output_log": self.parameterAsFileOutput(parameters, self.OUTPUT_LOG, context) or None,
            "output_curve": self.parameterAsFileOutput(parameters, self.OUTPUT_CURVE, context) or None,
        }
        kwargs = dict(
            optical=imagery["optical"],
            sar=imagery["sar"],
            reference=reference,
            class_field=self._field(parameters, self.CLASS_FIELD, context),
            name_field=self._field(parameters, self.NAME_FIELD, context),
            reference_layer=reference_layer,
            labels=labels,
            optical_bands=imagery["optical_bands"],
            sar_bands=imagery["sar_bands"],
            cloud_mask=imagery["cloud_mask"],
            model=self.parameterAsEnumString(parameters, self.MODEL, context) or "specsar_former",
            model_size=self.parameterAsEnumString(parameters, self.MODEL_SIZE, context) or "auto",
            init_checkpoint=self.parameterAsFile(parameters, self.INIT_CHECKPOINT, context) or None,
            max_steps=self.parameterAsInt(parameters, self.MAX_STEPS, context) or None,
            patience=_auto(self.parameterAsInt(parameters, self.PATIENCE, context)),
            max_minutes=_auto(self.parameterAsDouble(parameters, self.MAX_MINUTES, context)),
            epochs=self.parameterAsInt(parameters, self.EPOCHS, context) or None,
            tile_size=self.parameterAsInt(parameters, self.TILE_SIZE, context) or None,
            batch_size=self.parameterAsInt(parameters, self.BATCH_SIZE, context) or None,
            learning_rate=self.parameterAsDouble(parameters, self.LEARNING_RATE, context) or None,
            validation_fraction=self.parameterAsDouble(parameters, self.VALIDATION_FRACTION, context),
            seed=self.parameterAsInt(parameters, self.SEED, context),
            device=self.parameterAsEnumString(parameters, self.DEVICE, context) or "auto",
            steps_per_epoch=self.parameterAsInt(parameters, self.STEPS_PER_EPOCH, context) or None,
            cloud_simulation=self.parameterAsEnumString(parameters, self.CLOUD_SIMULATION, context) or "auto",
            precision=self.parameterAsEnumString(parameters, self.PRECISION, context) or "fp32",
            class_balance=self.parameterAsEnumString(parameters, self.CLASS_BALANCE, context) or "auto",
            resume=self.parameterAsBoolean(parameters, self.RESUME, context),
            **outputs,
        )
        result = self.run_worker("train", kwargs, feedback, outputs=outputs.values(),
                                 temporary_inputs=[temporary] if temporary else [])
        best = result["best"]
        feedback.pushInfo(
            f"Best epoch {result['best_epoch']} of {len(result['history'])}: validation mIoU "
            f"{_fmt(best.get('val_miou'))}, OA {_fmt(best.get('val_oa'))}; {result['steps']} steps, "
            f"{result['seconds_per_epoch']} s per epoch on {result['device']}; stopped: {result['stop_reason']}."
            + (f" Resumed at step {result['resumed_from_step']}." if result.get("resumed_from_step") is not None else "")
            + (" The best epoch so far was written; RESUME continues the run." if result["cancelled"] else "")
        )
        return {
            self.OUTPUT_CHECKPOINT: result["checkpoint"],
            self.OUTPUT_LOG: result["log"],
            self.OUTPUT_CURVE: result["curve"],
            self.BEST_EPOCH: result["best_epoch"],
            self.BEST_MIOU: best.get("val_miou"),
            self.BEST_OA: best.get("val_oa"),
            self.STOPPED: result["stop_reason"],
        }


def _auto(value: float):
    """-1 (automatic) -> None, else the number."""
    return None if value is None or value < 0 else value


def _fmt(v):
    return "n/a" if v is None else f"{v:.3f}"
