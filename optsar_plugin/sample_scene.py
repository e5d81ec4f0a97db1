"""A synthetic, deterministic optical + SAR demo scene (no download).

``make_sample_scene(out_dir, size=512, seed=0, clouds=True)`` writes a small,
plausible scene in which fusion matters:

* ``optical.tif`` - Sentinel-2 L2A-like surface reflectance, 10 bands
  (B2 B3 B4 B5 B6 B7 B8 B8A B11 B12, the 10 m and 20 m bands), ``uint16`` digital
  numbers = reflectance x 10000 (no BOA offset), nodata 0, UTM zone 33N (EPSG:32633)
  at 10 m.  With ``clouds`` it carries clouds, haze and cloud shadows;
  ``optical_clear.tif`` is the same image without them.
* ``sar.tif`` - Sentinel-1 IW GRD-like backscatter, bands VV and VH in dB
  (``float32``, nodata NaN), on a *different grid and CRS*: EPSG:4326 with
  0.00014 deg x 0.0001 deg pixels (about 10.5 m x 11.1 m), so the SAR must be warped
  to the optical grid.  Speckle is multiplicative, gamma-distributed with ENL 4.4 in
  linear power, applied on the SAR grid before the conversion to dB; VH has a
  thermal-noise floor of -26 dB.
* ``cloud_mask.tif`` (with ``clouds``) - on the optical grid, ``uint8``: 0 clear,
  1 cloud (opacity >= 0.3), 2 cloud shadow; thin haze below the threshold is left
  unmasked, as real masks do.
* ``truth.tif`` - the complete class map (class codes, ``uint8``, nodata 255,
  colour table, class names as GDAL category names in ``truth.tif.aux.xml``) on the
  optical grid, for evaluation or as a ``LABELS`` raster; ``truth.qml`` styles it.
* ``reference.gpkg`` - reference polygons (layer ``reference``) with fields
  ``class_name``, ``class_code``, ``split`` (``train``/``test``) and ``block``;
  ``reference_train.gpkg`` and ``reference_test.gpkg`` hold the two parts.  The
  held-out part is a set of whole blocks of a ``blocks x blocks`` grid, so it is
  spatially separate from the training part.  Polygons are the class regions of the
  truth map shrunk by one pixel (pure pixels, as an analyst would digitise them).
* ``scene.json`` - what was generated (classes, bands, fractions, seed).

Classes follow Dynamic World names and codes: water 0, trees 1, grass 2,
flooded_vegetation 3, crops 4, built 6, bare 7 (code 5 shrub_and_scrub and 8
snow_and_ice are absent, so the codes are not contiguous on purpose).

Where the two sensors disagree on purpose (the signatures below):

* grass vs flooded_vegetation and built vs bare have nearly the same spectra
  (their per-object variability overlaps) but very different backscatter
  (double bounce in flooded vegetation and in built-up areas);
* grass vs crops and, per pixel, water vs bare are close in SAR but separable in the
  optical image (spectra, field texture);
* under clouds the optical image carries no information, SAR still does.

Structure: elongated agricultural parcels (warped anisotropic Voronoi cells),
forest patches, a town with a street grid, blocks, parks and construction sites,
roads, a meandering river and a lake with flooded vegetation on their margins.

Only numpy, rasterio and GDAL/OGR (always present with QGIS) are used; smooth random
fields are Gaussian-filtered white noise computed with the FFT.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

import numpy as np

from .errors import InputError

CLASSES = (
    (0, "water"),
    (1, "trees"),
    (2, "grass"),
    (3, "flooded_vegetation"),
    (4, "crops"),
    (6, "built"),
    (7, "bare"),
)
CODE = {name: code for code, name in CLASSES}
OPTICAL_BANDS = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")
SAR_BANDS = ("VV", "VH")
OPTICAL_CRS = "EPSG:32633"
SAR_CRS = "EPSG:4326"
ORIGIN = (601000.0, 5297000.0)  # upper-left corner, UTM 33N (about 47.8 N, 16.3 E)
PIXEL = 10.0
SAR_RES = (0.00014, 0.0001)  # degrees (lon, lat)
ENL = 4.4
PAD = 24  # margin generated around the optical extent so the warped SAR covers it fully

# Surface reflectance x 10000 for B2 B3 B4 B5 B6 B7 B8 B8A B11 B12.
SPECTRA = {
    "water": [700, 600, 400, 300, 220, 200, 170, 150, 90, 60],
    "trees": [250, 450, 260, 750, 2000, 2500, 2750, 2900, 1450, 650],
    "grass": [420, 720, 520, 1150, 2350, 2800, 3050, 3150, 2250, 1250],
    "flooded_vegetation": [400, 690, 490, 1080, 2200, 2620, 2860, 2950, 2080, 1120],
    "crops": [300, 620, 330, 1000, 2800, 3500, 3900, 4000, 2300, 1100],  # closed green canopy
}
# Endmembers mixed per object (soils) or per pixel (built: materials + soil + vegetation).
DRY_SOIL = [1300, 1550, 1800, 2050, 2300, 2450, 2600, 2700, 3300, 2700]
WET_SOIL = [700, 850, 1000, 1150, 1300, 1400, 1480, 1550, 1900, 1500]
CONCRETE = [1150, 1250, 1330, 1400, 1480, 1530, 1580, 1600, 1750, 1650]
ASPHALT = [500, 560, 610, 660, 700, 730, 760, 770, 860, 810]
BUILT_MIX = (2.0, 1.0, 1.5, 0.7)  # Dirichlet concentrations: concrete, asphalt, soil, vegetation
CLOUD = [6500, 6400, 6300, 6300, 6200, 6200, 6100, 6100, 4500, 3500]
SHADOW_DEPTH = [0.55, 0.6, 0.65, 0.68, 0.7, 0.7, 0.72, 0.72, 0.75, 0.75]  # fraction of light removed
# Mean backscatter (dB) VV, VH.
BACKSCATTER = {
    "water": (-21.0, -28.0),
    "trees": (-7.5, -13.5),
    "grass": (-11.5, -18.5),
    "flooded_vegetation": (-4.5, -15.0),
    "crops": (-11.0, -18.0),
    "built": (0.0, -8.0),
    "bare": (-15.0, -24.0),
}


# ----------------------------------------------------------------------------------------
# random fields
# ----------------------------------------------------------------------------------------
def _gauss_kernel(shape, sigma: float) -> np.ndarray:
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    return np.exp(-2.0 * (np.pi * sigma) ** 2 * (fx**2 + fy**2))


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur (periodic boundary) of a 2-D array or of each band of a 3-D array."""
    shape = image.shape[-2:]
    k = _gauss_kernel(shape, sigma)
    return np.fft.irfft2(np.fft.rfft2(image) * k, s=shape).astype(np.float32)


