"""Render an algorithm's Processing dialog offscreen to a PNG (for the README).

Usage: .venv/bin/python scripts/screenshot_dialog.py optsar:classify docs/classify_dialog.png
"""

import os
import sys
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, "/usr/share/qgis/python/plugins")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from qgis.core import QgsApplication  # noqa: E402
from qgis.gui import QgsBrowserGuiModel, QgsMapCanvas  # noqa: E402


def main(alg_id: str, out: str) -> None:
    app = QgsApplication([], True)
    app.initQgis()
    import qgis.utils

    canvas = QgsMapCanvas()
    browser = QgsBrowserGuiModel()
    from qgis.PyQt.QtWidgets import QMainWindow

    window = QMainWindow()
    qgis.utils.iface = mock.MagicMock(mapCanvas=lambda: canvas, browserModel=lambda: browser, mainWindow=lambda: window,
                                      activeLayer=lambda: None, messageBar=lambda: None)
    from processing.core.Processing import Processing

    Processing.initialize()
    from algorithms.provider import OptsarProvider

    provider = OptsarProvider()  # keep the Python object alive while QGIS uses it
    QgsApplication.processingRegistry().addProvider(provider)
    import processing

    dialog = processing.createAlgorithmDialog(alg_id, {})
    dialog.resize(900, 720)
    dialog.show()
    app.processEvents()
    if not dialog.grab().save(out):
        raise SystemExit(f"could not write {out}")
    print(out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
