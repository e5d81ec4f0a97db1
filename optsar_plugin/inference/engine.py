"""The classification run: :func:`classify` (a checkpoint) and :func:`run_inference` (any predictor).

:func:`run_inference` is the composition of the package's steps, in the order they
happen: reserve the outputs, open and check the inputs, plan the windows, stream them
through the predictor and the blender into the output rasters, tag and style the
outputs, publish them.  :func:`classify` adds what a checkpoint brings: its metadata,
the device and precision, the network.
"""

from __future__ import annotations

import os
import time
from contextlib import ExitStack
from typing import Dict, Optional

from ..classes import ClassScheme
from ..deps import require
from ..errors import InputError
from ..fileio import OutputSet
from ..metadata import CheckpointMetadata
from ..options import MIN_TILE, cloud_handling
from ..options import default_tile as _default_tile
from ..progress import NullFeedback, check_cancel
from ..raster_io import parallel_warp
from .blender import StreamingBlender
from .networks import NetworkCache, load_network
from .options import InferenceOptions
from .predictors import AdaptivePredictor, Predictor, TorchPredictor, resolve_precision, with_tta
from .scene import check_bands, open_scene
from .windows import BatchReader, cap_gdal_cache, plan_windows, stream_windows, stripe_px
from .writer import TAG_PREFIX, OutputRasters, output_tags


def default_tile(metadata=None) -> int:
    """A checkpoint's training tile rounded to a multiple of 32 (>= 64; 510 -> 512), else 512."""
    if metadata is None:
        return _default_tile(None)
    return CheckpointMetadata.coerce(metadata).default_tile()


def classify(optical, sar, checkpoint, output, *, options: Optional[InferenceOptions] = None, cloud_mask=None,
             output_confidence=None, output_probabilities=None, feedback=None, networks: Optional[NetworkCache] = None,
             tags: Optional[Dict[str, str]] = None, **settings) -> Dict:
    """Classify an optical + SAR scene with a checkpoint and write the outputs.

    ``optical``/``sar``/``cloud_mask``: raster paths; ``checkpoint``: an OptSAR checkpoint
    (:mod:`optsar_plugin.checkpoints`); ``output``: the classification GeoTIFF;
    ``output_confidence``/``output_probabilities``: optional float32 outputs.  The
    settings - ``optical_bands``, ``sar_bands``, ``model``, ``extent``, ``extent_crs``,
    ``device``, ``tile_size``, ``overlap``, ``batch_size``, ``precision``, ``cloud_mode`` -
    come as an :class:`InferenceOptions` (``options``), as keywords, or both (keywords win).
    ``networks``: a :class:`~.networks.NetworkCache` that keeps the network between calls
    (the batch layer's per-worker cache; default: loaded for this call); ``tags``: extra
    GeoTIFF tags written on every output raster.

    Returns ``{"output", "confidence", "probabilities", "qml", "confidence_qml", "width",
    "height", "windows", "tile", "overlap", "batch_size", "valid_pixels", "class_pixels",
    "cloud_fraction", "cloud_handling", "seconds", "seconds_model", "device", "precision", ...}``.
    Raises :class:`~optsar_plugin.errors.OptsarError` subclasses (nothing written):
    :class:`InputError` for bad input, :class:`CheckpointError` for a bad checkpoint,
    :class:`~optsar_plugin.errors.Cancelled` on cancellation.
    """
    feedback = feedback or NullFeedback()
    opts = InferenceOptions.of(options, "classify", **settings)
    ck_path = os.fspath(checkpoint or "")
    if not ck_path:
        raise InputError("No checkpoint was given.")
    from ..checkpoints import load_metadata

    meta = load_metadata(ck_path)
    opts.tiling(meta)
    # Cheap input checks before loading weights, so that mistakes surface in a second.
    from ..metadata import check_fit

    check_fit(meta, model=opts.model, checkpoint=ck_path)
    check_bands(optical, sar, opts, meta, ck_path)
    from ..devices import resolve_device

    dev = resolve_device(opts.device, feedback)
    prec = resolve_precision(opts.precision, dev, feedback)
    if networks is not None:
        net, meta = networks.load(ck_path, meta.content_hash, str(dev))
    else:
        net, meta = load_network(ck_path, str(dev))
    feedback.info(f"Model {meta.model} from '{ck_path}' on {dev} ({prec}).")
    result = run_inference(
        optical, sar, output, meta, TorchPredictor(net, dev, prec), opts, cloud_mask=cloud_mask,
        output_confidence=output_confidence, output_probabilities=output_probabilities, feedback=feedback,
        checkpoint_name=ck_path, tags={TAG_PREFIX + "DEVICE": str(dev), TAG_PREFIX + "PRECISION": prec, **(tags or {})},
    )
    result.update(device=str(dev), precision=prec)
    return result


