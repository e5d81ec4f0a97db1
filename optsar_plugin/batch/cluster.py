"""Where the scenes run: a Dask ``LocalCluster`` on this machine, or an existing Dask cluster.

Without a scheduler address, :func:`dask_client` starts a ``LocalCluster`` of worker
*processes* (one thread each: a scene is one task, and torch, GDAL and numpy parallelise
inside it):

* one worker per GPU when there are GPUs (counted without importing torch:
  ``CUDA_VISIBLE_DEVICES`` when set, else ``nvidia-smi -L``), each pinned to its GPU
  (:class:`~optsar_plugin.batch.task.EngineWorkerPlugin`);
* otherwise ``max(1, cores // 4)`` workers (at most the memory in units of 4 GiB), each
  with ``cores // workers`` torch threads: a CPU forward pass already uses several cores,
  so more processes than that only add memory.

``workers`` overrides the number.  The workers get no memory limit (``memory_limit=0``):
Dask's limit is meant for its own data, and would pause or restart a worker whose memory
is simply a network and its windows.  With ``scheduler="tcp://host:8786"`` the tasks go to
that cluster (its workers need the engine installed: ``pip install .``); ``workers`` is
then ignored, and the cluster is left running afterwards.  Leaving the ``with`` block -
normally, on an error, on cancellation or on SIGTERM in the caller - closes the client and
a LocalCluster it started, which ends the worker processes.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import time
from contextlib import contextmanager
from typing import Iterator, List, Optional

from ..errors import InputError

GIB = 2**30


def gpu_count() -> int:
    """GPUs this process may use, without importing torch (the QGIS process must never import it)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([v for v in visible.split(",") if v.strip() and v.strip() != "-1"])
    smi = shutil.which("nvidia-smi")
    if not smi:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def _memory_bytes() -> Optional[int]:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


# Dask's nanny starts its workers with MALLOC_TRIM_THRESHOLD_=65536.  Setting it turns off glibc's
# dynamic mmap threshold, so every array above 128 KiB is mapped and unmapped again, page faults and
# all: measured (bench_batch, 8 scenes of 2048 x 2048, one worker) the batch took 71.7 s against 40.5 s
# for a loop of classify calls (+77 %), and 46.5 s (+9 %, the cluster's start-up) without it.  The
# engine trims its heap itself as it streams (inference.windows.trim_heap).  The other variables
# of that setting (OMP/MKL/OpenBLAS threads = 1) stay; torch's threads are set per worker.
LOCAL_WORKER_CONFIG = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}


def default_workers(device: str = "auto") -> int:
    """How many local worker processes: one per GPU, else a quarter of the cores (memory permitting)."""
    gpus = gpu_count() if device in ("auto", "cuda") or device.startswith("cuda:") else 0
    if gpus:
        return 1 if device.startswith("cuda:") else gpus
    cores = os.cpu_count() or 1
    n = max(1, cores // 4)
    mem = _memory_bytes()
    return max(1, min(n, mem // (4 * GIB))) if mem else n


def torch_threads(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, workers))


class Cluster:
    """What :func:`dask_client` yields: the client, the number of workers, torch threads per worker."""

    def __init__(self, client, workers: int, threads: Optional[int], local=None):
        self.client, self.workers, self.threads, self._local = client, workers, threads, local

    def stop_now(self) -> List[int]:
        """Kill a LocalCluster's worker processes at once; a remote cluster is left alone.

        A graceful close waits for each worker's interpreter to shut down (seconds with torch
        loaded).  Used on cancellation - a cancelled run must end sooner, and what the killed
        workers were writing is swept afterwards (:func:`optsar_plugin.fileio.sweep_leftovers`) -
        and once every task has returned, when no worker has anything left to write.
        Returns the killed process ids.
        """
        killed = []
        for nanny in list(self._local.workers.values()) if self._local is not None else []:
            pid = getattr(nanny, "pid", None)
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                except OSError:
                    pass
        deadline = time.monotonic() + 2.0
        while any(_alive(pid) for pid in killed) and time.monotonic() < deadline:
            time.sleep(0.02)  # until the kernel has ended them (they may stay zombies until reaped)
        return killed


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie does not: it has ended and waits to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


@contextmanager
def dask_client(scheduler: Optional[str] = None, workers: Optional[int] = None, device: str = "auto",
                feedback=None) -> Iterator[Cluster]:
    """A :class:`Cluster`: a Dask client to an existing scheduler or to a new LocalCluster."""
    from ..deps import require

    require("distributed", "batch classification (Dask)")
    import dask
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise InputError(f"Cannot reach the Dask scheduler '{scheduler}': {exc}") from None
        try:
            n = len(client.scheduler_info().get("workers", {}))
            if feedback is not None:
                feedback.info(f"Dask cluster {scheduler}: {n} worker(s).")
            yield Cluster(client, n, None)
        finally:
            client.close()
        return
    n = int(workers) if workers else default_workers(device)
    if n < 1:
        raise InputError(f"The number of workers must be at least 1, got {workers}.")
    with dask.config.set(LOCAL_WORKER_CONFIG):
        local = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, memory_limit=0,
                             dashboard_address=":0", silence_logs=logging.ERROR)
    try:
        client = Client(local)
        try:
            if feedback is not None:
                feedback.info(f"Local Dask cluster: {n} worker process(es), one scene at a time each "
                              f"({local.scheduler_address}).")
            yield Cluster(client, n, torch_threads(n), local)
        finally:
            client.close()
    finally:
        local.close()
