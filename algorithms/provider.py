"""The OptSAR Fusion Processing provider (id ``optsar``) and its setting "Python for the engine worker"."""

from __future__ import annotations

import importlib
import os

from qgis.core import Qgis, QgsMessageLog, QgsProcessingModelAlgorithm, QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .base import ICON_DIR, PLUGIN_DIR, README_URL
from .worker_client import SETTING, SETTING_LABEL

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
    ("sample_scene", "SampleSceneAlgorithm"),
)


def _processing_config():
    """Processing's settings classes, or None in a bare QgsApplication without the Processing plugin."""
    try:
        from processing.core.ProcessingConfig import ProcessingConfig, Setting
    except ImportError:
        return None
    return ProcessingConfig, Setting


class NamedModel(QgsProcessingModelAlgorithm):
    """A shipped graphical model whose id has no spaces (``optsar:classify_and_assess``) while the
    Toolbox shows its readable name."""

    def __init__(self, path: str = "", model_id: str = ""):
        super().__init__()
        self._path, self._id = path, model_id
        self.loaded = bool(path) and self.fromFile(path)

    def name(self):
        return self._id or super().name()

    def displayName(self):  # noqa: N802
        return super().name()

    def helpUrl(self):  # noqa: N802 (QGIS API name)
        return f"{README_URL}#graphical-models"

    def createInstance(self):  # noqa: N802
        return NamedModel(self._path, self._id)


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

    def load(self):
        config = _processing_config()
        if config is not None:
            ProcessingConfig, Setting = config
            ProcessingConfig.settingIcons[self.name()] = self.icon()
            ProcessingConfig.addSetting(Setting(self.name(), SETTING, SETTING_LABEL, "", valuetype=Setting.FILE))
            ProcessingConfig.readSettings()
        self.refreshAlgorithms()
        return True

    def unload(self):
        config = _processing_config()
        if config is not None:
            config[0].removeSetting(SETTING)

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
            model = NamedModel(os.path.join(MODELS_DIR, file_name), os.path.splitext(file_name)[0])
            if model.loaded:
                self.addAlgorithm(model)
            else:
                QgsMessageLog.logMessage(f"Could not read the model {file_name}", "OptSAR Fusion", Qgis.MessageLevel.Critical)
