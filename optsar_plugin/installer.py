"""Preparing the engine worker's Python: a virtual environment with PyTorch, torchvision, timm, safetensors.

PyTorch never runs inside QGIS (see :mod:`optsar_plugin.worker`), so ``optsar:installdependencies``
does not install into QGIS's Python: it creates a virtual environment from QGIS's own
interpreter with ``--system-site-packages`` (GDAL, rasterio and numpy that come with QGIS stay
visible) and installs the pinned packages there; rasterio is pip-installed only when it does not
import.  The decisions are pure (:func:`plan_install` over a :class:`Probe`) and tested;
:func:`run_plan` carries them out.

Where each package comes from: every step lists its sources in order of preference.  torch and
torchvision come first from PyTorch's own wheel index for the build the machine needs (a CUDA
build matching the driver nvidia-smi reports, else the CPU build), then from pip's configured
index (PyPI).  An index that cannot be reached is skipped *with a message saying so*, and so is
one pip fails with; the run fails only when every source failed.  A torch that already imports
with CUDA in the worker's Python is never replaced.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
PYTORCH_INDEX = "https://download.pytorch.org/whl"
RASTERIO_SPEC = "rasterio>=1.3.9,<1.5"
REACH_TIMEOUT_S = 10


def pinned_requirements(path: Path = ROOT / "requirements.txt") -> Dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)$", line)
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def venv_python(env_dir: str) -> str:
    return os.path.join(env_dir, "Scripts", "python.exe") if os.name == "nt" else os.path.join(env_dir, "bin", "python")


@dataclass
class Probe:
    """What the installer knows about the machine and the worker's Python (built by :func:`probe`, or by hand)."""

    torch_version: Optional[str]
    torch_cuda: bool  # torch imports and torch.cuda.is_available()
    timm_version: Optional[str]
    nvidia_smi: Optional[str]  # output of `nvidia-smi`, or None when absent/failed
    nvcc: bool = False  # a CUDA toolchain is present (for building mamba-ssm)
    python: Optional[str] = None  # the worker's Python probed (None: there is none yet)
    safetensors_version: Optional[str] = None


@dataclass
class Source:
    label: str
    pip_args: List[str]
    url: Optional[str] = None  # checked for reachability before pip is run


@dataclass
class Step:
    what: str
    packages: List[str]
    sources: List[Source]
    unless_importable: Optional[str] = None  # skip when this module imports in the environment

    def command(self, python: str, source: Source) -> List[str]:
        return [python, "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off",
                *source.pip_args, *self.packages]


@dataclass
class Plan:
    env_dir: str
    base_python: str
    create_env: bool
    steps: List[Step]
    reasons: List[str]
    variant: str  # 'cuda tag', 'cpu' or 'none'
    python: str = field(default="")

    def __post_init__(self):
        self.python = self.python or venv_python(self.env_dir)

    def describe(self) -> List[str]:
        lines = list(self.reasons)
        if self.create_env:
            lines.append(f"$ {self.base_python} -m venv --system-site-packages {self.env_dir}")
        for step in self.steps:
            first = step.sources[0]
            extra = f" (if {step.unless_importable} does not import)" if step.unless_importable else ""
            alt = "; else ".join(s.label for s in step.sources)
            lines.append(f"$ {' '.join(step.command(self.python, first))}{extra}   [from: {alt}]")
        if not self.steps and not self.create_env:
            lines.append("Nothing to install.")
        return lines


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


def _torch_decision(p: Probe, variant: str, cuda) -> tuple:
    """(install torch?, reason)."""
    if p.torch_version and p.torch_cuda:
        return False, f"torch {p.torch_version} already imports with CUDA in {p.python}: it is kept as it is."
    if p.torch_version and variant == "cpu":
        return False, f"torch {p.torch_version} already imports in {p.python} and no NVIDIA GPU is usable: it is kept."
    if p.torch_version:
        return True, (f"torch {p.torch_version} imports without CUDA although nvidia-smi reports a GPU "
                      f"(driver CUDA {cuda[0]}.{cuda[1]}): installing the {variant} build.")
    if variant == "cpu":
        return True, "torch is missing and no usable NVIDIA GPU was found: installing the CPU build."
    return True, f"torch is missing; nvidia-smi reports driver CUDA {cuda[0]}.{cuda[1]}: installing the {variant} build."


