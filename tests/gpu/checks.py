"""GPU checks for a machine with one NVIDIA GPU (no QGIS, no internet): ``tests/gpu/run_checks.sh`` runs this.

Each check writes its figures into one JSON document (``--out``), rewritten after every
check, so a run stopped by its time limit still leaves what it measured.  A check that
fails records its error and the next one runs.  Checks, in order (cheap first):

``environment``   torch, CUDA, the GPU, its memory, whether ``mamba_ssm`` imports.
``scan``          the selective scan at MOSFNet's first stage (4 x 192 channels, 16 states,
                  128 x 128 = 16 384 steps): ``mamba_ssm``'s CUDA kernel against the pure-PyTorch
                  scan (largest relative difference, milliseconds each) where ``mamba_ssm``
                  imports; else the pure-PyTorch scan, step loop and chunked (the GPU default).
``throughput``    tiles/s of each network (paper configuration) at 512 px in fp32 and bf16
                  autocast, GMAC per tile (``FlopCounterMode``), GMAC/s and its share of the GPU's
                  dense peak for that precision (fp32: the CUDA-core peak; bf16: the tensor-core peak).
``oom_backoff``   a real CUDA out-of-memory: the process is limited to a small share of the GPU
                  (``torch.cuda.set_per_process_memory_fraction``) and the engine's
                  ``AdaptivePredictor`` is handed a batch that cannot fit; it must halve the batch
                  (then the tile) and return every window's probabilities.
``train_step``    one AdamW step of each network (paper configuration, 2 tiles of 256 px,
                  ``forward_train`` + ``loss``), with its seconds and a finite loss.
``end_to_end``    ``classify`` of a synthetic 10 980 x 10 980 scene (a Sentinel-2 tile: 4 optical
                  bands, 2 SAR bands in EPSG:4326) with SpecSAR-Former (paper configuration, random
                  weights, bf16, 512-px tiles, batch 16) against the time to only read the inputs
                  (the optical windows and the warped SAR windows).

``--cpu-smoke`` runs every check on the CPU with tiny sizes and small configurations, to try
the script where there is no GPU (the OOM check is then skipped); its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "benchmarks"))

# Dense peak FLOP/s (NVIDIA data sheets, SXM parts): fp32 on CUDA cores, bf16 on tensor cores.
PEAKS = {"H200": {"fp32": 67e12, "bf16": 989e12}, "H100": {"fp32": 67e12, "bf16": 989e12},
         "A100": {"fp32": 19.5e12, "bf16": 312e12}, "L40S": {"fp32": 91.6e12, "bf16": 362e12},
         "A10": {"fp32": 31.2e12, "bf16": 125e12}}
SMALL = {  # --cpu-smoke only
    "cloudlulc_net": dict(channels=16, num_blocks=1, order=2, embed_dim=32, depth=1, heads=2),
    "specsar_former": dict(embed_dims=[16, 32, 64, 128], depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8], decoder_dim=32),
    "mosfnet": dict(),
}


class Report:
    def __init__(self, path: Path):
        self.path, self.data, self.t0 = path, {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "checks": {}}, time.time()

    def run(self, name: str, fn, *args):
        print(f"== {name}", flush=True)
        t = time.perf_counter()
        try:
            out = fn(*args)
            out = {"ok": True, **(out or {})}
        except Exception as exc:  # one failed check must not stop the others
            traceback.print_exc()
            out = {"ok": False, "error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}"}
        out["seconds"] = round(time.perf_counter() - t, 2)
        self.data["checks"][name] = out
        self.save()
        print(json.dumps(out, indent=1)[:3000], flush=True)

    def save(self):
        self.data["elapsed_s"] = round(time.time() - self.t0, 1)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str))
        os.replace(tmp, self.path)


def _sync(torch, device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(torch, device, fn, repeats: int, warmup: int = 2) -> float:
    """Median seconds of ``fn()`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(torch, device)
        t = time.perf_counter()
        fn()
        _sync(torch, device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def check_environment(torch, device):
    from optsar_plugin.models.selective_scan import mamba_ssm_available

    out = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "device": str(device), "mamba_ssm": mamba_ssm_available()}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(0)
        out.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), sm_count=p.multi_processor_count,
                   capability=f"{p.major}.{p.minor}", bf16=torch.cuda.is_bf16_supported(), peaks=_peaks(p.name))
    return out


def _peaks(name: str):
    for key, value in PEAKS.items():
        if key in name.upper():
            return value
    return None


def check_scan(torch, device, smoke: bool):
    from optsar_plugin.models.selective_scan import (
        default_lanes,
        mamba_ssm_available,
        selective_scan,
        selective_scan_torch,
    )

    g = torch.Generator(device="cpu").manual_seed(0)
    b, d, n, groups, length = (1, 32, 16, 4, 256) if smoke else (1, 4 * 192, 16, 4, 128 * 128)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device)

    u, delta = rnd(b, d, length), rnd(b, d, length, scale=0.5)
    A = -torch.exp(rnd(d, n, scale=0.5))
    B, C = rnd(b, groups, n, length), rnd(b, groups, n, length)
    D, bias = rnd(d), rnd(d, scale=0.1)
    out = {"shape": {"batch": b, "channels": d, "states": n, "groups": groups, "steps": length}}
    with torch.no_grad():
        lanes = default_lanes(length, device)
        out["torch_default_lanes"] = lanes
        y_loop = selective_scan_torch(u, delta, A, B, C, D, bias, lanes=1)
        out["torch_loop_ms"] = 1e3 * _timed(torch, device, lambda: selective_scan_torch(u, delta, A, B, C, D, bias,
                                                                                             lanes=1), 3, 1)
        if lanes > 1:
            y_chunk = selective_scan_torch(u, delta, A, B, C, D, bias, lanes=lanes)
            out["torch_chunked_ms"] = 1e3 * _timed(torch, device, lambda: selective_scan_torch(
                u, delta, A, B, C, D, bias, lanes=lanes), 5)
            out["chunked_vs_loop_max_rel_diff"] = _rel(y_chunk, y_loop)
        if device.type == "cuda" and mamba_ssm_available():
            y_mamba = selective_scan(u, delta, A, B, C, D, bias)
            out["mamba_ms"] = 1e3 * _timed(torch, device, lambda: selective_scan(u, delta, A, B, C, D, bias), 10)
            out["mamba_vs_torch_max_rel_diff"] = _rel(y_mamba, y_loop)
            out["mamba_speedup_vs_best_torch"] = min(out["torch_loop_ms"], out.get("torch_chunked_ms", 1e30)) / out[
                "mamba_ms"]
        else:
            out["mamba"] = "not available: pure-PyTorch scan measured (chunked = the GPU default)"
    return out


def _rel(a, b) -> float:
    return float(((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12)).item())


def _model(name: str, smoke: bool, **bands):
    from optsar_plugin.models import build_model, model_info

    d = {**model_info(name).defaults, **bands}
    cfg = SMALL.get(name, {}) if smoke else {}
    model = build_model(name, optical_bands=d["optical_bands"], sar_bands=d["sar_bands"], num_classes=d["num_classes"],
                        **cfg)
    return model, d


def _inputs(torch, d, size, batch, device):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(batch, d["optical_bands"], size, size, generator=g).to(device),
            torch.randn(batch, d["sar_bands"], size, size, generator=g).to(device))


def check_throughput(torch, device, smoke: bool, names):
    size, batch = (64, 2) if smoke else (512, 8)
    peaks = _peaks(torch.cuda.get_device_name(0)) if device.type == "cuda" else None
    out = {"tile": size, "batch": batch, "networks": {}}
    for name in names:
        out["networks"][name] = _throughput_one(torch, device, name, smoke, size, batch, peaks)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def _throughput_one(torch, device, name: str, smoke: bool, size: int, batch: int, peaks) -> dict:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    model, d = _model(name, smoke)
    model = model.to(device).eval()
    opt, sar = _inputs(torch, d, size, 1, device)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(opt, sar)
    gmac = counter.get_total_flops() / 2 / 1e9
    row = {"gmac_per_tile": round(gmac, 2)}
    for prec in ("fp32", "bf16") if device.type == "cuda" else ("fp32",):
        b, sec = _largest_batch_time(torch, device, model, d, size, batch, prec, smoke)
        tiles = b / sec
        row[prec] = {"batch": b, "tiles_per_s": round(tiles, 2), "gmac_per_s": round(tiles * gmac, 1)}
        if peaks:
            row[prec]["share_of_peak"] = round(2e9 * tiles * gmac / peaks[prec], 4)
    return row


def _largest_batch_time(torch, device, model, d, size, batch, prec, smoke):
    """(batch, median seconds per forward) at the largest batch <= ``batch`` that fits."""
    while True:
        opt, sar = _inputs(torch, d, size, batch, device)
        ctx = (torch.autocast("cuda", dtype=torch.bfloat16, enabled=prec == "bf16") if device.type == "cuda"
               else torch.autocast("cpu", enabled=False))
        try:
            with torch.no_grad(), ctx:
                return batch, _timed(torch, device, lambda o=opt, s=sar: model(o, s), 3 if smoke else 5, 1 if smoke else 3)
        except torch.cuda.OutOfMemoryError:
            if batch == 1:
                raise
            del opt, sar
            torch.cuda.empty_cache()
            batch //= 2


def check_oom_backoff(torch, device, smoke: bool):
    if device.type != "cuda":
        return {"skipped": "no CUDA device"}
    from optsar_plugin.inference import AdaptivePredictor, TorchPredictor

    class Record:
        def __init__(self):
            self.warnings = []

        def warning(self, m):
            self.warnings.append(m)

        def info(self, m):
            pass

        def progress(self, f, m=None):
            pass

        def is_canceled(self):
            return False

    model, d = _model("specsar_former", smoke)
    total = torch.cuda.get_device_properties(0).total_memory
    fraction = min(0.9, 6 * 2**30 / total)  # a 6 GiB "GPU"
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(fraction, 0)
    try:
        fb = Record()
        runner = AdaptivePredictor(TorchPredictor(model, device, "fp32"), batch_size=64, overlap=64, feedback=fb)
        g = torch.Generator().manual_seed(0)
        n = 64
        opt = torch.randn(n, d["optical_bands"], 512, 512, generator=g).numpy()
        sar = torch.randn(n, d["sar_bands"], 512, 512, generator=g).numpy()
        t = time.perf_counter()
        probs = runner(opt, sar)
        sec = time.perf_counter() - t
        ok = probs.shape == (n, d["num_classes"], 512, 512) and bool((abs(probs.sum(axis=1) - 1) < 1e-3).all())
        return {"memory_limit_gib": round(fraction * total / 2**30, 1), "windows": n, "start_batch": 64,
                "final_batch": runner.batch, "max_model_edge": runner.max_edge, "backoff_warnings": fb.warnings,
                "recovered": ok and bool(fb.warnings), "seconds_after_backoff": round(sec, 2)}
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, 0)
        torch.cuda.empty_cache()


def check_train_step(torch, device, smoke: bool, names):
    size = 64 if smoke else 256
    out = {"tile": size, "batch": 2, "networks": {}}
    for name in names:
        out["networks"][name] = _train_one(torch, device, name, smoke, size)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    return out


def _train_one(torch, device, name: str, smoke: bool, size: int) -> dict:
    model, d = _model(name, smoke)
    model = model.to(device).train()
    opt_t, sar_t = _inputs(torch, d, size, 2, device)
    target = torch.randint(0, d["num_classes"], (2, size, size), device=device)
    optim = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        optim.zero_grad(set_to_none=True)
        loss = model.loss(model.forward_train(opt_t, sar_t), target, ignore_index=255)
        loss.backward()
        optim.step()
        return loss

    step()  # the first step (allocations, kernel choices)
    _sync(torch, device)
    t = time.perf_counter()
    loss = step()
    _sync(torch, device)
    return {"step_s": round(time.perf_counter() - t, 3), "loss": float(loss.detach()),
            "finite": bool(torch.isfinite(loss).item()),
            "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None}


def read_only(optical: str, sar: str, tile: int, overlap: int) -> float:
    """Seconds to read every window of the optical raster and warp every SAR window (what classify must read),
    the warp split among threads as classify does (:func:`optsar_plugin.raster_io.parallel_warp`)."""
    import rasterio

    from optsar_plugin import raster_io

    t = time.perf_counter()
    with rasterio.open(optical) as o, rasterio.open(sar) as s, raster_io.aligned(s, o, "bilinear") as sv, \
            raster_io.parallel_warp():
        th, rows = raster_io.window_starts(o.height, tile, overlap)
        tw, cols = raster_io.window_starts(o.width, tile, overlap)
        for r in rows:
            for c in cols:
                raster_io.read_window(o, range(1, o.count + 1), r, c, th, tw)
                raster_io.read_window(sv, range(1, sv.count + 1), r, c, th, tw)
    return time.perf_counter() - t


def check_end_to_end(torch, device, smoke: bool, work: Path):
    from bench_classify import make_scene, scene_metadata

    from optsar_plugin.checkpoints import save_checkpoint
    from optsar_plugin.inference import classify

    size, tile, batch = (512, 128, 4) if smoke else (10980, 512, 16)
    t = time.perf_counter()
    scene = make_scene(work / "scene", size, 4, 2)
    made = time.perf_counter() - t
    model, d = _model("specsar_former", smoke, optical_bands=4, sar_bands=2, num_classes=9)
    ck = work / "specsar.safetensors"
    save_checkpoint(ck, model, scene_metadata("specsar_former", 4, 2, 9, model.config))
    del model
    read_s = read_only(scene["optical"], scene["sar"], tile, 64)
    prec = "bf16" if device.type == "cuda" else "fp32"
    res = classify(scene["optical"], scene["sar"], ck, work / "map.tif", device=str(device), tile_size=tile,
                   overlap=64 if not smoke else 32, batch_size=batch, precision=prec)
    return {"scene_px": size, "scene_seconds_to_make": round(made, 1), "tile": tile, "batch": batch, "precision": prec,
            "windows": res["windows"], "classify_s": round(res["seconds"], 2),
            "model_s": round(res["seconds_model"], 2), "read_only_s": round(read_s, 2),
            "classify_over_read_only": round(res["seconds"] / read_s, 2),
            "mpix_per_s": round(size * size / 1e6 / res["seconds"], 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="gpu_checks.json")
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU: tries the code paths only")
    ap.add_argument("--checks", default="environment,scan,throughput,oom_backoff,train_step,end_to_end")
    ap.add_argument("--models", default="cloudlulc_net,specsar_former,mosfnet")
    ap.add_argument("--work", default=None, help="folder for the synthetic scene (default: a temporary one)")
    args = ap.parse_args(argv)

    import torch

    smoke = args.cpu_smoke
    device = torch.device("cpu" if smoke or not torch.cuda.is_available() else "cuda")
    if device.type == "cpu" and not smoke:
        print("No CUDA device: run with --cpu-smoke to try the script on the CPU.", file=sys.stderr)
        return 2
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    names = [n for n in args.models.split(",") if n]
    report = Report(Path(args.out))
    report.data.update(mode="cpu-smoke" if smoke else "gpu", host=platform.node())
    work = Path(args.work or tempfile.mkdtemp(prefix="optsar-gpu-"))
    checks = {
        "environment": (check_environment, torch, device),
        "scan": (check_scan, torch, device, smoke),
        "throughput": (check_throughput, torch, device, smoke, names),
        "oom_backoff": (check_oom_backoff, torch, device, smoke),
        "train_step": (check_train_step, torch, device, smoke, names),
        "end_to_end": (check_end_to_end, torch, device, smoke, work),
    }
    for name in args.checks.split(","):
        fn, *fargs = checks[name]
        report.run(name, fn, *fargs)
    failed = [k for k, v in report.data["checks"].items() if not v.get("ok")]
    report.data["failed"] = failed
    report.save()
    print(f"wrote {args.out}; failed checks: {', '.join(failed) or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
