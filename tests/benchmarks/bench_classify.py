"""Benchmark of tiled optical + SAR classification (``make bench``; not a pytest test).

    python tests/benchmarks/bench_classify.py [--models a,b] [--cpu-size 1024] [--cpu-size-paper 512]
                                              [--gpu-size 4096] [--io-size 8000] [--skip-io]
                                              [--rss-sizes 1000,4000,8000] [--skip-rss] [--json out.json]

It prints, with the settings that produced each figure:

1. **Throughput per model** through the whole engine (:func:`optsar_plugin.inference.classify`:
   read optical, warp an EPSG:4326 SAR raster onto the UTM optical grid per window,
   normalise, forward, blend, write a tiled DEFLATE GeoTIFF with style): Mpix/s of the
   run, Mpix/s of the network alone, and the **engine overhead** = time outside the
   model forward / total time (target < 10 %).  On this CPU the models run in *small
   configurations* (labelled; MOSFNet has no smaller configuration and runs in its
   paper configuration, on a smaller ``--cpu-size-paper`` scene) on a ``--cpu-size`` square
   scene with 256-px tiles (overlap 32, batch 2); on a CUDA GPU,
   when there is one, in their paper configurations on a ``--gpu-size`` square scene
   with 512-px tiles (overlap 64, batch 8) in fp32 and bf16.  Weights are fixed-seed random: speed does not
   depend on them.
2. **Peak RSS** of a whole classification of 1000 x 1000, 4000 x 4000 and 8000 x 8000 scenes, each in
   its own process (the child reports its own peak, ``VmHWM``, at the end - see
   :func:`peak_rss_kib`), same settings (512-px tiles, overlap 64, batch 4, 4 optical + 2 SAR
   bands with the SAR in EPSG:4326, 9 classes), the ratio of the largest to the smallest
   (target <= 1.2) and of the largest to the one before it (4 x the area: what memory still
   grows once GDAL's block cache, a fixed 32 MB budget, is full at about 1000 px).  These
   runs use a *very cheap fixed predictor* (a fixed per-pixel linear map + softmax in
   numpy, no torch) so the 64-Mpix run finishes in minutes on 2 cores; the engine
   (reading, warping, blending, writing) is the real one.  The input scenes are
   generated in a separate process beforehand, so their generation does not count.
3. **The engine against a plain loop** on the ``--io-size`` square scene (default 8000 x 8000, 4 optical
   + 2 SAR bands, SAR in EPSG:4326), each in its own process: a plain one-thread loop that reads the
   optical windows, warps the SAR windows (a ``WarpedVRT``) and writes a tiled DEFLATE uint8 map
   (:func:`plain_loop`: the least any classifier must do), and the whole engine
   (:func:`optsar_plugin.inference.run_inference`, 512-px windows, overlap 64, batch 4, 9 classes)
   with a *near-free predictor* (:func:`free_predictor`: one fixed, spatially smooth probability field, no
   arithmetic, so the map has patches like a land-cover map and compresses like one),
   so the figure is the engine's own cost: reading, warping, normalising, blending, writing.  It
   prints both times and their ratio (goal: engine / plain loop <= 1), the same plain loop warping with the
   engine's (faster) warp settings and the engine's ratio to it, and the engine's time and peak memory
   when the user gives GDAL's cache 64 MB (``GDAL_CACHEMAX``), so that the engine visits the scene in
   wider column stripes than its default 32 MB budget gives (:class:`optsar_plugin.inference.windows.Grid`),
   and the time of the SAR's warp alone with one thread per warped block and split among threads as the
   engine does (:func:`warp_only`, :func:`optsar_plugin.raster_io.parallel_warp`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

# Small CPU configurations (the paper configurations are used on a GPU).
CPU_CONFIGS = {
    "cloudlulc_net": dict(channels=32, num_blocks=2, order=2, embed_dim=64, depth=2, heads=4),
    "specsar_former": dict(embed_dims=[32, 64, 128, 256], depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8], decoder_dim=64),
    "mosfnet": dict(),  # no smaller configuration exists: paper configuration
}
RSS_CLASSES = 9
RSS_OPTICAL, RSS_SAR = 4, 2


# -- synthetic scenes (written block by block: generation memory does not depend on size) -------------


def make_scene(folder: Path, size: int, optical_bands: int, sar_bands: int, block: int = 512) -> dict:
    """UTM optical (uint16, nodata 0, 10 m) and EPSG:4326 SAR (float32 dB, ~10 m) covering it, tiled + DEFLATE."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.warp import transform_bounds
    from rasterio.windows import Window

    folder.mkdir(parents=True, exist_ok=True)
    x0, y0, res = 500000.0, 4000000.0, 10.0
    opt_path, sar_path = folder / "optical.tif", folder / "sar.tif"
    common = dict(driver="GTiff", tiled=True, blockxsize=256, blockysize=256, compress="deflate", BIGTIFF="IF_SAFER")
    with rasterio.open(opt_path, "w", width=size, height=size, count=optical_bands, dtype="uint16", nodata=0,
                       crs="EPSG:32633", transform=from_origin(x0, y0, res, res), **common) as ds:
        for r in range(0, size, block):
            h = min(block, size - r)
            yy, xx = np.mgrid[r:r + h, 0:size].astype(np.float32)
            base = np.sin(xx / 37.0) * np.cos(yy / 23.0) + 0.5 * np.sin((xx + yy) / 101.0)
            data = np.stack([1200 + 400 * base * (1 + 0.1 * k) + 30 * k for k in range(optical_bands)])
            ds.write(np.clip(data, 1, 10000).astype(np.uint16), window=Window(0, r, size, h))
    w, s, e, n = transform_bounds("EPSG:32633", "EPSG:4326", x0, y0 - size * res, x0 + size * res, y0)
    pad = 0.001
    dx, dy = 0.00011, 0.00009  # about 10 m
    cols, rows = int((e - w + 2 * pad) / dx) + 1, int((n - s + 2 * pad) / dy) + 1
    with rasterio.open(sar_path, "w", width=cols, height=rows, count=sar_bands, dtype="float32", nodata=float("nan"),
                       crs="EPSG:4326", transform=from_origin(w - pad, n + pad, dx, dy), **common) as ds:
        for r in range(0, rows, block):
            h = min(block, rows - r)
            yy, xx = np.mgrid[r:r + h, 0:cols].astype(np.float32)
            base = np.cos(xx / 41.0) * np.sin(yy / 29.0)
            ds.write(np.stack([-12 + 4 * base - 6 * k for k in range(sar_bands)]).astype(np.float32),
                     window=Window(0, r, cols, h))
    return {"optical": str(opt_path), "sar": str(sar_path)}


