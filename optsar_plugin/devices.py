"""Choosing the torch device: CUDA when there is one, the CPU otherwise, said loudly."""

from __future__ import annotations

from .deps import require_torch
from .errors import InputError
from .progress import NullFeedback


def describe_cuda(torch) -> str:
    props = torch.cuda.get_device_properties(0)
    return f"{props.name}, {props.total_memory / 2**30:.1f} GiB"


def resolve_device(name: str = "auto", feedback=None):
    """'auto' | 'cuda' | 'cuda:N' | 'cpu' -> ``torch.device``; logs the choice through ``feedback``."""
    torch = require_torch("running a model")
    feedback = feedback or NullFeedback()
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            dev = torch.device("cuda")
            feedback.info(f"Using CUDA device: {describe_cuda(torch)}")
            return dev
        feedback.warning(
            "No CUDA GPU is available: running on the CPU, which is much slower. "
            "Check 'OptSAR Fusion > Check environment' if you expected a GPU."
        )
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(
                "DEVICE is 'cuda' but torch sees no CUDA GPU (torch "
                f"{torch.__version__}, CUDA build {torch.version.cuda}). Use 'auto' or 'cpu'."
            )
        dev = torch.device(name)
        feedback.info(f"Using CUDA device: {describe_cuda(torch)}")
        return dev
    if name == "cpu":
        feedback.info("Using the CPU.")
        return torch.device("cpu")
    raise InputError(f"Unknown device '{name}': use auto, cuda or cpu.")
