"""`make demo`: the whole product on a generated scene, through QGIS's own command line.

1. generate the synthetic Sentinel-2/Sentinel-1-like sample scene (SAR on another grid and CRS,
   clouds on the optical image, reference polygons split into training and held-out blocks);
2. train a small variant of each network on the CPU (short schedule) with ``optsar:train``;
3. classify the scene with ``optsar:classify`` (styled GeoTIFF + .qml);
4. assess each map against the held-out polygons with ``optsar:assessaccuracy``;
5. print OA / kappa / mIoU per network and where the maps and reports are.

Every step goes through ``qgis_process.bin`` exactly as a batch user would run it.
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

# Short CPU schedules: (epochs, steps per epoch, tile) per network, sized so the whole demo
# stays well inside 15 minutes on a 2-core machine.
SCHEDULES = {
    "cloudlulc_net": dict(EPOCHS=6, STEPS_PER_EPOCH=25, TILE_SIZE=96, BATCH_SIZE=4),
    "specsar_former": dict(EPOCHS=6, STEPS_PER_EPOCH=25, TILE_SIZE=96, BATCH_SIZE=4),
    # MOSFNet keeps its two ConvNeXtV2-tiny encoders in every size: the costliest step by far.
    "mosfnet": dict(EPOCHS=2, STEPS_PER_EPOCH=10, TILE_SIZE=64, BATCH_SIZE=2),
}


def qgis_run(algorithm: str, params: dict) -> dict:
    args = [QGIS_PROCESS, "run", algorithm, "--json", "--"] + [f"{k}={v}" for k, v in params.items()]
    proc = subprocess.run(args, env=qgis_env(), stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if proc.returncode != 0:
        err = [ln for ln in proc.stderr.splitlines() if ln.strip() and "XDG_RUNTIME_DIR" not in ln]
        raise SystemExit(f"{algorithm} failed (exit {proc.returncode}): {' '.join(err[-3:])}")
    return json.loads(proc.stdout[proc.stdout.index("{"):])["results"]


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
    for model in a.models.split(","):
        t = time.time()
        print(f"==> {model}: training a small variant on the CPU", flush=True)
        trained = qgis_run("optsar:train", {
            "OPTICAL": scene["optical"], "SAR": scene["sar"], "REFERENCE": scene["reference_train"],
            "CLASS_FIELD": "class_name", "MODEL": model, "MODEL_SIZE": "small", "SEED": a.seed,
            "VALIDATION_FRACTION": 0.2, "DEVICE": "auto",
            "OUTPUT_CHECKPOINT": out / f"{model}.safetensors", "OUTPUT_LOG": out / f"{model}_training.csv",
            "OUTPUT_CURVE": out / f"{model}_training.html", **SCHEDULES[model],
        })
        print(f"    trained in {time.time() - t:.0f} s, best validation mIoU {trained['BEST_MIOU']:.3f}", flush=True)
        print(f"==> {model}: classifying with qgis_process", flush=True)
        classified = qgis_run("optsar:classify", {
            "OPTICAL": scene["optical"], "SAR": scene["sar"], "MODEL": model,
            "CHECKPOINT": trained["OUTPUT_CHECKPOINT"], "TILE_SIZE": 128, "OVERLAP": 32,
            "OUTPUT": out / f"{model}_landcover.tif", "OUTPUT_CONFIDENCE": out / f"{model}_confidence.tif",
        })
        print(f"==> {model}: assessing against the held-out reference polygons", flush=True)
        assessed = qgis_run("optsar:assessaccuracy", {
            "CLASSIFICATION": classified["OUTPUT"], "REFERENCE": scene["reference_test"], "CLASS_FIELD": "class_name",
            "OUTPUT_REPORT": out / f"{model}_accuracy.html", "OUTPUT_MATRIX": out / f"{model}_matrix.csv",
            "OUTPUT_METRICS": out / f"{model}_metrics.json",
        })
        rows.append((model, assessed, classified["OUTPUT"], assessed["OUTPUT_REPORT"], time.time() - t))

    print(f"\nOptSAR Fusion demo: {a.size} x {a.size} px scene, held-out blocks, CPU, {time.time() - t0:.0f} s in all\n")
    print(f"{'network':16s} {'OA':>6s} {'kappa':>6s} {'mIoU':>6s} {'time':>6s}")
    for model, r, _, _, dt in rows:
        print(f"{model:16s} {r['OA']:6.3f} {r['KAPPA']:6.3f} {r['MIOU']:6.3f} {dt:5.0f}s")
    print()
    for model, _, map_path, report, _ in rows:
        print(f"{model:16s} map:    {map_path} (styled: .qml beside it)")
        print(f"{'':16s} report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
