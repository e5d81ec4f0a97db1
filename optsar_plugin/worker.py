"""The engine worker: ``python -m optsar_plugin worker`` runs ONE job and streams JSON-line events.

QGIS never imports torch (its bundled LLVM in triton clashes with the GL stack QGIS has
loaded); the Processing algorithms hand their job to this process instead.  The QGIS side
of the protocol is ``algorithms/worker_client.py``; both sides are kept small on purpose.

Protocol, version 1
-------------------
Job (stdin, or ``--job FILE``), one JSON object::

    {"protocol": 1, "function": "classify", "kwargs": {"optical": "/a.tif", ...}}

``function`` is a key of :data:`REGISTRY`; ``kwargs`` are its keyword arguments (JSON
values; paths as strings).  A function with a ``feedback`` parameter gets one.

Events (stdout, one JSON object per line, nothing else ever written there)::

    {"event": "progress", "fraction": 0.42, "text": "window 12/30"}   (text may be null; <= 10/s)
    {"event": "info", "message": "..."}
    {"event": "warning", "message": "..."}
    {"event": "result", "value": {...}}          (JSON-safe: numpy, paths, NaN converted)
    {"event": "error", "message": "one line", "kind": "input|checkpoint|dependency|cancelled|internal"}

A run ends with exactly one ``result`` or ``error`` event, then the process exits with
:data:`EXIT_OK`, :data:`EXIT_ERROR`, :data:`EXIT_BAD_JOB` or :data:`EXIT_CANCELLED`.
stderr is the worker's log (tracebacks of unexpected errors go there).  SIGTERM cancels
the job: the engine's ``feedback.is_canceled()`` turns true at once and, if the job has
not stopped :data:`CANCEL_GRACE_S` later, :class:`~optsar_plugin.errors.Terminated` (a
``Cancelled``) is raised in it, so the engine's own clean-up (``fileio.OutputSet``) removes
its temporary files either way.  (This replaces the CLI's ``terminate_on_sigterm``, which
raises at once: a job that polls ``is_canceled()`` stops at a point of its choosing.)  The
worker also cancels itself when its parent process disappears.

``OPTSAR_WORKER_TEST_CRASH=MODE[@start|@progress]`` (tests only) makes the worker die on
purpose: ``segv`` / ``abort`` / ``kill`` (like the kernel's out-of-memory killer) send
that signal to itself, ``exit`` leaves with status 70 without an event, ``hang`` ignores
SIGTERM and sleeps; at the job's start or (default) its first progress report.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import math
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import PurePath
from typing import Any, Callable, Dict, Optional

PROTOCOL = 1
EXIT_OK, EXIT_ERROR, EXIT_BAD_JOB, EXIT_CANCELLED = 0, 1, 2, 3
CANCEL_GRACE_S = 1.0
PROGRESS_INTERVAL_S = 0.1
CRASH_ENV = "OPTSAR_WORKER_TEST_CRASH"

# name -> (module, function), imported only when a job asks for it.  One line per function.
REGISTRY: Dict[str, tuple] = {
    "classify": ("optsar_plugin.inference", "classify"),
    "train": ("optsar_plugin.training", "train"),
    "environment": ("optsar_plugin.environment", "environment_report"),
    "sample_scene": ("optsar_plugin.sample_scene", "make_sample_scene"),
    "batch": ("optsar_plugin.batch", "classify_batch"),
}

# The error kinds of the protocol: an engine error's own ``kind`` (optsar_plugin.errors), else
# "input" for any other OptsarError, "internal" for anything else (a bug: traceback in the log).
KINDS = {"input", "checkpoint", "dependency", "cancelled", "internal"}


class BadJob(Exception):
    """The job itself is malformed (not JSON, unknown function, wrong protocol)."""


def to_json(value: Any) -> Any:
    """``value`` with numpy scalars/arrays, paths, dataclasses, sets and NaN made JSON-safe."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_json(v) for v in value]
    if isinstance(value, PurePath):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_json(dataclasses.asdict(value))
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy arrays and scalars
        return to_json(value.tolist())
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return repr(value)


