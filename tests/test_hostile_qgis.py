"""Hostile inputs through ``qgis_process`` and ``processing.run`` (issue 12).

The ``qgis_process`` and ``processing`` cases of ``tests/hostile_cases.py``: real ``qgis_process``
runs (what batch users and scripts see: exit status 1, the message on one line, no traceback,
no abort), and the same inputs through ``processing.run`` in this test's QGIS process (what a
Toolbox dialog or a console script sees: a ``QgsProcessingException`` with one line).  Each is
checked like every other case (``tests/hostile.check``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.helpers import QGIS_PROCESS, qgis_env
from tests.hostile import case_values, check, diff, fill, run_subprocess_case, snapshot
from tests.hostile_cases import QGIS

ROOT = Path(__file__).resolve().parent.parent
CHECK_HEADER = "An error was encountered while checking parameter values"


def qgis_messages(text: str):
    """The error message lines qgis_process printed, without its framing (and each once: it repeats them)."""
    lines = text.splitlines()
    out = []
    for i, line in enumerate(lines):
        if CHECK_HEADER in line:
            out += [x.strip() for x in lines[i + 1:] if x.startswith("\t") and x.strip()][:5]
        elif line.startswith("ERROR:\t") and CHECK_HEADER not in line:
            out.append(line[len("ERROR:\t"):].strip())
    return list(dict.fromkeys(out))


def qgis_args(case, values):
    a = fill(case.args, values)
    args = [QGIS_PROCESS, "run", a["algorithm"], "--"]
    for key, value in a["params"].items():
        for v in value if isinstance(value, list) else [value]:
            args.append(f"{key}={v}")
    return args


@pytest.mark.parametrize("case", [c for c in QGIS if c.route == "qgis_process"], ids=lambda c: c.name)
def test_qgis_process(hostile_data, case):
    v = case_values(hostile_data, case)
    result = run_subprocess_case(case, hostile_data, qgis_args(case, v), env=qgis_env(), cwd=ROOT)
    result["message"] = qgis_messages(result["text"])
    assert "Aborted" not in result["text"] and result["status"] >= 0, result["text"][-2000:]
    check(case, result, v)


class _Log:
    """A QgsProcessingFeedback that keeps every message (checked for tracebacks)."""

    def __init__(self):
        from qgis.core import QgsProcessingFeedback

        self.feedback = QgsProcessingFeedback()
        self.lines = []
        for signal in (self.feedback.progressTextChanged,):
            signal.connect(self.lines.append)


@pytest.mark.parametrize("case", [c for c in QGIS if c.route == "processing"], ids=lambda c: c.name)
def test_processing_run(processing_provider, hostile_data, case):
    import processing
    from qgis.core import QgsProcessingException

    v = case_values(hostile_data, case)
    a = fill(case.args, v)
    before = snapshot(Path(hostile_data["D"]))
    t0 = time.perf_counter()
    try:
        processing.run(a["algorithm"], a["params"])
        status, text = 0, ""
    except QgsProcessingException as exc:
        status, text = 1, str(exc)
    # processing.run frames a refusal of checkParameterValues with its own first line
    message = [line for line in text.splitlines() if line.strip() and line.strip() != "Unable to execute algorithm"]
    result = {"status": status, "text": text, "message": message, "seconds": time.perf_counter() - t0,
              "data": diff(before, snapshot(Path(hostile_data["D"]))), "out_files": sorted(os.listdir(v["O"]))}
    check(case, result, v)
