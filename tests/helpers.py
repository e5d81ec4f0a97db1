"""What several test modules need, in one place: rasters, vectors, model inputs, qgis_process, checkpoints.

Test modules import from here, never from each other.  Coordinates: a UTM grid (EPSG:32633)
with its top-left corner at (:data:`X0`, :data:`Y0`) and :data:`RES` m pixels, unless a
test says otherwise.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from scripts.qgis_process import QGIS_PROCESS, qgis_env, run_algorithm_json, run_qgis_process  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
EPSG = 32633
UTM = f"EPSG:{EPSG}"
X0, Y0, RES = 500_000.0, 4_000_000.0, 10.0
PX = RES


# -- rasters -----------------------------------------------------------------------------------


def write_raster(path, data, crs=UTM, transform=None, nodata=None, dtype=None, tiled=False, origin=(X0, Y0),
                 res=RES) -> str:
    """A GeoTIFF from a (bands, H, W) or (H, W) array; the grid is ``transform`` or ``origin`` and ``res``."""
    import rasterio
    from rasterio.transform import from_origin

    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    dtype = dtype or data.dtype
    with rasterio.open(
        path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0], dtype=dtype,
        crs=crs, transform=transform or from_origin(origin[0], origin[1], res, res), nodata=nodata, tiled=tiled,
    ) as ds:
        ds.write(data.astype(dtype))
    return str(path)


def write_map(path, arr, nodata=255, epsg=EPSG, px=PX, dtype=None) -> str:
    """A one-band classification (nodata 255 unless given)."""
    return write_raster(path, arr, crs=f"EPSG:{epsg}", nodata=nodata, dtype=dtype, res=px)


def three_class_map(tmp_path):
    """(array, path): a 40 x 60 map, class 0 left, 1 middle, 2 right, a nodata block at the top-left corner."""
    arr = np.zeros((40, 60), dtype="uint8")
    arr[:, 20:40] = 1
    arr[:, 40:] = 2
    arr[:5, :5] = 255
    return arr, write_map(tmp_path / "map.tif", arr)


# -- vectors -----------------------------------------------------------------------------------


def write_vector(path, features, epsg=EPSG, field_type="int", field="cls", layer="ref") -> str:
    """A GeoPackage layer from ``[(wkt, value)]``; a value None leaves the field null."""
    from osgeo import ogr, osr

    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    lyr = ds.CreateLayer(layer, srs, ogr.wkbUnknown)
    lyr.CreateField(ogr.FieldDefn(field, {"int": ogr.OFTInteger, "str": ogr.OFTString, "real": ogr.OFTReal}[field_type]))
    for wkt, value in features:
        f = ogr.Feature(lyr.GetLayerDefn())
        if value is not None:
            f.SetField(field, value)
        f.SetGeometry(ogr.CreateGeometryFromWkt(wkt))
        lyr.CreateFeature(f)
    ds = None
    return str(path)


def rect(c0, r0, c1, r1) -> str:
    """A rectangle on pixel edges of the default grid: columns c0..c1, rows r0..r1 (exclusive ends)."""
    x0, x1 = X0 + c0 * PX, X0 + c1 * PX
    y0, y1 = Y0 - r0 * PX, Y0 - r1 * PX
    return f"POLYGON(({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0}))"


def centre(c, r) -> str:
    """The centre of pixel (column c, row r) of the default grid, as WKT."""
    return f"POINT({X0 + (c + 0.5) * PX} {Y0 - (r + 0.5) * PX})"


# -- model inputs ------------------------------------------------------------------------------


def model_inputs(optical_bands: int, sar_bands: int, h: int, w=None, batch: int = 1, seed: int = 1):
    """Seeded random (optical, SAR) tensors of shape (batch, bands, h, w)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    w = h if w is None else w
    return torch.randn(batch, optical_bands, h, w, generator=g), torch.randn(batch, sar_bands, h, w, generator=g)