def error_kind(exc: BaseException) -> str:
    from .errors import OptsarError

    if not isinstance(exc, OptsarError):
        return "internal"
    for owner in (exc, *type(exc).__mro__):  # the most specific kind the protocol knows (Terminated -> cancelled)
        if vars(owner).get("kind") in KINDS:
            return vars(owner)["kind"]
    return "input"


def one_line(text: str) -> str:
    return " ".join(str(text).split()) or "no message"


class EventStream:
    """Writes events as JSON lines to a file object; thread-safe, progress throttled."""

    def __init__(self, stream, interval: float = PROGRESS_INTERVAL_S):
        self._stream = stream
        self._lock = threading.Lock()
        self._interval = interval
        self._last_progress = -math.inf

    def emit(self, event: str, **fields) -> None:
        line = json.dumps({"event": event, **to_json(fields)}, allow_nan=False)
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()

    def progress(self, fraction: float, text: Optional[str] = None) -> None:
        now = time.monotonic()
        fraction = max(0.0, min(1.0, float(fraction)))
        if fraction < 1.0 and now - self._last_progress < self._interval:
            return
        self._last_progress = now
        self.emit("progress", fraction=round(fraction, 4), text=text)


class WorkerFeedback:
    """The engine's Feedback interface on top of the event stream and a cancel flag."""

    def __init__(self, events: EventStream, cancel: threading.Event, on_progress: Callable[[], None] = lambda: None):
        self._events = events
        self._cancel = cancel
        self._on_progress = on_progress

    def progress(self, fraction, message=None):
        self._on_progress()
        self._events.progress(fraction, message)

    def info(self, message):
        self._events.emit("info", message=str(message))

    def warning(self, message):
        self._events.emit("warning", message=str(message))

    def is_canceled(self):
        return self._cancel.is_set()


def read_job(text: str) -> Dict:
    try:
        job = json.loads(text)
    except ValueError as exc:
        raise BadJob(f"The job is not valid JSON ({exc}).") from None
    if not isinstance(job, dict):
        raise BadJob("The job must be a JSON object.")
    if job.get("protocol") != PROTOCOL:
        raise BadJob(f"Protocol {job.get('protocol')!r} is not supported by this worker (it speaks {PROTOCOL}).")
    if job.get("function") not in REGISTRY:
        raise BadJob(f"Unknown function {job.get('function')!r}; known: {', '.join(sorted(REGISTRY))}.")
    if not isinstance(job.get("kwargs", {}), dict):
        raise BadJob("The job's kwargs must be a JSON object.")
    return job


def resolve(name: str) -> Callable:
    module, attr = REGISTRY[name]
    return getattr(importlib.import_module(module), attr)


def call(fn: Callable, kwargs: Dict, feedback) -> Any:
    kwargs = dict(kwargs)
    if "feedback" in inspect.signature(fn).parameters:
        kwargs["feedback"] = feedback
    return fn(**kwargs)


class Canceller:
    """SIGTERM (or the parent's death) -> cancel flag now, :class:`Cancelled` raised after a grace period."""

    def __init__(self, grace: float = CANCEL_GRACE_S):
        self.flag = threading.Event()
        self._grace = grace
        self._raised = False

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._on_term)
        if hasattr(signal, "SIGALRM"):
            signal.signal(signal.SIGALRM, self._on_alarm)
        parent = os.getppid()
        threading.Thread(target=self._watch_parent, args=(parent,), daemon=True).start()

    def _on_term(self, signum, frame):
        if self.flag.is_set():
            return
        self.flag.set()
        if hasattr(signal, "setitimer"):
            signal.setitimer(signal.ITIMER_REAL, self._grace)

    def _on_alarm(self, signum, frame):
        if not self._raised:  # once: the engine's clean-up after it must not be interrupted
            self._raised = True
            from .errors import Terminated

            raise Terminated("Stopped by SIGTERM; no output was written.")

    def disarm(self) -> None:
        self._raised = True
        if hasattr(signal, "setitimer"):
            signal.setitimer(signal.ITIMER_REAL, 0)

    def _watch_parent(self, parent: int) -> None:
        while not self.flag.is_set():
            time.sleep(1.0)
            if os.getppid() != parent:
                os.kill(os.getpid(), signal.SIGTERM)
                return


