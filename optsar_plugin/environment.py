"""What this Python can run: Python, torch, CUDA and the GPU, timm, mamba-ssm.

Used by ``optsar:checkenvironment``, ``python -m optsar_plugin env`` and the
dependency installer.  Never raises for a missing package: absence is a finding.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import sys
from typing import Dict


def _version(module: str):
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # ImportError, or a broken install raising something else
        return None, f"{type(exc).__name__}: {exc}"
    return str(getattr(mod, "__version__", "unknown")), None


def system_memory_gib():
    """(total, available) physical memory in GiB from /proc/meminfo or sysconf; (None, None) when unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            info = {line.split(":")[0]: int(line.split()[1]) for line in fh if line.split()[1:]}
        return round(info["MemTotal"] / 2**20, 2), round(info.get("MemAvailable", info["MemFree"]) / 2**20, 2)
    except (OSError, KeyError, ValueError, IndexError):
        pass
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return round(total / 2**30, 2), None
    except (AttributeError, ValueError, OSError):
        return None, None


def environment_report() -> Dict:
    """A JSON-serialisable dict describing the environment."""
    report = {
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "memory_gib": None,
        "memory_available_gib": None,
        "numpy": _version("numpy")[0],
        "torch": None,
        "torch_error": None,
        "cuda_available": False,
        "cuda_version": None,
        "gpu_name": None,
        "gpu_memory_gib": None,
        "bf16_supported": False,
        "timm": None,
        "timm_error": None,
        "safetensors": _version("safetensors")[0],
        "mamba_ssm": None,
        "selective_scan": "pure PyTorch (CPU/GPU fallback)",
    }
    report["memory_gib"], report["memory_available_gib"] = system_memory_gib()
    report["torch"], report["torch_error"] = _version("torch")
    if report["torch"]:
        import torch

        report["cuda_version"] = torch.version.cuda
        report["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            report.update(
                cuda_available=True,
                gpu_name=props.name,
                gpu_memory_gib=round(props.total_memory / 2**30, 2),
                gpu_count=torch.cuda.device_count(),
                bf16_supported=bool(torch.cuda.is_bf16_supported()),
            )
    report["timm"], report["timm_error"] = _version("timm")
    mamba, _ = _version("mamba_ssm")
    report["mamba_ssm"] = mamba
    if mamba and report["cuda_available"]:
        report["selective_scan"] = "mamba_ssm CUDA kernel"
    report["ready"] = bool(report["torch"] and report["timm"] and report["safetensors"])
    return report


def format_report(report: Dict) -> str:
    def show(v):
        return "not installed" if v is None else str(v)

    lines = [
        f"Python            {report['python']} ({report['python_executable']})",
        f"Memory            {show(report.get('memory_gib'))} GiB, {show(report.get('memory_available_gib'))} GiB available",
        f"NumPy             {show(report['numpy'])}",
        f"PyTorch           {show(report['torch'])}" + (f"  [{report['torch_error']}]" if report["torch_error"] else ""),
        f"CUDA (torch)      {show(report['cuda_version'])}; GPU available: {'yes' if report['cuda_available'] else 'no'}",
    ]
    if report["cuda_available"]:
        lines.append(f"GPU               {report['gpu_name']}, {report['gpu_memory_gib']} GiB, bf16: {report['bf16_supported']}")
    lines += [
        f"timm              {show(report['timm'])}" + (f"  [{report['timm_error']}]" if report["timm_error"] else ""),
        f"safetensors       {show(report['safetensors'])}",
        f"mamba-ssm         {show(report['mamba_ssm'])} (optional, CUDA only)",
        f"Selective scan    {report['selective_scan']}",
        "Ready             " + ("yes" if report["ready"] else "no: run 'Install dependencies' (optsar:installdependencies)"),
    ]
    return "\n".join(lines)


def add_arguments(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def run_cli(args, feedback) -> int:
    if args.command == "models":
        from .models import available_models

        for m in available_models():
            d = m["defaults"]
            print(f"{m['name']:16s} {m['title']}: {m['description']}")
            print(f"{'':16s} paper default: {d['optical_bands']} optical + {d['sar_bands']} SAR bands, "
                  f"{d['num_classes']} classes, {d['tile_size']} px tiles ({d['dataset']})")
        return 0
    report = environment_report()
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 0
