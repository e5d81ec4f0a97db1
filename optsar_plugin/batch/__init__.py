"""Many scenes into one styled region: :func:`classify_batch` and ``python -m optsar_plugin batch``.

Data flow::

    scenes table (CSV / any OGR table) ─> one task per scene ─> Dask (LocalCluster or a scheduler address)
        task on a worker: skip if its map is current, else classify (network cached per worker)
    results, as they finish ─> DIR/manifest.jsonl (done / skipped / failed, rewritten atomically)
    at the end ─> DIR/class_areas.csv, optional mosaic (.vrt or COG) + .qml

* :mod:`.scenes` - the scenes table: columns, relative paths, unique names;
* :mod:`.task` - one scene on a worker: identity, skip, classify, record; per-worker state;
* :mod:`.cluster` - a LocalCluster of worker processes by default (one per GPU), or a scheduler;
* :mod:`.manifest` - the JSON-lines manifest;
* :mod:`.mosaic` - the mosaic and the class-area table;
* :mod:`.engine` - :func:`classify_batch`, the composition; :mod:`.cli` - the command line.

No scheduler, queue or pool of our own: Dask places the tasks, reschedules the scene of a
worker that died, and runs the same tasks on a laptop or a cluster of GPU machines.
"""

from .engine import classify_batch
from .manifest import MANIFEST, read_manifest
from .mosaic import AREA_TABLE, build_mosaic
from .scenes import SceneSpec, read_scenes
from .task import ID_TAG, SceneJob, run_scene, scene_identity

__all__ = ["classify_batch", "read_scenes", "SceneSpec", "SceneJob", "run_scene", "scene_identity", "build_mosaic",
           "read_manifest", "MANIFEST", "AREA_TABLE", "ID_TAG"]
