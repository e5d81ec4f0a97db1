"""Tiled, memory-bounded optical + SAR classification: :func:`classify` and ``python -m optsar_plugin classify``.

Data flow (one pass over the scene, window by window)::

    optical window  ─┐   (SAR and cloud mask warped onto the optical grid per window,
    SAR window      ─┼─> normalise (checkpoint stats) ─> batch ─> model ─> softmax
    cloud window    ─┘                                                       │
    blender (Hann-like weights, rolling accumulators) <──────────────────────┘
      └─> finished pixels ─> tile writer (whole GeoTIFF tiles) ─> temp files ─> rename

One module per step, composed top to bottom by :func:`run_inference` (:mod:`.engine`):

* :mod:`.options` - :class:`InferenceOptions`, what a run can be asked to do, checked when built;
* :mod:`.scene` - the inputs opened and checked against each other and the checkpoint;
* :mod:`.windows` - the window grid, the reader thread, GDAL-cache and heap bounds;
* :mod:`.networks` - the checkpoint's network, loaded per call or kept by a :class:`NetworkCache`;
* :mod:`.predictors` - the network as a function, the CUDA out-of-memory back-off;
* :mod:`.blender` - overlapping predictions blended into final pixels, row by row;
* :mod:`.writer` - whole GeoTIFF tiles written once, tags;
* :mod:`.cli` - ``python -m optsar_plugin classify``.

Choices (the papers say nothing about deployment; these are ours), each explained in
its module: the output grid is the optical grid (:mod:`.scene`); windows overlap by
exactly ``overlap`` px and are padded by reflection at the edges (:mod:`.windows`);
Hann-like blending with a floor removes seams (:mod:`.blender`); memory grows with the
scene *width* - the blender's band of ``overlap`` rows (about 2.6 MB per 1000 px, 9
classes, overlap 64) and GDAL's cache of one window row of input blocks (about 22 MB per
1000 px, :func:`.windows.gdal_cache_bytes`) - until that row no longer fits 32 MB or
GDAL's cache; wider scenes are visited in column stripes that fit (:class:`.windows.Grid`);
never with the area; a pixel is
nodata (255) when all its optical or all its SAR bands are; no valid pixel at all is an
error and nothing is written.

**Cloud mask** (optional, non-zero = cloud): cloudy pixels keep their prediction in every
mode (the SAR fills in); the mask only changes what the model sees
(:func:`optsar_plugin.options.cloud_handling`: ``keep`` for CloudLULC-Net, which is trained
on cloudy scenes, ``zero`` = the training median for the others).  The mask, the mode and
the cloudy share of valid pixels are recorded in the output's tags.

**Outputs** go through one :class:`~optsar_plugin.fileio.OutputSet`: hidden temporary files
beside the finals, renamed at the very end, removed on failure or cancellation, never
replacing an input.  The classification has the checkpoint's class codes, a colour
table, category names (GDAL keeps them in ``<output>.aux.xml``), tags and a paletted
``<stem>.qml`` beside it; the optional confidence raster gets a 0-1 colour-ramp ``.qml``.
"""

from ..options import (
    CLOUD_MODES,
    DEFAULT_BATCH,
    DEFAULT_OVERLAP,
    DEFAULT_TILE,
    DEVICES,
    MIN_TILE,
    PRECISIONS,
    check_tiling,
    default_overlap,
)
from .blender import WEIGHT_FLOOR, StreamingBlender, blend_weights
from .engine import classify, default_tile, run_inference
from .networks import NetworkCache, load_network
from .options import InferenceOptions
from .predictors import AdaptivePredictor, Predictor, TorchPredictor, TTAPredictor, resolve_precision, with_tta
from .windows import GDAL_CACHE_BYTES
from .writer import BLOCK, TAG_PREFIX, TileWriter

__all__ = [
    "classify", "run_inference", "InferenceOptions", "NetworkCache", "load_network", "check_tiling", "default_tile", "default_overlap",
    "blend_weights", "StreamingBlender", "TileWriter", "AdaptivePredictor", "TorchPredictor", "TTAPredictor",
    "with_tta", "Predictor",
    "resolve_precision", "CLOUD_MODES", "DEVICES", "PRECISIONS", "DEFAULT_TILE", "DEFAULT_OVERLAP",
    "DEFAULT_BATCH", "MIN_TILE", "WEIGHT_FLOOR", "BLOCK", "TAG_PREFIX", "GDAL_CACHE_BYTES",
]
