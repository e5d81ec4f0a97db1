"""Training benchmark on the synthetic sample scene: networks vs per-pixel baselines, fused vs optical only.

    python tests/benchmarks/bench_training.py [--size 512] [--steps 0] [--models specsar_former cloudlulc_net]

What it does (numbers for the README):

1. Generates the sample scene (``optsar_plugin.sample_scene``, seed 0): 10-band
   optical with clouds and shadows (about 30 % cloud), VV/VH SAR on an EPSG:4326
   grid, reference polygons split into spatially separate ``train`` and ``test``
   blocks.
2. Per-pixel baselines that see the same bands (the 10 optical bands as they are,
   clouds included, and the SAR warped bilinearly to the optical grid): a random
   forest (scikit-learn, 200 trees, 40 000 training pixels) and a nearest-centroid
   classifier on standardised bands, both trained on the ``train`` polygons.
3. Each network trained with :func:`optsar_plugin.training.train` on the ``train``
   polygons (its own spatial validation split inside them), once fused (optical +
   SAR) and once on the optical bands alone (``ignore_sar``: the SAR input is zeroed,
   so the same architecture gets no SAR information).  No cloud mask is given to
   anyone, so every model sees exactly the same inputs.  By default (``--steps 0``)
   every training setting is ``optsar:train``'s default - the automatic plan: the
   small variant on a CPU, tile, batch and step budget chosen from the device and the
   data, early stopping, the 9-minute limit of an automatic CPU budget - so the table
   shows what an analyst gets.  ``--steps N`` trains for a fixed budget instead
   (``--tile`` x ``--batch`` tiles, ``--mosfnet-steps`` for MOSFNet).
4. Every model classifies the whole scene through the inference engine
   (:func:`optsar_plugin.inference.run_inference`, overlapping blended windows of the
   training tile); the scores are computed on the held-out ``test`` polygons: OA and
   mIoU overall, on clear pixels and under clouds/shadows (the scene's cloud mask,
   used only here).

The results are printed as a table and written to ``<out>/results.json``.  With the
defaults a run takes at most ten minutes of training, so the six runs take some 35-60
minutes on a 2-core CPU, depending on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from optsar_plugin import raster_io  # noqa: E402
from optsar_plugin.progress import NullFeedback  # noqa: E402


class Log(NullFeedback):
    def __init__(self, prefix=""):
        self.prefix = prefix

    def info(self, message):
        print(f"{self.prefix}{message}", flush=True)

    def warning(self, message):
        print(f"{self.prefix}WARNING: {message}", flush=True)


def scores(truth_idx, pred_idx, cloudy, k):
    """OA, mIoU overall / clear / cloudy on labelled pixels (indices, 255 = none)."""
    from optsar_plugin.training import confusion_metrics

    out = {}
    lab = truth_idx != 255
    for name, sel in (("all", lab), ("clear", lab & ~cloudy), ("cloudy", lab & cloudy)):
        t, p = truth_idx[sel].astype(np.int64), pred_idx[sel].astype(np.int64)
        ok = p < k
        cm = np.bincount(t[ok] * k + p[ok], minlength=k * k).reshape(k, k)
        m = confusion_metrics(cm)
        n_bad = int((~ok).sum())
        oa = float(np.trace(cm) / (cm.sum() + n_bad)) if cm.sum() + n_bad else None
        out[name] = {"oa": oa, "miou": m["miou"], "pixels": int(sel.sum())}
    return out


def read_scene(paths):
    """Optical (bands, H, W), SAR warped to the optical grid, cloud mask, train/test label indices."""
    import rasterio

    from optsar_plugin.training.reference import labels_from_vector

    with rasterio.open(paths["optical"]) as o, rasterio.open(paths["sar"]) as s:
        opt = raster_io.read_window(o, list(range(1, o.count + 1)), 0, 0, o.height, o.width)
        with raster_io.aligned(s, o) as sv:
            sar = raster_io.read_window(sv, [1, 2], 0, 0, o.height, o.width)
        train = labels_from_vector(paths["reference_train"], "class_name", o)
        test = labels_from_vector(paths["reference_test"], "class_name", o)
    with rasterio.open(paths["cloud_mask"]) as c:
        cloudy = c.read(1) != 0
    assert train.scheme.codes == test.scheme.codes, "train and test must hold the same classes"
    return opt, sar, cloudy, train, test


def baselines(opt, sar, train, test, cloudy, seed=0):
    from sklearn.ensemble import RandomForestClassifier

    k = len(train.scheme)
    results = {}
    x_all = np.concatenate([opt, sar]).reshape(opt.shape[0] + sar.shape[0], -1).T
    x_all = np.nan_to_num(x_all)
    y = train.index.ravel()
    rng = np.random.default_rng(seed)
    idx = np.flatnonzero(y != 255)
    idx = rng.choice(idx, min(40000, idx.size), replace=False)
    for name, cols in (("fused", slice(None)), ("optical only", slice(0, opt.shape[0]))):
        x = x_all[:, cols]
        t0 = time.perf_counter()
        rf = RandomForestClassifier(200, min_samples_leaf=2, n_jobs=2, random_state=seed).fit(x[idx], y[idx])
        pred = rf.predict(x).reshape(train.index.shape)
        results[f"random forest, {name}"] = {**scores(test.index, pred, cloudy, k), "seconds": time.perf_counter() - t0}
        mu, sd = x[idx].mean(0), x[idx].std(0) + 1e-9
        z = (x - mu) / sd
        cent = np.stack([z[idx][y[idx] == c].mean(0) for c in range(k)])
        d = ((z[:, None, :] - cent[None]) ** 2).sum(-1)
        pred = d.argmin(1).reshape(train.index.shape)
        results[f"nearest centroid, {name}"] = scores(test.index, pred, cloudy, k)
    return results


def classify_scene(paths, checkpoint, out_tif, ignore_sar, tile):
    """Whole-scene classification with the inference engine; SAR zeroed for optical-only models."""
    import rasterio

    from optsar_plugin.checkpoints import load_checkpoint
    from optsar_plugin.inference import TorchPredictor, run_inference

    net, meta = load_checkpoint(checkpoint)
    torch_pred = TorchPredictor(net, net_device(net))

    def predictor(o, s):
        return torch_pred(o, np.zeros_like(s) if ignore_sar else s)

    run_inference(paths["optical"], paths["sar"], out_tif, meta, predictor, tile_size=tile, overlap=tile // 4,
                  batch_size=4, checkpoint_name=checkpoint)
    lut = np.full(256, 255, np.uint8)
    for k, c in enumerate(meta["classes"]):
        lut[c["code"]] = k
    with rasterio.open(out_tif) as ds:
        return lut[ds.read(1)]


def budget(args, model):
    """``train`` keywords of the run's budget: none (the automatic plan) or the fixed ``--steps`` budget."""
    if not args.steps:
        return {}
    steps = args.mosfnet_steps if (model == "mosfnet" and args.mosfnet_steps) else args.steps
    epochs = max(1, min(args.epochs, steps))
    return dict(model_size="small", epochs=epochs, steps_per_epoch=max(1, steps // epochs), tile_size=args.tile,
                batch_size=args.batch)


def net_device(net):
    return next(net.parameters()).device


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "bench_output" / "training"))
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--models", nargs="+", default=["specsar_former", "cloudlulc_net", "mosfnet"])
    ap.add_argument("--variants", nargs="+", default=["fused", "optical"])
    ap.add_argument("--steps", type=int, default=0,
                    help="training steps per network and variant; 0 = optsar:train's defaults (the automatic plan)")
    ap.add_argument("--mosfnet-steps", type=int, default=0, help="steps for MOSFNet with --steps (0: the same)")
    ap.add_argument("--epochs", type=int, default=20, help="validations over a fixed budget (--steps)")
    ap.add_argument("--tile", type=int, default=64, help="tile size of a fixed budget (--steps)")
    ap.add_argument("--batch", type=int, default=8, help="batch size of a fixed budget (--steps)")
    ap.add_argument("--lr", type=float, default=0.0, help="0 = the recipe's")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)

    from optsar_plugin.sample_scene import make_sample_scene
    from optsar_plugin.training import train

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = make_sample_scene(out / "scene", size=args.size, seed=args.seed)
    opt, sar, cloudy, tr, te = read_scene(paths)
    print(f"Scene {args.size} px: {int(tr.labelled)} training and {int(te.labelled)} test pixels; "
          f"{cloudy[te.index != 255].mean():.0%} of the test pixels under clouds or shadows.", flush=True)
    results = {"scene": {"size": args.size, "seed": args.seed}, "baselines": baselines(opt, sar, tr, te, cloudy)}
    for name, r in results["baselines"].items():
        print(f"{name:34s} OA {r['all']['oa']:.3f} mIoU {r['all']['miou']:.3f} | clear {r['clear']['miou']:.3f} "
              f"| cloudy {r['cloudy']['miou']:.3f}", flush=True)
    results["networks"] = {}
    for model in args.models:
        for variant in args.variants:
            key = f"{model}, {variant}"
            ck = out / f"{model}_{variant}.safetensors"
            t0 = time.perf_counter()
            res = train(paths["optical"], paths["sar"], str(ck), reference=paths["reference_train"],
                        class_field="class_name", model=model, learning_rate=args.lr or None,
                        seed=args.seed, device=args.device, output_log=str(out / f"{model}_{variant}.csv"),
                        output_curve=str(out / f"{model}_{variant}.html"), ignore_sar=variant == "optical",
                        feedback=Log(f"[{key}] "), **budget(args, model))
            train_s = time.perf_counter() - t0
            plan = res["plan"]
            pred = classify_scene(paths, str(ck), str(out / f"{model}_{variant}.tif"), variant == "optical", plan["tile"])
            r = scores(te.index, pred, cloudy, len(te.scheme))
            r.update(train_seconds=round(train_s, 1), seconds_per_epoch=res["seconds_per_epoch"],
                     steps=res["steps"], batch=plan["batch"], tile=plan["tile"], model_size=plan["model_size"],
                     stop_reason=res["stop_reason"],
                     best_epoch=res["best_epoch"], val_miou=res["best"]["val_miou"], device=res["device"])
            results["networks"][key] = r
            print(f"{key:34s} OA {r['all']['oa']:.3f} mIoU {r['all']['miou']:.3f} | clear {r['clear']['miou']:.3f} "
                  f"| cloudy {r['cloudy']['miou']:.3f} | {r['steps']} steps in {train_s:.0f} s "
                  f"({res['seconds_per_epoch']} s/epoch of {res['steps_per_epoch']} steps)", flush=True)
            (out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")

    print("\nmodel                              |   OA  |  mIoU | mIoU clear | mIoU cloudy")
    for group in ("baselines", "networks"):
        for name, r in results[group].items():
            print(f"{name:34s} | {r['all']['oa']:.3f} | {r['all']['miou']:.3f} |   {r['clear']['miou']:.3f}    |"
                  f"   {r['cloudy']['miou']:.3f}")
    (out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    print(f"\nresults: {out / 'results.json'}; cpu threads: {os.cpu_count()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
