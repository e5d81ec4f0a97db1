"""The QGIS side of the worker: which Python, crashes and cancel as one clear error, no leftovers, no torch in QGIS."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import rasterio

from tests.helpers import random_checkpoint

ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A sample scene (plus a larger one to cancel) and a tiny CloudLULC-Net checkpoint."""
    from optsar_plugin.sample_scene import make_sample_scene

    folder = tmp_path_factory.mktemp("worker_client")
    scene = make_sample_scene(folder / "scene", size=128, seed=4)
    big = make_sample_scene(folder / "big", size=512, seed=5, clouds=False)
    classes = [{"code": 0, "name": "water", "color": "#419BDF"}, {"code": 1, "name": "land", "color": "#397D49"}]
    checkpoint = random_checkpoint(scene["optical"], scene["sar"], folder / "tiny.safetensors", classes)["checkpoint"]
    return {"scene": scene, "big": big, "checkpoint": checkpoint}


def classify_params(data, out, big=False):
    s = data["big"] if big else data["scene"]
    return {"OPTICAL": s["optical"], "SAR": s["sar"], "CHECKPOINT": data["checkpoint"], "DEVICE": "cpu",
            "TILE_SIZE": 64, "OVERLAP": 16, "BATCH_SIZE": 1, "OUTPUT": str(out)}


# -- which Python -----------------------------------------------------------------------------------


def test_python_search_order(processing_provider, tmp_path, monkeypatch):
    from processing.core.ProcessingConfig import ProcessingConfig
    from qgis.core import QgsProcessingException

    from algorithms import worker_client as wc

    monkeypatch.delenv(wc.ENV_VAR, raising=False)
    monkeypatch.setattr(wc, "managed_env_dir", lambda: str(tmp_path / "none"))
    assert wc.find_python() == (str(Path(wc.PLUGIN_DIR) / ".venv" / "bin" / "python"), "the plugin folder's .venv")
    managed = tmp_path / "env"
    (managed / "bin").mkdir(parents=True)
    (managed / "bin" / "python").symlink_to(VENV_PYTHON)
    monkeypatch.setattr(wc, "managed_env_dir", lambda: str(managed))
    assert wc.find_python()[0] == str(managed / "bin" / "python")
    monkeypatch.setenv(wc.ENV_VAR, str(tmp_path / "missing-python"))
    with pytest.raises(QgsProcessingException, match="OPTSAR_PYTHON does not exist.*missing-python"):
        wc.find_python()
    ProcessingConfig.setSettingValue(wc.SETTING, str(VENV_PYTHON))
    try:
        assert wc.find_python() == (str(VENV_PYTHON), f"the provider setting '{wc.SETTING_LABEL}'")
    finally:
        ProcessingConfig.setSettingValue(wc.SETTING, "")
    monkeypatch.delenv(wc.ENV_VAR)
    monkeypatch.setattr(wc, "PLUGIN_DIR", str(tmp_path))
    monkeypatch.setattr(wc, "managed_env_dir", lambda: str(tmp_path / "none"))
    with pytest.raises(QgsProcessingException, match="optsar:installdependencies"):
        wc.find_python()


def test_the_provider_registers_its_setting(processing_provider):
    from processing.core.ProcessingConfig import ProcessingConfig

    from algorithms.worker_client import SETTING

    assert SETTING in ProcessingConfig.settings
    assert ProcessingConfig.settings[SETTING].group == "OptSAR Fusion"


# -- dying and cancelled workers ------------------------------------------------------------------------


@pytest.mark.parametrize("mode, expected", [
    ("segv", "killed by signal 11 (SIGSEGV)"),
    ("kill", "killed by signal 9 (SIGKILL), often the system's out-of-memory killer"),
    ("exit", "exited with status 70 without a result"),
])
def test_a_dying_worker_is_one_clear_error_without_leftovers(processing_provider, data, tmp_path, monkeypatch, mode,
                                                             expected):
    import processing
    from qgis.core import QgsProcessingException

    monkeypatch.setenv("OPTSAR_WORKER_TEST_CRASH", mode)
    with pytest.raises(QgsProcessingException) as info:
        processing.run("optsar:classify", classify_params(data, tmp_path / "lc.tif"))
    message = str(info.value)
    assert expected in message and "while running 'classify'" in message
    assert f"test crash '{mode}' at progress" in message  # the worker's last log lines
    assert list(tmp_path.iterdir()) == []


