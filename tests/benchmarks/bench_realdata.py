"""Real Sentinel-1/2 data: each network trained with DEFAULT settings against a random forest and NDWI.

    python tests/benchmarks/bench_realdata.py [--models ...] [--split west] [--protocol assess|dev] [--seeds 0,1,2]

The data: the Sen1Floods11 hand-labelled chip Spain_7370579 in ``../shared/realdata``
(512 x 512 px, Sentinel-2 L1C 13 bands as integer reflectance x 10000, Sentinel-1
VV/VH in dB, labels water / not water / -1 unlabelled).  Without that folder the
benchmark prints a line and exits 0.

Protocol (fixed before any tuning; never changed to suit a result):

* ``--split west`` (default): the labels of the western half (columns 0-255) are the
  training labels, the eastern half (columns 256-511) is assessed; ``--split`` also
  takes east, north and south (the half given is the one trained on).
* ``--protocol assess`` (default) scores the assessed half.  ``--protocol dev``
  never looks at it: the training half is cut again (its northern quarter trains,
  its southern quarter is scored; ``dev2`` the other way round) - the splits used for
  every tuning decision.
* Every network is trained by :func:`optsar_plugin.training.train` with nothing but
  the inputs, the label raster, the model name and the output path (``--train-args``
  adds options, e.g. to reproduce an older recipe) and classifies the whole chip with
  :func:`optsar_plugin.inference.classify` with its defaults.
* Baselines on the same pixels: a scikit-learn random forest (200 trees, 30 000
  random labelled training pixels, the 15 raw bands) and NDWI = (B3 - B8) / (B3 + B8)
  with the threshold that maximises water IoU on the training labels; the oracle
  threshold (best on the assessed pixels) is printed too, as an upper bound, and so is the best map
  a head that predicts at 1/4 (and 1/2) resolution could draw (the true labels averaged over
  4 x 4 blocks and bilinearly resized: :func:`resolution_ceiling`) - all three papers' heads do.

Printed: OA, water IoU, mIoU and training seconds side by side; results in
``<out>/results.json``.  Timings depend on what else runs on the machine.  Each network's water IoU
minus the forest's comes with a 95 % interval from a paired spatial block bootstrap over the assessed
pixels (:func:`block_bootstrap_difference`): is the gap larger than where the assessed pixels happen to lie?
Each network's checkpoint also classifies the chip with 64 px tiles, with one 512 px pass
and with test-time augmentation (flips, d4): each map's accuracy and its agreement with
the single pass (the tile seams) are printed (``--no-inference`` skips this).

One seed's map moves by up to 0.04 water IoU against another's, as much as most recipe changes
(docs/training_notebook.md).  ``--seeds 0,1,2`` trains each network once per seed and prints each
seed's row, their mean and spread, and the map of the seeds' averaged class probabilities (an
ensemble, with its block-bootstrap difference from the forest); the forest is run with each seed too.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

REALDATA = ROOT.parent / "shared" / "realdata" / "sen1floods11"
CHIP = "Spain_7370579"
WATER = 1  # label code of water in Sen1Floods11 (0 = not water, -1 = unlabelled)
HALF = 256
MODELS = ("specsar_former", "cloudlulc_net", "mosfnet")


class Log:
    def __init__(self, prefix="", quiet=False):
        self.prefix, self.quiet = prefix, quiet

    def progress(self, fraction, message=None):
        pass

    def info(self, message):
        if not self.quiet:
            print(f"{self.prefix}{message}", flush=True)

    def warning(self, message):
        print(f"{self.prefix}WARNING: {message}", flush=True)

    def is_canceled(self):
        return False


def paths(folder: Path = REALDATA):
    return {k: folder / f"{CHIP}_{k}Hand.tif" for k in ("S1", "S2", "Label")}


def available(folder: Path = REALDATA) -> bool:
    return all(p.is_file() for p in paths(folder).values())


def regions(split: str, protocol: str, size: int = 2 * HALF):
    """(train mask, assessed mask), (H, W) bool, for a split and protocol."""
    rows, cols = np.mgrid[0:size, 0:size]
    half = {"west": cols < HALF, "east": cols >= HALF, "north": rows < HALF, "south": rows >= HALF}
    train = half[split]
    if protocol == "assess":
        return train, ~train
    # dev: the training half cut across its long side; its first quarter trains, the second is scored
    # (dev2: the other way round)
    across = rows if split in ("west", "east") else cols
    first, second = train & (across < HALF), train & (across >= HALF)
    return (first, second) if protocol == "dev" else (second, first)


def write_labels(label_path: Path, train_mask: np.ndarray, out: Path) -> Path:
    """The chip's labels on the training part only, as uint8 codes with 255 = unlabelled."""
    import rasterio

    with rasterio.open(label_path) as src:
        lab = src.read(1)
        profile = src.profile
    codes = np.where((lab >= 0) & train_mask, lab, 255).astype(np.uint8)
    profile.update(dtype="uint8", nodata=255, count=1, compress="deflate")
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(codes, 1)
        dst.update_tags(1, CLASSES="0=not water;1=water")
    return out


