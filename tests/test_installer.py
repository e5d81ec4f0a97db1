"""The dependency installer's decisions, checked without installing anything."""

from optsar_plugin.installer import Probe, driver_cuda_version, plan_install, wheel_variant

PINS = {"torch": "2.14.1", "torchvision": "0.29.1", "timm": "1.0.31", "safetensors": "0.8.0"}
SMI_124 = "| NVIDIA-SMI 550.54   Driver Version: 550.54   CUDA Version: 12.4 |"
SMI_130 = "| NVIDIA-SMI 580.10   Driver Version: 580.10   CUDA Version: 13.0 |"


def plan(**kw):
    base = dict(torch_version=None, torch_cuda=False, timm_version=None, nvidia_smi=None, nvcc=False, python="/usr/bin/python3")
    base.update(kw)
    return plan_install(Probe(**base), target="/plugin/ext-libs/py311", pins=PINS)


def test_driver_version_parsing():
    assert driver_cuda_version(SMI_124) == (12, 4)
    assert driver_cuda_version("garbage") is None
    assert driver_cuda_version(None) is None
    assert wheel_variant((13, 0)) == "cu130"
    assert wheel_variant((12, 9)) == "cu128"
    assert wheel_variant((12, 4)) == "cpu"  # too old for the pinned build's CUDA
    assert wheel_variant(None) == "cpu"


def test_no_torch_no_gpu_installs_cpu_build():
    p = plan()
    assert p.variant == "cpu"
    torch_cmd = p.commands[0]
    assert "https://download.pytorch.org/whl/cpu" in torch_cmd
    assert "torch==2.14.1" in torch_cmd and "torchvision==0.29.1" in torch_cmd
    assert torch_cmd[torch_cmd.index("--target") + 1] == "/plugin/ext-libs/py311"
    assert any("timm==1.0.31" in c for c in p.commands)
    assert not any("mamba-ssm" in c for c in p.commands)


def test_no_torch_with_gpu_installs_cuda_build_and_mamba_when_nvcc():
    p = plan(nvidia_smi=SMI_130, nvcc=True)
    assert p.variant == "cu130"
    assert "https://download.pytorch.org/whl/cu130" in p.commands[0]
    assert any("mamba-ssm" in c for c in p.commands)
    p = plan(nvidia_smi=SMI_130, nvcc=False)
    assert not any("mamba-ssm" in c for c in p.commands)
    assert any("nvcc" in r for r in p.reasons)


def test_never_replaces_a_cuda_torch():
    p = plan(torch_version="2.5.0+cu124", torch_cuda=True, timm_version="1.0.0", nvidia_smi=SMI_130)
    assert p.commands == []
    assert p.variant == "none"
    assert "kept" in p.reasons[0]


def test_cuda_torch_without_timm_installs_only_timm():
    p = plan(torch_version="2.5.0+cu124", torch_cuda=True, nvidia_smi=SMI_130)
    assert len(p.commands) == 1 and "timm==1.0.31" in p.commands[0]
    assert not any(a.startswith("torch==") for a in p.commands[0])


def test_cpu_torch_with_gpu_gets_cuda_build():
    p = plan(torch_version="2.14.1+cpu", torch_cuda=False, timm_version="1.0.31", nvidia_smi=SMI_130)
    assert p.variant == "cu130"
    assert any("torch==2.14.1" in c for c in p.commands)