def scene_metadata(model: str, optical_bands: int, sar_bands: int, num_classes: int, config: dict) -> dict:
    from optsar_plugin.classes import generated_palette

    counts = {"optical_bands": optical_bands, "sar_bands": sar_bands, "num_classes": num_classes}
    return {
        "model": {"name": model, "config": {**counts, **config}},
        "bands": {"optical": [f"o{i + 1}" for i in range(optical_bands)], "sar": [f"s{i + 1}" for i in range(sar_bands)]},
        "normalisation": {
            "optical": {"method": "robust_zscore", "to_db": False, "center": [1200.0] * optical_bands,
                        "scale": [400.0] * optical_bands, "clip": 6.0},
            "sar": {"method": "robust_zscore", "to_db": False, "center": [-15.0] * sar_bands,
                    "scale": [4.0] * sar_bands, "clip": 6.0},
        },
        "classes": [{"code": i, "name": f"class {i}", "color": c} for i, c in enumerate(generated_palette(num_classes))],
        "tile_size": 512,
        "training": {"note": "benchmark: fixed-seed random weights"},
    }


# -- 1. throughput per model ------------------------------------------------------------------------------


def bench_model(name: str, config: dict, device: str, size: int, tile: int, overlap: int, batch: int,
                precision: str, workdir: Path) -> dict:
    import torch

    from optsar_plugin.checkpoints import save_checkpoint
    from optsar_plugin.inference import classify
    from optsar_plugin.models import build_model, model_info

    d = model_info(name).defaults
    ob, sb, nc = d["optical_bands"], d["sar_bands"], d["num_classes"]
    folder = workdir / f"scene_{size}_{ob}_{sb}"
    paths = make_scene(folder, size, ob, sb) if not (folder / "sar.tif").exists() else {
        "optical": str(folder / "optical.tif"), "sar": str(folder / "sar.tif")}
    torch.manual_seed(0)
    model = build_model(name, optical_bands=ob, sar_bands=sb, num_classes=nc, **config)
    ck = workdir / f"{name}_{'small' if config else 'paper'}.safetensors"
    save_checkpoint(ck, model, scene_metadata(name, ob, sb, nc, model.config))
    del model
    out = workdir / f"out_{name}.tif"
    # warm-up on one window (allocator, kernels, cuDNN choices), not timed
    classify(paths["optical"], paths["sar"], ck, out, device=device, tile_size=tile, overlap=overlap, batch_size=batch,
             precision=precision, extent=_corner_extent(paths["optical"], tile))
    res = classify(paths["optical"], paths["sar"], ck, out, device=device, tile_size=tile, overlap=overlap,
                   batch_size=batch, precision=precision)
    mpix = res["width"] * res["height"] / 1e6
    return {
        "model": name,
        "config": "small " + json.dumps(config) if config else "paper",
        "device": res["device"],
        "precision": res["precision"],
        "scene_px": size,
        "tile": tile,
        "overlap": overlap,
        "batch": batch,
        "windows": res["windows"],
        "seconds": res["seconds"],
        "seconds_model": res["seconds_model"],
        "mpix_per_s": mpix / res["seconds"],
        "model_mpix_per_s": mpix / res["seconds_model"] if res["seconds_model"] else None,
        "overhead_share": 1.0 - res["seconds_model"] / res["seconds"],
    }


