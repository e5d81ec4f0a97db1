"""Benchmark of the engine worker's start-up overhead per algorithm call (``make bench``; not a pytest test).

    python tests/benchmarks/bench_worker.py [--repeat 3] [--size 256]

Prints, each the median of ``--repeat`` runs:

1. **Worker start-up**: a worker running the ``environment`` job (Python start, import of
   torch and timm, report) from ``Popen`` to its result event, and to the first event (none
   before the result here, so the same).
2. **Classify through the worker vs in process**: the same small classification (a tiny
   CloudLULC-Net checkpoint, a ``--size`` square sample scene, 64-px tiles) run by
   :func:`algorithms.worker_client.run_job` and by :func:`optsar_plugin.inference.classify`
   in this process after a warm-up; their difference is the overhead an algorithm call pays for
   running in a worker, and their ratio.  No QGIS application is needed: ``run_job`` only uses
   ``subprocess`` and raises ``QgsProcessingException`` on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))



def worker_environment_seconds() -> float:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "optsar_plugin", "worker"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    out, _ = proc.communicate(json.dumps({"protocol": 1, "function": "environment", "kwargs": {}}))
    took = time.perf_counter() - t0
    assert json.loads(out.splitlines()[-1])["event"] == "result"
    return took


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args(argv)
    os.environ.setdefault("OPTSAR_PYTHON", sys.executable)
    from algorithms.worker_client import run_job
    from optsar_plugin.inference import classify
    from optsar_plugin.sample_scene import make_sample_scene
    from tests.helpers import random_checkpoint

    startup = statistics.median(worker_environment_seconds() for _ in range(args.repeat))
    print(f"worker start-up (Python + torch + timm imports, environment job): {startup:.2f} s "
          f"(median of {args.repeat}, {os.cpu_count()} CPUs)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        scene = make_sample_scene(tmp / "scene", size=args.size, seed=1, clouds=False)
        ckpt = random_checkpoint(scene["optical"], scene["sar"], tmp / "tiny.safetensors",
                                 [{"code": i, "name": f"c{i}", "color": "#808080"} for i in range(3)])["checkpoint"]
        kwargs = dict(optical=scene["optical"], sar=scene["sar"], checkpoint=ckpt, device="cpu", tile_size=64,
                      overlap=16, batch_size=2)
        classify(output=str(tmp / "warm.tif"), **kwargs)  # warm up the in-process path (imports, caches)
        inproc, worker = [], []
        for i in range(args.repeat):
            t0 = time.perf_counter()
            classify(output=str(tmp / f"in{i}.tif"), **kwargs)
            inproc.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            run_job("classify", dict(kwargs, output=str(tmp / f"w{i}.tif")))
            worker.append(time.perf_counter() - t0)
    a, b = statistics.median(inproc), statistics.median(worker)
    print(f"classify {args.size} x {args.size} px, tiny CloudLULC-Net, CPU: in process {a:.2f} s, through the worker "
          f"{b:.2f} s: overhead {b - a:.2f} s per call, ratio {b / a:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
