"""The engine installs on its own with pip (no QGIS, no plugin files), class schemes and command included."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_pip_installs_the_engine_alone_with_its_data_and_command(tmp_path):
    """``pip install .`` from a copy of the working tree (build artefacts stay out of the repository)."""
    src = tmp_path / "src"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    with tarfile.open(tmp_path / "tree.tar", "w") as tar:
        for name in files:
            if (ROOT / name).is_file():
                tar.add(ROOT / name, arcname=name)
    with tarfile.open(tmp_path / "tree.tar") as tar:
        tar.extractall(src)
    target = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                           "--quiet", "--target", str(target), str(src)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    installed = sorted(p.name for p in target.iterdir())
    assert installed == ["bin", "optsar_fusion-0.1.0.dist-info", "optsar_plugin"], installed  # no plugin files
    assert sorted(p.name for p in (target / "optsar_plugin" / "schemes").iterdir()) == [
        "cloudlulc_set.json", "dynamic_world.json", "esa_worldcover.json", "whu_opt_sar.json"]
    # From a folder where the repository's copy cannot be imported: the installed engine is used.
    env = dict(os.environ, PYTHONPATH=str(target))
    code = ("import optsar_plugin, optsar_plugin.classes as c, optsar_plugin.inference, optsar_plugin.batch\n"
            f"assert optsar_plugin.__file__.startswith({str(target)!r}), optsar_plugin.__file__\n"
            "assert set(c.load_known_schemes()) == {'cloudlulc_set', 'dynamic_world', 'esa_worldcover', 'whu_opt_sar'}\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([sys.executable, str(target / "bin" / "optsar"), "models"], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "cloudlulc_net" in proc.stdout, proc.stderr
    proc = subprocess.run([sys.executable, str(target / "bin" / "optsar"), "batch", "-h"], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "--scheduler" in proc.stdout, proc.stderr
