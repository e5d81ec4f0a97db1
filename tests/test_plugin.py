"""The plugin loads, registers its provider, and every algorithm is documented."""

from __future__ import annotations

import ast
import configparser
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_metadata_fields():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "metadata.txt")
    g = cfg["general"]
    assert g["name"] == "OptSAR Fusion"
    assert g["qgisMinimumVersion"] == "3.22"
    assert g["qgisMaximumVersion"] == "4.99"
    assert g["supportsQt6"] == "True"
    assert g["hasProcessingProvider"] == "yes"
    for key in ("description", "about", "version", "author", "tags", "category", "icon"):
        assert g.get(key), f"metadata.txt lacks {key}"
    assert (ROOT / g["icon"]).is_file()
    # No placeholder addresses: the project has no website, so metadata names none.
    text = (ROOT / "metadata.txt").read_text()
    assert "example." not in text and "github.com/optsar-fusion" not in text
    assert "QGIS's Python" not in g["about"]  # torch goes into the worker's environment, not QGIS's


def test_class_factory_registers_provider():
    """As QGIS loads it: the package optsar_fusion, classFactory, initProcessing/initGui, unload.

    Runs in its own QGIS process: unloading deletes the provider, which the other tests share.
    """
    import subprocess
    import sys

    code = f"""
import importlib.util, sys
from unittest import mock
from qgis.core import QgsApplication
app = QgsApplication([], True); app.initQgis()
from qgis.PyQt.QtWidgets import QMainWindow
window = QMainWindow()
spec = importlib.util.spec_from_file_location("optsar_fusion", "{ROOT}/__init__.py", submodule_search_locations=["{ROOT}"])
module = importlib.util.module_from_spec(spec); sys.modules["optsar_fusion"] = module; spec.loader.exec_module(module)
iface = mock.MagicMock(mainWindow=lambda: window)
plugin = module.classFactory(iface)
plugin.initProcessing()
plugin.initGui()
registry = QgsApplication.processingRegistry()
provider = registry.providerById("optsar")
assert provider is plugin.provider, provider
assert "optsar:checkenvironment" in {{a.id() for a in provider.algorithms()}}
assert iface.addPluginToMenu.call_count == 3  # install dependencies, check environment, sample scene
plugin.unload()
assert registry.providerById("optsar") is None
assert iface.removePluginMenu.call_count == 3
print("ok")
"""
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd="/")
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stdout + proc.stderr


def test_every_algorithm_is_documented(processing_provider):
    algs = processing_provider.algorithms()
    assert len(algs) >= 2
    for alg in algs:
        assert alg.displayName(), alg.id()
        assert alg.group() and alg.groupId(), alg.id()
        assert len(alg.shortHelpString()) > 80, f"{alg.id()} has no real help"
        # No website: help opens the README shipped inside the plugin folder.
        url = alg.helpUrl()
        assert url.startswith("file://") and "#" in url, (alg.id(), url)
        assert Path(url[len("file://"):].split("#")[0]).resolve() == (ROOT / "README.md").resolve(), url
        assert " " not in alg.id(), alg.id()
        assert not alg.icon().isNull(), alg.id()
        if alg.id() in {"optsar:classify_and_assess", "optsar:train_classify_and_assess"}:
            continue  # graphical models: QGIS's model icon, no tags
        assert os.path.isfile(alg.svgIconPath()), alg.id()
        assert alg.tags(), alg.id()


def test_check_environment_algorithm(processing_provider):
    """The report comes from the worker (the plugin folder's .venv here), QGIS's own Python apart."""
    import processing

    result = processing.run("optsar:checkenvironment", {})
    import torch

    assert result["TORCH_VERSION"] == str(torch.__version__)
    assert result["READY"] is True
    assert Path(result["WORKER_PYTHON"]).resolve() == (ROOT / ".venv" / "bin" / "python").resolve()
    assert result["MEMORY_GIB"] > 0 and result["QGIS_PYTHON_VERSION"]
    assert "PyTorch" in result["REPORT"] and "QGIS's Python" in result["REPORT"]


