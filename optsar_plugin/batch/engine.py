""":func:`classify_batch`: every scene of a table classified on a Dask cluster, a manifest, a mosaic, class areas.

The composition, top to bottom: check what the whole batch shares (the checkpoint, the
options, the scenes table) so that a mistake there stops at once; start or reach the
cluster; register the per-worker engine state; submit one
:func:`~optsar_plugin.batch.task.run_scene` task per scene; as each finishes, rewrite the
manifest and report progress (scenes done of the total); then the area table and, when
asked for, the mosaic.  Cancellation (``feedback.is_canceled()``, or SIGTERM turned into
:class:`~optsar_plugin.errors.Terminated` by the caller) sets a Dask ``Event`` the tasks
poll between windows, so a running scene stops and discards its temporary files; the
cluster is then closed, and leftovers of killed worker processes are swept.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Dict, List, Optional, Sequence

from ..errors import Cancelled
from ..fileio import OutputSet, sweep_leftovers
from ..inference import InferenceOptions
from ..progress import NullFeedback
from .cluster import dask_client
from .manifest import manifest_path, summary, write_manifest
from .mosaic import AREA_TABLE, build_mosaic, write_area_table
from .scenes import SceneSpec, read_scenes
from .task import EngineWorkerPlugin, SceneJob, SceneRecord, run_scene

POLL_S = 0.25
CANCEL_GRACE_S = 1.0  # a running scene notices the cancel between two windows


def classify_batch(scenes, checkpoint, output_dir, *, scheduler: Optional[str] = None, workers: Optional[int] = None,
                   mosaic=None, area_table=None, options: Optional[InferenceOptions] = None, feedback=None,
                   **settings) -> Dict:
    """Classify every scene of ``scenes`` with ``checkpoint`` into ``output_dir/<name>.tif``.

    ``scenes``: a table path (:func:`~.scenes.read_scenes`) or a list of
    :class:`~.scenes.SceneSpec`; ``scheduler``: a Dask scheduler address (default: a
    LocalCluster of ``workers`` processes, see :mod:`.cluster`); ``mosaic``: optional
    ``.vrt``/``.tif`` path; ``area_table``: the class-area CSV (default
    ``output_dir/class_areas.csv``).  The classify settings that apply to every scene
    (``optical_bands``, ``sar_bands``, ``model``, ``device``, ``tile_size``, ``overlap``,
    ``batch_size``, ``precision``, ``cloud_mode``, ...) come as an
    :class:`~optsar_plugin.inference.InferenceOptions` and/or keywords.

    Returns ``{"manifest", "area_table", "mosaic", "mosaic_qml", "done", "skipped",
    "failed", "scenes": [records], "seconds", "workers"}``.  A failed scene is a manifest
    line, not an exception; problems shared by all scenes (checkpoint, options, table,
    output folder, cluster) raise :class:`~optsar_plugin.errors.OptsarError` subclasses.
    """
    t0 = time.perf_counter()
    feedback = feedback or NullFeedback()
    opts, meta = _check_shared(checkpoint, options, settings)
    specs = list(scenes) if not isinstance(scenes, (str, os.PathLike)) else read_scenes(scenes)
    folder = _output_folder(output_dir)
    protected = _protected(specs, checkpoint, scenes)
    event = f"optsar-cancel-{uuid.uuid4().hex}"  # the Dask Event that cancels this batch's tasks
    jobs = [SceneJob(s, os.path.abspath(checkpoint), meta.content_hash, opts.to_dict(), folder, event) for s in specs]
    feedback.info(f"{len(jobs)} scene(s) with {meta.model} from '{checkpoint}' into '{folder}'.")
    _check_outputs(jobs, protected, _batch_outputs(folder, area_table, mosaic))
    records = _run_jobs(jobs, scheduler, workers, opts.device, protected, folder, feedback)
    _name_classes(records, meta.classes)
    write_manifest(manifest_path(folder), records, protected)
    counts = summary(records)
    result = {"manifest": manifest_path(folder), "scenes": records, **counts, "seconds": time.perf_counter() - t0,
              "mosaic": None, "mosaic_qml": None}
    result["area_table"] = write_area_table(records, area_table or os.path.join(folder, AREA_TABLE), meta.classes,
                                            protected)
    maps = [r["output"] for r in records if r["status"] in ("done", "skipped")]
    if mosaic and maps:
        made = build_mosaic(maps, mosaic, meta.classes, protected, feedback)
        result.update(mosaic=made["mosaic"], mosaic_qml=made["qml"])
    elif mosaic:
        feedback.warning(f"No scene has a map, so the mosaic '{mosaic}' was not written.")
    feedback.info(f"Batch finished in {result['seconds']:.1f} s: {counts['done']} classified, {counts['skipped']} "
                  f"already current, {counts['failed']} failed (see {result['manifest']}).")
    return result


def _check_shared(checkpoint, options, settings):
    """The options and the checkpoint's metadata, checked once for the whole batch (torch-free)."""
    from ..checkpoints import load_metadata
    from ..errors import InputError
    from ..metadata import check_fit

    opts = InferenceOptions.of(options, "classify_batch", **settings)
    if not checkpoint:
        raise InputError("No checkpoint was given.")
    meta = load_metadata(os.fspath(checkpoint))
    check_fit(meta, model=opts.model, checkpoint=os.fspath(checkpoint))
    opts.tiling(meta)
    return opts, meta


