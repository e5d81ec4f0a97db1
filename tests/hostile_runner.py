"""Runs hostile cases of the ``cli`` and ``worker`` routes in one process: ``python tests/hostile_runner.py IN OUT``.

Starting Python and importing torch costs seconds per process; the cases run here one after the
other through the same entry points a process runs - ``optsar_plugin.cli.main(argv)`` (what
``python -m optsar_plugin`` calls) and ``optsar_plugin.worker.run_job`` (what ``python -m
optsar_plugin worker`` calls) - with file descriptors 1 and 2 captured, so that anything printed by
Python, GDAL or C code is seen.  The real processes (signals, the protocol's plumbing) are run by
``tests/test_hostile_signals.py`` and the worker's own tests.

IN: JSON ``{"values": {...}, "cases": [{"name", "route", "args"}]}`` (placeholders filled in, ``O`` per case);
OUT: JSON ``{name: {"status", "text", "message", "seconds", "data", "out_files"}}`` (see ``tests/hostile.check``).
The address space is limited (a memory bomb must fail, not take the machine) and each case has a time limit.
"""

from __future__ import annotations

import io
import json
import os
import resource
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.hostile import diff, error_lines, snapshot  # noqa: E402

MEMORY_LIMIT = 8 << 30  # bytes of address space: torch's CUDA build maps ~3 GB at import
CASE_SECONDS = 120


class CaseTimeout(BaseException):
    pass


def _alarm(signum, frame):
    raise CaseTimeout()


def _captured(fn):
    """(fn's result or exception text, everything written to fd 1 and 2 meanwhile)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            value = fn()
        except SystemExit as exc:  # argparse
            value = exc.code if isinstance(exc.code, int) else 2
        except CaseTimeout:
            value = "timeout"
        except BaseException:  # noqa: BLE001 - an exception escaping an entry point is what the suite looks for
            traceback.print_exc()
            value = "exception"
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
        sink.seek(0)
        return value, sink.read().decode("utf-8", "replace")


def run_cli(args):
    from optsar_plugin import cli

    status, text = _captured(lambda: cli.main(list(args)))
    return status, text, error_lines(text)


def run_worker(job):
    from optsar_plugin.worker import PROTOCOL, Canceller, EventStream, run_job

    stream = io.StringIO()
    text = job if isinstance(job, str) else json.dumps({"protocol": PROTOCOL, **job})
    status, log = _captured(lambda: run_job(text, EventStream(stream), Canceller()))
    events = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    errors = [e["message"] for e in events if e.get("event") == "error"]
    return status, stream.getvalue() + "\n" + log, [m for e in errors for m in e.splitlines()] or errors


def main(argv) -> int:
    src, dst = argv
    job = json.loads(Path(src).read_text(encoding="utf-8"))
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    signal.signal(signal.SIGALRM, _alarm)
    data = Path(job["values"]["D"])
    results = {}
    for case in job["cases"]:
        out_dir = Path(case["out"])
        before = snapshot(data)
        signal.alarm(CASE_SECONDS)
        t0 = time.perf_counter()
        try:
            status, text, message = (run_cli if case["route"] == "cli" else run_worker)(case["args"])
        finally:
            signal.alarm(0)
        seconds = time.perf_counter() - t0
        results[case["name"]] = {"status": status, "text": text, "message": message, "seconds": seconds,
                                 "data": diff(before, snapshot(data)), "out_files": sorted(os.listdir(out_dir))}
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # cli.main installed its handler
    Path(dst).write_text(json.dumps(results), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