def smooth_field(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian random field with correlation length ``sigma`` pixels."""
    f = _blur(rng.standard_normal(shape).astype(np.float32), sigma)
    f -= f.mean()
    return f / (f.std() + 1e-12)


def _smooth_1d(rng, n: int, sigma: float) -> np.ndarray:
    f = np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) * np.exp(-2 * (np.pi * sigma * np.fft.rfftfreq(n)) ** 2), n)
    f -= f.mean()
    return f / (f.std() + 1e-12)


def _rotated(shape, angle: float):
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    c, s = np.cos(angle), np.sin(angle)
    return x * c + y * s, -x * s + y * c


# ----------------------------------------------------------------------------------------
# the land-cover map
# ----------------------------------------------------------------------------------------
def _landscape(rng: np.random.Generator, n: int):
    """(class map of codes, object ids) on an n x n grid, painted layer by layer.

    Each painter draws its random numbers in turn (the order fixes the scene of a seed)
    and returns the next free object id."""
    cls = np.full((n, n), CODE["grass"], np.uint8)
    obj = np.zeros((n, n), np.int32)
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    next_id = _paint_parcels(rng, n, cls, obj, 1)
    next_id = _paint_forest(rng, n, cls, obj, next_id)
    next_id = _paint_town(rng, n, cls, obj, next_id, yy, xx)
    wet = smooth_field(rng, (n, n), 12)
    next_id = _paint_lake(rng, n, cls, obj, next_id, yy, xx, wet)
    next_id = _paint_river(rng, n, cls, obj, next_id, wet)
    _paint_roads(rng, n, cls, obj, next_id)
    return cls, obj


def _paint(cls, obj, mask, code: str, object_id: int) -> None:
    cls[mask] = CODE[code]
    obj[mask] = object_id


def _paint_parcels(rng, n: int, cls, obj, next_id: int) -> int:
    """Agricultural parcels: Voronoi cells in a rotated, stretched and warped frame."""
    u, v = _rotated((n, n), rng.uniform(0, np.pi))
    u = (u + 7 * smooth_field(rng, (n, n), 18)) / 1.8
    v = v + 7 * smooth_field(rng, (n, n), 18)
    n_seeds = max(8, int(n * n / 700))
    su = rng.uniform(u.min(), u.max(), n_seeds)
    sv = rng.uniform(v.min(), v.max(), n_seeds)
    parcel = np.empty((n, n), np.int32)
    for r0 in range(0, n, 32):
        du = u[r0 : r0 + 32, :, None] - su
        dv = v[r0 : r0 + 32, :, None] - sv
        parcel[r0 : r0 + 32] = np.argmin(du * du + dv * dv, axis=-1)
    p_cls = rng.choice(
        [CODE["crops"], CODE["grass"], CODE["trees"], CODE["bare"]], size=n_seeds, p=[0.55, 0.3, 0.08, 0.07]
    )
    cls[:] = p_cls[parcel]
    obj[:] = parcel + next_id
    return next_id + n_seeds


def _paint_forest(rng, n: int, cls, obj, next_id: int) -> int:
    forest = smooth_field(rng, (n, n), n / 14) + 0.5 * smooth_field(rng, (n, n), n / 40)
    _paint(cls, obj, forest > 1.1, "trees", next_id)
    return next_id + 1


def _paint_town(rng, n: int, cls, obj, next_id: int, yy, xx) -> int:
    """Town: street grid with built blocks, parks and construction sites."""
    cy, cx = rng.uniform(0.3, 0.7, 2) * n
    r = np.hypot(yy - cy, xx - cx)
    town = r < 0.17 * n * (1 + 0.3 * smooth_field(rng, (n, n), n / 10))
    tu, tv = _rotated((n, n), rng.uniform(0, np.pi / 2))
    spacing, street = 14.0, 2.0
    bu = np.floor(tu / spacing).astype(np.int64)
    bv = np.floor(tv / spacing).astype(np.int64)
    block_id = (bu - bu.min()) * 10000 + (bv - bv.min())
    uniq, inv = np.unique(block_id, return_inverse=True)
    inv = inv.reshape(n, n)
    b_cls = rng.choice(
        [CODE["built"], CODE["grass"], CODE["bare"], CODE["trees"]], size=len(uniq), p=[0.72, 0.16, 0.08, 0.04]
    )
    cls[town] = b_cls[inv][town]
    obj[town] = (inv + next_id)[town]
    next_id += len(uniq)
    _paint(cls, obj, town & ((np.mod(tu, spacing) < street) | (np.mod(tv, spacing) < street)), "built", next_id)
    return next_id + 1


def _paint_lake(rng, n: int, cls, obj, next_id: int, yy, xx, wet) -> int:
    """Lake with a flooded-vegetation margin."""
    ly, lx = rng.uniform(0.15, 0.85, 2) * n
    ell = np.hypot((yy - ly) / (0.035 * n), (xx - lx) / (0.055 * n)) * (1 + 0.15 * smooth_field(rng, (n, n), 10))
    margin = (ell >= 1) & (ell < 1 + (4 + 4 * np.maximum(wet, 0)) / (0.045 * n)) & (wet > -0.5)
    _paint(cls, obj, margin, "flooded_vegetation", next_id)
    _paint(cls, obj, ell < 1, "water", next_id + 1)
    return next_id + 2


def _paint_river(rng, n: int, cls, obj, next_id: int, wet) -> int:
    """Meandering river, flooded vegetation on its banks."""
    ru, rv = _rotated((n, n), rng.uniform(-0.5, 0.5))
    lam = rng.uniform(0.5, 0.9) * n
    phase = rng.uniform(0, 2 * np.pi)
    amp = 0.08 * n
    grid_u = np.arange(-n, 2 * n, dtype=np.float64)
    meander = 0.04 * n * _smooth_1d(rng, grid_u.size, n / 8)
    centre = amp * np.sin(2 * np.pi * grid_u / lam + phase) + meander + rng.uniform(0.35, 0.65) * n
    slope = np.gradient(centre)
    idx = np.clip(np.round(ru).astype(np.int64) + n, 0, grid_u.size - 1)
    dist = np.abs(rv - centre[idx]) / np.sqrt(1 + slope[idx] ** 2)
    half = 3.5 + 2.5 * np.abs(_smooth_1d(rng, grid_u.size, n / 10))[idx]  # 70-150 m wide
    bank = (dist >= half) & (dist < half + 3 + 10 * np.maximum(wet + 0.3, 0)) & (wet > -0.3)
    _paint(cls, obj, bank, "flooded_vegetation", next_id)
    _paint(cls, obj, dist < half, "water", next_id + 1)
    return next_id + 2


def _paint_roads(rng, n: int, cls, obj, next_id: int) -> int:
    """Two roads (not across water: fords and bridges are left out)."""
    for _ in range(2):
        _, rv2 = _rotated((n, n), rng.uniform(0, np.pi))
        c = rng.uniform(np.percentile(rv2, 20), np.percentile(rv2, 80))
        _paint(cls, obj, (np.abs(rv2 - c) < 1.0) & (cls != CODE["water"]), "built", next_id)
        next_id += 1
    return next_id


# ----------------------------------------------------------------------------------------
# the sensors
# ----------------------------------------------------------------------------------------
def _optical(rng, cls, obj) -> np.ndarray:
    """Surface reflectance x 10000, (10, n, n) float32, before clouds."""
    n = cls.shape[0]
    nb = len(OPTICAL_BANDS)
    n_obj = int(obj.max()) + 1
    f32 = np.float32
    bright = rng.normal(1.0, 0.07, n_obj).astype(f32)
    # Per-object spectral shape: a smooth random curve over the bands (+/- ~6 %).
    knots = rng.normal(0, 0.06, (n_obj, 3))
    shape = np.stack([np.interp(np.linspace(0, 2, nb), [0, 1, 2], k) for k in knots]).astype(f32)  # (n_obj, nb)
    wetness = rng.uniform(0, 1, n_obj).astype(f32)  # soil moisture: dry .. wet soil
    phen = rng.uniform(0.35, 1.0, n_obj).astype(f32)  # crop canopy closure
    angle = rng.uniform(0, np.pi, n_obj)
    soil = (1 - wetness[:, None]) * np.asarray(DRY_SOIL, f32) + wetness[:, None] * np.asarray(
        WET_SOIL, f32
    )  # (n_obj, nb)
    out = np.zeros((nb, n, n), f32)
    for code, name in CLASSES:
        m = cls == code
        if m.any() and name in SPECTRA:
            out[:, m] = np.asarray(SPECTRA[name], f32)[:, None]
    bare = cls == CODE["bare"]
    veg = rng.uniform(0, 0.12, bare.sum()).astype(f32)
    out[:, bare] = (1 - veg) * soil[obj[bare]].T + veg * np.asarray(SPECTRA["grass"], f32)[:, None]
    crops = cls == CODE["crops"]
    t = phen[obj][crops]
    out[:, crops] = t * out[:, crops] + (1 - t) * soil[obj[crops]].T
    # Crop rows: a faint periodic texture at a per-field angle.
    yy, xx = np.mgrid[0:n, 0:n].astype(f32)
    a = angle[obj]
    rows = 1 + 0.06 * np.sin(2 * np.pi * (xx * np.cos(a) + yy * np.sin(a)) / 3.3)
    out[:, crops] *= rows[crops]
    # Built-up: every pixel a random mixture of concrete, asphalt, soil and vegetation.
    built = cls == CODE["built"]
    frac = rng.dirichlet(BUILT_MIX, built.sum()).astype(f32)  # (k, 4)
    em = np.stack(
        [np.asarray(CONCRETE, f32), np.asarray(ASPHALT, f32), np.zeros(nb, f32), np.asarray(SPECTRA["grass"], f32)]
    )
    mix = frac @ em + frac[:, 2:3] * soil[obj[built]]
    out[:, built] = mix.T
    tiles = built & (rng.uniform(size=n_obj) < 0.35)[obj]
    out[2, tiles] *= 1.2  # red roof tiles on some blocks
    out *= (bright[:, None] * (1 + shape)).T[:, obj]
    out *= 1 + 0.04 * smooth_field(rng, (n, n), 30)  # illumination / moisture
    # Within-object texture (canopy gaps, weeds, soil patches): fine-grained and partly band-specific, so that
    # single pixels are ambiguous while the object as a whole is not.
    out *= 1 + 0.08 * smooth_field(rng, (n, n), 1.2)[None]
    out *= 1 + 0.05 * np.stack([smooth_field(rng, (n, n), 1.5) for _ in range(nb)])
    trees = cls == CODE["trees"]
    out[:, trees] *= np.exp(rng.normal(0, 0.12, trees.sum())).astype(f32)  # crowns and their shadows
    out = _blur(out, 0.5)  # sensor PSF: mixed pixels at boundaries
    out *= 1 + 0.03 * rng.standard_normal((1, n, n)).astype(f32)
    out *= 1 + 0.03 * rng.standard_normal((nb, n, n)).astype(f32)
    return out


def _clouds(rng, n: int, cover: float):
    """(cloud opacity, shadow strength), each (n, n) in [0, 1]."""
    c = smooth_field(rng, (n, n), n / 12) + 0.35 * smooth_field(rng, (n, n), n / 40)
    thr = np.quantile(c, 1 - cover)
    thick = np.clip((c - thr) / 0.35 + 0.5, 0, 1)
    haze = 0.25 * np.clip((c - thr) / 0.5 + 1.0, 0, 1)
    alpha = np.maximum(thick, haze).astype(np.float32)
    dy, dx = int(0.05 * n), int(0.035 * n)  # sun from the south-west: shadows to the north-east
    shadow = np.zeros_like(thick)
    shadow[: n - dy, dx:] = thick[dy:, : n - dx]
    return alpha, shadow.astype(np.float32)


def _apply_clouds(rng, optical, alpha, shadow):
    n = optical.shape[-1]
    depth = np.asarray(SHADOW_DEPTH, np.float32)[:, None, None]
    out = optical * (1 - depth * shadow[None])
    cloud = np.asarray(CLOUD, np.float32)[:, None, None] * (1 + 0.12 * smooth_field(rng, (n, n), 6))[None]
    return out * (1 - alpha[None]) + cloud * alpha[None]


def _backscatter_linear(rng, cls, obj) -> np.ndarray:
    """Speckle-free sigma0 (linear power), (2, n, n), on the generation grid."""
    n = cls.shape[0]
    n_obj = int(obj.max()) + 1
    db = np.zeros((2, n, n), np.float32)
    for code, name in CLASSES:
        m = cls == code
        if m.any():
            db[:, m] = np.asarray(BACKSCATTER[name], np.float32)[:, None]
    db += rng.normal(0, 1.0, (2, n_obj)).astype(np.float32)[:, obj]  # per-object roughness / moisture
    water = cls == CODE["water"]
    db[:, water] += 2.0 * smooth_field(rng, (n, n), 20)[water]  # wind
    built = cls == CODE["built"]
    db[:, built] += rng.normal(0, 3.0, (1, built.sum())).astype(np.float32)  # strong point scatterers
    db += 0.5 * smooth_field(rng, (n, n), 40)[None]  # soil moisture
    return np.power(10.0, db / 10.0, dtype=np.float32)


# ----------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------
def _write_tif(path: Path, array, crs, transform, nodata, descriptions=None) -> None:
    import rasterio

    array = np.asarray(array)
    if array.ndim == 2:
        array = array[None]
    profile = dict(
        driver="GTiff",
        width=array.shape[2],
        height=array.shape[1],
        count=array.shape[0],
        dtype=array.dtype.name,
        crs=crs,
        transform=transform,
        nodata=nodata,
        compress="deflate",
    )
    if array.shape[1] >= 256 and array.shape[2] >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array)
        for i, d in enumerate(descriptions or [], start=1):
            dst.set_band_description(i, d)


def _write_polygons(path: Path, features, crs_wkt: str, layer_name: str) -> None:
    from osgeo import ogr, osr

    ogr.UseExceptions()
    driver = ogr.GetDriverByName("GPKG")
    ds = driver.CreateDataSource(str(path))
    srs = osr.SpatialReference()
    srs.ImportFromWkt(crs_wkt)
    layer = ds.CreateLayer(layer_name, srs, ogr.wkbPolygon)
    for fname, ftype in (
        ("class_name", ogr.OFTString),
        ("class_code", ogr.OFTInteger),
        ("split", ogr.OFTString),
        ("block", ogr.OFTInteger),
    ):
        layer.CreateField(ogr.FieldDefn(fname, ftype))
    layer.StartTransaction()
    for geom, code, split, block in features:
        f = ogr.Feature(layer.GetLayerDefn())
        f.SetField("class_name", dict(CLASSES)[code])
        f.SetField("class_code", int(code))
        f.SetField("split", split)
        f.SetField("block", int(block))
        f.SetGeometry(ogr.CreateGeometryFromJson(json.dumps(geom)))
        layer.CreateFeature(f)
    layer.CommitTransaction()
    ds = None


def _scheme():
    from .classes import ClassScheme

    return ClassScheme.from_names_and_codes(list(CLASSES))


def _name_classes(path: Path) -> None:
    """Colour table and GDAL category names (class names) on the truth raster."""
    from .styles import apply_class_metadata

    apply_class_metadata(path, _scheme())


def _pure(cls: np.ndarray) -> np.ndarray:
    """Pixels whose 4-neighbours share their class (one-pixel erosion of every region)."""
    p = np.pad(cls, 1, mode="edge")
    c = p[1:-1, 1:-1]
    return (p[:-2, 1:-1] == c) & (p[2:, 1:-1] == c) & (p[1:-1, :-2] == c) & (p[1:-1, 2:] == c)


def _choose_test_blocks(rng, truth, blocks: int, n_test: int):
    """The held-out blocks: the candidate draw that gives every class the most test pixels."""
    n = truth.shape[0]
    bs = n // blocks
    best, best_score = None, -1
    for _ in range(40):
        pick = rng.choice(blocks * blocks, size=n_test, replace=False)
        mask = np.zeros_like(truth, bool)
        for b in pick:
            r, c = divmod(int(b), blocks)
            mask[r * bs : (r + 1) * bs, c * bs : (c + 1) * bs] = True
        counts = [int(((truth == code) & mask).sum()) for code, _ in CLASSES]
        train_counts = [int(((truth == code) & ~mask).sum()) for code, _ in CLASSES]
        score = min(min(counts), min(train_counts))
        if score > best_score:
            best, best_score = sorted(int(b) for b in pick), score
    return best


def make_sample_scene(
    out_dir,
    size: int = 512,
    seed: int = 0,
    clouds: bool = True,
    cloud_cover: float = 0.3,
    blocks: int = 4,
    test_fraction: float = 0.25,
) -> Dict[str, str]:
    """Write the synthetic scene into ``out_dir``; returns {role: path}.

    ``size`` is the optical raster's width and height in pixels (10 m; >= 64);
    ``seed`` makes the scene repeatable (same seed, same bytes of data);
    ``clouds`` adds clouds/haze/shadows to ``optical.tif`` covering about
    ``cloud_cover`` of the scene (and writes ``optical_clear.tif`` and
    ``cloud_mask.tif``); ``blocks`` x ``blocks`` is the grid of spatial blocks of
    which ``test_fraction`` (at least one) is held out as the ``test`` reference.
    Roles: optical, optical_clear, sar, cloud_mask, truth, truth_style, reference,
    reference_train, reference_test, metadata.
    """
    size = int(size)
    if size < 64:
        raise InputError(f"The sample scene needs size >= 64 pixels, got {size}.")
    if not 0.0 < cloud_cover < 1.0:
        raise InputError(f"cloud_cover must be between 0 and 1, got {cloud_cover}.")
    blocks = max(2, int(blocks))
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file of that name, a read-only parent
        raise InputError(f"Cannot create the sample scene's folder '{out}': {exc.strerror or exc}.") from None
    rng = np.random.default_rng(int(seed))
    n = size + 2 * PAD
    cls_full, obj_full = _landscape(rng, n)
    optical_full = _optical(rng, cls_full, obj_full)
    sar_lin_full = _backscatter_linear(rng, cls_full, obj_full)
    inner = (slice(PAD, PAD + size), slice(PAD, PAD + size))
    scene = {"truth": cls_full[inner], "clear": optical_full[(slice(None),) + inner], "size": size, "seed": int(seed),
             "blocks": blocks}
    n_test = max(1, int(round(test_fraction * blocks * blocks)))
    scene["test_blocks"] = _choose_test_blocks(rng, scene["truth"], blocks, n_test)
    scene["optical"], scene["cloud_mask"] = _cloudy(rng, scene, cloud_cover) if clouds else (scene["clear"], None)
    scene["sar_db"], scene["sar_transform"] = _sar_on_geographic_grid(rng, sar_lin_full, n)
    scene["features"] = _reference_features(scene["truth"], blocks, scene["test_blocks"])
    return _write_scene(out, scene)


def _grids():
    """(optical CRS, optical transform, transform of the padded generation grid)."""
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    return (CRS.from_string(OPTICAL_CRS), from_origin(ORIGIN[0], ORIGIN[1], PIXEL, PIXEL),
            from_origin(ORIGIN[0] - PAD * PIXEL, ORIGIN[1] + PAD * PIXEL, PIXEL, PIXEL))


def _test_mask(size: int, blocks: int, test_blocks) -> np.ndarray:
    bs = size // blocks
    mask = np.zeros((size, size), bool)
    for b in test_blocks:
        r, c = divmod(b, blocks)
        mask[r * bs : (r + 1) * bs, c * bs : (c + 1) * bs] = True
    return mask


def _cloudy(rng, scene: Dict, cloud_cover: float):
    """(optical with clouds and shadows, cloud mask 0/1/2): clouds re-drawn until both splits see some."""
    size = scene["size"]
    test_mask = _test_mask(size, scene["blocks"], scene["test_blocks"])
    for _ in range(20):
        alpha, shadow = _clouds(rng, size, cloud_cover)
        cloudy = alpha >= 0.3
        if cloudy[test_mask].mean() > 0.15 and cloudy[~test_mask].mean() > 0.15:
            break
    optical = _apply_clouds(rng, scene["clear"], alpha, shadow)
    cloud_mask = np.zeros((size, size), np.uint8)
    cloud_mask[(shadow >= 0.3) & ~cloudy] = 2
    cloud_mask[cloudy] = 1
    return optical, cloud_mask


def _sar_on_geographic_grid(rng, sar_lin_full: np.ndarray, n: int):
    """(VV/VH in dB on the EPSG:4326 grid, its transform): the clean backscatter warped, then speckle, then dB."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.warp import Resampling, reproject, transform_bounds

    opt_crs, _, gen_transform = _grids()
    west, south, east, north = transform_bounds(opt_crs, SAR_CRS, *rasterio.transform.array_bounds(n, n, gen_transform))
    sar_w = int(np.ceil((east - west) / SAR_RES[0]))
    sar_h = int(np.ceil((north - south) / SAR_RES[1]))
    sar_transform = from_origin(west, north, SAR_RES[0], SAR_RES[1])
    sar_lin = np.full((2, sar_h, sar_w), np.nan, np.float32)
    reproject(sar_lin_full, sar_lin, src_transform=gen_transform, src_crs=opt_crs, dst_transform=sar_transform,
              dst_crs=SAR_CRS, src_nodata=np.nan, dst_nodata=np.nan, resampling=Resampling.bilinear)
    speckle = rng.gamma(ENL, 1.0 / ENL, sar_lin.shape).astype(np.float32)
    sar_lin = sar_lin * speckle
    sar_lin[1] += 10 ** (-2.6) * rng.gamma(ENL, 1.0 / ENL, sar_lin.shape[1:]).astype(np.float32)  # VH noise floor
    with np.errstate(invalid="ignore", divide="ignore"):
        return (10.0 * np.log10(sar_lin)).astype(np.float32), sar_transform


def _reference_features(truth: np.ndarray, blocks: int, test_blocks):
    """[(geometry, class code, split, block)]: the pure-pixel regions of each block (at least 4 px)."""
    from rasterio.features import shapes

    size = truth.shape[0]
    bs = size // blocks
    _, opt_transform, _ = _grids()
    pure = _pure(truth)
    features = []
    for b in range(blocks * blocks):
        r, c = divmod(b, blocks)
        mask = np.zeros((size, size), bool)
        mask[r * bs : size if r == blocks - 1 else (r + 1) * bs, c * bs : size if c == blocks - 1 else (c + 1) * bs] = True
        mask &= pure
        split = "test" if b in test_blocks else "train"
        for geom, value in shapes(truth, mask=mask, connectivity=4, transform=opt_transform):
            ring = np.asarray(geom["coordinates"][0])
            area = 0.5 * abs(np.dot(ring[:-1, 0], ring[1:, 1]) - np.dot(ring[1:, 0], ring[:-1, 1])) / PIXEL**2
            if area >= 4:
                features.append((geom, int(value), split, b))
    return features


def _scene_metadata(scene: Dict) -> Dict:
    truth, cloud_mask, features = scene["truth"], scene["cloud_mask"], scene["features"]
    names = dict(CLASSES)
    clouds = cloud_mask is not None
    return {
        "generator": "optsar_plugin.sample_scene", "size": scene["size"], "seed": scene["seed"], "pixel_size_m": PIXEL,
        "optical": {"crs": OPTICAL_CRS, "bands": list(OPTICAL_BANDS), "units": "reflectance x 10000 (uint16), nodata 0"},
        "sar": {"crs": SAR_CRS, "bands": list(SAR_BANDS), "units": "sigma0 dB (float32), nodata NaN", "enl": ENL},
        "classes": [{"code": code, "name": name} for code, name in CLASSES],
        "class_fractions": {names[code]: round(float((truth == code).mean()), 4) for code, _ in CLASSES},
        "clouds": clouds,
        "cloud_fraction": round(float((cloud_mask == 1).mean()), 4) if clouds else 0.0,
        "shadow_fraction": round(float((cloud_mask == 2).mean()), 4) if clouds else 0.0,
        "blocks": scene["blocks"], "test_blocks": scene["test_blocks"],
        "reference_polygons": {"train": sum(f[2] == "train" for f in features),
                               "test": sum(f[2] == "test" for f in features)},
    }


def _write_scene(out: Path, scene: Dict) -> Dict[str, str]:
    """Every file of the scene, written through one :class:`~optsar_plugin.fileio.OutputSet` (all or nothing)."""
    from rasterio.crs import CRS

    from .fileio import OutputSet
    from .styles import class_qml

    opt_crs, opt_transform, _ = _grids()
    clouds = scene["cloud_mask"] is not None
    rasters = [("optical", _dn(scene["optical"]), opt_crs, opt_transform, 0, OPTICAL_BANDS),
               ("sar", scene["sar_db"], CRS.from_string(SAR_CRS), scene["sar_transform"], np.nan, SAR_BANDS),
               ("truth", scene["truth"], opt_crs, opt_transform, 255, ["class code"])]
    if clouds:
        rasters += [("optical_clear", _dn(scene["clear"]), opt_crs, opt_transform, 0, OPTICAL_BANDS),
                    ("cloud_mask", scene["cloud_mask"], opt_crs, opt_transform, 255,
                     ["cloud mask (0 clear, 1 cloud, 2 shadow)"])]
    final = {}
    with OutputSet() as outs:
        for role, array, crs, transform, nodata, descriptions in rasters:
            final[role] = out / f"{role}.tif"
            _write_tif(outs.add(final[role], f"sample scene {role}", sidecars=(".aux.xml",)), array, crs, transform,
                       nodata, descriptions)
        _name_classes(outs.temp(final["truth"]))
        for role, keep in (("reference", None), ("reference_train", "train"), ("reference_test", "test")):
            final[role] = out / f"{role}.gpkg"
            _write_polygons(outs.add(final[role], f"sample scene {role}", create=False),
                            [f for f in scene["features"] if keep in (None, f[2])], opt_crs.to_wkt(), "reference")
        final["metadata"] = out / "scene.json"
        outs.write_text(final["metadata"], "sample scene description", json.dumps(_scene_metadata(scene), indent=1))
        final["truth_style"] = out / "truth.qml"
        outs.write_text(final["truth_style"], "style of the truth raster", class_qml(_scheme()))
        outs.publish()
    return {role: str(p) for role, p in final.items()}


def _dn(a: np.ndarray) -> np.ndarray:
    """Reflectance x 10000 as uint16 digital numbers (0 is nodata, so at least 1)."""
    return np.clip(np.round(a), 1, 20000).astype(np.uint16)


# ----------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------
def add_arguments(parser) -> None:
    parser.add_argument("out_dir", help="folder to write the scene into (created if missing)")
    parser.add_argument("--size", type=int, default=512, help="width and height in 10 m pixels (default 512)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--no-clouds", action="store_true", help="no clouds or shadows on the optical image")
    parser.add_argument("--cloud-cover", type=float, default=0.3, help="cloudy fraction of the scene (default 0.3)")
    parser.add_argument("--blocks", type=int, default=4, help="held-out split grid: BLOCKS x BLOCKS (default 4)")


def run_cli(args, feedback) -> int:
    paths = make_sample_scene(
        args.out_dir,
        size=args.size,
        seed=args.seed,
        clouds=not args.no_clouds,
        cloud_cover=args.cloud_cover,
        blocks=args.blocks,
    )
    print(json.dumps(paths, indent=1))
    return 0