TINY_CLOUDLULC = dict(channels=8, num_blocks=1, order=2, embed_dim=16, depth=1, heads=2)
THREE_CLASSES = [
    {"code": 0, "name": "water", "color": "#419BDF"},
    {"code": 4, "name": "crops", "color": "#E49635"},
    {"code": 6, "name": "built", "color": "#C4281B"},
]


def random_checkpoint(optical, sar, path, classes=THREE_CLASSES, config=TINY_CLOUDLULC, tile_size: int = 64,
                      seed: int = 0) -> dict:
    """A tiny CloudLULC-Net with seeded random weights, normalised on the given scene (no training); its info."""
    import rasterio
    import torch

    from optsar_plugin.checkpoints import save_checkpoint
    from optsar_plugin.models import build_model
    from optsar_plugin.normalisation import compute_stats

    with rasterio.open(optical) as ds:
        opt = ds.read().reshape(ds.count, -1)
        names = [d or f"b{i + 1}" for i, d in enumerate(ds.descriptions)]
    with rasterio.open(sar) as ds:
        sar_px = ds.read().reshape(ds.count, -1)
    torch.manual_seed(seed)
    model = build_model("cloudlulc_net", optical_bands=opt.shape[0], sar_bands=sar_px.shape[0],
                        num_classes=len(classes), **config)
    meta = {
        "model": {"name": "cloudlulc_net", "config": model.config},
        "bands": {"optical": names, "sar": ["VV", "VH"][: sar_px.shape[0]]},
        "normalisation": {"optical": compute_stats(opt[:, ::5], "optical", valid=opt[0, ::5] > 0),
                          "sar": compute_stats(sar_px[:, ::5], "sar", valid=np.isfinite(sar_px[0, ::5]))},
        "classes": list(classes),
        "tile_size": tile_size,
    }
    save_checkpoint(path, model, meta)
    return {"checkpoint": str(path), "n_optical": opt.shape[0]}


def batch_scenes(root: Path, broken: bool = True) -> dict:
    """Three 96 x 96 sample scenes (and one whose SAR file is not a raster) in ``root/scenes.csv``, relative
    paths; a tiny random checkpoint.  Returns {"root", "table", "checkpoint"}."""
    from optsar_plugin.sample_scene import make_sample_scene

    root = Path(root)
    rows = ["name,optical,sar,cloud_mask"]
    for k in range(3):
        make_sample_scene(root / f"s{k}", size=96, seed=k)
        rows.append(f"scene{k},s{k}/optical.tif,s{k}/sar.tif,s{k}/cloud_mask.tif")
    if broken:
        (root / "broken_sar.tif").write_bytes(b"this is not a raster")
        rows.append("broken,s0/optical.tif,broken_sar.tif,")
    (root / "scenes.csv").write_text("\n".join(rows) + "\n")
    ck = random_checkpoint(root / "s0" / "optical.tif", root / "s0" / "sar.tif", root / "tiny.safetensors")
    return {"root": root, "table": root / "scenes.csv", "checkpoint": ck["checkpoint"]}


def train_tiny_checkpoint(scene: dict, path, epochs: int = 1, steps=None, seed: int = 1) -> Path:
    """A CloudLULC-Net checkpoint trained briefly on a sample scene through the engine's command line."""
    cmd = [sys.executable, "-m", "optsar_plugin", "-q", "train", "--optical", scene["optical"], "--sar", scene["sar"],
           "--reference", scene["reference_train"], "--class-field", "class_name", "--model", "cloudlulc_net",
           "--epochs", str(epochs), "--tile-size", "64", "--batch-size", "4", "--steps-per-epoch", str(steps or 4),
           "--seed", str(seed), "--device", "cpu", "--output", str(path)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return Path(path)


TINY_CLOUDLULC = dict(channels=8, num_blocks=1, order=2, embed_dim=16, depth=1, heads=2)


def fresh_profile(tmp_path: Path, plugin_zip: Path):
    """(profile, plugins): a new QGIS profile and a plugin folder holding only the unpacked ``plugin_zip``."""
    import zipfile

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    zipfile.ZipFile(plugin_zip).extractall(plugins)
    profile = tmp_path / "profile"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_profile.py"), str(profile)], check=True)
    return profile, plugins
