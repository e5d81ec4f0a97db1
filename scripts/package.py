"""Build the installable plugin zip with qgis-plugin-ci from a staged copy.

qgis-plugin-ci run on the repository itself (``plugin_path: .``) writes a zip with
no plugin folder inside, which QGIS cannot install.  So this script stages the
plugin's files (those git tracks, minus development-only paths) under
``build/stage/optsar_fusion/`` in a throw-away git repository with a
``.qgis-plugin-ci`` config pointing there, runs ``qgis-plugin-ci package VERSION``,
and moves ``optsar_fusion.VERSION.zip`` to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = "optsar_fusion"
# Development-only paths that never go into the zip.
EXCLUDE_TOP = {"tests", ".ci", "scripts", "Makefile", "requirements-dev.txt", "pytest.ini", "ruff.toml", ".gitignore", "docs",
               "pyproject.toml"}  # the engine's own pip packaging is not part of the QGIS plugin
# qgis-plugin-ci insists on these keys (plugins.qgis.org needs them to publish).  This plugin is not
# published and has no website, so metadata.txt has none: the staged copy gets stand-ins, which are
# stripped from the zip's metadata.txt again (the shipped metadata names no placeholder address).
CI_ONLY_KEYS = {"tracker": "unpublished", "repository": "unpublished"}


def tracked_files() -> list:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True)
    files = []
    for line in out.stdout.splitlines():
        parts = Path(line).parts
        if not parts or parts[0] in EXCLUDE_TOP or parts[0].startswith(".") or "__pycache__" in parts:
            continue
        if (ROOT / line).is_file():
            files.append(line)
    return files


def build(version: str, out: Path) -> Path:
    stage = ROOT / "build" / "stage"
    shutil.rmtree(stage, ignore_errors=True)
    (stage / PLUGIN).mkdir(parents=True)
    for rel in tracked_files():
        dst = stage / PLUGIN / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dst)
    shutil.copy2(ROOT / "CHANGELOG.md", stage / "CHANGELOG.md")
    with open(stage / PLUGIN / "metadata.txt", "a", encoding="utf-8") as fh:
        fh.writelines(f"{k}={v}\n" for k, v in CI_ONLY_KEYS.items())
    (stage / ".qgis-plugin-ci").write_text(
        f"plugin_path: {PLUGIN}\n"
        "github_organization_name: optsar-fusion\n"
        "project_slug: optsar_fusion\n"
    )
    git = ["git", "-c", "user.name=packager", "-c", "user.email=packager@localhost", "-c", "commit.gpgsign=false"]
    subprocess.run(git + ["init", "-q"], cwd=stage, check=True)
    subprocess.run(git + ["add", "-A"], cwd=stage, check=True)
    subprocess.run(git + ["commit", "-q", "-m", f"package {version}"], cwd=stage, check=True)
    exe = Path(sys.executable).with_name("qgis-plugin-ci")
    subprocess.run([str(exe), "package", version, "--allow-uncommitted-changes"], cwd=stage, check=True)
    zip_path = stage / f"{PLUGIN}.{version}.zip"
    if not zip_path.is_file():
        raise SystemExit(f"qgis-plugin-ci did not write {zip_path.name}: {os.listdir(stage)}")
    out.mkdir(parents=True, exist_ok=True)
    final = out / zip_path.name
    strip_ci_keys(zip_path, final)
    zip_path.unlink()
    print(final)
    return final


def strip_ci_keys(src: Path, dst: Path) -> None:
    """Copy the zip, removing the CI_ONLY_KEYS lines from its metadata.txt."""
    import zipfile

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename == f"{PLUGIN}/metadata.txt":
                lines = data.decode("utf-8").splitlines(keepends=True)
                data = "".join(ln for ln in lines if ln.split("=", 1)[0] not in CI_ONLY_KEYS).encode("utf-8")
            zout.writestr(item, data)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--version", required=True)
    ap.add_argument("--out", default="dist", type=Path)
    a = ap.parse_args()
    build(a.version, (ROOT / a.out) if not a.out.is_absolute() else a.out)
