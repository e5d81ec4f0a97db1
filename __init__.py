"""OptSAR Fusion QGIS plugin entry point (the repository root is the plugin folder).

The engine ``optsar_plugin`` is a plain Python package that also runs without QGIS
(``python -m optsar_plugin``), so it is imported by its own top-level name: the plugin
folder goes on ``sys.path``.  Nothing else does: PyTorch, timm and torchvision live in the
engine worker's Python (see ``algorithms/worker_client.py``) and must never become
importable in QGIS by accident (triton, which torch brings, crashes a QGIS that uses
Mesa's GL).
"""

import os
import sys

_PLUGIN_DIR = os.path.dirname(os.path.abspath(__file__))


def _extend_path():
    if _PLUGIN_DIR not in sys.path:
        sys.path.insert(0, _PLUGIN_DIR)


_extend_path()


def classFactory(iface):  # noqa: N802 (QGIS API name)
    from .plugin import OptsarFusionPlugin

    return OptsarFusionPlugin(iface)
