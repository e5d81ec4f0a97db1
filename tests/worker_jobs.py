"""Engine-like jobs for the worker protocol tests (registered by tests/test_worker.py, never shipped)."""

from __future__ import annotations

import os
import sys
import time

from optsar_plugin import errors
from optsar_plugin.fileio import discard, publish, temp_path
from optsar_plugin.progress import check_cancel


def noisy(feedback=None):
    """Talks on every channel a library might use: print, C-level stdout, feedback."""
    print("printed by the job")
    os.write(1, b"written to fd 1 by the job\n")
    sys.stdout.flush()
    feedback.progress(0.5, "half way")
    feedback.info("an info")
    feedback.warning("a warning")
    import numpy as np

    return {"array": np.arange(3), "scalar": np.float32(1.5), "nan": float("nan"), "path": __import__("pathlib").Path("/x")}


def chatty(n=1000, feedback=None):
    for i in range(n):
        feedback.progress(i / n, f"step {i}")
    return {"n": n}


def fail(kind="input"):
    raise {"input": errors.OptsarError("The optical raster '/x.tif' does not exist."),
           "dependency": errors.MissingDependencyError("The Python package 'torch' is needed."),
           "cancelled": errors.Cancelled("Cancelled by the user."),
           "internal": ValueError("something\nbroke")}[kind]


def slow(output, seconds=30.0, cooperative=True, feedback=None):
    """Writes a temporary file beside ``output`` and works on it; removes it on any failure."""
    tmp = temp_path(output)
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            if cooperative:
                check_cancel(feedback)
                time.sleep(0.02)
            else:
                sum(range(20000))  # busy Python code that never asks whether it was cancelled
            feedback.progress((time.monotonic() - t0) / seconds, "working")
        publish(tmp, output)
    except BaseException:
        discard(tmp)
        raise
    return {"output": output}
