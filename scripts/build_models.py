"""Regenerate the graphical models in resources/models/ from code (run under QGIS's Python).

Writing .model3 files through the QGIS API keeps them valid for the QGIS version that reads
them; the committed files are the output of this script.  The provider offers each model under
its file name (``optsar:classify_and_assess``: ids without spaces) and points its help at the README
shipped in the plugin folder (no HELP_URL in the files: an absolute path would be the build machine's).  Usage:
    make qgis_python SCRIPT=scripts/build_models.py   (or: QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/build_models.py)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from qgis.core import (  # noqa: E402
    QgsApplication,
    QgsProcessing,
    QgsProcessingModelAlgorithm,
    QgsProcessingModelChildAlgorithm,
    QgsProcessingModelChildParameterSource,
    QgsProcessingModelOutput,
    QgsProcessingModelParameter,
    QgsProcessingParameterEnum,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterVectorLayer,
)
from qgis.PyQt.QtCore import QPointF  # noqa: E402

MODELS = ("mosfnet", "specsar_former", "cloudlulc_net")
Src = QgsProcessingModelChildParameterSource


def add_param(model, definition, x, y):
    definition.setFlags(definition.flags())
    model.addModelParameter(definition, _component(QgsProcessingModelParameter(definition.name()), x, y))


def _component(comp, x, y):
    comp.setPosition(QPointF(x, y))
    return comp


def child(alg_id, child_id, description, x, y, sources, outputs=()):
    c = QgsProcessingModelChildAlgorithm(alg_id)
    c.setChildId(child_id)
    c.setDescription(description)
    c.setPosition(QPointF(x, y))
    for name, src in sources.items():
        c.addParameterSources(name, [src])
    model_outputs = {}
    for out_name, child_output, oy in outputs:
        o = QgsProcessingModelOutput(out_name, out_name)
        o.setChildId(child_id)
        o.setChildOutputName(child_output)
        o.setPosition(QPointF(x + 220, y + oy))
        model_outputs[out_name] = o
    c.setModelOutputs(model_outputs)
    return c


def imagery_params(model):
    add_param(model, QgsProcessingParameterRasterLayer("optical", "Optical layer"), 80, 60)
    add_param(model, QgsProcessingParameterRasterLayer("sar", "SAR layer"), 80, 130)
    add_param(model, QgsProcessingParameterEnum("network", "Network", options=list(MODELS), defaultValue="cloudlulc_net",
                                                usesStaticStrings=True), 80, 200)
    add_param(model, QgsProcessingParameterVectorLayer("reference", "Reference polygons or points",
                                                       [QgsProcessing.SourceType.TypeVectorAnyGeometry]), 80, 270)
    add_param(model, QgsProcessingParameterField("class_field", "Class field", parentLayerParameterName="reference"), 80, 340)
    add_param(model, QgsProcessingParameterNumber("tile_size", "Tile size", QgsProcessingParameterNumber.Type.Integer, 256, False, 64), 80, 410)


def classify_child(x, y, checkpoint_source):
    return child("optsar:classify", "classify", "Classify", x, y, {
        "OPTICAL": Src.fromModelParameter("optical"),
        "SAR": Src.fromModelParameter("sar"),
        "MODEL": Src.fromModelParameter("network"),
        "CHECKPOINT": checkpoint_source,
        "TILE_SIZE": Src.fromModelParameter("tile_size"),
        "DEVICE": Src.fromStaticValue("auto"),
    }, outputs=(("Land cover map", "OUTPUT", 0),))


def assess_child(x, y, reference_param="reference"):
    return child("optsar:assessaccuracy", "assess", "Assess accuracy", x, y, {
        "CLASSIFICATION": Src.fromChildOutput("classify", "OUTPUT"),
        "REFERENCE": Src.fromModelParameter(reference_param),
        "CLASS_FIELD": Src.fromModelParameter("class_field"),
        "CONFIDENCE": Src.fromStaticValue(0.95),
    }, outputs=(("Accuracy report", "OUTPUT_REPORT", 0), ("Accuracy metrics", "OUTPUT_METRICS", 60),
                ("OA", "OA", 120), ("KAPPA", "KAPPA", 150), ("MIOU", "MIOU", 180), ("MACRO_F1", "MACRO_F1", 210)))


def classify_and_assess() -> QgsProcessingModelAlgorithm:
    m = QgsProcessingModelAlgorithm("Classify and assess", "OptSAR Fusion models", "classify_and_assess")
    m.setHelpContent({"ALG_CREATOR": "OptSAR Fusion", "ALG_DESC": "Classify an optical + SAR scene with a checkpoint, then assess the map against "
                      "reference polygons or points. OA, kappa, mIoU and macro-F1 are among the results "
                      "(assess:OA, assess:KAPPA, assess:MIOU, assess:MACRO_F1)."})
    imagery_params(m)
    add_param(m, QgsProcessingParameterFile("checkpoint", "Checkpoint", extension="safetensors"), 80, 480)
    m.addChildAlgorithm(classify_child(360, 150, Src.fromModelParameter("checkpoint")))
    m.addChildAlgorithm(assess_child(360, 330))
    return m


def train_classify_and_assess() -> QgsProcessingModelAlgorithm:
    m = QgsProcessingModelAlgorithm("Train, classify and assess", "OptSAR Fusion models", "train_classify_and_assess")
    m.setHelpContent({"ALG_CREATOR": "OptSAR Fusion", "ALG_DESC": "Train a network on training reference polygons, classify the scene with the new "
                      "checkpoint, and assess the map against separate (held-out) reference data. "
                      "OA, kappa, mIoU and macro-F1 are among the results (assess:OA, assess:KAPPA, assess:MIOU)."})
    imagery_params(m)
    add_param(m, QgsProcessingParameterVectorLayer("training", "Training polygons", [QgsProcessing.SourceType.TypeVectorPolygon]), 80, 480)
    add_param(m, QgsProcessingParameterField("training_field", "Training class field", parentLayerParameterName="training"), 80, 550)
    add_param(m, QgsProcessingParameterNumber("epochs", "Epochs", QgsProcessingParameterNumber.Type.Integer, 10, False, 1), 80, 620)
    m.addChildAlgorithm(child("optsar:train", "train", "Train", 360, 40, {
        "OPTICAL": Src.fromModelParameter("optical"),
        "SAR": Src.fromModelParameter("sar"),
        "REFERENCE": Src.fromModelParameter("training"),
        "CLASS_FIELD": Src.fromModelParameter("training_field"),
        "MODEL": Src.fromModelParameter("network"),
        "EPOCHS": Src.fromModelParameter("epochs"),
        "TILE_SIZE": Src.fromModelParameter("tile_size"),
        "DEVICE": Src.fromStaticValue("auto"),
    }, outputs=(("Checkpoint", "OUTPUT_CHECKPOINT", 0),)))
    m.addChildAlgorithm(classify_child(360, 200, Src.fromChildOutput("train", "OUTPUT_CHECKPOINT")))
    m.addChildAlgorithm(assess_child(360, 360))
    return m


def main(out_dir: Path = ROOT / "resources" / "models") -> list:
    app = QgsApplication([], False)
    app.initQgis()
    sys.path.insert(0, "/usr/share/qgis/python/plugins")
    from processing.core.Processing import Processing

    Processing.initialize()
    from algorithms.provider import OptsarProvider

    provider = OptsarProvider()  # keep the Python object alive while QGIS uses it
    QgsApplication.processingRegistry().addProvider(provider)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for builder in (classify_and_assess, train_classify_and_assess):
        model = builder()
        path = out_dir / f"{builder.__name__}.model3"
        if not model.toFile(str(path)):
            raise SystemExit(f"could not write {path}")
        written.append(path)
        print(path)
    return written


if __name__ == "__main__":
    main()
