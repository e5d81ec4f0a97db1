"""The engine worker's protocol, without QGIS: events, error kinds, SIGTERM clean-up, the crash switch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from optsar_plugin import worker

ROOT = Path(__file__).resolve().parent.parent
# The worker's own entry point with the test jobs added: one registry line each, as for a real function.
HARNESS = (
    "import optsar_plugin.worker as w\n"
    "for name in ('noisy', 'chatty', 'fail', 'slow'):\n"
    "    w.REGISTRY[name] = ('tests.worker_jobs', name)\n"
    "w.serve()\n"
)


def start(function, crash=None, **kwargs):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop(worker.CRASH_ENV, None)
    if crash:
        env[worker.CRASH_ENV] = crash
    proc = subprocess.Popen([sys.executable, "-c", HARNESS], cwd=ROOT, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdin.write(json.dumps({"protocol": 1, "function": function, "kwargs": kwargs}))
    proc.stdin.close()
    proc.stdin = None  # communicate() must not flush it again
    return proc


def finish(proc, timeout=60):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, [json.loads(line) for line in out.splitlines()], err


def test_events_result_and_a_clean_event_stream():
    rc, events, log = finish(start("noisy"))
    assert rc == worker.EXIT_OK
    assert [e["event"] for e in events] == ["progress", "info", "warning", "result"]
    assert events[0] == {"event": "progress", "fraction": 0.5, "text": "half way"}
    assert events[-1]["value"] == {"array": [0, 1, 2], "scalar": 1.5, "nan": None, "path": "/x"}
    # print() and C-level writes to fd 1 went to the log, not into the event stream
    assert "printed by the job" in log and "written to fd 1 by the job" in log


def test_progress_is_throttled():
    t0 = time.monotonic()
    rc, events, _ = finish(start("chatty", n=20000))
    progress = [e for e in events if e["event"] == "progress"]
    elapsed = time.monotonic() - t0
    assert rc == 0 and events[-1]["value"] == {"n": 20000}
    assert 1 <= len(progress) <= 10 * elapsed + 2, (len(progress), elapsed)


@pytest.mark.parametrize("kind, status", [("input", worker.EXIT_ERROR), ("dependency", worker.EXIT_ERROR),
                                          ("cancelled", worker.EXIT_CANCELLED), ("internal", worker.EXIT_ERROR)])
def test_errors_are_one_event_with_their_kind(kind, status):
    rc, events, log = finish(start("fail", kind=kind))
    assert rc == status
    assert len(events) == 1 and events[0]["event"] == "error" and events[0]["kind"] == kind
    assert "\n" not in events[0]["message"]
    if kind == "internal":
        assert events[0]["message"].startswith("ValueError: something broke")
        assert "Traceback" in log and "worker_jobs.py" in log  # the traceback is in the worker's log only
    else:
        assert "Traceback" not in log


@pytest.mark.parametrize("job", ["not json", json.dumps({"protocol": 2, "function": "noisy"}),
                                 json.dumps({"protocol": 1, "function": "rm -rf"})])
def test_bad_jobs_are_rejected(job):
    proc = subprocess.run([sys.executable, "-m", "optsar_plugin", "worker"], input=job, capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == worker.EXIT_BAD_JOB and events[0]["event"] == "error" and events[0]["kind"] == "internal"


def test_job_from_a_file_runs_a_real_engine_function(tmp_path):
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"protocol": 1, "function": "sample_scene",
                               "kwargs": {"out_dir": str(tmp_path / "scene"), "size": 64, "clouds": False}}))
    proc = subprocess.run([sys.executable, "-m", "optsar_plugin", "worker", "--job", str(job)], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 0, proc.stderr
    assert events[-1]["event"] == "result" and Path(events[-1]["value"]["optical"]).is_file()


def _wait_for_progress(proc, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if '"progress"' in line:
            return
    raise AssertionError("no progress event")


@pytest.mark.parametrize("cooperative", [True, False])
def test_sigterm_cancels_and_removes_temporary_files(tmp_path, cooperative):
    """Cooperative engines see is_canceled(); busy ones get Cancelled raised after the grace period."""
    out = tmp_path / "out.bin"
    proc = start("slow", output=str(out), cooperative=cooperative)
    _wait_for_progress(proc)
    assert [p.name for p in tmp_path.iterdir() if ".tmp" in p.name]  # the job's temporary file exists
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rc, events, log = finish(proc, timeout=10)
    took = time.monotonic() - t0
    assert rc == worker.EXIT_CANCELLED, log
    assert events[-1]["event"] == "error" and events[-1]["kind"] == "cancelled"
    assert list(tmp_path.iterdir()) == []
    assert took < (0.5 if cooperative else worker.CANCEL_GRACE_S + 0.5), took


@pytest.mark.parametrize("mode, status", [("segv", -signal.SIGSEGV), ("abort", -signal.SIGABRT),
                                          ("kill", -signal.SIGKILL), ("exit", 70)])
def test_crash_switch(tmp_path, mode, status):
    proc = start("slow", crash=mode, output=str(tmp_path / "x.bin"), seconds=5)
    rc, events, log = finish(proc)
    assert rc == status
    assert [e["event"] for e in events] == []  # died before any event: the client sees only the exit status
    assert f"test crash '{mode}' at progress" in log


def test_crash_switch_at_start(tmp_path):
    rc, events, _ = finish(start("noisy", crash="exit@start"))
    assert rc == 70 and events == []


def test_to_json_and_error_kind_units():
    from optsar_plugin.errors import Cancelled, CheckpointError, MissingDependencyError, OptsarError, Terminated

    assert worker.to_json({1: (float("inf"), {2})}) == {"1": [None, [2]]}
    assert worker.error_kind(Cancelled("x")) == "cancelled" == worker.error_kind(Terminated("x"))
    assert worker.error_kind(CheckpointError("x")) == "checkpoint"
    assert worker.error_kind(MissingDependencyError("x")) == "dependency"
    assert worker.error_kind(OptsarError("x")) == "input"
    assert worker.error_kind(RuntimeError("x")) == "internal"
    exc = OptsarError("x")
    exc.kind = "checkpoint"
    assert worker.error_kind(exc) == "checkpoint"
