"""One scene on a Dask worker: :func:`run_scene`, the task the batch layer maps over the scenes.

The task is idempotent, so Dask may run it again when a worker dies mid-scene:

* it first looks at the scene's map: when ``DIR/<name>.tif`` exists and its tag
  ``OPTSAR_BATCH_ID`` equals this run's :func:`scene_identity` (checkpoint weights hash,
  the inputs' paths, sizes and modification times, the options that change the map), the
  scene is ``skipped`` and its class areas are read from the map's tags;
* otherwise it calls :func:`optsar_plugin.inference.classify`, whose
  :class:`~optsar_plugin.fileio.OutputSet` writes to hidden temporary files and renames
  them only when the map is complete; a killed attempt leaves temporary files that the
  next attempt's ``OutputSet`` in the same folder removes (their process is gone).

The network is loaded once per worker: :class:`EngineWorkerPlugin` (registered on every
worker by the batch layer) holds a :class:`~optsar_plugin.inference.NetworkCache`, the
torch thread count and the worker's GPU.  Every outcome is a record (a dict, one line of
the manifest); a problem with the scene is a ``failed`` record with its one-line message,
never an exception, so one bad scene never stops the others.

``OPTSAR_BATCH_TEST_KILL=NAME:MARKER`` (tests only) makes the worker running scene ``NAME``
kill itself with SIGKILL at the scene's first progress report, once (``MARKER`` is a file
created just before, so the rescheduled attempt runs normally).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from ..errors import Cancelled, OptsarError
from ..progress import NullFeedback
from ..raster_io import area_unit

PLUGIN_NAME = "optsar-engine"
ID_TAG = "OPTSAR_BATCH_ID"
KILL_ENV = "OPTSAR_BATCH_TEST_KILL"
CANCEL_POLL_S = 0.5
MAX_MESSAGES = 8  # warnings/infos kept per scene in its record
# InferenceOptions fields that do not change the map (so a rerun on another device still skips)
NOT_IN_IDENTITY = ("device", "batch_size")


@dataclass(frozen=True)
class SceneJob:
    """What one task needs: the scene, the checkpoint and its weights hash, the options, where to write."""

    scene: object  # a SceneSpec
    checkpoint: str
    checkpoint_hash: str
    options: Dict  # InferenceOptions.to_dict()
    output_dir: str
    cancel_event: Optional[str] = None  # name of the distributed.Event that cancels the batch

    @property
    def output(self) -> str:
        return self.scene.output(self.output_dir)


def _file_identity(path: Optional[str]) -> List:
    if not path:
        return [None]
    if "://" in path or path.startswith("/vsi"):
        return [path]
    try:
        st = os.stat(path)
    except OSError:
        return [os.path.abspath(path), "missing"]
    return [os.path.realpath(path), st.st_size, st.st_mtime_ns]


def scene_identity(job: SceneJob) -> str:
    """Hex digest of what makes the map: weights hash, input files (path, size, mtime) and map-changing options."""
    s = job.scene
    what = {
        "checkpoint": job.checkpoint_hash,
        "inputs": [_file_identity(p) for p in (s.optical, s.sar, s.cloud_mask)],
        "options": {k: v for k, v in sorted(job.options.items()) if k not in NOT_IN_IDENTITY},
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()


# -- per-worker state ---------------------------------------------------------------------------


def _worker_plugin_base():
    try:
        from distributed.diagnostics.plugin import WorkerPlugin
    except ImportError:  # the task also runs without Dask (tests, a plain loop)
        return object
    return WorkerPlugin


class EngineWorkerPlugin(_worker_plugin_base()):
    """Per-worker engine state: the network cache, torch's thread count, the worker's GPU.

    ``threads``: torch intra-op threads for this worker (the cores divided among the
    workers of one machine; None leaves torch's default).  On a machine with several GPUs
    the worker whose name is the integer *k* uses GPU *k* modulo their number (a
    LocalCluster names its workers 0, 1, ...); a ``dask worker`` started with one GPU
    visible (``CUDA_VISIBLE_DEVICES``) uses that one.
    """

    name = PLUGIN_NAME

    def __init__(self, threads: Optional[int] = None):
        self.threads = threads
        self.networks = None
        self.worker_name = None

    def setup(self, worker=None):
        from ..inference import NetworkCache

        self.networks = NetworkCache()
        self.worker_name = getattr(worker, "name", None)
        if self.threads:
            import torch

            torch.set_num_threads(int(self.threads))

    def device(self, requested: str) -> str:
        """The device this worker uses for ``requested`` (auto/cuda become this worker's GPU on multi-GPU machines)."""
        if requested not in ("auto", "cuda"):
            return requested
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count > 1 and isinstance(self.worker_name, int):
            return f"cuda:{self.worker_name % count}"
        return requested


def _this_worker():
    try:
        from distributed import get_worker

        return get_worker()
    except (ImportError, ValueError):  # not inside a Dask worker
        return None


# -- feedback inside a task ---------------------------------------------------------------------


class TaskFeedback(NullFeedback):
    """Collects a scene's messages for its record; cancelled when the batch's Dask event is set."""

    def __init__(self, job: SceneJob):
        self.messages: List[str] = []
        self._event = None
        self._next_poll = 0.0
        self._cancelled = False
        self._thread = threading.get_ident()
        self._kill = _kill_switch(job.scene.name)
        if job.cancel_event and _this_worker() is not None:
            from distributed import Event

            self._event = Event(job.cancel_event)

    def info(self, message: str) -> None:
        self._keep(message)

    def warning(self, message: str) -> None:
        self._keep("WARNING: " + message)

    def _keep(self, message: str) -> None:
        if len(self.messages) < MAX_MESSAGES:
            self.messages.append(" ".join(str(message).split()))

    def progress(self, fraction: float, message: Optional[str] = None) -> None:
        if self._kill is not None:
            self._kill()

    def is_canceled(self) -> bool:
        # Only the task's own thread asks the scheduler (a Dask client call from the engine's reader
        # thread would fail); other threads see the last answer.
        if self._cancelled or self._event is None or threading.get_ident() != self._thread:
            return self._cancelled
        now = time.monotonic()
        if now >= self._next_poll:  # one scheduler round trip per CANCEL_POLL_S at most
            self._next_poll = now + CANCEL_POLL_S
            try:
                self._cancelled = bool(self._event.is_set())
            except Exception:  # the scheduler cannot answer now: ask again at the next poll
                pass
        return self._cancelled


def _kill_switch(name: str):
    """The test-only kill switch of the module docstring, or None."""
    spec = os.environ.get(KILL_ENV, "")
    target, _, marker = spec.partition(":")
    if not spec or target != name or not marker or os.path.exists(marker):
        return None

    def kill():
        with open(marker, "w", encoding="utf-8") as fh:
            fh.write(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)

    return kill


# -- the task -----------------------------------------------------------------------------------


@dataclass
class SceneRecord:
    """A scene's line of the manifest (see :mod:`.manifest`); ``failed`` until the scene succeeds."""

    name: str
    output: str
    status: str = "failed"
    seconds: float = 0.0
    device: Optional[str] = None
    valid_pixels: Optional[int] = None
    class_areas: List[Dict] = field(default_factory=list)
    area_unit: Optional[str] = None
    error: Optional[str] = None
    worker: Optional[str] = None
    network_loaded: bool = False
    optical: str = ""
    sar: str = ""
    cloud_mask: Optional[str] = None
    messages: List[str] = field(default_factory=list)

    @classmethod
    def of(cls, job: SceneJob, error: Optional[str] = None, worker=None) -> SceneRecord:
        s = job.scene
        return cls(name=s.name, output=job.output, optical=s.optical, sar=s.sar, cloud_mask=s.cloud_mask, error=error,
                   worker=getattr(worker, "address", None))


def run_scene(job: SceneJob) -> Dict:
    """Classify one scene (or skip it when its map is current); returns its manifest record."""
    t0 = time.perf_counter()
    worker = _this_worker()
    rec = SceneRecord.of(job, worker=worker)
    identity = scene_identity(job)
    try:
        if current_map(job.output, identity):
            rec.status = "skipped"
        else:
            _classify(job, identity, rec, worker)
            rec.status = "done"
        _areas_from_tags(job.output, rec)
    except Cancelled as exc:
        rec.status, rec.error = "failed", f"Cancelled: {exc}"
    except OptsarError as exc:
        rec.error = str(exc)
    except Exception as exc:  # a bug must not stop the other scenes; the message names it
        rec.error = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    rec.seconds = time.perf_counter() - t0
    return rec.__dict__


def _classify(job: SceneJob, identity: str, rec: SceneRecord, worker) -> None:
    from ..inference import InferenceOptions, classify

    plugin = getattr(worker, "plugins", {}).get(PLUGIN_NAME) if worker is not None else None
    opts = InferenceOptions.from_dict(job.options)
    networks = getattr(plugin, "networks", None)
    loads = networks.loads if networks is not None else 0
    if plugin is not None:
        opts = InferenceOptions.of(opts, device=plugin.device(opts.device))
    feedback = TaskFeedback(job)
    try:
        result = classify(job.scene.optical, job.scene.sar, job.checkpoint, job.output, options=opts,
                          cloud_mask=job.scene.cloud_mask, feedback=feedback, networks=networks,
                          tags={ID_TAG: identity, "OPTSAR_SCENE": job.scene.name})
    finally:
        rec.messages = feedback.messages
    rec.device = result["device"]
    rec.network_loaded = networks is None or networks.loads > loads


def current_map(output: str, identity: str) -> bool:
    """Whether ``output`` is a complete map made from the same checkpoint, inputs and options."""
    if not os.path.isfile(output):
        return False
    from ..styles import qml_path_for

    try:
        import rasterio

        with rasterio.open(output) as ds:
            tags = ds.tags()
    except Exception:  # unreadable: it is redone
        return False
    return tags.get(ID_TAG) == identity and "OPTSAR_CLASS_PIXELS" in tags and os.path.isfile(qml_path_for(output))


def _areas_from_tags(output: str, rec: SceneRecord) -> None:
    """Valid pixels and class areas (pixels x pixel area, in the map CRS's unit) from the map's tags."""
    import rasterio

    with rasterio.open(output) as ds:
        tags = ds.tags()
        t = ds.transform
        pixel_area = abs(t.a * t.e - t.b * t.d)
        rec.area_unit = area_unit(ds.crs)
        if rec.device is None:
            rec.device = tags.get("OPTSAR_DEVICE")
    pixels = parse_class_pixels(tags.get("OPTSAR_CLASS_PIXELS", ""))
    rec.valid_pixels = sum(pixels.values())
    rec.class_areas = [{"code": c, "pixels": n, "area": n * pixel_area} for c, n in pixels.items()]


def parse_class_pixels(text: str) -> Dict[int, int]:
    """``"0:12,4:30"`` -> {0: 12, 4: 30}."""
    out = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        code, _, n = item.partition(":")
        out[int(code)] = int(n)
    return out


