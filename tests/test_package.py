"""`make package` builds a zip QGIS can install: one optsar_fusion/ folder, no development files."""

from __future__ import annotations

import configparser
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import fresh_profile, run_algorithm_json, run_qgis_process, train_tiny_checkpoint

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def plugin_zip(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    version = configparser.ConfigParser()
    version.read(ROOT / "metadata.txt")
    v = version["general"]["version"]
    proc = subprocess.run(
        ["make", "-s", "package", f"PY={sys.executable}"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    zpath = ROOT / "dist" / f"optsar_fusion.{v}.zip"
    assert zpath.is_file(), proc.stdout
    dst = out / zpath.name
    dst.write_bytes(zpath.read_bytes())
    return dst


def test_zip_layout(plugin_zip):
    names = zipfile.ZipFile(plugin_zip).namelist()
    assert all(n.startswith("optsar_fusion/") for n in names), names[:5]
    for required in ("optsar_fusion/metadata.txt", "optsar_fusion/__init__.py", "optsar_fusion/plugin.py",
                     "optsar_fusion/algorithms/provider.py", "optsar_fusion/optsar_plugin/__init__.py",
                     "optsar_fusion/optsar_plugin/models/__init__.py", "optsar_fusion/resources/icons/optsar.svg",
                     "optsar_fusion/requirements.txt", "optsar_fusion/optsar_plugin/schemes/dynamic_world.json"):
        assert required in names
    forbidden = ("tests/", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", ".git/", ".qgis-", "ext-libs", ".pyc")
    assert not [n for n in names if any(f in n for f in forbidden)]


def test_zip_installs_into_a_fresh_profile(plugin_zip, tmp_path):
    profile, plugins = fresh_profile(tmp_path, plugin_zip)
    # QGIS_PLUGINPATH names only the folder the zip was unpacked into, and the profile is new:
    # whatever optsar: algorithms appear come from the installed zip.
    listing = run_qgis_process(["list"], profile=profile, plugin_path=plugins).stdout
    assert "optsar:checkenvironment" in listing
    # No worker Python yet (no .venv in the installed plugin, nothing prepared): said, not crashed.
    result = run_algorithm_json("optsar:checkenvironment", {}, profile=profile, plugin_path=plugins)["results"]
    assert result["READY"] is False and "optsar:installdependencies" in result["REPORT"]
    # With a worker Python named by OPTSAR_PYTHON (as the provider setting would):
    result = run_algorithm_json("optsar:checkenvironment", {}, profile=profile, plugin_path=plugins,
                                extra_env={"OPTSAR_PYTHON": str(ROOT / ".venv" / "bin" / "python")})
    import torch

    assert result["results"]["TORCH_VERSION"] == str(torch.__version__)
    assert result["results"]["WORKER_PYTHON"] == str(ROOT / ".venv" / "bin" / "python")


def test_installed_zip_classifies(plugin_zip, tmp_path):
    """A small classification through qgis_process with only the installed zip on the plugin path."""
    profile, plugins = fresh_profile(tmp_path, plugin_zip)
    from optsar_plugin.sample_scene import make_sample_scene

    scene = make_sample_scene(tmp_path / "scene", size=192, seed=5)
    ckpt = train_tiny_checkpoint(scene, tmp_path / "tiny.safetensors", steps=2, seed=0)
    out = tmp_path / "landcover.tif"
    result = run_algorithm_json("optsar:classify", {
        "OPTICAL": scene["optical"], "SAR": scene["sar"], "CHECKPOINT": ckpt, "MODEL": "cloudlulc_net",
        "TILE_SIZE": 64, "OVERLAP": 16, "OUTPUT": out,
    }, profile=profile, plugin_path=plugins, extra_env={"OPTSAR_PYTHON": str(ROOT / ".venv" / "bin" / "python")})
    assert result["results"]["OUTPUT"] == str(out)
    import rasterio

    with rasterio.open(out) as ds:
        assert ds.dtypes[0] == "uint8" and ds.nodata == 255 and ds.shape == (192, 192)
    assert out.with_suffix(".qml").is_file()
