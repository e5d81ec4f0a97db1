"""The worker-environment installer's decisions and fallbacks, checked without installing anything."""

from optsar_plugin.installer import (
    Probe,
    Source,
    Step,
    driver_cuda_version,
    plan_install,
    run_plan,
    venv_python,
    wheel_variant,
)
from optsar_plugin.progress import NullFeedback

PINS = {"torch": "2.14.1", "torchvision": "0.29.1", "timm": "1.0.31", "safetensors": "0.8.0", "numpy": "1.26.4",
        "dask": "2026.8.0", "distributed": "2026.8.0"}
SMI_124 = "| NVIDIA-SMI 550.54   Driver Version: 550.54   CUDA Version: 12.4 |"
SMI_130 = "| NVIDIA-SMI 580.10   Driver Version: 580.10   CUDA Version: 13.0 |"
ENV = "/profile/optsar_fusion/worker-env"


def plan(**kw):
    base = dict(torch_version=None, torch_cuda=False, timm_version=None, nvidia_smi=None, nvcc=False, python=None,
                safetensors_version=None)
    base.update(kw)
    return plan_install(Probe(**base), ENV, base_python="/usr/bin/python3", pins=PINS)


def commands(p):
    return [" ".join(s.command(p.python, s.sources[0])) for s in p.steps]


def test_driver_version_parsing():
    assert driver_cuda_version(SMI_124) == (12, 4)
    assert driver_cuda_version("garbage") is None
    assert driver_cuda_version(None) is None
    assert wheel_variant((13, 0)) == "cu130"
    assert wheel_variant((12, 9)) == "cu128"
    assert wheel_variant((12, 4)) == "cpu"  # too old for the pinned build's CUDA
    assert wheel_variant(None) == "cpu"


def test_no_worker_python_creates_a_venv_with_system_packages_and_the_cpu_build():
    p = plan()
    assert p.create_env and p.variant == "cpu" and p.python == venv_python(ENV)
    text = "\n".join(p.describe())
    assert "/usr/bin/python3 -m venv --system-site-packages " + ENV in text
    torch_step = p.steps[0]
    assert [s.url for s in torch_step.sources] == ["https://download.pytorch.org/whl/cpu/torch/", None]
    assert "torch==2.14.1" in torch_step.packages and "torchvision==0.29.1" in torch_step.packages
    assert "numpy==1.26.4" in torch_step.packages  # numpy < 2: the system GDAL/rasterio are built against 1.x
    assert "PyPI" in torch_step.sources[1].label
    assert any("timm==1.0.31" in c and "safetensors==0.8.0" in c for c in commands(p))
    assert any("dask==2026.8.0" in c and "distributed==2026.8.0" in c for c in commands(p))  # optsar:classifybatch
    rasterio = [s for s in p.steps if s.unless_importable == "rasterio"]
    assert rasterio and "rasterio" in rasterio[0].packages[0]
    assert not any("mamba-ssm" in c for c in commands(p))


def test_gpu_gets_the_cuda_build_and_mamba_when_nvcc():
    p = plan(nvidia_smi=SMI_130, nvcc=True)
    assert p.variant == "cu130"
    assert p.steps[0].sources[0].url == "https://download.pytorch.org/whl/cu130/torch/"
    assert any("mamba-ssm" in c for c in commands(p))
    p = plan(nvidia_smi=SMI_130, nvcc=False)
    assert not any("mamba-ssm" in c for c in commands(p))
    assert any("nvcc" in r for r in p.reasons)


def test_a_ready_worker_python_is_kept():
    p = plan(torch_version="2.5.0+cu124", torch_cuda=True, timm_version="1.0.0", safetensors_version="0.4",
             nvidia_smi=SMI_130, python="/opt/env/bin/python")
    assert p.steps == [] and not p.create_env and p.variant == "none"
    assert "kept" in p.reasons[0] and p.python == "/opt/env/bin/python"
    p = plan(torch_version="2.14.1", timm_version="1.0.31", safetensors_version="0.8.0", python="/dev/.venv/bin/python")
    assert p.steps == [] and "kept" in p.reasons[0]  # CPU torch and no GPU: nothing better to install


def test_a_cpu_torch_with_a_gpu_is_replaced_by_the_cuda_build():
    p = plan(torch_version="2.14.1+cpu", timm_version="1.0.31", safetensors_version="0.8.0", nvidia_smi=SMI_130,
             python=venv_python(ENV))
    assert p.variant == "cu130" and not p.create_env  # the environment exists: installed into, not recreated
    assert "--force-reinstall" in p.steps[0].sources[0].pip_args and "--force-reinstall" in p.steps[0].sources[1].pip_args


def test_an_unready_foreign_python_gets_the_plugins_own_environment():
    p = plan(torch_version="2.14.1", python="/somewhere/python")  # no timm
    assert p.python == venv_python(ENV) and any("not ready" in r for r in p.reasons)
    assert p.steps[0].packages[0].startswith("torch==")


class Recorder(NullFeedback):
    def __init__(self):
        self.infos, self.warnings = [], []

    def info(self, message):
        self.infos.append(message)

    def warning(self, message):
        self.warnings.append(message)


def test_an_unreachable_index_falls_back_to_the_next_and_says_so(tmp_path, monkeypatch):
    """PyTorch's index cannot be reached: the step is installed from PyPI and a warning says why."""
    import optsar_plugin.installer as inst

    ran = []
    monkeypatch.setattr(inst, "_run", lambda cmd, fb, check=True: (ran.append(cmd), (True, "ok"))[1])
    step = Step("PyTorch", ["torch==2.14.1"], [Source("PyTorch's wheel index (X)", ["--index-url", "X"], url="https://x/"),
                                               Source("pip's configured index (PyPI)", [])])
    p = inst.Plan(str(tmp_path / "env"), "/usr/bin/python3", False, [step], [], "cpu", python="/env/bin/python")
    fb = Recorder()
    done = run_plan(p, fb, reach=lambda url: "Name or service not known")
    assert len(ran) == 1 and "--index-url" not in ran[0]
    assert fb.warnings and "cannot be used (Name or service not known); falling back to pip's configured index" in fb.warnings[0]
    assert done == [f"PyTorch: from pip's configured index (PyPI) in {done[0].rsplit(' in ', 1)[1]}"]


def test_every_source_failing_is_one_clear_error(tmp_path, monkeypatch):
    import pytest

    import optsar_plugin.installer as inst
    from optsar_plugin.errors import OptsarError

    monkeypatch.setattr(inst, "_run", lambda cmd, fb, check=True: (False, "No matching distribution found for torch"))
    step = Step("PyTorch", ["torch==2.14.1"], [Source("A", []), Source("B", [])])
    p = inst.Plan(str(tmp_path / "env"), "/usr/bin/python3", False, [step], [], "cpu", python="/env/bin/python")
    with pytest.raises(OptsarError, match="Could not install PyTorch: A: pip failed: No matching distribution.*; B: "):
        run_plan(p, Recorder(), reach=lambda url: None)
