"""Hostile inputs through the engine's command line and the engine worker (issue 12).

The cases are the table in ``tests/hostile_cases.py``; they run one after the other in one
process (``tests/hostile_runner.py``: ``optsar_plugin.cli.main`` and ``optsar_plugin.worker.run_job``,
the entry points of ``python -m optsar_plugin ...``, with stdout and stderr captured at the file
descriptors), and each case is checked here: exit status, one error line naming the problem and
the file or parameter, no traceback, nothing at the outputs, no temporary file, every input
byte-identical (``tests/hostile.check``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hostile import case_values, check, fill
from tests.hostile_cases import ENGINE_CASES

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def hostile(hostile_data):
    """(placeholder values, results by case name): every engine case run once in one runner process."""
    values = hostile_data
    cases = []
    for case in ENGINE_CASES:
        if case.needs and not values.get(case.needs):
            continue
        v = case_values(values, case)
        cases.append({"name": case.name, "route": case.route, "args": fill(case.args, v), "out": v["O"]})
    root = Path(values["OUT"]).parent
    (root / "engine_cases.json").write_text(json.dumps({"values": values, "cases": cases}, ensure_ascii=False),
                                            encoding="utf-8")
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "hostile_runner.py"), str(root / "engine_cases.json"),
                           str(root / "engine_results.json")], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return values, json.loads((root / "engine_results.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("case", ENGINE_CASES, ids=lambda c: c.name)
def test_hostile_input(hostile, case):
    values, results = hostile
    if case.needs and not values.get(case.needs):
        pytest.skip(f"the data tree has no {case.needs} folder here")
    check(case, results[case.name], case_values(values, case))


def test_the_table_is_large_and_covers_every_engine_command():
    from tests.hostile_cases import ALL

    assert len({c.name for c in ALL}) == len(ALL) >= 100
    commands = {c.args[0] for c in ENGINE_CASES if c.route == "cli"}
    assert commands == {"classify", "train", "assess", "sample", "batch", "make-sample-scene"}
