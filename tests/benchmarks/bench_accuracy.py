"""Benchmark: accuracy assessment of a 10 000 x 10 000 classification with 10 000 reference polygons.

Times ``optsar_plugin.accuracy.assess_accuracy`` (reading and repairing the polygons, burning them
strip by strip, one pass over the map for the mapped-class counts and the matrix, statistics, HTML/CSV/JSON
reports) in a child process, with its peak memory, and compares with GRASS GIS on the same data:
``r.external`` (link the GeoTIFF), ``v.in.ogr`` + ``v.to.rast`` (the polygons to a reference raster) and
``r.kappa -m`` (the matrix).  The polygons do not overlap (one per 100 x 100 pixel cell), so both tools
must produce the same matrix; the bench prints whether they do, and the ratio of the times.

GRASS is optional: without the ``grass`` command the comparison is skipped with a message
(Debian: ``apt-get install -y --no-install-recommends grass-core``).

Memory (by design, see :mod:`optsar_plugin.accuracy.assess`): strips of ~4 M pixels (400 rows here),
~35 bytes per strip pixel at the peak (map values, an int16 strip of reference class indices, int64
counting keys, masks), plus the polygons as GeoJSON dicts; the full 10 000 x 10 000 reference raster
is never held (as one uint16 array it would be 200 MB).  GDAL's block cache comes on top (default 5 % of
RAM); the bench reports the peak RSS with the default cache and with ``GDAL_CACHEMAX=64`` (MB).

Run: ``make bench`` or ``.venv/bin/python tests/benchmarks/bench_accuracy.py [--size N --polygons N]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

EPSG = 32633
X0, Y0, PX = 400_000.0, 5_200_000.0, 10.0
N_CLASSES = 10


def make_data(out: Path, size: int, n_polygons: int, seed: int = 0):
    """A patchy 10-class map (uint8, nodata 255 in a 200-row band) and non-overlapping reference polygons."""
    import rasterio
    from osgeo import ogr, osr
    from rasterio.transform import from_origin

    out.mkdir(parents=True, exist_ok=True)
    map_path, ref_path = out / "map.tif", out / "ref.gpkg"
    stamp = out / "params.json"
    params = {"size": size, "polygons": n_polygons, "seed": seed, "version": 1}
    if stamp.is_file() and json.loads(stamp.read_text()) == params and map_path.is_file() and ref_path.is_file():
        return map_path, ref_path
    rng = np.random.default_rng(seed)
    block = 50
    coarse = rng.integers(0, N_CLASSES, (math.ceil(size / block), math.ceil(size / block)), dtype=np.uint8)
    transform = from_origin(X0, Y0, PX, PX)
    with rasterio.open(map_path, "w", driver="GTiff", width=size, height=size, count=1, dtype="uint8",
                       crs=f"EPSG:{EPSG}", transform=transform, nodata=255, tiled=True, blockxsize=256,
                       blockysize=256) as ds:
        step = 1000
        for r0 in range(0, size, step):
            h = min(step, size - r0)
            rows = np.repeat(coarse[r0 // block:(r0 + h + block - 1) // block], block, axis=0)[: h]
            strip = np.repeat(rows, block, axis=1)[:, :size].copy()
            noise = rng.random(strip.shape) < 0.15
            strip[noise] = rng.integers(0, N_CLASSES, int(noise.sum()), dtype=np.uint8)
            if r0 < 200:
                strip[: max(0, min(h, 200 - r0))] = 255
            ds.write(strip, 1, window=rasterio.windows.Window(0, r0, size, h))
    # one polygon per grid cell: never overlapping
    per_side = int(math.ceil(math.sqrt(n_polygons)))
    cell = size / per_side
    with rasterio.open(map_path) as ds:
        if ref_path.exists():
            ref_path.unlink()
        drv = ogr.GetDriverByName("GPKG")
        vds = drv.CreateDataSource(str(ref_path))
        srs = osr.SpatialReference()
        srs.ImportFromEPSG(EPSG)
        lyr = vds.CreateLayer("ref", srs, ogr.wkbPolygon)
        lyr.CreateField(ogr.FieldDefn("cls", ogr.OFTInteger))
        lyr.StartTransaction()
        made = 0
        for i in range(per_side):
            for j in range(per_side):
                if made >= n_polygons:
                    break
                cr = (i + 0.5) * cell + rng.uniform(-0.05, 0.05) * cell
                cc = (j + 0.5) * cell + rng.uniform(-0.05, 0.05) * cell
                radius = rng.uniform(0.1, 0.44) * cell
                nv = int(rng.integers(5, 10))
                ang = np.sort(rng.uniform(0, 2 * np.pi, nv))
                xs = X0 + (cc + radius * np.cos(ang)) * PX
                ys = Y0 - (cr + radius * np.sin(ang)) * PX
                ring = ogr.Geometry(ogr.wkbLinearRing)
                for x, y in zip(xs, ys):
                    ring.AddPoint_2D(float(x), float(y))
                ring.AddPoint_2D(float(xs[0]), float(ys[0]))
                poly = ogr.Geometry(ogr.wkbPolygon)
                poly.AddGeometry(ring)
                mapped = int(next(ds.sample([(X0 + cc * PX, Y0 - cr * PX)]))[0])
                code = mapped if (mapped != 255 and rng.random() < 0.7) else int(rng.integers(0, N_CLASSES))
                f = ogr.Feature(lyr.GetLayerDefn())
                f.SetField("cls", code)
                f.SetGeometry(poly)
                lyr.CreateFeature(f)
                made += 1
        lyr.CommitTransaction()
        vds = None
    stamp.write_text(json.dumps(params))
    return map_path, ref_path


CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
t0 = time.perf_counter()
from optsar_plugin.accuracy.assess import assess_accuracy
t_call = time.perf_counter()
res = assess_accuracy(sys.argv[2], sys.argv[3], "cls", output_report=sys.argv[4] + "/report.html",
                      output_matrix=sys.argv[4] + "/matrix.csv", output_metrics=sys.argv[4] + "/metrics.json")
t1 = time.perf_counter()
print(json.dumps({"seconds": t1 - t0, "seconds_call": t1 - t_call, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "codes": res.classes.codes, "matrix": res.matrix.tolist(),
                  "kappa": res.kappa, "kappa_variance": res.metrics["summary"]["kappa_variance"],
                  "oa": res.overall_accuracy, "exclusions": res.metrics["exclusions"]["conflict_pixels"]}))
"""

