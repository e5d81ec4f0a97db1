"""Benchmark of batch classification on Dask (``make bench``; not a pytest test).

    python tests/benchmarks/bench_batch.py [--scenes 8] [--size 2048] [--workdir DIR] [--json out.json]

``--scenes`` synthetic scenes of ``--size`` x ``--size`` px (4 optical bands in UTM, 2 SAR bands in
EPSG:4326, as in ``bench_classify``) and a small CloudLULC-Net with fixed-seed random weights
(its CPU configuration from ``bench_classify``; 256-px tiles, overlap 32, batch 2, CPU) are
classified three ways, each as a fresh process timed from start to exit (interpreter, imports,
cluster start and shutdown included):

1. **a sequential loop** of :func:`optsar_plugin.inference.classify` calls in one process (what a
   shell loop over ``optsar:classify`` does at best);
2. ``python -m optsar_plugin batch --workers 1`` (a LocalCluster of one worker process);
3. ``python -m optsar_plugin batch --workers 2``.

The three runs are repeated in ``--rounds`` interleaved rounds (default 3; each figure is the median,
and every round's time is printed: on this shared machine one run's time varies by 20 %).
It prints scenes per minute for each, the ratio of two workers to one, and the **batch
layer's overhead** = (one-worker batch - sequential loop) / sequential loop (goal: under 5 %), and
that difference in seconds: it is mostly a fixed start-up (importing Dask, starting the scheduler and
the worker process), so its share shrinks as the work grows.  The default, 8 scenes of 2048 x 2048 px
(about 35 s of work here), is still small beside one Sentinel-2 tile (10980 x 10980 px); with
``--scenes 6 --size 768`` (9 s of work) the same fixed cost is a larger share (+13 % measured).
With N workers each worker's torch gets cores / N threads, so on a 2-core machine two workers
mostly overlap one scene's reading and writing with the other's network.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

SETTINGS = ["--device", "cpu", "--tile-size", "256", "--overlap", "32", "--batch-size", "2"]
LOOP = r"""
import sys, csv
sys.path.insert(0, sys.argv[1])
from optsar_plugin.inference import classify
rows = list(csv.DictReader(open(sys.argv[2])))
for r in rows:
    classify(r["optical"], r["sar"], sys.argv[3], sys.argv[4] + "/" + r["name"] + ".tif", device="cpu",
             tile_size=256, overlap=32, batch_size=2)
"""


def prepare(workdir: Path, n: int, size: int) -> dict:
    """The scenes (generated once, reused), a scenes table and the checkpoint."""
    import torch
    from bench_classify import CPU_CONFIGS, make_scene, scene_metadata

    from optsar_plugin.checkpoints import save_checkpoint
    from optsar_plugin.models import build_model

    rows = ["name,optical,sar"]
    for k in range(n):
        folder = workdir / f"scene{k}"
        if not (folder / "sar.tif").exists():
            make_scene(folder, size, 4, 2)
        rows.append(f"scene{k},{folder / 'optical.tif'},{folder / 'sar.tif'}")
    table = workdir / "scenes.csv"
    table.write_text("\n".join(rows) + "\n")
    torch.manual_seed(0)
    config = CPU_CONFIGS["cloudlulc_net"]
    model = build_model("cloudlulc_net", optical_bands=4, sar_bands=2, num_classes=9, **config)
    ck = workdir / "cloudlulc_small.safetensors"
    save_checkpoint(ck, model, scene_metadata("cloudlulc_net", 4, 2, 9, model.config))
    return {"table": str(table), "checkpoint": str(ck)}


def timed(cmd, out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed:\n{proc.stderr[-3000:]}")
    return seconds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=8)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--workdir", default=None, help="keep the generated scenes here (default: a temporary folder)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the three runs (medians are compared)")
    args = ap.parse_args(argv)
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="optsar-bench-batch-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        data = prepare(workdir, args.scenes, args.size)
        load = os.getloadavg()[0]
        print(f"bench_batch: {args.scenes} scenes of {args.size} x {args.size} px, small CloudLULC-Net on the CPU, "
              f"{os.cpu_count()} CPUs (load average {load:.1f} before: timings are contended when it is above 0.5)")
        commands = {"sequential loop": ([sys.executable, "-c", LOOP, str(ROOT), data["table"], data["checkpoint"],
                                         str(workdir / "out_loop")], workdir / "out_loop")}
        for n in (1, 2):
            out = workdir / f"out_batch{n}"
            commands[f"batch, {n} worker(s)"] = (
                [sys.executable, "-m", "optsar_plugin", "-q", "batch", "--scenes", data["table"], "--checkpoint",
                 data["checkpoint"], "--output-dir", str(out), "--workers", str(n), *SETTINGS], out)
        # interleaved rounds: a machine whose speed drifts affects every configuration alike
        rounds = {name: [] for name in commands}
        for _ in range(args.rounds):
            for name, (cmd, out) in commands.items():
                rounds[name].append(timed(cmd, out))
        runs = {name: statistics.median(secs) for name, secs in rounds.items()}
        for name, sec in runs.items():
            each = ", ".join(f"{x:.1f}" for x in rounds[name])
            print(f"  {name:22} {sec:7.1f} s  {60 * args.scenes / sec:6.2f} scenes/min  (median of {each} s)")
        one, two, loop = runs["batch, 1 worker(s)"], runs["batch, 2 worker(s)"], runs["sequential loop"]
        overhead = (one - loop) / loop
        print(f"  two workers / one worker (scenes per minute): {one / two:.2f}")
        print(f"  batch layer overhead against the sequential loop: {100 * overhead:+.1f} %, {one - loop:+.1f} s "
              f"(goal < 5 %: "
              f"{'met' if overhead < 0.05 else 'NOT MET'})")
        if args.json:
            Path(args.json).write_text(json.dumps({"scenes": args.scenes, "size": args.size, "seconds": runs,
                                                   "rounds": rounds,
                                                   "ratio_2_over_1": one / two, "overhead": overhead}, indent=2))
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
