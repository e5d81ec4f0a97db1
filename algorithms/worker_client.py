"""Runs engine jobs in the worker process: the QGIS side of the protocol in ``optsar_plugin/worker.py``.

torch, torchvision, timm and triton never load in QGIS (triton's bundled LLVM crashes a QGIS
that has loaded Mesa's GL).  :func:`run_job` starts ``PYTHON -m optsar_plugin worker``, writes
the job (``{"protocol": 1, "function": ..., "kwargs": ...}``) to its stdin and relays its
JSON-line events: progress to the bar, info and warnings to the log (at most
:data:`MAX_LOG_LINES` lines a run), the result back to the algorithm.  Cancel terminates the
worker (SIGTERM: the engine stops and removes its temporary files) and kills it if it is still
there after :data:`TERMINATE_GRACE_S`.  A worker that dies (a signal, an exit status without a
result) becomes one ``QgsProcessingException`` naming the signal or status and the last lines
of its log; whatever it left half-written beside the outputs is removed.

``subprocess.Popen`` rather than ``QProcess``: the algorithm runs in a Processing background
thread (the dialog), in the main thread (``processing.run`` in the console) or in
``qgis_process``; ``QProcess`` needs an event loop in the thread that owns it, ``Popen`` and
two reader threads need nothing and behave the same everywhere.

Which Python runs the worker (the first that applies): the provider setting "Python for the
engine worker" (:data:`SETTING`, Processing > Options > Providers > OptSAR Fusion); the
environment variable :data:`ENV_VAR`; the environment ``optsar:installdependencies`` prepares
(:func:`managed_env_dir`); a ``.venv`` in the plugin folder (a development checkout).  Never
``sys.executable``: inside QGIS on Linux that is the QGIS binary.
"""

from __future__ import annotations

import collections
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from typing import Dict, Iterable, List, Optional, Tuple

from qgis.core import QgsApplication, QgsProcessingException

PLUGIN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTOCOL = 1
SETTING = "OPTSAR_WORKER_PYTHON"
SETTING_LABEL = "Python for the engine worker (empty: found automatically)"
ENV_VAR = "OPTSAR_PYTHON"
TERMINATE_GRACE_S = 1.5
POLL_S = 0.05
MAX_LOG_LINES = 16
LOG_TAIL_MESSAGES = 4
LOG_TAIL_LINES = 8
INSTALL_HINT = (
    "Run 'OptSAR Fusion > Setup > Install dependencies' (optsar:installdependencies), or name a Python that has "
    "PyTorch in Processing > Options > Providers > OptSAR Fusion > 'Python for the engine worker' "
    f"(or the environment variable {ENV_VAR})."
)


# -- which Python ------------------------------------------------------------------------------


def managed_env_dir() -> str:
    """Where optsar:installdependencies prepares the worker environment: in the QGIS profile, so a plugin
    update (which replaces the plugin folder) keeps it."""
    return os.path.join(QgsApplication.qgisSettingsDirPath(), "optsar_fusion", "worker-env")


def configured_python() -> str:
    try:
        from processing.core.ProcessingConfig import ProcessingConfig
    except ImportError:  # Processing is not loaded (a bare QgsApplication)
        return ""
    return str(ProcessingConfig.getSetting(SETTING) or "").strip()


def find_python() -> Tuple[str, str]:
    """(interpreter, where it came from), or QgsProcessingException saying how to get one."""
    for value, source in ((configured_python(), f"the provider setting '{SETTING_LABEL}'"),
                          (os.environ.get(ENV_VAR, "").strip(), f"the environment variable {ENV_VAR}")):
        if value:
            if not (os.path.isfile(value) and os.access(value, os.X_OK)):
                raise QgsProcessingException(f"The Python named by {source} does not exist or is not executable: {value}")
            return value, source
    from optsar_plugin.installer import venv_python

    for env_dir, source in ((managed_env_dir(), "the environment prepared by optsar:installdependencies"),
                            (os.path.join(PLUGIN_DIR, ".venv"), "the plugin folder's .venv")):
        exe = venv_python(env_dir)
        if os.path.isfile(exe):
            return exe, source
    raise QgsProcessingException("No Python with PyTorch for the OptSAR Fusion engine was found. " + INSTALL_HINT)


def worker_env(python: str) -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PLUGIN_DIR, env.get("PYTHONPATH", "")) if p)
    env["PYTHONIOENCODING"] = "utf-8"
    home = env.get("PYTHONHOME")
    if home and not os.path.abspath(python).startswith(os.path.abspath(home)):
        del env["PYTHONHOME"]  # QGIS's own Python home would break another interpreter
    return env