def plan_install(p: Probe, env_dir: str, base_python: Optional[str] = None,
                 pins: Optional[Dict[str, str]] = None) -> Plan:
    """What to do so that the worker's Python can run the networks (nothing when it already can)."""
    pins = pins or pinned_requirements()
    base_python = base_python or python_executable()
    cuda = driver_cuda_version(p.nvidia_smi)
    variant = wheel_variant(cuda)
    install_torch, reason = _torch_decision(p, variant, cuda)
    reasons = [reason]
    ready = bool(p.torch_version and p.timm_version and p.safetensors_version)
    if not install_torch and ready:
        return Plan(env_dir, base_python, False, [], reasons, "none", python=p.python or "")
    python = venv_python(env_dir)
    create = not (os.path.isfile(python) or (p.python and os.path.abspath(p.python) == os.path.abspath(python)))
    if p.python and os.path.abspath(p.python) != os.path.abspath(python):
        reasons.append(f"The worker's Python {p.python} is not ready; preparing the plugin's own environment in {env_dir} "
                       "(a Python named in the provider setting or OPTSAR_PYTHON still takes precedence).")
        install_torch = True
    replace = ["--force-reinstall"] if p.torch_version and not p.torch_cuda and variant != "cpu" else []
    pypi = Source("pip's configured index (PyPI)", [])
    steps = []
    if install_torch or create:
        torch_index = f"{PYTORCH_INDEX}/{variant}"
        # PyPI has one torch wheel per platform: on Linux the CUDA build (several GB; it runs on the CPU too).
        pypi_torch = pypi.label if variant != "cpu" else (
            "pip's configured index (PyPI), whose Linux torch is the CUDA build (about 5 GB; it runs on the CPU too)")
        steps.append(Step(
            f"PyTorch {pins['torch']} and torchvision {pins['torchvision']}",
            [f"torch=={pins['torch']}", f"torchvision=={pins['torchvision']}", f"numpy=={pins['numpy']}"],
            [Source(f"PyTorch's wheel index, {variant} build ({torch_index})",
                    ["--index-url", torch_index, "--retries", "1", "--timeout", "30", *replace], url=f"{torch_index}/torch/"),
             Source(pypi_torch, replace)]))
    steps.append(Step(f"timm {pins['timm']}, safetensors {pins['safetensors']}",
                      [f"timm=={pins['timm']}", f"safetensors=={pins['safetensors']}", f"numpy=={pins['numpy']}"],
                      [pypi]))
    steps.append(Step(f"dask {pins['dask']} and distributed {pins['distributed']} (batch classification)",
                      [f"dask=={pins['dask']}", f"distributed=={pins['distributed']}"], [pypi]))
    steps.append(Step("rasterio (GDAL's Python binding for the engine)", [RASTERIO_SPEC, f"numpy=={pins['numpy']}"],
                      [pypi], unless_importable="rasterio"))
    if cuda is not None and p.nvcc:
        reasons.append("a CUDA toolchain (nvcc) is present: building the optional mamba-ssm kernels.")
        steps.append(Step("mamba-ssm (optional)", ["--no-build-isolation", "mamba-ssm"], [pypi]))
    elif cuda is not None:
        reasons.append("no nvcc found: mamba-ssm (optional) is skipped; the pure-PyTorch scan is used.")
    return Plan(env_dir, base_python, create, steps, reasons, variant if install_torch else "none", python=python)


# -- probing --------------------------------------------------------------------------------------


