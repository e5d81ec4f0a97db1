"""The inputs of one classification: opened, checked against each other and the checkpoint, aligned.

The output grid is the optical raster's grid, or the pixels of it covering a user extent
(snapped outwards).  The SAR raster and the cloud mask may have any CRS, resolution and
extent: they are seen through :func:`optsar_plugin.raster_io.aligned` on the optical grid
(SAR warped bilinearly, the cloud mask by nearest neighbour, per window).  Every check that
can fail - a missing CRS, bands, band names, an extent or a raster that does not overlap -
runs here, before any output is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .. import raster_io
from ..metadata import BandChoice, check_fit


@dataclass
class Scene:
    """The open inputs: optical dataset (the grid), SAR and cloud sources on its grid, bands, output region."""

    optical: object
    sar: object
    cloud: Optional[object]
    optical_bands: list
    sar_bands: list
    region: raster_io.Region
    native: tuple  # the datasets as opened (optical, SAR, cloud mask or None): for the GDAL cache size
    units: Optional[dict] = None  # {"optical", "sar"}: this scene's encodings (normalisation.raster_units)

    @property
    def width(self) -> int:
        return self.region.width

    @property
    def height(self) -> int:
        return self.region.height


def open_scene(stack, optical, sar, cloud_mask, options, meta, checkpoint: str, feedback) -> Scene:
    """Open and check the inputs (closed with ``stack``); band-name warnings go to ``feedback``."""
    opt_ds = stack.enter_context(raster_io.open_raster(optical, raster_io.OPTICAL))
    sar_ds = stack.enter_context(raster_io.open_raster(sar, raster_io.SAR))
    raster_io.require_crs(opt_ds, raster_io.OPTICAL, sar_ds, raster_io.SAR)
    raster_io.require_crs(sar_ds, raster_io.SAR, opt_ds, raster_io.OPTICAL)
    obands = raster_io.select_bands(opt_ds, options.optical_bands, raster_io.OPTICAL)
    sbands = raster_io.select_bands(sar_ds, options.sar_bands, raster_io.SAR)
    for message in check_fit(
        meta, model=options.model, checkpoint=checkpoint,
        optical=BandChoice.of(obands, raster_io.band_descriptions(opt_ds, obands), opt_ds.name),
        sar=BandChoice.of(sbands, raster_io.band_descriptions(sar_ds, sbands), sar_ds.name),
    ):
        feedback.warning(message)
    region = raster_io.region_for_extent(opt_ds, options.extent, options.extent_crs)
    raster_io.check_overlap(opt_ds, sar_ds, region, raster_io.SAR)
    sar_src = stack.enter_context(raster_io.aligned(sar_ds, opt_ds, "bilinear"))
    cloud_ds = cloud_src = None
    if cloud_mask:
        cloud_ds = stack.enter_context(raster_io.open_raster(cloud_mask, raster_io.CLOUD))
        raster_io.require_crs(cloud_ds, raster_io.CLOUD, opt_ds, raster_io.OPTICAL)
        raster_io.check_overlap(opt_ds, cloud_ds, region, raster_io.CLOUD)
        cloud_src = stack.enter_context(raster_io.aligned(cloud_ds, opt_ds, "nearest"))
    units = input_units(opt_ds, obands, sar_ds, sbands, region, meta, feedback)
    return Scene(opt_ds, sar_src, cloud_src, obands, sbands, region, (opt_ds, sar_ds, cloud_ds), units)


def input_units(opt_ds, obands, sar_ds, sbands, region, meta, feedback) -> Optional[dict]:
    """This scene's optical and SAR encodings, detected from a decimated read; a warning per input whose
    encoding differs from the training data's (the values are converted, see :mod:`optsar_plugin.normalisation`).

    None for checkpoints whose statistics record no units (they apply to the raw values).
    """
    from .. import normalisation

    stats = meta.normalisation
    if "units" not in stats["optical"] or "units" not in stats["sar"]:
        return None
    units = {"optical": normalisation.raster_units(opt_ds, obands, raster_io.sample_values(opt_ds, obands, region),
                                                   "optical"),
             "sar": normalisation.raster_units(sar_ds, sbands, raster_io.sample_values(sar_ds, sbands), "sar")}
    for kind, ds, names in (("optical", opt_ds, meta.optical_bands), ("sar", sar_ds, meta.sar_bands)):
        for message in normalisation.unit_warnings(stats[kind]["units"], units[kind], names, kind):
            feedback.warning(f"{message} ({ds.name})")
    hint = units["optical"].pop("hint", None)
    if hint and not stats["optical"]["units"].get("source", "").startswith("Sentinel-2 metadata"):
        feedback.warning(f"Optical raster '{opt_ds.name}': {hint}.")
    return units


def check_bands(optical, sar, options, meta, checkpoint: str) -> None:
    """The cheap part of :func:`open_scene`: band counts against the checkpoint, the extent's CRS (before loading
    weights)."""
    if options.extent_crs is not None:
        raster_io.parse_crs(options.extent_crs, "extent CRS")
    with raster_io.open_raster(optical, raster_io.OPTICAL) as o, raster_io.open_raster(sar, raster_io.SAR) as s:
        check_fit(meta, checkpoint=checkpoint,
                  optical=BandChoice.of(raster_io.select_bands(o, options.optical_bands, raster_io.OPTICAL),
                                        source=o.name),
                  sar=BandChoice.of(raster_io.select_bands(s, options.sar_bands, raster_io.SAR), source=s.name))