def _children():
    import psutil

    return [p for p in psutil.Process().children(recursive=True) if "optsar_plugin" in " ".join(p.cmdline())]


def test_cancel_mid_run_stops_the_worker_and_leaves_nothing(processing_provider, data, tmp_path):
    import processing
    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    feedback = QgsProcessingFeedback()
    marks = {}

    def on_progress(value):
        if value > 0 and "t" not in marks:
            marks["t"] = time.monotonic()
            marks["files"] = sorted(p.name for p in tmp_path.iterdir())
            feedback.cancel()

    feedback.progressChanged.connect(on_progress)
    with pytest.raises(QgsProcessingException, match="Cancelled"):
        processing.run("optsar:classify", classify_params(data, tmp_path / "lc.tif", big=True), feedback=feedback)
    took = time.monotonic() - marks["t"]
    assert any(".tmp" in f for f in marks["files"])  # it was mid-run: temporary outputs existed
    assert took <= 2.0, took
    assert list(tmp_path.iterdir()) == []
    assert _children() == []


def test_a_worker_that_ignores_sigterm_is_killed_after_the_grace_period(processing_provider, data, tmp_path,
                                                                         monkeypatch):
    import threading

    import processing
    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    from algorithms.worker_client import TERMINATE_GRACE_S

    monkeypatch.setenv("OPTSAR_WORKER_TEST_CRASH", "hang")  # stops at its first progress report, ignores SIGTERM
    feedback = QgsProcessingFeedback()
    t = {}

    def cancel():
        t["t"] = time.monotonic()
        feedback.cancel()

    timer = threading.Timer(8.0, cancel)  # the user gives up on a worker that shows no progress
    timer.start()
    with pytest.raises(QgsProcessingException, match="Cancelled"):
        processing.run("optsar:classify", classify_params(data, tmp_path / "lc.tif"), feedback=feedback)
    timer.cancel()
    assert time.monotonic() - t["t"] <= TERMINATE_GRACE_S + 0.5
    assert list(tmp_path.iterdir()) == [] and _children() == []


# -- the log ---------------------------------------------------------------------------------------------


class FakeFeedback:
    def __init__(self):
        self.lines, self.values = [], []

    def setProgress(self, v):  # noqa: N802
        self.values.append(v)

    def setProgressText(self, t):  # noqa: N802
        self.lines.append(("text", t))

    def pushInfo(self, m):  # noqa: N802
        self.lines.append(("info", m))

    def reportError(self, m, fatalError=False):  # noqa: N802, N803
        self.lines.append(("warning", m))


def test_log_relay_keeps_about_twenty_lines_per_run():
    from algorithms.worker_client import MAX_LOG_LINES, LogRelay

    fb = FakeFeedback()
    relay = LogRelay(fb)
    for i in range(1000):
        relay.progress(i / 1000, f"window {i}")
    for i in range(50):
        relay.info(f"epoch {i}")
    relay.warning("late warning")
    relay.close()
    assert len(fb.values) == 1000  # the bar sees every step
    assert [t for k, t in fb.lines if k == "text"] == ["window 0", "window 250", "window 500", "window 750"]
    assert len(fb.lines) == MAX_LOG_LINES + 1 <= 20
    shown = [m for _, m in fb.lines]
    # the first messages as they came, one line for the middle, the last ones (final epochs, a late warning)
    assert shown[4:12] == [f"epoch {i}" for i in range(8)]
    assert shown[12] == "(39 engine message(s) not shown.)"
    assert shown[13:] == ["epoch 47", "epoch 48", "epoch 49", "late warning"] and fb.lines[-1][0] == "warning"


# -- layers that are not files ------------------------------------------------------------------------