def _corner_extent(optical, tile):
    import rasterio

    with rasterio.open(optical) as ds:
        b, r = ds.bounds, ds.res[0]
        return (b.left, b.top - tile * r, b.left + tile * r, b.top)


# -- 2. peak RSS in child processes -------------------------------------------------------------------------


def cheap_predictor(num_classes: int, channels: int):
    """A fixed per-pixel linear map + softmax (numpy): a 'model' costing almost nothing.

    Computed window by window into the output array, so that its own temporaries
    stay small and the figures show the engine's memory, not this stand-in's.
    """
    rng = np.random.default_rng(0)
    w = rng.standard_normal((num_classes, channels)).astype(np.float32)

    def predict(optical, sar):
        b, _, h, wd = optical.shape
        out = np.empty((b, num_classes, h, wd), np.float32)
        for k in range(b):
            x = np.concatenate([optical[k], sar[k]]).reshape(channels, -1)
            z = out[k].reshape(num_classes, -1)
            np.matmul(w, x, out=z)
            z -= z.max(axis=0, keepdims=True)
            np.exp(z, out=z)
            z /= z.sum(axis=0, keepdims=True)
        return out

    return predict


def peak_rss_kib() -> float:
    """This process's peak resident set size in KiB.

    ``VmHWM`` from /proc/self/status where there is one: ``getrusage().ru_maxrss``
    is carried over from the parent through fork/exec on Linux, so a child started
    by a parent that had grown large (the model runs above) would report the
    parent's peak.  Elsewhere ``ru_maxrss`` (KiB on Linux, bytes on macOS).
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1])
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform == "darwin" else float(peak)


def rss_child(size: int, workdir: Path, confidence: bool) -> None:
    """Runs in its own process: classify the prepared scene, print JSON with this process's peak RSS."""
    from optsar_plugin.inference import run_inference

    folder = workdir / f"rss_{size}"
    meta = scene_metadata("mosfnet", RSS_OPTICAL, RSS_SAR, RSS_CLASSES, {})
    t0 = time.perf_counter()
    res = run_inference(folder / "optical.tif", folder / "sar.tif", folder / "out.tif", meta,
                        cheap_predictor(RSS_CLASSES, RSS_OPTICAL + RSS_SAR), tile_size=512, overlap=64, batch_size=4,
                        output_confidence=folder / "conf.tif" if confidence else None)
    print(json.dumps({"size": size, "peak_rss_mib": peak_rss_kib() / 1024, "seconds": time.perf_counter() - t0,
                      "windows": res["windows"], "confidence": confidence}))


