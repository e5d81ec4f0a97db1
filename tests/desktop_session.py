"""Startup script for the real QGIS desktop (``qgis --code desktop_session.py``), driven by test_desktop.py.

Runs, inside the desktop's own Python and event loop: optsar:checkenvironment, a short
optsar:train and optsar:classify through ``processing.run``; optsar:classify again through its
Toolbox dialog; a worker that crashes on purpose; a classification cancelled mid-run.  Writes
what it saw to the JSON file named in the config (``OPTSAR_DESKTOP_CONFIG``) after every step,
then quits QGIS normally.  Each step records its error instead of stopping the session.
"""

import json
import os
import sys
import time
import traceback

from qgis.core import QgsProcessingException, QgsProcessingFeedback, QgsProject
from qgis.PyQt.QtCore import QEventLoop, QTimer
from qgis.PyQt.QtWidgets import QTextEdit
from qgis.utils import iface

CONFIG = json.load(open(os.environ["OPTSAR_DESKTOP_CONFIG"], encoding="utf-8"))
SEEN = {"steps": {}, "errors": {}}
HEAVY = ("torch", "torchvision", "timm", "triton")


def save():
    SEEN["heavy_modules_loaded"] = sorted(m for m in HEAVY if m in sys.modules)
    with open(CONFIG["result"], "w", encoding="utf-8") as fh:
        json.dump(SEEN, fh, indent=1, default=str)


def step(name):
    def wrap(fn):
        def run():
            t0 = time.monotonic()
            try:
                SEEN["steps"][name] = fn()
            except Exception as exc:  # noqa: BLE001 - recorded for the test to show
                SEEN["errors"][name] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
            SEEN.setdefault("seconds", {})[name] = round(time.monotonic() - t0, 2)
            save()
        return run
    return wrap


def scene():
    return CONFIG["scene"]


def classify_params(output, optical=None):
    s = scene()
    return {"OPTICAL": optical or s["optical"], "SAR": s["sar"], "CHECKPOINT": CONFIG["checkpoint"],
            "DEVICE": "cpu", "TILE_SIZE": 64, "OVERLAP": 16, "BATCH_SIZE": 2, "OUTPUT": output}


@step("checkenvironment")
def check_environment():
    import processing

    r = processing.run("optsar:checkenvironment", {})
    return {k: r[k] for k in ("READY", "TORCH_VERSION", "WORKER_PYTHON", "QGIS_PYTHON_VERSION")}


@step("train")
def train():
    import processing

    s = scene()
    r = processing.run("optsar:train", {
        "OPTICAL": s["optical"], "SAR": s["sar"], "CLOUD_MASK": s["cloud_mask"], "REFERENCE": s["reference_train"],
        "CLASS_FIELD": "class_name", "MODEL": "cloudlulc_net", "MODEL_SIZE": "small", "EPOCHS": 1,
        "STEPS_PER_EPOCH": 2, "TILE_SIZE": 64, "BATCH_SIZE": 2, "VALIDATION_FRACTION": 0.0, "DEVICE": "cpu",
        "OUTPUT_CHECKPOINT": CONFIG["checkpoint"]})
    return {"checkpoint": r["OUTPUT_CHECKPOINT"], "exists": os.path.isfile(r["OUTPUT_CHECKPOINT"]),
            "best_epoch": r["BEST_EPOCH"]}


@step("classify")
def classify():
    import processing

    out = os.path.join(CONFIG["out"], "run.tif")
    r = processing.run("optsar:classify", classify_params(out))
    return {"output": r["OUTPUT"], "exists": os.path.isfile(out)}


def wait_for(signal, timeout_ms):
    loop = QEventLoop()
    got = []
    signal.connect(lambda *args: (got.append(args), loop.quit()))
    QTimer.singleShot(timeout_ms, loop.quit)
    loop.exec_()
    return got


@step("dialog")
def dialog():
    import processing

    out = os.path.join(CONFIG["out"], "dialog.tif")
    dlg = processing.createAlgorithmDialog("optsar:classify", {})
    dlg.setParameters(classify_params(out))
    dlg.show()
    dlg.runAlgorithm()
    finished = wait_for(dlg.algorithmFinished, 300000)
    log = dlg.findChild(QTextEdit, "txtLog")
    text = log.toPlainText() if log is not None else ""
    layers = [lyr for lyr in QgsProject.instance().mapLayers().values()
              if os.path.abspath(lyr.source().split("|")[0]) == os.path.abspath(out)]
    renderer = layers[0].renderer() if layers else None
    classes = [(int(c.value), c.label) for c in renderer.classes()] if renderer and renderer.type() == "paletted" else []
    dlg.close()
    return {"finished": bool(finished and finished[0][0]), "exists": os.path.isfile(out), "layers": len(layers),
            "renderer": renderer.type() if renderer else None, "classes": classes,
            "log_lines": len([ln for ln in text.splitlines() if ln.strip()]), "log": text[-3000:]}


@step("crash")
def crash():
    import processing

    out = os.path.join(CONFIG["out"], "crash.tif")
    os.environ["OPTSAR_WORKER_TEST_CRASH"] = "segv"
    try:
        processing.run("optsar:classify", classify_params(out))
        message = None
    except QgsProcessingException as exc:
        message = str(exc)
    finally:
        del os.environ["OPTSAR_WORKER_TEST_CRASH"]
    return {"message": message, "leftovers": sorted(f for f in os.listdir(CONFIG["out"]) if f.startswith((".crash", "crash")))}


def worker_children():
    me, found = str(os.getpid()), []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as fh:
                ppid = fh.read().rsplit(")", 1)[1].split()[1]
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if ppid == me and "optsar_plugin" in cmd:
            found.append(int(pid))
    return found


@step("cancel")
def cancel():
    import processing

    out_dir = os.path.join(CONFIG["out"], "cancel")
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, "cancelled.tif")
    feedback = QgsProcessingFeedback()
    marks = {}

    def on_progress(value):
        if value > 0 and "cancel" not in marks:
            marks["cancel"] = time.monotonic()
            feedback.cancel()

    feedback.progressChanged.connect(on_progress)
    params = classify_params(out, optical=CONFIG["big_optical"])
    params["SAR"] = CONFIG["big_sar"]
    try:
        processing.run("optsar:classify", params, feedback=feedback)
        message = None
    except QgsProcessingException as exc:
        message = str(exc)
    ended = time.monotonic()
    return {"message": message, "cancel_to_end_s": round(ended - marks["cancel"], 2) if marks else None,
            "files_left": sorted(os.listdir(out_dir)), "workers_alive": worker_children()}


def close_message_boxes():
    """A modal message box (e.g. 'Unable to execute algorithm') would block the session: record and close it."""
    from qgis.PyQt.QtWidgets import QApplication, QMessageBox

    widget = QApplication.activeModalWidget()
    if isinstance(widget, QMessageBox):
        SEEN.setdefault("message_boxes", []).append(widget.text())
        widget.reject()


def main():
    SEEN["pid"] = os.getpid()
    from qgis.core import Qgis

    SEEN["qgis_version"] = Qgis.QGIS_VERSION
    save()
    for fn in (check_environment, train, classify, dialog, crash, cancel):
        fn()
    SEEN["finished"] = True
    save()
    QgsProject.instance().clear()
    iface.actionExit().trigger()


WATCHDOG = QTimer()
WATCHDOG.timeout.connect(close_message_boxes)
WATCHDOG.start(500)
QTimer.singleShot(0, main)
