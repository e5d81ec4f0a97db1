"""The installer for real, from the QGIS desktop: ``qgis --code scripts/desktop_install_check.py``.

Not part of ``make test`` (it installs several GB).  With a fresh profile in which the zip from
``make package`` is installed and a QGIS whose own Python has no torch, it runs
optsar:installdependencies, optsar:checkenvironment, optsar:samplescene, a short optsar:train and
optsar:classify, writes what it saw (messages, timings, outputs) to ``$OPTSAR_CHECK_OUT/seen.json``
and quits.  Run it as::

    xvfb-run -a qgis --profiles-path PROFILE --nologo --noversioncheck --code scripts/desktop_install_check.py
"""

import json
import os
import sys
import time
import traceback

from qgis.core import QgsProcessingFeedback, QgsProject
from qgis.PyQt.QtCore import QTimer
from qgis.utils import iface

OUT = os.environ["OPTSAR_CHECK_OUT"]
SEEN = {"steps": {}, "seconds": {}, "messages": {}}


class Recorder(QgsProcessingFeedback):
    def __init__(self, name):
        super().__init__()
        self.lines = SEEN["messages"].setdefault(name, [])

    def pushInfo(self, text):  # noqa: N802
        self.lines.append(text)

    def reportError(self, text, fatalError=False):  # noqa: N802, N803
        self.lines.append("WARNING/ERROR: " + text)


def save():
    SEEN["torch_in_qgis_sys_modules"] = "torch" in sys.modules
    with open(os.path.join(OUT, "seen.json"), "w", encoding="utf-8") as fh:
        json.dump(SEEN, fh, indent=1, default=str)


def run(name, alg, params, load=False):
    import processing

    t0 = time.monotonic()
    try:
        call = processing.runAndLoadResults if load else processing.run
        SEEN["steps"][name] = call(alg, params, feedback=Recorder(name))
    except Exception as exc:  # noqa: BLE001
        SEEN["steps"][name] = {"error": f"{exc}\n{traceback.format_exc()}"}
    SEEN["seconds"][name] = round(time.monotonic() - t0, 1)
    save()
    return SEEN["steps"][name]


def main():
    SEEN["qgis_python"] = sys.version
    SEEN["torch_on_qgis_path"] = [p for p in sys.path if os.path.isdir(os.path.join(p, "torch"))]
    save()
    run("installdependencies", "optsar:installdependencies", {})
    run("checkenvironment", "optsar:checkenvironment", {})
    scene = run("samplescene", "optsar:samplescene", {"OUTPUT_FOLDER": os.path.join(OUT, "scene"), "SIZE": 192},
                load=True)
    SEEN["loaded_layers"] = {lyr.name(): lyr.renderer().type() if lyr.renderer() else None
                             for lyr in QgsProject.instance().mapLayers().values()}
    checkpoint = os.path.join(OUT, "model.safetensors")
    run("train", "optsar:train", {
        "OPTICAL": scene.get("OPTICAL"), "SAR": scene.get("SAR"), "CLOUD_MASK": scene.get("CLOUD_MASK"),
        "REFERENCE": scene.get("REFERENCE_TRAIN"), "CLASS_FIELD": "class_name", "MODEL": "cloudlulc_net",
        "EPOCHS": 2, "STEPS_PER_EPOCH": 4, "TILE_SIZE": 64, "BATCH_SIZE": 2, "VALIDATION_FRACTION": 0.0,
        "DEVICE": "auto", "OUTPUT_CHECKPOINT": checkpoint})
    run("classify", "optsar:classify", {
        "OPTICAL": scene.get("OPTICAL"), "SAR": scene.get("SAR"), "CHECKPOINT": checkpoint, "TILE_SIZE": 64,
        "OVERLAP": 16, "OUTPUT": os.path.join(OUT, "landcover.tif")})
    SEEN["finished"] = True
    save()
    QgsProject.instance().clear()
    iface.actionExit().trigger()


QTimer.singleShot(0, main)