def run_inference(optical, sar, output, metadata, predictor: Predictor, options: Optional[InferenceOptions] = None,
                  *, cloud_mask=None, output_confidence=None, output_probabilities=None, feedback=None,
                  tags: Optional[Dict[str, str]] = None, checkpoint_name: str = "", min_tile: int = MIN_TILE,
                  **settings) -> Dict:
    """Classify with an already loaded ``predictor(optical, sar) -> probabilities``.

    ``metadata``: a :class:`~optsar_plugin.metadata.CheckpointMetadata` (or its JSON form):
    the predictor gets float32 arrays (B, optical bands, h, w) and (B, SAR bands, h, w)
    normalised with its statistics and returns class probabilities (B, classes, h, w) in
    its class order.  :func:`classify` builds the predictor from a checkpoint; tests and
    benchmarks inject their own.  Options and result as for :func:`classify`.
    """
    t_start = time.perf_counter()
    feedback = feedback or NullFeedback()
    opts = InferenceOptions.of(options, "run_inference", **settings)
    meta = CheckpointMetadata.coerce(metadata, checkpoint_name)
    tile, overlap = opts.tiling(meta)
    handling = cloud_handling(opts.cloud_mode, meta.model)
    inputs = {"optical": optical, "sar": sar, "cloud_mask": cloud_mask, "checkpoint": checkpoint_name}
    with OutputSet(_protected(inputs), feedback) as outs:
        finals, temps = _reserve_outputs(outs, output, output_confidence, output_probabilities, feedback)
        with ExitStack() as stack:
            scene = open_scene(stack, optical, sar, cloud_mask, opts, meta, checkpoint_name, feedback)
            if cloud_mask:
                feedback.info(f"Cloud mask: non-zero pixels are cloud; optical data under clouds: {handling} "
                              "(cloudy pixels keep their prediction).")
            warped = tuple(ds for ds in (scene.sar, scene.cloud) if ds is not None and ds not in scene.native)
            sources = scene.native + warped
            grid = plan_windows(scene.region, tile, overlap, min_tile,
                                stripe_px(require("rasterio", "reading rasters"), sources, tile, scene.width, scene.optical.width))
            cap_gdal_cache(stack, sources, grid.th, grid.stripe_width(scene.width) / scene.optical.width)
            stack.enter_context(parallel_warp())  # the warped SAR's blocks on several cores
            stripes = grid.stripes()
            feedback.info(f"Classifying {scene.width} x {scene.height} px in {grid.n_windows} window(s) of "
                          f"{grid.tw} x {grid.th} px (overlap {overlap} px, batch {opts.batch_size})"
                          + (f", in {len(stripes)} stripes of {grid.stripe} window columns." if len(stripes) > 1 else "."))
            rasters = OutputRasters(stack, temps, scene.optical.crs, _region_transform(scene), scene.width,
                                    scene.height, meta.classes, window_rows=grid.th)
            blender = StreamingBlender(scene.height, scene.width, len(meta.classes), grid.th, grid.tw, grid.rows,
                                       grid.cols, meta.classes.codes, rasters.sink, confidence="confidence" in temps,
                                       probabilities="probabilities" in temps, stripes=stripes,
                                       spill_dir=os.path.dirname(temps["output"]))
            stack.callback(blender.close)
            runner = AdaptivePredictor(with_tta(predictor, opts.tta), opts.batch_size, overlap, feedback, min_tile)
            reader = BatchReader(stack, scene, grid, meta.normalisation, handling, opts.batch_size, feedback)
            stream_windows(reader, runner, blender, feedback)
            _require_valid_pixels(blender, scene, opts)
            run = {"tile": tile, "overlap": overlap, "tta": opts.tta, "cloud_handling": handling if cloud_mask else None,
                   "cloud_fraction": blender.cloudy_pixels / blender.valid_pixels if cloud_mask else None,
                   "class_pixels": _class_pixels(rasters.sink, meta.classes)}
            rasters.tag(output_tags(meta, inputs, {"optical": scene.optical_bands, "sar": scene.sar_bands}, run,
                                    tags), f"land cover ({meta.model})")
        _style_outputs(temps, meta.classes)
        check_cancel(feedback)
        outs.publish()
    return _result(finals, scene, grid, runner, blender, rasters.sink, meta.classes, run,
                   time.perf_counter() - t_start)