def run_child(args, timeout=3600, env=None) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, PYTHONPATH=str(ROOT), **(env or {})))
    if proc.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{proc.stderr[-3000:]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def bench_rss(sizes, workdir: Path, confidence: bool) -> list:
    out = []
    for size in sizes:
        folder = workdir / f"rss_{size}"
        if not (folder / "sar.tif").exists():
            run_child(["--make-scene", str(size), "--workdir", str(workdir)])
        out.append(run_child(["--rss-child", str(size), "--workdir", str(workdir)]
                             + (["--confidence"] if confidence else [])))
    return out


# -- 3. the engine against a plain loop ---------------------------------------------------------------------


def plain_loop(optical: str, sar: str, out: str, block: int = 512, engine_warp: bool = False) -> dict:
    """The least a classifier does: read optical windows, warp SAR windows, write a uint8 map; one thread.

    Windows of ``block`` px without overlap; the "class" is a threshold on the first optical
    band where both inputs are valid (so the data must really be read).  The output is a
    tiled (256 px) DEFLATE GeoTIFF like the engine's, compressed in this thread.  The SAR is
    warped by a ``WarpedVRT`` with NaN as its nodata value (the plain way, as issue 13 measured it);
    ``engine_warp``: with the engine's warp settings instead (no destination nodata value, NaN as the
    initial value: GDAL's faster kernels, :func:`optsar_plugin.raster_io.aligned`), still one thread.
    """
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT
    from rasterio.windows import Window

    t0 = time.perf_counter()
    with rasterio.open(optical) as o, rasterio.open(sar) as s, \
            WarpedVRT(s, crs=o.crs, transform=o.transform, width=o.width, height=o.height,
                      resampling=Resampling.bilinear, dtype="float32",
                      **(dict(nodata=None, init_dest_nodata=False, INIT_DEST="NaN") if engine_warp
                         else dict(nodata=float("nan")))) as sv, \
            rasterio.open(out, "w", driver="GTiff", width=o.width, height=o.height, count=1, dtype="uint8",
                          crs=o.crs, transform=o.transform, nodata=255, tiled=True, blockxsize=256, blockysize=256,
                          compress="deflate", BIGTIFF="IF_SAFER") as dst:
        for r in range(0, o.height, block):
            for c in range(0, o.width, block):
                win = Window(c, r, min(block, o.width - c), min(block, o.height - r))
                opt = o.read(window=win)
                sr = sv.read(window=win)
                cls = (opt[0] > 1200).astype(np.uint8)
                cls[(opt[0] == 0) | np.isnan(sr[0])] = 255
                dst.write(cls, 1, window=win)
    return {"seconds": time.perf_counter() - t0, "peak_rss_mib": peak_rss_kib() / 1024}


def free_predictor(num_classes: int, smooth: bool = True):
    """A near-free predictor: the same fixed probability field for every window (a broadcast view, no arithmetic).

    ``smooth`` (default): every class's probability varies over ~16 px, as a classifier's does, so the
    map has patches and edges like a land-cover map and compresses like one (the plain loop writes a
    threshold map of the data).  ``smooth=False`` is independent noise per pixel: its map is white noise,
    which DEFLATE compresses far more slowly than any map (measured: 0.8 s more CPU in the writer at 8000 px).
    """
    from optsar_plugin.sample_scene import smooth_field

    cache = {}

    def predict(optical, sar):
        b, _, h, w = optical.shape
        if (h, w) not in cache:
            rng = np.random.default_rng(0)
            if smooth:
                z = np.exp(np.stack([smooth_field(rng, (h, w), 16.0) for _ in range(num_classes)]))
            else:
                z = rng.random((num_classes, h, w), dtype=np.float32) + 0.01
            cache[(h, w)] = (z / z.sum(axis=0, keepdims=True)).astype(np.float32)
        return np.broadcast_to(cache[(h, w)], (b, num_classes, h, w))

    return predict


def warp_only(optical: str, sar: str, parallel: bool, block: int = 512) -> dict:
    """Only the SAR's warp: every row of ``block`` px of the engine's warped view (:func:`raster_io.aligned`), read
    once, on one thread per block or with :func:`raster_io.parallel_warp` (the engine's setting)."""
    import rasterio
    from rasterio.windows import Window

    from optsar_plugin import raster_io

    t0 = time.perf_counter()
    with rasterio.Env(GDAL_CACHEMAX=64 * 2**20), rasterio.open(optical) as o, rasterio.open(sar) as s, \
            raster_io.aligned(s, o) as sv, (raster_io.parallel_warp() if parallel else nullcontext()):
        for r in range(0, o.height, block):
            sv.read(window=Window(0, r, o.width, min(block, o.height - r)))
    return {"seconds": time.perf_counter() - t0, "peak_rss_mib": peak_rss_kib() / 1024}


def io_child(size: int, workdir: Path, which: str) -> None:
    """Runs in its own process: the plain loop, the engine or the SAR warp alone on the prepared scene; prints JSON."""
    folder = workdir / f"rss_{size}"
    if which.startswith("plain"):
        res = plain_loop(str(folder / "optical.tif"), str(folder / "sar.tif"), str(folder / "plain.tif"),
                         engine_warp=which == "plain-engine-warp")
    elif which.startswith("warp"):
        res = warp_only(str(folder / "optical.tif"), str(folder / "sar.tif"), parallel=which == "warp-parallel")
    else:
        from optsar_plugin.inference import run_inference

        meta = scene_metadata("mosfnet", RSS_OPTICAL, RSS_SAR, RSS_CLASSES, {})
        t0 = time.perf_counter()
        run_inference(folder / "optical.tif", folder / "sar.tif", folder / "engine.tif", meta,
                      free_predictor(RSS_CLASSES), tile_size=512, overlap=64, batch_size=4)
        res = {"seconds": time.perf_counter() - t0, "peak_rss_mib": peak_rss_kib() / 1024}
    print(json.dumps({"which": which, "size": size, **res}))


def _bench_io(args, workdir, report) -> bool:
    size = args.io_size
    folder = workdir / f"rss_{size}"
    if not (folder / "sar.tif").exists():
        run_child(["--make-scene", str(size), "--workdir", str(workdir)])
    print(f"\n3. The engine against a plain one-thread loop, {size} x {size} px, {RSS_OPTICAL} optical + {RSS_SAR} SAR "
          f"bands (SAR in EPSG:4326), each in its own process, {os.cpu_count()} CPUs")
    runs = {which: run_child(["--io-child", str(size), "--which", which, "--workdir", str(workdir)])
            for which in ("plain", "engine")}
    plain, engine = runs["plain"], runs["engine"]
    ratio = engine["seconds"] / plain["seconds"]
    print(f"  plain loop (read optical, warp SAR, write uint8 map; 512-px windows, no overlap): "
          f"{plain['seconds']:.1f} s, peak RSS {plain['peak_rss_mib']:.0f} MiB")
    print(f"  engine (run_inference, near-free predictor, 512-px windows, overlap 64, batch 4, {RSS_CLASSES} classes): "
          f"{engine['seconds']:.1f} s, peak RSS {engine['peak_rss_mib']:.0f} MiB")
    print(f"  ratio engine / plain loop: {ratio:.2f} (goal <= 1: {'met' if ratio <= 1 else 'NOT MET'})")
    fast = run_child(["--io-child", str(size), "--which", "plain-engine-warp", "--workdir", str(workdir)])
    fast_ratio = engine["seconds"] / fast["seconds"]
    print(f"  plain loop warping with the engine's settings (no destination nodata value; one thread): "
          f"{fast['seconds']:.1f} s; engine / this loop: {fast_ratio:.2f} "
          f"({'at or below' if fast_ratio <= 1 else 'above'} it: the engine's own work is "
          f"{'hidden' if fast_ratio <= 1 else 'not hidden'} behind reading, warping and writing)")
    wide = run_child(["--io-child", str(size), "--which", "engine", "--workdir", str(workdir)],
                     env={"GDAL_CACHEMAX": "64MB"})
    print(f"  engine with GDAL_CACHEMAX=64MB (wider column stripes, more memory): {wide['seconds']:.1f} s "
          f"({wide['seconds'] / plain['seconds']:.2f} x the plain loop), peak RSS {wide['peak_rss_mib']:.0f} MiB")
    warp = {which: run_child(["--io-child", str(size), "--which", which, "--workdir", str(workdir)])
            for which in ("warp-one-thread", "warp-parallel")}
    one, par = warp["warp-one-thread"]["seconds"], warp["warp-parallel"]["seconds"]
    print(f"  the SAR's warp alone (the engine's warped view, rows of 512 px): {one:.1f} s with one thread per block, "
          f"{par:.1f} s split among threads as in the engine (raster_io.parallel_warp, {os.cpu_count()} CPUs): "
          f"{one / par:.2f} x faster")
    report["io"] = {"size": size, "plain": plain, "engine": engine, "ratio": ratio, "plain_engine_warp": fast,
                    "ratio_plain_engine_warp": fast_ratio, "engine_cache_64mb": wide,
                    "warp_one_thread": warp["warp-one-thread"], "warp_parallel": warp["warp-parallel"]}
    return False


# -- main ----------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=None, help="comma-separated model names (default: all registered)")
    p.add_argument("--cpu-size", type=int, default=1024, help="CPU scene edge for the small configurations")
    p.add_argument("--cpu-size-paper", type=int, default=512, help="CPU scene edge for paper configurations")
    p.add_argument("--gpu-size", type=int, default=4096)
    p.add_argument("--io-size", type=int, default=8000, help="scene edge of the engine-vs-plain-loop comparison")
    p.add_argument("--skip-io", action="store_true")
    p.add_argument("--io-child", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--which", default="engine", help=argparse.SUPPRESS)
    p.add_argument("--rss-sizes", default="1000,4000,8000")
    p.add_argument("--skip-rss", action="store_true")
    p.add_argument("--skip-models", action="store_true")
    p.add_argument("--workdir", default=None, help="keep the generated scenes here (default: a temporary folder)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.add_argument("--make-scene", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--rss-child", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--confidence", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.make_scene:
        make_scene(Path(args.workdir) / f"rss_{args.make_scene}", args.make_scene, RSS_OPTICAL, RSS_SAR)
        return 0
    if args.rss_child:
        rss_child(args.rss_child, Path(args.workdir), args.confidence)
        return 0
    if args.io_child:
        io_child(args.io_child, Path(args.workdir), args.which)
        return 0

    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="optsar-bench-classify-"))
    workdir.mkdir(parents=True, exist_ok=True)
    report = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs", "models": [], "rss": [],
              "io": None}
    print(f"bench_classify: {report['machine']}; work folder {workdir}")
    failed = False
    try:
        if not args.skip_models:
            failed |= _bench_models(args, workdir, report)
        if not args.skip_io:
            failed |= _bench_io(args, workdir, report)
        if not args.skip_rss:
            failed |= _bench_memory(args, workdir, report)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 1 if failed else 0