# -- outputs: what a failed run must not leave behind --------------------------------------------


class OutputGuard:
    """Remembers the output folders before a run; :meth:`clean` removes what a failed run left there:
    outputs that did not exist before and their sidecars, and the temporary files of processes that no
    longer run (:func:`optsar_plugin.fileio.sweep_leftovers`: those of another run writing into the same
    folder at the same time are left alone)."""

    def __init__(self, outputs: Iterable[Optional[str]]):
        self.outputs = [os.path.abspath(p) for p in outputs if p]
        self.existed = {p: os.path.exists(p) for p in self.outputs}
        self.before = {d: set(_listdir(d)) for d in {os.path.dirname(p) for p in self.outputs}}

    def clean(self) -> List[str]:
        from optsar_plugin.fileio import sweep_leftovers  # the engine's own rule for a killed run's files

        removed = [os.path.basename(p) for d in self.before for p in sweep_leftovers(d)]
        for out in self.outputs:
            folder, name = os.path.split(out)
            stem = os.path.splitext(name)[0]
            for entry in set(_listdir(folder)) - self.before.get(folder, set()):
                if not self.existed[out] and entry in (name, name + ".aux.xml", stem + ".qml"):
                    try:
                        os.remove(os.path.join(folder, entry))
                        removed.append(entry)
                    except OSError:
                        pass
        return removed