def _protected(inputs: Dict[str, Optional[str]]):
    roles = {"optical": "optical raster", "sar": "SAR raster", "cloud_mask": "cloud mask", "checkpoint": "checkpoint"}
    return [(path, roles[key], key != "checkpoint") for key, path in inputs.items() if path]


ROLES = {"output": "output classification", "confidence": "confidence output", "probabilities": "probability output"}
STYLES = {"qml": "output", "confidence_qml": "confidence"}  # style file -> the raster it styles


def _reserve_outputs(outs: OutputSet, output, confidence, probabilities, feedback):
    """(finals, temps): every output raster and style file reserved, keyed as :data:`ROLES` and :data:`STYLES`."""
    from ..styles import qml_path_for

    finals = {"output": output, "confidence": confidence, "probabilities": probabilities}
    finals = {k: os.path.abspath(os.fspath(v)) for k, v in finals.items() if v}
    temps = {}
    for key, path in list(finals.items()):
        temps[key] = outs.add(path, ROLES[key], sidecars=(".aux.xml",))
        if not path.lower().endswith((".tif", ".tiff")):
            feedback.warning(f"The {ROLES[key]} '{path}' does not end in .tif; it is written as a GeoTIFF anyway.")
    for key, raster in STYLES.items():
        if raster in finals:
            finals[key] = str(qml_path_for(finals[raster]))
            temps[key] = outs.add(finals[key], f"style file of the {ROLES[raster]}", primary=finals[raster])
    return finals, temps


def _region_transform(scene):
    from rasterio.windows import transform as window_transform

    return window_transform(scene.region.window(), scene.optical.transform)


def _require_valid_pixels(blender: StreamingBlender, scene, opts: InferenceOptions) -> None:
    if blender.valid_pixels == 0:
        raise InputError(
            f"No valid pixel to classify: the optical raster '{scene.optical.name}' (bands {scene.optical_bands}) "
            f"and the SAR raster '{scene.native[1].name}' (bands {scene.sar_bands}) are nodata everywhere they overlap"
            + (" within the extent" if opts.extent is not None else "") + ". Nothing was written."
        )


def _style_outputs(temps: Dict[str, str], scheme: ClassScheme) -> None:
    """Colour table and category names on the closed classification; the styles beside the outputs."""
    from ..styles import apply_class_metadata, class_qml, ramp_qml

    apply_class_metadata(temps["output"], scheme)
    with open(temps["qml"], "w", encoding="utf-8") as fh:
        fh.write(class_qml(scheme))
    if "confidence_qml" in temps:
        with open(temps["confidence_qml"], "w", encoding="utf-8") as fh:
            fh.write(ramp_qml(0.0, 1.0))


def _class_pixels(sink, scheme: ClassScheme) -> Dict[int, int]:
    counts = sink.class_counts
    return {int(c): int(counts[c]) for c in scheme.codes}


def _result(finals, scene, grid, runner, blender, sink, scheme: ClassScheme, run: Dict, seconds: float) -> Dict:
    return {
        "output": finals["output"],
        "confidence": finals.get("confidence"),
        "probabilities": finals.get("probabilities"),
        "qml": finals["qml"],
        "confidence_qml": finals.get("confidence_qml"),
        "width": scene.width,
        "height": scene.height,
        "windows": grid.n_windows,
        "tile": [grid.th, grid.tw],
        "overlap": run["overlap"],
        "tta": run["tta"],
        "batch_size": runner.batch,
        "max_model_edge": runner.max_edge,
        "valid_pixels": blender.valid_pixels,
        "cloud_fraction": run["cloud_fraction"],
        "cloud_handling": run["cloud_handling"],
        "class_pixels": run["class_pixels"],
        "seconds": seconds,
        "seconds_model": runner.seconds,
    }