GRASS_SCRIPT = r"""
set -e
t() { date +%s.%N; }
a=$(t); r.external input="$1" output=cls -o --quiet; g.region raster=cls
b=$(t); v.in.ogr input="$2" output=ref -o --quiet
c=$(t); v.to.rast input=ref output=refr use=attr attribute_column=cls --quiet
d=$(t); r.kappa -m classification=cls reference=refr output="$3/kappa_matrix.txt" --quiet
e=$(t); r.kappa classification=cls reference=refr output="$3/kappa_full.txt" --quiet
echo "$a $b $c $d $e" > "$3/grass_times.txt"
"""


def parse_rkappa_matrix(path: Path):
    """``r.kappa -m`` output: header ``cat# c1 c2 ... RowSum``, rows = classification, columns = reference."""
    lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    cols = [int(c) for c in lines[0][1:-1]]
    rows, data = [], []
    for ln in lines[1:]:
        if ln[0] == "ColSum":
            break
        rows.append(int(ln[0]))
        data.append([int(v) for v in ln[1:-1]])
    return rows, cols, np.asarray(data, dtype=np.int64)


def parse_rkappa_kappa(path: Path):
    lines = path.read_text().splitlines()
    for i, ln in enumerate(lines):
        if ln.strip().startswith("Kappa") and "Variance" in ln:
            k, v = lines[i + 1].split()[:2]
            return float(k), float(v)
    return None, None


