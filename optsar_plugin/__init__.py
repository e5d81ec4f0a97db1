"""OptSAR Fusion engine: optical–SAR fusion land-cover mapping without QGIS.

Every capability is a plain function over paths and options (see DESIGN.md):
models (:mod:`optsar_plugin.models`), checkpoints, tiled inference, accuracy
assessment, training and the synthetic sample scene.  Nothing here imports
QGIS, and heavy libraries (torch, timm) are imported lazily so that the
package imports anywhere.
"""

__version__ = "0.1.0"