def _listdir(folder: str) -> List[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []


# -- the log: at most MAX_LOG_LINES relayed lines a run ------------------------------------------


class LogRelay:
    """Progress to the bar (always), messages to the log: the first ones as they come, the last
    :data:`LOG_TAIL_MESSAGES` at the end (a training's final epochs), one line for those in between;
    progress text once a quarter.  At most ``max_lines`` + 1 lines a run."""

    def __init__(self, feedback, max_lines: int = MAX_LOG_LINES):
        self.fb = feedback
        self.left = max_lines - LOG_TAIL_MESSAGES
        self.tail: collections.deque = collections.deque(maxlen=LOG_TAIL_MESSAGES)
        self.suppressed = 0
        self.quarter = -1

    def _push(self, kind: str, message: str) -> None:
        if kind == "warning":
            self.fb.reportError(message, fatalError=False)
        elif kind == "text":
            self.fb.setProgressText(message)
        else:
            self.fb.pushInfo(message)

    def _line(self, kind: str, message: str) -> None:
        if self.fb is None:
            return
        if self.left > 0:
            self.left -= 1
            self._push(kind, message)
        elif kind != "text":
            if len(self.tail) == self.tail.maxlen:
                self.suppressed += 1
            self.tail.append((kind, message))

    def progress(self, fraction, text=None) -> None:
        if self.fb is None:
            return
        self.fb.setProgress(100.0 * max(0.0, min(1.0, float(fraction or 0.0))))
        quarter = int(4 * float(fraction or 0.0))
        if text and quarter > self.quarter:
            self.quarter = quarter
            self._line("text", text)

    def info(self, message) -> None:
        self._line("info", message)

    def warning(self, message) -> None:
        self._line("warning", message)

    def close(self) -> None:
        if self.fb is None:
            return
        if self.suppressed:
            self.fb.pushInfo(f"({self.suppressed} engine message(s) not shown.)")
        for kind, message in self.tail:
            self._push(kind, message)
        self.tail.clear()


# -- running a job -------------------------------------------------------------------------------


class WorkerRun:
    """One worker process: start, relay events, cancel, and tell how it ended."""

    def __init__(self, python: str, function: str, kwargs: Dict, relay: LogRelay):
        self.python, self.function, self.relay = python, function, relay
        self.events: queue.Queue = queue.Queue()
        self.log_tail: collections.deque = collections.deque(maxlen=40)
        self.result = self.error = None
        self.cancelled = False
        job = json.dumps({"protocol": PROTOCOL, "function": function, "kwargs": kwargs})
        popen_kw = {"start_new_session": True} if os.name == "posix" else {"creationflags": 0x08000000}
        try:
            self.proc = subprocess.Popen(
                [python, "-m", "optsar_plugin", "worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, env=worker_env(python), cwd=PLUGIN_DIR, **popen_kw)
        except OSError as exc:
            raise QgsProcessingException(f"Cannot start the engine worker '{python}': {exc.strerror or exc}. "
                                         + INSTALL_HINT) from None
        self._readers = [threading.Thread(target=self._read_events, daemon=True),
                         threading.Thread(target=self._read_log, daemon=True)]
        for t in self._readers:
            t.start()
        try:
            self.proc.stdin.write(job.encode("utf-8"))
            self.proc.stdin.close()
        except OSError:
            pass  # the worker died at once; its exit status says why

    def _read_events(self) -> None:
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").strip()
            try:
                event = json.loads(line)
            except ValueError:
                event = None
            if isinstance(event, dict) and "event" in event:
                self.events.put(event)
            elif line:
                self.log_tail.append(line)
        self.events.put(None)

    def _read_log(self) -> None:
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self.log_tail.append(line)

    def handle(self, event: Dict) -> None:
        kind = event.get("event")
        if kind == "progress":
            self.relay.progress(event.get("fraction", 0.0), event.get("text"))
        elif kind == "info":
            self.relay.info(str(event.get("message", "")))
        elif kind == "warning":
            self.relay.warning(str(event.get("message", "")))
        elif kind == "result":
            self.result = event
        elif kind == "error":
            self.error = event

    def wait(self, is_canceled) -> None:
        """Relay events until the worker's stdout closes; on cancel terminate (then kill) it."""
        done = False
        while not done:
            try:
                event = self.events.get(timeout=POLL_S)
            except queue.Empty:
                event = False
            if event is None:
                done = True
            elif event:
                self.handle(event)
            if not done and not self.cancelled and is_canceled():
                self.cancel()
                done = self._drain()
        self.proc.wait()
        for t in self._readers:
            t.join(timeout=1.0)

    def cancel(self) -> None:
        self.cancelled = True
        if self.proc.poll() is None:
            self.proc.terminate()

    def _drain(self) -> bool:
        """After SIGTERM: keep relaying until the worker ends, kill it after the grace period."""
        deadline = time.monotonic() + TERMINATE_GRACE_S
        while time.monotonic() < deadline:
            try:
                event = self.events.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if event is None:
                return True
            self.handle(event)
        self.kill()
        return True

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                if os.name == "posix":
                    os.killpg(self.proc.pid, signal.SIGKILL)
                else:
                    self.proc.kill()
            except OSError:
                pass

    def death_message(self) -> str:
        rc = self.proc.returncode
        if rc is not None and rc < 0:
            try:
                name = signal.Signals(-rc).name
            except ValueError:
                name = f"signal {-rc}"
            how = f"was killed by signal {-rc} ({name})"
            if -rc == getattr(signal, "SIGKILL", -1):
                how += ", often the system's out-of-memory killer: try a smaller TILE_SIZE or BATCH_SIZE"
        else:
            how = f"exited with status {rc} without a result"
        tail = "\n".join("    " + line for line in list(self.log_tail)[-LOG_TAIL_LINES:]) or "    (nothing)"
        return (f"The OptSAR Fusion engine worker ({self.python}) {how} while running '{self.function}'. "
                f"QGIS itself is unaffected. The worker's last log lines:\n{tail}")


def run_job(function: str, kwargs: Dict, feedback=None, outputs: Iterable[Optional[str]] = (),
            python: Optional[str] = None) -> Dict:
    """Run ``function(**kwargs)`` in the worker; returns its result value (a JSON dict).

    ``outputs``: the files the job writes; a failed, cancelled or crashed run leaves none of
    them (nor their temporary siblings) behind.  Raises ``QgsProcessingException`` otherwise.
    """
    python = python or find_python()[0]
    guard = OutputGuard(outputs)
    relay = LogRelay(feedback)
    run = WorkerRun(python, function, kwargs, relay)
    try:
        run.wait(lambda: bool(feedback is not None and feedback.isCanceled()))
    finally:
        run.kill()  # never leave a worker behind (an exception in the relay, a KeyboardInterrupt)
        relay.close()
    if run.result is not None:
        return run.result.get("value") or {}
    guard.clean()
    if run.error is not None:
        message = str(run.error.get("message") or "The engine failed.")
        if run.error.get("kind") == "cancelled" or run.cancelled:
            message = "Cancelled: nothing was written."
        elif run.error.get("kind") == "dependency" and "installdependencies" not in message:
            message += " " + INSTALL_HINT
        raise QgsProcessingException(message)
    if run.cancelled:
        raise QgsProcessingException("Cancelled: the engine worker was stopped and nothing was written.")
    raise QgsProcessingException(run.death_message())


def qgis_python_summary() -> Dict[str, str]:
    """QGIS's own Python (for optsar:checkenvironment); looks for a torch package on sys.path without importing it."""
    found = any(os.path.isdir(os.path.join(p, "torch")) for p in sys.path if isinstance(p, str) and p)
    return {
        "version": sys.version.split()[0],
        "executable": sys.executable,
        "torch_importable": "yes (not imported)" if found else "no",
    }