def test_memory_layer_is_exported_for_the_worker_and_removed_after(processing_provider, data, tmp_path, monkeypatch):
    import processing
    from qgis.core import QgsFeature, QgsField, QgsGeometry, QgsRectangle, QgsVectorLayer
    from qgis.PyQt.QtCore import QVariant

    from algorithms import worker_client

    with rasterio.open(data["scene"]["optical"]) as ds:
        b = ds.bounds
    layer = QgsVectorLayer("Polygon?crs=EPSG:32633", "ref", "memory")
    layer.dataProvider().addAttributes([QgsField("lc", QVariant.String)])
    layer.updateFields()
    f = QgsFeature(layer.fields())
    f.setGeometry(QgsGeometry.fromRect(QgsRectangle(b.left + 100, b.bottom + 100, b.left + 900, b.bottom + 900)))
    f.setAttribute("lc", "water")
    layer.dataProvider().addFeatures([f])
    seen = {}

    def fake_run_job(function, kwargs, feedback=None, outputs=(), python=None):
        seen.update(function=function, reference=kwargs["reference"], existed=os.path.isfile(kwargs["reference"]))
        return {"checkpoint": kwargs["output_checkpoint"], "log": None, "curve": None, "best_epoch": 1,
                "best": {}, "history": [{}], "seconds_per_epoch": 1.0, "device": "cpu", "cancelled": False,
                "steps": 1, "stop_reason": "the step budget (1 steps) was reached", "resumed_from_step": None}

    monkeypatch.setattr(worker_client, "run_job", fake_run_job)
    processing.run("optsar:train", {"OPTICAL": data["scene"]["optical"], "SAR": data["scene"]["sar"], "REFERENCE": layer,
                                    "CLASS_FIELD": "lc", "TILE_SIZE": 64, "OUTPUT_CHECKPOINT": str(tmp_path / "m.safetensors")})
    assert seen["function"] == "train" and seen["existed"] and seen["reference"].endswith(".gpkg")
    assert not os.path.exists(seen["reference"])


# -- torch never in the QGIS process -------------------------------------------------------------------------


def test_qgis_process_never_imports_torch(data, tmp_path):
    """checkenvironment, train and classify (in the worker), then assessaccuracy, stratifiedsample and
    samplescene (in process) through processing.run in a QGIS Python that refuses to import torch,
    torchvision, timm, triton or safetensors: all work, and none of those was even tried here."""
    code = f"""
import sys
TRIED = []
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'torchvision', 'timm', 'triton', 'safetensors'):
            TRIED.append(name)
            raise ImportError('blocked in QGIS: ' + name)
sys.meta_path.insert(0, Block())
from qgis.core import QgsApplication
app = QgsApplication([], False); app.initQgis()
sys.path.insert(0, '/usr/share/qgis/python/plugins'); sys.path.insert(0, {str(ROOT)!r})
from processing.core.Processing import Processing
Processing.initialize()
from algorithms.provider import OptsarProvider
provider = OptsarProvider(); QgsApplication.processingRegistry().addProvider(provider)
import processing
s = {data['scene']!r}
env = processing.run('optsar:checkenvironment', {{}})
assert env['READY'], env['REPORT']
t = processing.run('optsar:train', {{'OPTICAL': s['optical'], 'SAR': s['sar'], 'REFERENCE': s['reference_train'],
    'CLASS_FIELD': 'class_name', 'MODEL': 'cloudlulc_net', 'EPOCHS': 1, 'STEPS_PER_EPOCH': 1, 'TILE_SIZE': 64,
    'BATCH_SIZE': 1, 'VALIDATION_FRACTION': 0.0, 'DEVICE': 'cpu', 'OUTPUT_CHECKPOINT': {str(tmp_path / 'm.safetensors')!r}}})
c = processing.run('optsar:classify', {{'OPTICAL': s['optical'], 'SAR': s['sar'], 'CHECKPOINT': t['OUTPUT_CHECKPOINT'],
    'DEVICE': 'cpu', 'TILE_SIZE': 64, 'OVERLAP': 16, 'OUTPUT': {str(tmp_path / 'lc.tif')!r}}})
a = processing.run('optsar:assessaccuracy', {{'CLASSIFICATION': c['OUTPUT'], 'REFERENCE': s['reference_test'],
    'CLASS_FIELD': 'class_name', 'CHECKPOINT': t['OUTPUT_CHECKPOINT'], 'OUTPUT_REPORT': {str(tmp_path / 'r.html')!r},
    'OUTPUT_MATRIX': {str(tmp_path / 'm.csv')!r}, 'OUTPUT_METRICS': {str(tmp_path / 'm.json')!r}}})
p = processing.run('optsar:stratifiedsample', {{'CLASSIFICATION': c['OUTPUT'], 'TOTAL': 30, 'OUTPUT': {str(tmp_path / 'p.gpkg')!r}}})
g = processing.run('optsar:samplescene', {{'OUTPUT_FOLDER': {str(tmp_path / 'scene2')!r}, 'SIZE': 64}})
loaded = [m for m in ('torch', 'torchvision', 'timm', 'triton', 'safetensors') if m in sys.modules]
print('TRIED', TRIED, 'LOADED', loaded)
assert not TRIED and not loaded
"""
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert (tmp_path / "lc.tif").is_file()
