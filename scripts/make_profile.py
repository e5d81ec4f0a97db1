"""Write a QGIS profile (QGIS_CUSTOM_CONFIG_PATH layout) in which OptSAR Fusion is enabled.

Usage: python scripts/make_profile.py PROFILE_ROOT [PLUGIN_NAME]
"""

import configparser
import sys
from pathlib import Path


def make_profile(root: Path, plugin: str = "optsar_fusion") -> Path:
    ini = root / "profiles" / "default" / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True, exist_ok=True)
    cfg = configparser.RawConfigParser()
    cfg.optionxform = str  # keep key case
    if ini.exists():
        cfg.read(ini)
    if not cfg.has_section("PythonPlugins"):
        cfg.add_section("PythonPlugins")
    cfg.set("PythonPlugins", plugin, "true")
    with ini.open("w") as fh:
        cfg.write(fh, space_around_delimiters=False)
    (root / "profiles" / "default" / "processing" / "models").mkdir(parents=True, exist_ok=True)
    return ini


if __name__ == "__main__":
    make_profile(Path(sys.argv[1]).resolve(), *(sys.argv[2:3]))