def probe(python: Optional[str]) -> Probe:
    """Probe ``python`` (the worker's, or None) and the machine (nvidia-smi, nvcc) without importing torch here."""
    report = environment_of(python) if python else {}
    smi = None
    exe = shutil.which("nvidia-smi")
    if exe:
        try:
            smi = subprocess.run([exe], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            smi = None
    return Probe(report.get("torch"), bool(report.get("cuda_available")), report.get("timm"), smi,
                 bool(shutil.which("nvcc")), python, report.get("safetensors"))


def environment_of(python: str, timeout: float = 600) -> Dict:
    """``python -m optsar_plugin env --json`` in another interpreter; {} when it cannot run."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    try:
        proc = subprocess.run([python, "-m", "optsar_plugin", "env", "--json"], capture_output=True, text=True,
                              env=env, timeout=timeout, stdin=subprocess.DEVNULL)
        return json.loads(proc.stdout) if proc.returncode == 0 else {}
    except (OSError, subprocess.SubprocessError, ValueError):
        return {}


def python_executable() -> str:
    """The interpreter whose library this process runs (QGIS's own Python when called inside QGIS).

    Inside QGIS, ``sys.executable`` is the QGIS binary or whatever ``python3`` comes first on
    PATH (a pyenv or conda Python that lacks QGIS's GDAL); the interpreter next to this
    process's ``sys.base_exec_prefix`` with this version number is the right one.
    """
    version = "{}.{}".format(*sys.version_info[:2])
    for cand in (os.path.join(sys.base_exec_prefix, "bin", f"python{version}"),
                 os.path.join(sys.base_exec_prefix, "bin", "python3"),
                 os.path.join(sys.base_exec_prefix, "python.exe")):
        if os.path.isfile(cand):
            return cand
    exe = sys.executable or ""
    if os.path.basename(exe).lower().startswith("python"):
        return exe
    return shutil.which("python3") or "python3"


def reachable(url: str, timeout: float = REACH_TIMEOUT_S) -> Optional[str]:
    """None when ``url`` answers (any HTTP status), else why not."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None  # the server answered
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return str(getattr(exc, "reason", exc))


# -- carrying out a plan ----------------------------------------------------------------------------


def run_plan(plan: Plan, feedback, reach=reachable) -> List[str]:
    """Create the environment and run the steps; returns what was done, one line each."""
    done = []
    if plan.create_env:
        feedback.info(f"Creating the worker environment {plan.env_dir} from {plan.base_python}")
        Path(plan.env_dir).parent.mkdir(parents=True, exist_ok=True)
        _run([plan.base_python, "-m", "venv", "--system-site-packages", plan.env_dir], feedback)
        done.append(f"created {plan.env_dir}")
    for step in plan.steps:
        if step.unless_importable and _imports(plan.python, step.unless_importable):
            feedback.info(f"{step.unless_importable} already imports in the worker environment: {step.what} skipped.")
            continue
        done.append(_run_step(plan.python, step, feedback, reach))
    return done


def _run_step(python: str, step: Step, feedback, reach) -> str:
    from .errors import OptsarError

    failures = []
    for i, source in enumerate(step.sources):
        nxt = step.sources[i + 1].label if i + 1 < len(step.sources) else None
        why = reach(source.url) if source.url else None
        if why is None:
            feedback.info(f"Installing {step.what} from {source.label}")
            t0 = time.monotonic()
            ok, tail = _run(step.command(python, source), feedback, check=False)
            if ok:
                return f"{step.what}: from {source.label} in {time.monotonic() - t0:.0f} s"
            why = f"pip failed: {tail}"
        failures.append(f"{source.label}: {why}")
        if nxt:
            feedback.warning(f"{source.label} cannot be used ({why}); falling back to {nxt}.")
    raise OptsarError(f"Could not install {step.what}: " + "; ".join(failures))


def _imports(python: str, module: str) -> bool:
    try:
        return subprocess.run([python, "-c", f"import {module}"], capture_output=True, timeout=300).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _run(cmd: List[str], feedback, check: bool = True):
    """Run ``cmd``, relaying pip's 'Successfully installed' lines; cancellable; (ok, last output line)."""
    from .errors import Cancelled, OptsarError

    feedback.info("$ " + " ".join(cmd))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL)
    tail: List[str] = []
    for line in proc.stdout:
        line = line.rstrip()
        if line:
            tail = (tail + [line])[-20:]
        if line.startswith("Successfully installed"):
            feedback.info(line)
        if feedback.is_canceled():
            proc.terminate()
            proc.wait()
            raise Cancelled("Installation cancelled.")
    proc.wait()
    last = tail[-1] if tail else f"exit status {proc.returncode}"
    if proc.returncode != 0 and check:
        raise OptsarError(f"'{' '.join(cmd[:4])} ...' failed (exit {proc.returncode}): {last}")
    return proc.returncode == 0, last
