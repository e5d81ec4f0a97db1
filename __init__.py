"""OptSAR Fusion QGIS plugin entry point (the repository root is the plugin folder).

The engine ``optsar_plugin`` is a plain Python package that also runs without QGIS
(``python -m optsar_plugin``), so it is imported by its own top-level name: the
plugin folder goes on ``sys.path``, as does the plugin-local folder into which
``optsar:installdependencies`` installs PyTorch and timm.
"""

import os
import sys

_PLUGIN_DIR = os.path.dirname(os.path.abspath(__file__))


# Same rule as optsar_plugin.installer.site_dir (kept import-free here; a test checks they agree).
_DEPS_DIR = os.path.join(_PLUGIN_DIR, "ext-libs", "py{}{}".format(*sys.version_info[:2]))


def _extend_path():
    if _PLUGIN_DIR not in sys.path:
        sys.path.insert(0, _PLUGIN_DIR)
    # Appended: a torch already importable from QGIS's own Python keeps precedence.
    if os.path.isdir(_DEPS_DIR) and _DEPS_DIR not in sys.path:
        sys.path.append(_DEPS_DIR)


_extend_path()


def classFactory(iface):  # noqa: N802 (QGIS API name)
    from .plugin import OptsarFusionPlugin

    return OptsarFusionPlugin(iface)
