"""Atomic outputs: write beside the target under a temporary name, publish by renaming.

A failed or cancelled run never leaves a half-written file behind.  ``tempfile.mkstemp``
creates files readable by their owner only (0600); :func:`publish` gives the final file the
permissions a normally created file would get (0666 minus the umask) before renaming it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Union

PathLike = Union[str, os.PathLike]


def _umask() -> int:
    """The process umask, read without changing it (Linux), else the common 022."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def temp_path(final: PathLike, create: bool = True) -> str:
    """A unique temporary name in ``final``'s folder (created empty unless ``create`` is False)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + final.stem + ".", suffix=".tmp" + final.suffix, dir=str(final.parent))
    os.close(fd)
    if not create:
        os.unlink(tmp)  # for writers (GDAL/OGR drivers) that insist on creating the file themselves
    return tmp


def publish(tmp: PathLike, final: PathLike) -> None:
    """Give ``tmp`` ordinary permissions and rename it to ``final`` (atomic on one file system)."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, final)


def discard(tmp: PathLike) -> None:
    try:
        os.unlink(tmp)
    except OSError:
        pass


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        publish(tmp, path)
    except BaseException:
        discard(tmp)
        raise


def atomic_write_text(path: PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