def test_crash(point: str) -> None:
    """The test-only crash switch (see the module docstring); does nothing unless set."""
    spec = os.environ.get(CRASH_ENV, "")
    if not spec:
        return
    mode, _, at = spec.partition("@")
    if (at or "progress") != point:
        return
    print(f"worker: test crash '{mode}' at {point}", file=sys.stderr, flush=True)
    if mode == "hang":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True:
            time.sleep(1)
    if mode == "exit":
        os._exit(70)
    sig = {"segv": signal.SIGSEGV, "abort": signal.SIGABRT, "kill": getattr(signal, "SIGKILL", signal.SIGTERM)}[mode]
    if mode != "kill":
        signal.signal(sig, signal.SIG_DFL)
    os.kill(os.getpid(), sig)
    time.sleep(5)


def run_job(job_text: str, events: EventStream, canceller: Canceller) -> int:
    """Run one job, emit its result or error event, return the exit status."""
    try:
        job = read_job(job_text)
    except BadJob as exc:
        events.emit("error", message=str(exc), kind="internal")
        return EXIT_BAD_JOB
    crashed = []

    def on_progress():
        if not crashed:
            crashed.append(True)
            test_crash("progress")

    feedback = WorkerFeedback(events, canceller.flag, on_progress)
    try:
        test_crash("start")
        fn = resolve(job["function"])
        value = call(fn, job.get("kwargs") or {}, feedback)
        canceller.disarm()
        events.emit("result", value=value)
        # A job that stopped early on cancel may still return (training keeps its best epoch).
        return EXIT_CANCELLED if canceller.flag.is_set() else EXIT_OK
    except BaseException as exc:  # noqa: BLE001 - every failure becomes one error event
        canceller.disarm()
        cancelled = canceller.flag.is_set() or isinstance(exc, KeyboardInterrupt)
        kind = "cancelled" if cancelled else error_kind(exc)
        if kind == "internal":
            traceback.print_exc(file=sys.stderr)
            message = f"{type(exc).__name__}: {one_line(exc)} (the worker's traceback is in its log)"
        else:
            message = one_line(exc)
        events.emit("error", message=message, kind=kind)
        return EXIT_CANCELLED if kind == "cancelled" else EXIT_ERROR


def serve(job_text: Optional[str] = None) -> int:
    """Entry point: events to the real stdout, everything else printed goes to stderr."""
    event_fd = os.dup(sys.stdout.fileno())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # C libraries' printf goes to the log
    sys.stdout = sys.stderr
    events = EventStream(os.fdopen(event_fd, "w", encoding="utf-8", buffering=1))
    canceller = Canceller()
    canceller.install()
    if job_text is None:
        job_text = sys.stdin.read()
    status = run_job(job_text, events, canceller)
    sys.stderr.flush()
    # os._exit: a lingering non-daemon thread (a reader, a DataLoader) must not keep the process alive.
    os._exit(status)


def add_arguments(parser) -> None:
    parser.description = "Run one engine job (JSON on stdin or --job FILE) and stream JSON-line events on stdout."
    parser.add_argument("--job", default=None, help="read the job from this file instead of stdin")


def run_cli(args, feedback) -> int:
    text = None
    if args.job:
        with open(args.job, encoding="utf-8") as fh:
            text = fh.read()
    return serve(text)