def _bench_models(args, workdir, report) -> bool:
    import torch

    from optsar_plugin.models import MODEL_NAMES

    names = args.models.split(",") if args.models else list(MODEL_NAMES)
    runs = []
    for name in names:
        config = CPU_CONFIGS.get(name, {})
        runs.append(("cpu", name, config, args.cpu_size if config else args.cpu_size_paper, 256, 32, 2, "fp32"))
    if torch.cuda.is_available():
        for name in names:
            for prec in ("fp32", "bf16"):
                runs.append(("cuda", name, {}, args.gpu_size, 512, 64, 8, prec))
    else:
        print("No CUDA GPU: GPU figures skipped.")
    print(f"\n1. Throughput through the engine (classify), torch {torch.__version__}, {torch.get_num_threads()} threads")
    header = f"{'model':15} {'config':8} {'device':6} {'prec':5} {'scene':>6} {'tile':>5} {'win':>4} " \
             f"{'Mpix/s':>8} {'net Mpix/s':>10} {'overhead':>8}"
    print(header)
    failed = False
    for device, name, config, size, tile, overlap, batch, prec in runs:
        try:
            r = bench_model(name, config, device, size, tile, overlap, batch, prec, workdir)
        except Exception as exc:  # report and go on with the other models
            print(f"{name:15} {device:6} FAILED: {type(exc).__name__}: {exc}")
            traceback.print_exc(limit=3)
            failed = True
            continue
        report["models"].append(r)
        print(f"{name:15} {'small' if config else 'paper':8} {device:6} {r['precision']:5} {size:>6} {tile:>5} "
              f"{r['windows']:>4} {r['mpix_per_s']:>8.3f} {r['model_mpix_per_s']:>10.3f} "
              f"{100 * r['overhead_share']:>7.1f}%")
    for name, cfg in CPU_CONFIGS.items():
        if cfg and name in names:
            print(f"  small config {name}: {json.dumps(cfg)}")
    print("  overhead = share of the run outside the network forward (reading, SAR warping, normalising, "
          "blending, writing); target < 10 %")
    return failed