def read_chip(p):
    import rasterio

    with rasterio.open(p["S2"]) as o, rasterio.open(p["S1"]) as s, rasterio.open(p["Label"]) as lab:
        return o.read().astype(np.float32), s.read().astype(np.float32), lab.read(1)


def scores(truth: np.ndarray, pred: np.ndarray, sel: np.ndarray) -> dict:
    """OA, water IoU, not-water IoU and mIoU on the selected labelled pixels (codes 0/1)."""
    t, p = truth[sel], pred[sel]
    ok = t >= 0
    t, p = t[ok], p[ok]
    out = {"oa": float((t == p).mean()), "pixels": int(t.size)}
    ious = []
    for c in (0, 1):
        inter = int(((t == c) & (p == c)).sum())
        union = int(((t == c) | (p == c)).sum())
        ious.append(inter / union if union else float("nan"))
    out["iou_not_water"], out["iou_water"] = ious
    out["miou"] = float(np.nanmean(ious))
    return out


def block_bootstrap_difference(truth, pred_a, pred_b, sel, block: int = 32, draws: int = 2000, seed: int = 0) -> dict:
    """Water IoU of ``pred_a`` minus that of ``pred_b`` on ``sel``, with a 95 % spatial block-bootstrap interval.

    Neighbouring pixels are not independent samples, so the assessed pixels are resampled as whole
    ``block`` x ``block`` px blocks (a block bootstrap with non-overlapping blocks; Lahiri 2003,
    ch. 2): each draw picks as many blocks as hold assessed pixels, with replacement, and scores both
    maps on the same draw (a paired comparison).  The interval covers where the assessed pixels
    lie, not training randomness (seeds; see the notebook).  Returns ``{"difference", "low", "high",
    "blocks"}``.
    """
    h, w = (n // block * block for n in truth.shape)
    ok = sel & (truth >= 0)

    def per_block(m):
        return m[:h, :w].reshape(h // block, block, w // block, block).sum(axis=(1, 3)).ravel()

    keep = np.flatnonzero(per_block(ok))

    def counts(pred):  # per kept block: water true positives, false positives, false negatives
        t, p = (truth == WATER) & ok, (pred == WATER) & ok
        return np.stack([per_block(m) for m in (t & p, ~t & p, t & ~p)], 1)[keep]

    def iou(c):  # c: (..., 3) summed counts
        return c[..., 0] / np.maximum(c.sum(axis=-1), 1)

    a, b = counts(pred_a), counts(pred_b)
    idx = np.random.default_rng(seed).integers(0, keep.size, size=(draws, keep.size))
    diffs = iou(a[idx].sum(axis=1)) - iou(b[idx].sum(axis=1))
    low, high = np.percentile(diffs, [2.5, 97.5])
    return {"difference": float(iou(a.sum(0)) - iou(b.sum(0))), "low": float(low), "high": float(high),
            "blocks": int(keep.size)}


def ensemble_map(probabilities) -> np.ndarray:
    """The class map of several runs' averaged class probabilities ((K, H, W) each): argmax of the mean."""
    return np.mean(np.stack(probabilities), axis=0).argmax(axis=0).astype(np.int16)


def seed_summary(values) -> dict:
    """Mean, sample standard deviation, lowest and highest of one figure over seeds."""
    v = np.asarray(values, dtype=float)
    return {"seeds": int(v.size), "mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max())}


def ndwi(opt: np.ndarray) -> np.ndarray:
    b3, b8 = opt[2], opt[7]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (b3 - b8) / (b3 + b8)


def best_threshold(index: np.ndarray, truth: np.ndarray, sel: np.ndarray) -> float:
    grid = np.linspace(-0.6, 0.6, 241)
    ious = [scores(truth, (index > g).astype(np.int16), sel)["iou_water"] for g in grid]
    return float(grid[int(np.nanargmax(ious))])


def forest_map(opt, sar, lab, train_mask, seed: int) -> np.ndarray:
    """The random forest's map of the chip: 200 trees on 30 000 random labelled training pixels, 15 bands."""
    from sklearn.ensemble import RandomForestClassifier

    x = np.nan_to_num(np.concatenate([opt, sar]).reshape(opt.shape[0] + sar.shape[0], -1).T)
    y = lab.ravel()
    rng = np.random.default_rng(seed)
    idx = np.flatnonzero(train_mask.ravel() & (y >= 0))
    idx = rng.choice(idx, min(30000, idx.size), replace=False)
    rf = RandomForestClassifier(200, n_jobs=2, random_state=seed).fit(x[idx], y[idx])
    return rf.predict(x).reshape(lab.shape)


def baselines(opt, sar, lab, train_mask, test_mask, seed=0):
    """The baselines' rows (random forest, NDWI, resolution bounds) and the forest's map."""
    res = {}
    t0 = time.perf_counter()
    pred = forest_map(opt, sar, lab, train_mask, seed)
    fit_s = time.perf_counter() - t0
    res["random forest (200 trees, 30k px, 15 bands)"] = {**scores(lab, pred, test_mask),
                                                           "train_seconds": round(fit_s, 1)}
    nd = ndwi(opt)
    thr = best_threshold(nd, lab, train_mask)
    res[f"NDWI > {thr:.3f} (threshold from training part)"] = scores(lab, (nd > thr).astype(np.int16), test_mask)
    oracle = best_threshold(nd, lab, test_mask)
    res[f"NDWI > {oracle:.3f} (oracle threshold, upper bound)"] = scores(lab, (nd > oracle).astype(np.int16), test_mask)
    for factor in (4, 2):
        res[f"true labels seen at 1/{factor} resolution (upper bound)"] = scores(
            lab, resolution_ceiling(lab, factor), test_mask)
    return res, pred


def resolution_ceiling(lab: np.ndarray, factor: int) -> np.ndarray:
    """The best water map a head predicting at 1/``factor`` resolution, bilinearly resized, can draw.

    The true water fraction of each ``factor`` x ``factor`` block, resized to the chip with bilinear
    interpolation (align_corners False, as the networks' heads) and thresholded at 1/2.  All three
    papers' heads predict at 1/4 resolution; this bounds what such a map can score at water edges
    (measured: water IoU 0.865 on the eastern half, where the random forest scores 0.826).
    """
    import torch
    import torch.nn.functional as F

    water = torch.from_numpy((lab == WATER).astype(np.float32))[None, None]
    coarse = F.avg_pool2d(water, factor)
    fine = F.interpolate(coarse, size=lab.shape, mode="bilinear", align_corners=False)[0, 0].numpy()
    return (fine > 0.5).astype(np.int16)


def run_network(model, p, labels_tif, out: Path, train_args: dict, seed: int, quiet: bool) -> dict:
    import rasterio

    from optsar_plugin.inference import classify
    from optsar_plugin.training import train

    ck = out / f"{model}.safetensors"
    t0 = time.perf_counter()
    res = train(str(p["S2"]), str(p["S1"]), str(ck), labels=str(labels_tif), model=model,
                output_log=str(out / f"{model}.csv"), output_curve=str(out / f"{model}.html"),
                feedback=Log(f"[{model}] ", quiet), **{"seed": seed, **train_args})
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    prob = out / f"{model}_probabilities.tif"
    classify(str(p["S2"]), str(p["S1"]), str(ck), str(out / f"{model}_map.tif"), output_probabilities=str(prob),
             feedback=Log(f"[{model}] ", True))
    classify_s = time.perf_counter() - t0
    with rasterio.open(out / f"{model}_map.tif") as ds:
        pred = ds.read(1).astype(np.int16)
    with rasterio.open(prob) as ds:
        probabilities = ds.read()
    return {"pred": pred, "probabilities": probabilities,
            "train_seconds": round(train_s, 1), "classify_seconds": round(classify_s, 1),
            "result": {k: res.get(k) for k in ("best_epoch", "steps_per_epoch", "seconds", "stopped", "steps",
                                                "model_size", "device")},
            "best": res.get("best")}


INFERENCE_VARIANTS = {  # name -> classify keywords (the default run is the checkpoint's tile with its overlap)
    "tiles of 64 px": dict(tile_size=64),
    "one 512 px pass": dict(tile_size=512, overlap=0),
    "default + TTA flips": dict(tta="flips"),
    "default + TTA d4": dict(tta="d4"),
}


def inference_variants(model, p, out: Path, lab, test_mask, default_pred) -> dict:
    """Accuracy of other tilings and of test-time augmentation, and agreement with one 512 px pass."""
    import rasterio

    from optsar_plugin.inference import classify

    preds, rows = {"default": default_pred}, {}
    for name, kw in INFERENCE_VARIANTS.items():
        t0 = time.perf_counter()
        path = out / f"{model}_map_{name.replace(' ', '_').replace('+', '')}.tif"
        classify(str(p["S2"]), str(p["S1"]), str(out / f"{model}.safetensors"), str(path), feedback=Log("", True), **kw)
        with rasterio.open(path) as ds:
            preds[name] = ds.read(1).astype(np.int16)
        rows[name] = {**scores(lab, preds[name], test_mask), "classify_seconds": round(time.perf_counter() - t0, 1)}
    single = preds["one 512 px pass"]
    for name, pred in preds.items():
        rows.setdefault(name, scores(lab, pred, test_mask))["agreement_with_single_pass"] = float((pred == single).mean())
    return rows


def mean_row(rows) -> dict:
    """One table row of OA, water IoU and mIoU averaged over runs, with the spread of water IoU."""
    rows = list(rows)
    out = {k: float(np.mean([r[k] for r in rows])) for k in ("oa", "iou_water", "miou")}
    return {**out, "water_iou_over_seeds": seed_summary([r["iou_water"] for r in rows])}


def one_seed(model, seed: int, chip: dict, out: Path, train_args: dict, quiet: bool, inference: bool) -> dict:
    """A network trained with one seed: its row, its gap to the forest and (``inference``) other tilings and TTA."""
    lab, test_mask, p = chip["lab"], chip["test_mask"], chip["p"]
    r = run_network(model, p, chip["labels_tif"], out, dict(train_args), seed, quiet)
    name = f"{model} (train defaults{', ' + json.dumps(train_args) if train_args else ''})"
    row = {**scores(lab, r["pred"], test_mask), "train_seconds": r["train_seconds"],
           "classify_seconds": r["classify_seconds"], **r["result"], "validation": r["best"]}
    print_table({name: row}, f"{model}: {r['result']}")
    row["against_forest"] = vs = block_bootstrap_difference(lab, r["pred"], chip["forest"], test_mask, seed=seed)
    print(f"  water IoU minus the forest's: {vs['difference']:+.3f} (95 % block bootstrap, {vs['blocks']} blocks "
          f"of 32 px: {vs['low']:+.3f} to {vs['high']:+.3f})", flush=True)
    if inference:
        row["inference"] = variants = inference_variants(model, p, out, lab, test_mask, r["pred"])
        print(f"{'  inference of ' + model:52s} |   OA  | water IoU |  mIoU | agreement with one pass")
        for v, vr in variants.items():
            print(f"  {v:50s} | {vr['oa']:.3f} |   {vr['iou_water']:.3f}   | {vr['miou']:.3f} | "
                  f"{vr['agreement_with_single_pass']:.4f}")
    return {name: row}


def over_seeds(model, seeds, chip: dict, out: Path, train_args: dict, quiet: bool) -> dict:
    """A network trained once per seed: each seed's row, their mean, and the map of the averaged probabilities.

    ``chip``: ``p``, ``labels_tif``, ``lab``, ``test_mask`` and ``forest`` (the forest's map of the first seed,
    which the ensemble's block-bootstrap difference is taken against).
    """
    lab, test_mask = chip["lab"], chip["test_mask"]
    rows, probabilities = {}, []
    for seed in seeds:
        folder = out / f"seed{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        r = run_network(model, chip["p"], chip["labels_tif"], folder, dict(train_args), seed, quiet)
        rows[f"{model}, seed {seed}"] = {**scores(lab, r["pred"], test_mask), "train_seconds": r["train_seconds"],
                                         **r["result"]}
        probabilities.append(r["probabilities"])
        print_table({f"{model}, seed {seed}": rows[f"{model}, seed {seed}"]}, f"{model}: {r['result']}")
    rows[f"{model}, mean of {len(seeds)} seeds"] = m = mean_row(rows.values())
    ensemble = ensemble_map(probabilities)
    name = f"{model}, ensemble of {len(seeds)} seeds"
    rows[name] = {**scores(lab, ensemble, test_mask),
                  "against_forest": block_bootstrap_difference(lab, ensemble, chip["forest"], test_mask)}
    w, vs = m["water_iou_over_seeds"], rows[name]["against_forest"]
    print(f"  water IoU over {w['seeds']} seeds: mean {w['mean']:.3f}, sd {w['sd']:.3f} ({w['min']:.3f}-{w['max']:.3f}); "
          f"the ensemble (probabilities averaged) {rows[name]['iou_water']:.3f}, minus the forest's "
          f"{vs['difference']:+.3f} ({vs['low']:+.3f} to {vs['high']:+.3f})", flush=True)
    return rows


def print_table(rows: dict, title: str) -> None:
    print(f"\n{title}")
    print(f"{'method':52s} |   OA  | water IoU |  mIoU | train s")
    for name, r in rows.items():
        ts = r.get("train_seconds")
        print(f"{name:52s} | {r['oa']:.3f} |   {r['iou_water']:.3f}   | {r['miou']:.3f} | "
              f"{'' if ts is None else f'{ts:7.0f}'}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REALDATA)
    ap.add_argument("--out", type=Path, default=ROOT / "bench_output" / "realdata")
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    ap.add_argument("--split", choices=("west", "east", "north", "south"), default="west")
    ap.add_argument("--protocol", choices=("assess", "dev", "dev2"), default="assess")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", type=lambda v: [int(x) for x in v.split(",")], default=None,
                    help="comma-separated seeds, e.g. 0,1,2: each network is trained once per seed; prints each "
                         "seed, their mean and spread, and the map of the seeds' averaged probabilities (an ensemble); "
                         "the forest is run with each seed too (replaces --seed; no inference variants)")
    ap.add_argument("--train-args", type=json.loads, default={}, help='extra train() keywords as JSON, e.g. \'{"epochs": 8}\'')
    ap.add_argument("--tag", default="", help="a label for this run in results.json")
    ap.add_argument("--quiet", action="store_true", help="only warnings and the results")
    ap.add_argument("--no-inference", dest="inference", action="store_false",
                    help="skip the classifications with 64 px tiles, one 512 px pass and test-time augmentation")
    a = ap.parse_args(argv)
    if not available(a.data):
        print(f"SKIP: the Sen1Floods11 chip is not in {a.data} (../shared/realdata); nothing to measure.")
        return 0
    out = a.out / f"{a.split}_{a.protocol}{'_' + a.tag if a.tag else ''}"
    out.mkdir(parents=True, exist_ok=True)
    p = paths(a.data)
    opt, sar, lab = read_chip(p)
    train_mask, test_mask = regions(a.split, a.protocol, lab.shape[0])
    labels_tif = write_labels(p["Label"], train_mask, out / "train_labels.tif")
    n_train, n_test = int((train_mask & (lab >= 0)).sum()), int((test_mask & (lab >= 0)).sum())
    print(f"Sen1Floods11 {CHIP}: split {a.split}, protocol {a.protocol}: {n_train} labelled training pixels, "
          f"{n_test} assessed pixels (water {float((lab[test_mask] == WATER).mean()):.0%}).", flush=True)
    seeds = a.seeds or [a.seed]
    rows, forest = baselines(opt, sar, lab, train_mask, test_mask, seeds[0])
    if len(seeds) > 1:
        rows[f"random forest, mean of {len(seeds)} seeds"] = mean_row(scores(
            lab, forest if s == seeds[0] else forest_map(opt, sar, lab, train_mask, s), test_mask) for s in seeds)
    print_table(rows, "Baselines")
    chip = {"p": p, "labels_tif": labels_tif, "lab": lab, "test_mask": test_mask, "forest": forest}
    for model in a.models:
        if len(seeds) > 1:
            rows.update(over_seeds(model, seeds, chip, out / model, a.train_args, a.quiet))
        else:
            rows.update(one_seed(model, a.seed, chip, out, a.train_args, a.quiet, a.inference))
        save_results(out, a, seeds, rows)
    print_table(rows, f"Sen1Floods11 {CHIP}, trained on the {a.split} half, protocol {a.protocol}")
    save_results(out, a, seeds, rows)
    print(f"\nresults: {out / 'results.json'}")
    return 0


def save_results(out: Path, a, seeds, rows) -> None:
    results = {"split": a.split, "protocol": a.protocol, "seeds": seeds, "train_args": a.train_args, "rows": rows}
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
