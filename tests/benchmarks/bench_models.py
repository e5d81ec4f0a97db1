"""Benchmark every registered model in its paper configuration (``make bench``).

A plain script, not a pytest test:

    python tests/benchmarks/bench_models.py [--models a,b] [--size 512] [--repeats 3]

For each model of ``optsar_plugin.models.available_models()`` built with its paper
defaults (optical/SAR band and class counts) on a ``--size`` x ``--size`` tile it prints:

* parameters (all, and those the inference forward uses: training-only heads such as
  CloudLULC-Net's semantic anchor are excluded from the second figure);
* GMAC per tile, counted with ``torch.utils.flop_counter.FlopCounterMode`` (its FLOPs / 2),
  with scaled-dot-product attention forced to the math backend so attention matmuls are
  counted on every device (FFTs, element-wise ops and the selective scan's recurrence
  are not matrix products and are not counted);
* CPU forward seconds per tile (fp32, batch 1, median of ``--repeats`` after a warm-up);
* the share of the forward time spent in the SS2D selective scan (MOSFNet), measured
  with ``torch.profiler`` from the ``record_function("selective_scan")`` ranges the
  model emits ("-" for models that emit none);
* on CUDA, when available: tiles/s in fp32 and in bf16 autocast (batch ``--gpu-batch``),
  and the fraction of the GPU's dense bf16 peak that the bf16 throughput and the GMAC
  figure imply (H100/H200 989 TFLOP/s, A100 312 TFLOP/s; otherwise n/a).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from optsar_plugin.models import available_models, build_model  # noqa: E402

SCAN_LABEL = "selective_scan"
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense bf16 FLOP/s


def peak_flops(device_name: str):
    for key, value in PEAK_BF16.items():
        if key in device_name.upper():
            return value
    return None


def make_inputs(defaults, size, batch=1, device="cpu"):
    g = torch.Generator().manual_seed(0)
    opt = torch.randn(batch, defaults["optical_bands"], size, size, generator=g)
    sar = torch.randn(batch, defaults["sar_bands"], size, size, generator=g)
    return opt.to(device), sar.to(device)


def inference_parameters(model, defaults) -> int:
    """Parameters owned by modules that the plain forward actually calls (on a 64 x 64 tile)."""
    called = set()
    handles = [m.register_forward_pre_hook(lambda mod, _inp: called.add(id(mod))) for m in model.modules()]
    try:
        with torch.no_grad():
            model(*make_inputs(defaults, 64))
    finally:
        for h in handles:
            h.remove()
    seen = set()
    total = 0
    for module in model.modules():
        if id(module) not in called:
            continue
        for p in module.parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
    return total


def count_gmac(model, opt, sar) -> float:
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(opt, sar)
    return counter.get_total_flops() / 2 / 1e9


def time_forward(model, opt, sar, repeats: int, sync=None, both=False):
    """Median seconds per call (with ``both``: (median, minimum)); the caller has warmed the model up."""
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            if sync:
                sync()
            t0 = time.perf_counter()
            model(opt, sar)
            if sync:
                sync()
            times.append(time.perf_counter() - t0)
    return (statistics.median(times), min(times)) if both else statistics.median(times)


@contextlib.contextmanager
def quiet_stderr():
    """Silence file descriptor 2 (the profiler's native start/stop chatter) for the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def emits_scan_ranges(model, defaults) -> bool:
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad(), quiet_stderr(), profile(activities=[ProfilerActivity.CPU]) as prof:
        model(*make_inputs(defaults, 64))
    return any(evt.key == SCAN_LABEL for evt in prof.key_averages())


def scan_share(model, opt, sar) -> float:
    """Fraction of one profiled forward's wall time inside ``selective_scan`` ranges."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad(), quiet_stderr(), profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        model(opt, sar)
        wall = time.perf_counter() - t0
    scan_us = sum(evt.cpu_time_total for evt in prof.key_averages() if evt.key == SCAN_LABEL)
    return scan_us / 1e6 / wall


def gpu_throughput(model, defaults, size, batch, repeats, bf16: bool):
    """Tiles/s on CUDA at the largest batch <= ``batch`` that fits; returns (tiles/s, batch)."""
    while batch >= 1:
        opt = sar = None
        try:
            opt, sar = make_inputs(defaults, size, batch, "cuda")
            ctx = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else torch.autocast("cuda", enabled=False)
            with ctx:
                with torch.no_grad():
                    for _ in range(3):  # warm-up (cuDNN autotuning, kernel caches)
                        model(opt, sar)
                sec = time_forward(model, opt, sar, max(repeats, 5), sync=torch.cuda.synchronize)
            return batch / sec, batch
        except torch.cuda.OutOfMemoryError:
            del opt, sar
            torch.cuda.empty_cache()
            batch //= 2
    return float("nan"), 0


def fmt(value, spec):
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return format(value, spec)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="", help="comma-separated model names (default: all registered)")
    parser.add_argument("--size", type=int, default=512, help="tile side in pixels (default 512)")
    parser.add_argument("--repeats", type=int, default=3, help="timed forwards per measurement (default 3)")
    parser.add_argument("--gpu-batch", type=int, default=8, help="batch for the CUDA throughput runs (default 8)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--no-cpu-time", action="store_true", help="skip the CPU timing and scan-share runs")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    infos = {m["name"]: m for m in available_models()}
    names = [n.strip() for n in args.models.split(",") if n.strip()] or list(infos)
    unknown = [n for n in names if n not in infos]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; registered: {', '.join(infos)}")

    cuda = torch.cuda.is_available()
    gpu_name = torch.cuda.get_device_name(0) if cuda else None
    peak = peak_flops(gpu_name) if cuda else None
    if cuda:
        torch.backends.cudnn.benchmark = True
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()} (load average {load:.1f} on "
          f"{os.cpu_count()} cores: CPU timings are wall-clock and suffer from other load), "
          f"tile {args.size}x{args.size}, repeats {args.repeats}")
    if cuda:
        print(f"GPU: {gpu_name} (bf16 dense peak {'%.0f TFLOP/s' % (peak / 1e12) if peak else 'n/a'}), "
              f"batch {args.gpu_batch}, fp32 matmul TF32 {torch.backends.cuda.matmul.allow_tf32}, "
              f"cuDNN TF32 {torch.backends.cudnn.allow_tf32}")
    else:
        print("GPU: none (CUDA columns n/a)")

    header = ["model", "params M", "infer M", "GMAC", "CPU s/tile", "CPU min", "scan share",
              "fp32 tiles/s", "bf16 tiles/s", "bf16 %peak"]
    rows = []
    for name in names:
        d = infos[name]["defaults"]
        label = f"{name} ({d['optical_bands']}+{d['sar_bands']} bands, {d['num_classes']} cl)"
        print(f"... {label}", flush=True)
        try:
            torch.manual_seed(0)
            model = build_model(name, optical_bands=d["optical_bands"], sar_bands=d["sar_bands"],
                                num_classes=d["num_classes"]).eval()
        except Exception as exc:  # a model whose module is missing or broken is reported, not fatal
            rows.append([label, f"unavailable: {type(exc).__name__}: {exc}"])
            continue
        try:
            params = sum(p.numel() for p in model.parameters()) / 1e6
            infer = inference_parameters(model, d) / 1e6
            opt, sar = make_inputs(d, args.size)
            gmac = count_gmac(model, opt, sar)  # also the CPU warm-up
            cpu_s = cpu_min = share = None
            if not args.no_cpu_time:
                cpu_s, cpu_min = time_forward(model, opt, sar, args.repeats, both=True)
                share = scan_share(model, opt, sar) if emits_scan_ranges(model, d) else None
            fp32 = bf16 = mfu = None
            if cuda:
                model.cuda()
                fp32, b32 = gpu_throughput(model, d, args.size, args.gpu_batch, args.repeats, bf16=False)
                bf16, b16 = gpu_throughput(model, d, args.size, args.gpu_batch, args.repeats, bf16=True)
                mfu = (bf16 * 2 * gmac * 1e9 / peak * 100) if peak else "n/a"
                if b32 != args.gpu_batch or b16 != args.gpu_batch:
                    print(f"    (out of memory at batch {args.gpu_batch}: fp32 batch {b32}, bf16 batch {b16})")
                model.cpu()
                torch.cuda.empty_cache()
            rows.append([label, fmt(params, ".2f"), fmt(infer, ".2f"), fmt(gmac, ".1f"), fmt(cpu_s, ".2f"), fmt(cpu_min, ".2f"),
                         fmt(share * 100 if share is not None else None, ".0f") + ("%" if share is not None else ""),
                         fmt(fp32, ".1f") if cuda else "n/a", fmt(bf16, ".1f") if cuda else "n/a",
                         fmt(mfu, ".1f") if cuda else "n/a"])
        except Exception as exc:
            traceback.print_exc()
            rows.append([label, f"failed: {type(exc).__name__}: {exc}"])
        del model

    full = [r for r in rows if len(r) == len(header)]
    widths = [max([len(header[i])] + [len(r[i]) for r in full]) for i in range(len(header))]
    line = "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))
    print()
    print(line)
    print("-" * len(line))
    for r in rows:
        if len(r) == 2:
            print(f"{r[0].ljust(widths[0])}  {r[1]}")
        else:
            print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    print()
    print("GMAC: FlopCounterMode FLOPs / 2 (matmul/conv only; FFT and scan recurrences excluded). "
          "%peak: bf16 tiles/s x 2 x GMAC / dense bf16 peak.")
    return 0 if all(len(r) > 2 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
