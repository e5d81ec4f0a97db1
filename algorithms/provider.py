"""The OptSAR Fusion Processing provider (id ``optsar``)."""

from __future__ import annotations

import importlib
import os

from qgis.core import Qgis, QgsMessageLog, QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .base import ICON_DIR

# (module, class): one algorithm per file.
ALGORITHMS = (
    ("check_environment", "CheckEnvironmentAlgorithm"),
    ("install_dependencies", "InstallDependenciesAlgorithm"),
    ("classify", "ClassifyAlgorithm"),
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
                    f"Algorithm module {module_name} failed to load: {exc}", "OptSAR Fusion", Qgis.Critical
                )
                continue
            self.addAlgorithm(getattr(module, class_name)())
