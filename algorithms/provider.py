"""The OptSAR Fusion Processing provider (id ``optsar``)."""

from __future__ import annotations

import importlib
import os

from qgis.core import Qgis, QgsMessageLog, QgsProcessingModelAlgorithm, QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .base import ICON_DIR, PLUGIN_DIR

MODELS_DIR = os.path.join(PLUGIN_DIR, "resources", "models")

# (module, class): one algorithm per file.
ALGORITHMS = (
    ("check_environment", "CheckEnvironmentAlgorithm"),
    ("install_dependencies", "InstallDependenciesAlgorithm"),
    ("classify", "ClassifyAlgorithm"),
    ("classify_batch", "ClassifyBatchAlgorithm"),
    ("train", "TrainAlgorithm"),
    ("assess_accuracy", "AssessAccuracyAlgorithm"),
    ("stratified_sample", "StratifiedSampleAlgorithm"),
)


class OptsarProvider(QgsProcessingProvider):
    def id(self):
        return "optsar"

    def name(self):
        return "OptSAR Fusion"

    def longName(self):
        return "OptSAR Fusion: optical-SAR fusion land-cover mapping"

    def icon(self):
        return QIcon(os.path.join(ICON_DIR, "optsar.svg"))

    def svgIconPath(self):
        return os.path.join(ICON_DIR, "optsar.svg")

    def loadAlgorithms(self):
        for module_name, class_name in ALGORITHMS:
            try:
                module = importlib.import_module(f"{__package__}.{module_name}")
            except ModuleNotFoundError as exc:
                if exc.name == f"{__package__}.{module_name}":
                    continue  # not part of this build
                raise
            except Exception as exc:  # keep the other algorithms available, say why this one is not
                QgsMessageLog.logMessage(
                    f"Algorithm module {module_name} failed to load: {exc}", "OptSAR Fusion", Qgis.MessageLevel.Critical
                )
                continue
            self.addAlgorithm(getattr(module, class_name)())
        self._load_models()

    def _load_models(self):
        """The graphical models shipped in resources/models/, offered as optsar:<model name>."""
        if not os.path.isdir(MODELS_DIR):
            return
        for file_name in sorted(os.listdir(MODELS_DIR)):
            if not file_name.endswith(".model3"):
                continue
            model = QgsProcessingModelAlgorithm()
            if model.fromFile(os.path.join(MODELS_DIR, file_name)):
                self.addAlgorithm(model)
            else:
                QgsMessageLog.logMessage(f"Could not read the model {file_name}", "OptSAR Fusion", Qgis.MessageLevel.Critical)
