"""Lazy access to the heavy dependencies, with messages that say how to install them."""

from __future__ import annotations

import importlib

from .errors import MissingDependencyError

INSTALL_HINT = (
    "Prepare the engine worker's Python with the Processing algorithm "
    "'OptSAR Fusion > Setup > Install dependencies' (optsar:installdependencies), or run "
    "'python -m pip install -r requirements.txt' (from the plugin folder) in the Python that runs the engine."
)


def require(module: str, purpose: str = "this operation"):
    """Import ``module`` or raise :class:`MissingDependencyError` naming it and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # includes a torchvision/timm mismatch surfacing as ImportError
        raise MissingDependencyError(
            f"The Python package '{module}' is needed for {purpose} but cannot be imported "
            f"({exc}). {INSTALL_HINT}"
        ) from exc


def require_torch(purpose: str = "this operation"):
    return require("torch", purpose)
