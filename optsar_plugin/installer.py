"""Installing PyTorch and timm into QGIS's Python: the decision logic, kept pure and testable.

QGIS's Python rarely has torch.  ``plan_install`` looks at what is importable and
what ``nvidia-smi`` reports and returns the pip commands it would run (CUDA or
CPU wheels of the pinned versions, into a plugin-local folder that the plugin
adds to ``sys.path``); ``run_plan`` runs them.  A torch that already imports
with CUDA is never replaced.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
PYTORCH_INDEX = "https://download.pytorch.org/whl"


def site_dir(plugin_dir: Optional[str] = None) -> str:
    """The plugin-local folder for installed packages (the plugin's ``__init__`` adds it to sys.path)."""
    base = plugin_dir or str(ROOT)
    return os.path.join(base, "ext-libs", "py{}{}".format(*sys.version_info[:2]))


def pinned_requirements(path: Path = ROOT / "requirements.txt") -> Dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)$", line)
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


@dataclass
class Probe:
    """What the installer knows about the machine (built by :func:`probe`, or by hand in tests)."""

    torch_version: Optional[str]
    torch_cuda: bool  # torch imports and torch.cuda.is_available()
    timm_version: Optional[str]
    nvidia_smi: Optional[str]  # output of `nvidia-smi`, or None when absent/failed
    nvcc: bool = False  # a CUDA toolchain is present (for building mamba-ssm)
    python: str = field(default_factory=lambda: sys.executable)


@dataclass
class Plan:
    commands: List[List[str]]
    reasons: List[str]
    variant: str  # 'cuda', 'cpu' or 'none'


def driver_cuda_version(nvidia_smi: Optional[str]) -> Optional[tuple]:
    """CUDA version the driver supports, from nvidia-smi's banner ('CUDA Version: 12.4')."""
    if not nvidia_smi:
        return None
    m = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", nvidia_smi)
    return (int(m.group(1)), int(m.group(2))) if m else None


def wheel_variant(cuda: Optional[tuple]) -> str:
    """The PyTorch wheel index tag: cu130/cu128/cu126 when the driver allows, else cpu."""
    if cuda is None:
        return "cpu"
    for tag, need in (("cu130", (13, 0)), ("cu128", (12, 8)), ("cu126", (12, 6))):
        if cuda >= need:
            return tag
    return "cpu"


def plan_install(p: Probe, target: Optional[str] = None, pins: Optional[Dict[str, str]] = None) -> Plan:
    pins = pins or pinned_requirements()
    target = target or site_dir()
    pip = [p.python, "-m", "pip", "install", "--disable-pip-version-check", "--upgrade", "--target", target]
    reasons, commands = [], []
    cuda = driver_cuda_version(p.nvidia_smi)
    variant = wheel_variant(cuda)
    torch_pin = f"torch=={pins['torch']}"
    vision_pin = f"torchvision=={pins['torchvision']}"

    if p.torch_version and p.torch_cuda:
        reasons.append(f"torch {p.torch_version} already imports with CUDA: it is kept as it is.")
        variant_used = "none"
    elif p.torch_version and variant == "cpu":
        reasons.append(f"torch {p.torch_version} already imports and no NVIDIA GPU is usable: it is kept.")
        variant_used = "none"
    else:
        if p.torch_version:
            reasons.append(
                f"torch {p.torch_version} imports without CUDA although nvidia-smi reports a GPU "
                f"(driver CUDA {cuda[0]}.{cuda[1]}): installing the {variant} build beside it."
            )
        elif variant == "cpu":
            reasons.append("torch is missing and no usable NVIDIA GPU was found: installing the CPU build.")
        else:
            reasons.append(f"torch is missing; nvidia-smi reports driver CUDA {cuda[0]}.{cuda[1]}: installing the {variant} build.")
        commands.append(pip + ["--index-url", f"{PYTORCH_INDEX}/{variant}", torch_pin, vision_pin])
        variant_used = variant
    if not p.timm_version or variant_used != "none":
        reasons.append("installing timm and safetensors (pinned).")
        commands.append(pip + ["--no-deps", f"timm=={pins['timm']}", f"safetensors=={pins['safetensors']}",
                               "huggingface_hub", "pyyaml"])
    if cuda is not None and p.nvcc:
        reasons.append("a CUDA toolchain (nvcc) is present: building the optional mamba-ssm kernels.")
        commands.append(pip + ["--no-build-isolation", "mamba-ssm"])
    elif cuda is not None:
        reasons.append("no nvcc found: mamba-ssm (optional) is skipped; the pure-PyTorch scan is used.")
    return Plan(commands, reasons, variant_used)


def probe() -> Probe:
    torch_version, torch_cuda, timm_version = None, False, None
    try:
        import torch

        torch_version = str(torch.__version__)
        torch_cuda = bool(torch.cuda.is_available())
    except Exception:
        pass
    try:
        import timm

        timm_version = str(timm.__version__)
    except Exception:
        pass
    smi = None
    exe = shutil.which("nvidia-smi")
    if exe:
        try:
            smi = subprocess.run([exe], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            smi = None
    return Probe(torch_version, torch_cuda, timm_version, smi, bool(shutil.which("nvcc")), python_executable())


def python_executable() -> str:
    """The Python interpreter to run pip with (inside QGIS, sys.executable is the QGIS binary)."""
    exe = sys.executable or ""
    if os.path.basename(exe).lower().startswith("python"):
        return exe
    for cand in (os.path.join(sys.exec_prefix, "bin", "python3"), os.path.join(sys.exec_prefix, "python.exe"), shutil.which("python3")):
        if cand and os.path.exists(cand):
            return cand
    return "python3"


def run_plan(plan: Plan, feedback) -> None:
    from .errors import OptsarError

    for cmd in plan.commands:
        feedback.info("Running: " + " ".join(cmd))
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise OptsarError(f"pip failed (exit {proc.returncode}) for: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