def run_grass(map_path: Path, ref_path: Path, out: Path):
    if shutil.which("grass") is None:
        print("GRASS GIS is not installed (no 'grass' command): skipping the r.kappa comparison. "
              "Install it with: apt-get install -y --no-install-recommends grass-core")
        return None
    script = out / "grass_run.sh"
    script.write_text(GRASS_SCRIPT)
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        env = dict(os.environ, HOME=tmp)
        t0 = time.perf_counter()
        proc = subprocess.run(["grass", "--tmp-location", f"EPSG:{EPSG}", "--exec", "bash", str(script),
                               str(map_path), str(ref_path), str(out)], capture_output=True, text=True, env=env,
                              cwd=tmp)
        wall = time.perf_counter() - t0
    if proc.returncode != 0 or not (out / "grass_times.txt").is_file():
        print("GRASS run failed:\n" + proc.stdout[-2000:] + proc.stderr[-2000:])
        return None
    a, b, c, d, e = (float(v) for v in (out / "grass_times.txt").read_text().split())
    times = {"r.external": b - a, "v.in.ogr": c - b, "v.to.rast": d - c, "r.kappa": e - d}
    times["wall_with_startup"] = wall
    return times


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=10_000)
    ap.add_argument("--polygons", type=int, default=10_000)
    ap.add_argument("--out", default=str(ROOT / "bench_output" / "accuracy"))
    ap.add_argument("--no-grass", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out)
    for old in ("grass_times.txt", "kappa_matrix.txt", "kappa_full.txt"):
        (out / old).unlink(missing_ok=True)

    t0 = time.perf_counter()
    map_path, ref_path = make_data(out, args.size, args.polygons)
    print(f"data: {args.size} x {args.size} uint8 map, {args.polygons} polygons ({time.perf_counter() - t0:.1f} s to make or reuse)")

    runs = []
    for cache in (None, "64"):
        env = dict(os.environ)
        env.pop("GDAL_CACHEMAX", None)
        if cache:
            env["GDAL_CACHEMAX"] = cache
        proc = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), str(map_path), str(ref_path), str(out)],
                              capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            print(proc.stderr[-3000:])
            return 1
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    ours = runs[0]
    n_ref = int(np.asarray(ours["matrix"]).sum())
    print(f"optsar assess_accuracy: {ours['seconds']:.2f} s (again with GDAL_CACHEMAX=64: {runs[1]['seconds']:.2f} s), "
          f"peak RSS {ours['peak_rss_mb']:.0f} MB with GDAL's default block cache, "
          f"{runs[1]['peak_rss_mb']:.0f} MB with GDAL_CACHEMAX=64; {n_ref} reference pixels, "
          f"OA {ours['oa']:.4f}, kappa {ours['kappa']:.4f}")

    if args.no_grass:
        print("GRASS comparison skipped (--no-grass)")
        return 0
    g = run_grass(map_path, ref_path, out)
    if g is None:
        return 0
    pipeline = g["r.external"] + g["v.in.ogr"] + g["v.to.rast"] + g["r.kappa"]
    print("GRASS 8 steps (s): " + ", ".join(f"{k} {v:.2f}" for k, v in g.items()))
    rows, cols, gm = parse_rkappa_matrix(out / "kappa_matrix.txt")
    codes = ours["codes"]
    om = np.asarray(ours["matrix"], dtype=np.int64)
    full = np.zeros((len(codes), len(codes)), dtype=np.int64)
    idx = {c: i for i, c in enumerate(codes)}
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            if r in idx and c in idx:
                full[idx[r], idx[c]] = gm[i, j]
    same = np.array_equal(full, om)
    diff = int(np.abs(full - om).sum())
    print(f"matrices match: {same} (sum |difference| = {diff} of {n_ref} pixels; GRASS classes rows {rows}, cols {cols})")
    gk, gv = parse_rkappa_kappa(out / "kappa_full.txt")
    if gk is not None:
        print(f"kappa: optsar {ours['kappa']:.6f} (variance {ours['kappa_variance']:.3e}), "
              f"r.kappa {gk:.6f} (variance {gv:.6f}, as r.kappa prints it)")
    print(f"ratio optsar / GRASS pipeline (r.external + v.in.ogr + v.to.rast + r.kappa = {pipeline:.2f} s): "
          f"{ours['seconds'] / pipeline:.2f}, i.e. optsar is {pipeline / ours['seconds']:.1f}x faster (goal 5x; "
          f"{pipeline / ours['seconds_call']:.1f}x counting only the assess_accuracy call, {ours['seconds_call']:.2f} s, "
          "without Python's imports, as GRASS's step times leave out its start-up)")
    print(f"ratio optsar (everything) / r.kappa alone ({g['r.kappa']:.2f} s): {ours['seconds'] / g['r.kappa']:.2f}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
