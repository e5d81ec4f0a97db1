"""`make demo`: the whole product on a generated scene, through QGIS's own command line.

1. generate the synthetic Sentinel-2/Sentinel-1-like sample scene (SAR on another grid and CRS,
   clouds on the optical image, reference polygons split into training and held-out blocks);
2. train the small variant of each network on the CPU with ``optsar:train`` (the automatic
   settings, with the step budget cut, and a time limit set, to fit the demo into ten minutes);
3. classify the scene with ``optsar:classify`` (styled GeoTIFF + .qml);
4. beside them, the baseline a network has to beat: a per-pixel random forest (scikit-learn,
   200 trees) trained on the same polygons and the same bands (optical as they are, SAR
   warped onto the optical grid), written as a styled map too;
5. assess every map against the held-out polygons with ``optsar:assessaccuracy``;
6. print OA / kappa / mIoU per map and where the maps and reports are.

Every network step goes through ``qgis_process.bin`` exactly as a batch user would run it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.qgis_process import QGIS_PROCESS, qgis_env  # noqa: E402

# Step budgets (EPOCHS x STEPS_PER_EPOCH) sized so the whole demo ends within ten minutes on a
# 2-core CPU; tiles and batches as the automatic CPU settings choose them.  MOSFNet's SS2D scans
# run step by step on a CPU, so its steps cost about five times those of the other two.  Each run
# also has a time limit (MAX_MINUTES, 9.5 min in all), a guard against a slow pace of the machine:
# at the pace of 2026-12-07 the budgets take about 100 s (SpecSAR-Former), 170 s (CloudLULC-Net)
# and 215 s (MOSFNet) of training and end before it; on a slower machine the limit lowers a
# budget (by whole validation periods) and fits the learning-rate schedule to it, and the demo
# prints the lowered budget.
SCHEDULES = {
    "cloudlulc_net": dict(EPOCHS=16, STEPS_PER_EPOCH=50, TILE_SIZE=128, BATCH_SIZE=4, MAX_MINUTES=3.25),
    "specsar_former": dict(EPOCHS=16, STEPS_PER_EPOCH=50, TILE_SIZE=128, BATCH_SIZE=4, MAX_MINUTES=2.25),
    "mosfnet": dict(EPOCHS=6, STEPS_PER_EPOCH=50, TILE_SIZE=128, BATCH_SIZE=4, MAX_MINUTES=4.0),
}
RF_PIXELS = 40_000


def qgis_run(algorithm: str, params: dict) -> dict:
    args = [QGIS_PROCESS, "run", algorithm, "--json", "--"] + [f"{k}={v}" for k, v in params.items()]
    proc = subprocess.run(args, env=qgis_env(), stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if proc.returncode != 0:
        err = [ln for ln in proc.stderr.splitlines() if ln.strip() and "XDG_RUNTIME_DIR" not in ln]
        raise SystemExit(f"{algorithm} failed (exit {proc.returncode}): {' '.join(err[-3:])}")
    return json.loads(proc.stdout[proc.stdout.index("{"):])["results"]


def random_forest_map(scene: dict, out: Path) -> str:
    """A per-pixel random forest on the training polygons, written as a styled classification GeoTIFF."""
    import numpy as np
    import rasterio
    from sklearn.ensemble import RandomForestClassifier

    from optsar_plugin import raster_io
    from optsar_plugin.styles import apply_class_metadata, write_qml
    from optsar_plugin.training.reference import labels_from_vector

    with rasterio.open(scene["optical"]) as o, rasterio.open(scene["sar"]) as s:
        optical = raster_io.read_window(o, list(range(1, o.count + 1)), 0, 0, o.height, o.width)
        with raster_io.aligned(s, o) as sv:
            sar = raster_io.read_window(sv, list(range(1, s.count + 1)), 0, 0, o.height, o.width)
        labels = labels_from_vector(scene["reference_train"], "class_name", o)
        profile = o.profile
    x = np.nan_to_num(np.concatenate([optical, sar]).reshape(optical.shape[0] + sar.shape[0], -1).T)
    y = labels.index.ravel()
    rng = np.random.default_rng(0)
    idx = np.flatnonzero(y != 255)
    idx = rng.choice(idx, min(RF_PIXELS, idx.size), replace=False)
    rf = RandomForestClassifier(200, n_jobs=2, random_state=0).fit(x[idx], y[idx])
    codes = np.asarray(labels.scheme.codes, np.uint8)[rf.predict(x)].reshape(labels.index.shape)
    codes[raster_io.all_invalid(optical) | raster_io.all_invalid(sar)] = 255
    path = out / "random_forest_landcover.tif"
    profile.update(count=1, dtype="uint8", nodata=255)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(codes, 1)
    apply_class_metadata(str(path), labels.scheme)
    write_qml(path.with_suffix(".qml"), labels.scheme)
    return str(path)


def assess(map_path: str, scene: dict, out: Path, name: str) -> dict:
    return qgis_run("optsar:assessaccuracy", {
        "CLASSIFICATION": map_path, "REFERENCE": scene["reference_test"], "CLASS_FIELD": "class_name",
        "OUTPUT_REPORT": out / f"{name}_accuracy.html", "OUTPUT_MATRIX": out / f"{name}_matrix.csv",
        "OUTPUT_METRICS": out / f"{name}_metrics.json",
    })


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "demo_output")
    ap.add_argument("--size", type=int, default=384, help="scene width/height in pixels")
    ap.add_argument("--models", default=",".join(SCHEDULES))
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    out = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    from optsar_plugin.sample_scene import make_sample_scene

    print(f"==> Generating the sample scene ({a.size} x {a.size} px) in {out / 'scene'}", flush=True)
    scene = make_sample_scene(out / "scene", size=a.size, seed=a.seed)
    rows = []
    t = time.time()
    print("==> random forest (per-pixel baseline): training on the same polygons and bands", flush=True)
    rf_map = random_forest_map(scene, out)
    rows.append(("random forest", assess(rf_map, scene, out, "random_forest"), rf_map, time.time() - t))
    for model in a.models.split(","):
        t = time.time()
        print(f"==> {model}: training the small variant on the CPU", flush=True)
        trained = qgis_run("optsar:train", {
            "OPTICAL": scene["optical"], "SAR": scene["sar"], "REFERENCE": scene["reference_train"],
            "CLASS_FIELD": "class_name", "MODEL": model, "MODEL_SIZE": "small", "SEED": a.seed,
            "VALIDATION_FRACTION": 0.2, "DEVICE": "auto",
            "OUTPUT_CHECKPOINT": out / f"{model}.safetensors", "OUTPUT_LOG": out / f"{model}_training.csv",
            "OUTPUT_CURVE": out / f"{model}_training.html", **SCHEDULES[model],
        })
        print(f"    trained in {time.time() - t:.0f} s, best validation mIoU {trained['BEST_MIOU']:.3f}; stopped: "
              f"{trained['STOPPED']}", flush=True)
        print(f"==> {model}: classifying with qgis_process", flush=True)
        classified = qgis_run("optsar:classify", {
            "OPTICAL": scene["optical"], "SAR": scene["sar"], "MODEL": model,
            "CHECKPOINT": trained["OUTPUT_CHECKPOINT"], "TILE_SIZE": 128, "OVERLAP": 32,
            "OUTPUT": out / f"{model}_landcover.tif", "OUTPUT_CONFIDENCE": out / f"{model}_confidence.tif",
        })
        print(f"==> {model}: assessing against the held-out reference polygons", flush=True)
        rows.append((model, assess(classified["OUTPUT"], scene, out, model), classified["OUTPUT"], time.time() - t))

    print(f"\nOptSAR Fusion demo: {a.size} x {a.size} px scene, held-out blocks, CPU, {time.time() - t0:.0f} s in all\n")
    print(f"{'map':16s} {'OA':>6s} {'kappa':>6s} {'mIoU':>6s} {'time':>6s}")
    for model, r, _, dt in rows:
        print(f"{model:16s} {r['OA']:6.3f} {r['KAPPA']:6.3f} {r['MIOU']:6.3f} {dt:5.0f}s")
    print()
    for model, r, map_path, _ in rows:
        print(f"{model:16s} map:    {map_path} (styled: .qml beside it)")
        print(f"{'':16s} report: {r['OUTPUT_REPORT']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
