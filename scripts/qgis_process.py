"""Run ``qgis_process.bin`` with the project's profile and plugin path (as ``make qgis_process`` does).

Used by ``scripts/demo.py`` and, through ``tests/helpers.py``, by the tests.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QGIS_PROCESS = "/usr/bin/qgis_process.bin"  # Debian's /usr/bin/qgis_process wrapper is broken on 3.22


def qgis_env(profile: Path = ROOT / ".qgis-profile", plugin_path: Path = ROOT / ".qgis-plugins",
             extra_env: dict = None) -> dict:
    env = dict(os.environ)
    tmp = ROOT / ".qgis-tmp"
    tmp.mkdir(exist_ok=True)
    env.update(
        QT_QPA_PLATFORM="offscreen",
        QGIS_PLUGINPATH=str(plugin_path),
        QGIS_CUSTOM_CONFIG_PATH=str(profile),
        PYTHONUSERBASE=str(ROOT / ".venv"),
        TMPDIR=str(tmp),
        PYTHONDONTWRITEBYTECODE="1",
    )
    env.update(extra_env or {})
    return env


def run_qgis_process(args, check: bool = True, timeout: float = 600, **env_kwargs) -> subprocess.CompletedProcess:
    """Run ``qgis_process.bin ARGS``; with ``check``, a non-zero exit fails with its output."""
    proc = subprocess.run(
        [QGIS_PROCESS, *map(str, args)],
        env=qgis_env(**env_kwargs),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"qgis_process {' '.join(map(str, args))} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
        )
    return proc


def run_algorithm_json(algorithm: str, params: dict, **kwargs) -> dict:
    """``qgis_process.bin run ALG --json -- KEY=VALUE ...`` and return the parsed JSON (``results`` inside)."""
    args = ["run", algorithm, "--json", "--"]
    for key, value in params.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            args.append(f"{key}={v}")
    proc = run_qgis_process(args, **kwargs)
    return json.loads(proc.stdout[proc.stdout.index("{"):])