def _imports(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def _project_python_files():
    skip = {".venv", ".qgis-plugins", ".git", "ext-libs", "build"}
    for path in ROOT.rglob("*.py"):
        if not skip.intersection(path.relative_to(ROOT).parts):
            yield path


def test_no_direct_pyqt_imports():
    offenders = [
        f"{p.relative_to(ROOT)}: {m}"
        for p in _project_python_files()
        for m in _imports(p)
        if m.split(".")[0] in {"PyQt5", "PyQt6", "PySide2", "PySide6"}
    ]
    assert offenders == []


def test_engine_never_imports_qgis():
    offenders = [
        f"{p.relative_to(ROOT)}: {m}"
        for p in (ROOT / "optsar_plugin").rglob("*.py")
        for m in _imports(p)
        if m.split(".")[0] in {"qgis", "processing"}
    ]
    assert offenders == []


def test_engine_imports_without_qgis_or_torch(tmp_path):
    """The engine's light modules import in a Python where qgis and torch are unimportable."""
    import subprocess
    import sys

    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text(
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('qgis', 'torch', 'timm', 'PyQt5'):\n"
        "            raise ImportError('blocked for test: ' + name)\n"
        "sys.meta_path.insert(0, _Block())\n"
    )
    code = (
        "import optsar_plugin, optsar_plugin.cli, optsar_plugin.models, optsar_plugin.environment\n"
        "from optsar_plugin.models import available_models\n"
        "assert len(available_models()) == 3\n"
        "from optsar_plugin.environment import environment_report\n"
        "r = environment_report(); assert r['torch'] is None and not r['ready'], r\n"
        "from optsar_plugin.errors import MissingDependencyError\n"
        "from optsar_plugin.models import build_model\n"
        "try:\n"
        "    build_model('cloudlulc_net', optical_bands=4, sar_bands=2, num_classes=3)\n"
        "except MissingDependencyError as e:\n"
        "    assert 'torch' in str(e) and 'installdependencies' in str(e), e\n"
        "else:\n"
        "    raise SystemExit('no error without torch')\n"
    )
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}:{ROOT}")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr


def test_plugin_puts_only_its_own_folder_on_sys_path():
    """No ext-libs or other package folder is added to QGIS's sys.path: torch must never import there by accident."""
    src = (ROOT / "__init__.py").read_text()
    assert "ext-libs" not in src and src.count("sys.path.insert") == 1 and "sys.path.append" not in src


def test_provider_loads_every_algorithm_without_torch(tmp_path):
    """QGIS's Python usually has no torch: the provider must still offer all its algorithms."""
    import subprocess
    import sys

    (tmp_path / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'timm', 'torchvision', 'safetensors'):\n"
        "            raise ImportError('blocked for test: ' + name)\n"
        "sys.meta_path.insert(0, _Block())\n"
    )
    code = (
        "from qgis.core import QgsApplication\n"
        "app = QgsApplication([], False); app.initQgis()\n"
        "from algorithms.provider import OptsarProvider, ALGORITHMS, MODELS_DIR\n"
        "import os\n"
        "p = OptsarProvider(); QgsApplication.processingRegistry().addProvider(p)\n"
        "ids = sorted(a.name() for a in p.algorithms())\n"
        "print(ids)\n"
        "models = [f for f in os.listdir(MODELS_DIR) if f.endswith('.model3')]\n"
        "assert len(models) == 2 and len(ids) == len(ALGORITHMS) + len(models), ids\n"
    )
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}:{ROOT}", QT_QPA_PLATFORM="offscreen")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


UNQUALIFIED_ENUM = __import__("re").compile(
    r"\b(QgsProcessingParameterNumber\.(Integer|Double)|QgsProcessingParameterDefinition\.Flag\w+"
    r"|QgsProcessing\.Type\w+|Qgis\.(Info|Warning|Critical|Success)|QgsProcessingParameterField\.(Any|Numeric|String|DateTime))\b"
)


def test_enums_are_fully_qualified_for_qt6():
    """PyQt6 (QGIS 4) only accepts scoped enum access, e.g. QgsProcessingParameterNumber.Type.Integer."""
    offenders = []
    for path in [*(ROOT / "algorithms").glob("*.py"), ROOT / "plugin.py", *(ROOT / "scripts").glob("*.py")]:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if UNQUALIFIED_ENUM.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert offenders == []