def _output_folder(output_dir) -> str:
    from ..errors import InputError

    folder = os.path.abspath(os.fspath(output_dir or ""))
    if not output_dir:
        raise InputError("No output folder was given.")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise InputError(f"Cannot create the output folder '{folder}': {exc.strerror or exc}.") from None
    return folder


def _protected(specs: Sequence[SceneSpec], checkpoint, table) -> List[tuple]:
    items = [(checkpoint, "checkpoint", False)]
    if isinstance(table, (str, os.PathLike)):
        items.append((table, "scenes table"))
    for s in specs:
        items += [(s.optical, f"optical raster of scene {s.name}"), (s.sar, f"SAR raster of scene {s.name}")]
        if s.cloud_mask:
            items.append((s.cloud_mask, f"cloud mask of scene {s.name}"))
    return items


def _run_jobs(jobs: List[SceneJob], scheduler, workers, device, protected, folder, feedback) -> List[Dict]:
    """Run the jobs on the cluster; the manifest is rewritten as each scene finishes."""
    done: Dict[int, Dict] = {}
    with dask_client(scheduler, workers, device, feedback) as cluster:
        from distributed import Event

        client = cluster.client
        client.register_plugin(EngineWorkerPlugin(cluster.threads), name=EngineWorkerPlugin.name)
        cancel = Event(jobs[0].cancel_event, client=client)
        futures = {client.submit(run_scene, j, key=f"optsar-scene-{k}-{uuid.uuid4().hex[:8]}", pure=False): k
                   for k, j in enumerate(jobs)}
        try:
            _collect(futures, jobs, done, cancel, protected, folder, feedback)
        except BaseException:  # cancelled, SIGTERM, an error: stop the work now, remove what it was writing
            sweep_leftovers(folder, killed=cluster.stop_now())
            raise
        # every task has returned, its map published: a local worker has nothing left to write, and ending it
        # now saves the interpreter's shutdown with torch loaded (about 1 s of a one-worker run, measured)
        cluster.stop_now()
    return [done[k] for k in sorted(done)]


def _batch_outputs(folder: str, area_table, mosaic) -> List[tuple]:
    """(path, role) of the batch's own outputs: manifest, class-area table, mosaic and its style."""
    from ..styles import qml_path_for

    out = [(manifest_path(folder), "manifest"), (area_table or os.path.join(folder, AREA_TABLE), "class-area table")]
    if mosaic:
        out += [(mosaic, "mosaic"), (str(qml_path_for(mosaic)), "style file of the mosaic")]
    return out


def _check_outputs(jobs: List[SceneJob], protected, others=()) -> None:
    """No output - a scene's map and its style, the manifest, the area table, the mosaic - may be an input of any
    scene or another output (checked before any work, like classify's own check)."""
    from ..styles import qml_path_for

    with OutputSet(protected) as outs:
        for j in jobs:
            outs.add(j.output, f"map of scene {j.scene.name}", create=False, sidecars=(".aux.xml",))
            outs.add(str(qml_path_for(j.output)), f"style file of the map of scene {j.scene.name}", create=False)
        for path, role in others:
            outs.add(path, role, create=False)


def _collect(futures: Dict, jobs, done: Dict[int, Dict], cancel, protected, folder, feedback) -> None:
    pending = set(futures)
    total = len(futures)
    while pending:
        if feedback.is_canceled():
            _cancel(cancel, pending, futures, jobs, done)
            write_manifest(manifest_path(folder), [done[k] for k in sorted(done)], protected)
            raise Cancelled("Cancelled by the user; the scenes finished before are kept (see the manifest).")
        finished = _wait(pending, POLL_S, "FIRST_COMPLETED")
        pending -= finished
        for f in finished:
            k = futures[f]
            done[k] = _record(f, jobs[k])
            r = done[k]
            feedback.progress(len(done) / total, f"Scene {len(done)} of {total}: {r['name']} {r['status']}"
                              + (f" ({r['error']})" if r["error"] else ""))
            if r["status"] == "failed":
                feedback.warning(f"Scene {r['name']} failed: {r['error']}")
        if finished:
            write_manifest(manifest_path(folder), [done[k] for k in sorted(done)], protected)


def _wait(futures, timeout: float, return_when: str) -> set:
    """The futures that finished within ``timeout`` (``distributed.wait`` raises when none did)."""
    from distributed import wait

    try:
        wait(futures, timeout=timeout, return_when=return_when)
    except TimeoutError:
        pass
    return {f for f in futures if f.done()}


def _record(future, job: SceneJob) -> Dict:
    """The task's record, or a failed record when Dask could not run it (e.g. its workers kept dying)."""
    try:
        return future.result()
    except Exception as exc:  # KilledWorker, a lost scheduler, ...
        return SceneRecord.of(job, f"Dask could not run the scene: {type(exc).__name__}: {' '.join(str(exc).split())}"
                              ).__dict__


def _cancel(cancel, pending, futures, jobs, done) -> None:
    """Tell running tasks to stop, give them a moment to clean up, drop the rest."""
    cancel.set()
    finished = _wait(pending, CANCEL_GRACE_S, "ALL_COMPLETED")
    for f in pending:
        if f in finished:
            done[futures[f]] = _record(f, jobs[futures[f]])
        else:
            f.cancel()
    for k, j in enumerate(jobs):
        if k not in done:
            done[k] = SceneRecord.of(j, "Cancelled before the scene finished.").__dict__


def _name_classes(records: List[Dict], scheme) -> None:
    names = {c.code: c.name for c in scheme.classes}
    for r in records:
        for a in r.get("class_areas") or []:
            a["name"] = names.get(a["code"], str(a["code"]))