def _bench_memory(args, workdir, report) -> bool:
    sizes = [int(s) for s in args.rss_sizes.split(",")]
    print(f"\n2. Peak RSS, one process per scene; tile 512, overlap 64, batch 4, {RSS_OPTICAL} optical + {RSS_SAR} "
          f"SAR bands (SAR in EPSG:4326), {RSS_CLASSES} classes; very cheap fixed numpy predictor (per-pixel linear "
          "map + softmax) so the large scene finishes on 2 cores")
    failed = False  # a missed target is printed, not an error; a crash is
    for confidence in (False, True):
        label = "class map + confidence" if confidence else "class map"
        rows = bench_rss(sizes, workdir, confidence)
        report["rss"].append({"outputs": label, "runs": rows})
        for r in rows:
            print(f"  {r['size']:>5} x {r['size']:<5} {label:24} peak RSS {r['peak_rss_mib']:8.1f} MiB "
                  f"({r['windows']} windows, {r['seconds']:.1f} s)")
        if len(rows) >= 2:
            ratio = rows[-1]["peak_rss_mib"] / rows[0]["peak_rss_mib"]
            ok = ratio <= 1.2
            print(f"  ratio {rows[-1]['size']}^2 / {rows[0]['size']}^2 ({label}): {ratio:.3f} "
                  f"(target <= 1.2: {'met' if ok else 'NOT MET'})")
            report["rss"][-1]["ratio"] = ratio
        if len(rows) >= 3:
            late = rows[-1]["peak_rss_mib"] / rows[-2]["peak_rss_mib"]
            print(f"  ratio {rows[-1]['size']}^2 / {rows[-2]['size']}^2 ({label}): {late:.3f} (growth once the "
                  f"block cache is full)")
            report["rss"][-1]["ratio_last_two"] = late
    return failed


if __name__ == "__main__":
    sys.exit(main())
