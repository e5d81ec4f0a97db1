"""The plugin object: registers the Processing provider and a menu entry for installing dependencies."""

from __future__ import annotations

import os

from qgis.core import QgsApplication

PLUGIN_DIR = os.path.dirname(os.path.abspath(__file__))


class OptsarFusionPlugin:
    def __init__(self, iface):
        self.iface = iface
        self.provider = None  # keep a Python reference: QGIS does not own it from Python's side
        self.actions = []

    def initProcessing(self):  # noqa: N802 (QGIS API name)
        """Called by QGIS (and qgis_process, which has no GUI) to register the provider."""
        if self.provider is None:
            from .algorithms.provider import OptsarProvider

            self.provider = OptsarProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self):  # noqa: N802
        self.initProcessing()
        if self.iface is None:
            return
        from qgis.PyQt.QtGui import QIcon
        from qgis.PyQt.QtWidgets import QAction

        icon = QIcon(os.path.join(PLUGIN_DIR, "resources", "icons", "optsar.svg"))
        for text, alg in (
            ("Install dependencies (PyTorch, timm)…", "optsar:installdependencies"),
            ("Check environment…", "optsar:checkenvironment"),
            ("Generate a sample scene…", "optsar:samplescene"),
        ):
            action = QAction(icon, text, self.iface.mainWindow())
            action.triggered.connect(lambda _checked=False, a=alg: self._open_dialog(a))
            self.iface.addPluginToMenu("OptSAR Fusion", action)
            self.actions.append(action)

    def _open_dialog(self, algorithm_id):
        import processing

        processing.execAlgorithmDialog(algorithm_id, {})

    def unload(self):
        for action in self.actions:
            self.iface.removePluginMenu("OptSAR Fusion", action)
        self.actions = []
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
