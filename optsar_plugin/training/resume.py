"""Resumable training: a state file beside the output checkpoint, written after every epoch.

``<output>.resume.safetensors`` holds what the loop needs to continue exactly where the
last finished epoch left it: the live weights, the best weights so far, the weight
average, the AdamW moments, the scheduler position, the numpy and torch random states and
the history.  It is written atomically after each epoch and removed when the run
completes (a cancelled run keeps it).  ``resume=True`` continues from it, so an
interrupted run ends with the weights an uninterrupted run would have written (same
seed, data and thread count on the CPU).

The file is a safetensors file (tensors) with a JSON record in its metadata - nothing is
unpickled when it is read.  The record carries a fingerprint of the inputs, options and
plan; a state written by another run is refused with one line saying what differs.
"""

from __future__ import annotations

import json
import os
from typing import Dict, Optional, Tuple

import numpy as np

from ..errors import InputError
from ..fileio import discard, publish, temp_path

SUFFIX = ".resume.safetensors"
VERSION = 1


def state_path(checkpoint: str) -> str:
    return str(checkpoint) + SUFFIX


def fingerprint(inputs, options, plan) -> Dict:
    """What must be equal for a state to continue this run (files by path, size and modification time)."""
    files = {}
    for key in ("optical", "sar", "labels", "cloud_mask", "reference"):
        path = getattr(inputs, key)
        if path:
            p = str(path).split("|")[0]
            st = os.stat(p) if os.path.exists(p) else None
            files[key] = [os.path.abspath(p), st.st_size if st else None, int(st.st_mtime) if st else None]
    opts = {k: v for k, v in options.to_dict().items() if k not in ("resume", "memory_limit")}
    bands = {"optical_bands": inputs.optical_bands, "sar_bands": inputs.sar_bands, "class_field": inputs.class_field,
             "name_field": inputs.name_field, "reference_layer": inputs.reference_layer}
    return json.loads(json.dumps({"files": files, "bands": bands, "options": opts, "plan": plan.to_dict()}, default=str))


def _prefixed(prefix: str, tensors: Dict) -> Dict:
    return {f"{prefix}.{k}": v.detach().to("cpu").contiguous() for k, v in tensors.items()}


def save(path: str, run, state, optimiser, scheduler, print_: Dict) -> None:
    """Write the state after an epoch (atomically)."""
    from safetensors.torch import save_file

    torch = run.torch
    tensors = {**_prefixed("net", run.net.state_dict()), **_prefixed("best", state.best_state or {}),
               "rng.torch": torch.get_rng_state()}
    if state.average is not None:
        tensors.update(_prefixed("average", state.average.shadow))
    opt = optimiser.state_dict()
    for index, entry in opt["state"].items():
        for name, value in entry.items():
            tensors[f"opt.{index}.{name}"] = value.detach().to("cpu").reshape(value.shape).contiguous() \
                if torch.is_tensor(value) else torch.tensor(value)
    record = {
        "version": VERSION, "fingerprint": print_,
        "loop": {"step": state.step, "history": state.history, "best_epoch": state.best_epoch,
                 "best_miou": state.best_miou, "best_confusion": state.best_confusion,
                 "since_best": state.since_best, "bad_steps": state.bad_steps,
                 "average_updates": state.average.updates if state.average is not None else None},
        "param_groups": opt["param_groups"], "scheduler": scheduler.state_dict(),
        "rng_numpy": run.rng.bit_generator.state,
    }
    tmp = temp_path(path)
    try:
        save_file(tensors, tmp, metadata={"optsar_resume": json.dumps(record, default=_json_default)})
        publish(tmp, path)
    except BaseException:
        discard(tmp)
        raise


def _json_default(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    raise TypeError(f"not JSON-serialisable: {type(v).__name__}")


def _differences(saved: Dict, now: Dict, prefix: str = "") -> list:
    out = []
    for key in sorted(set(saved) | set(now)):
        a, b = saved.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}")
    return out


def load(path: str, run, print_: Dict, make_optimiser) -> Optional[Tuple[object, object, object]]:
    """``(loop state, optimiser, scheduler)`` restored from ``path`` into ``run``; None when there is no state."""
    if not os.path.isfile(path):
        return None
    from safetensors import safe_open

    from .loop import LoopState, WeightAverage

    try:
        with safe_open(path, framework="pt", device="cpu") as fh:
            record = json.loads(fh.metadata()["optsar_resume"])
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:  # truncated or foreign file
        raise InputError(f"The resumable state '{path}' cannot be read ({exc}); delete it to start again.") from None
    if record.get("version") != VERSION:
        raise InputError(f"The resumable state '{path}' was written by another version; delete it to start again.")
    diff = _differences(record["fingerprint"], print_)
    if diff:
        raise InputError(
            f"The resumable state '{path}' belongs to a different run ({', '.join(diff[:4])} differ); train with the "
            "same inputs and options, or delete it (or train without RESUME) to start again.")
    return _restore(run, record, tensors, make_optimiser, LoopState, WeightAverage)


def _take(tensors: Dict, prefix: str) -> Dict:
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def _restore(run, record, tensors, make_optimiser, LoopState, WeightAverage):
    torch = run.torch
    loop = record["loop"]
    run.net.load_state_dict(_take(tensors, "net"))
    run.net.to(run.device)
    state = LoopState(step=loop["step"], history=loop["history"], best_epoch=loop["best_epoch"],
                      best_miou=loop["best_miou"], best_state=_take(tensors, "best") or None,
                      best_confusion=loop["best_confusion"], since_best=loop["since_best"], bad_steps=loop["bad_steps"])
    if loop["average_updates"] is not None:
        state.average = WeightAverage(run.net, run.plan.ema_decay)
        state.average.shadow = {k: v.to(run.device) for k, v in _take(tensors, "average").items()}
        state.average.updates = loop["average_updates"]
    optimiser, scheduler = make_optimiser(run)
    opt_state: Dict[int, Dict] = {}
    for key, value in _take(tensors, "opt").items():
        index, name = key.split(".", 1)
        opt_state.setdefault(int(index), {})[name] = value.to(run.device) if name != "step" else value
    optimiser.load_state_dict({"state": opt_state, "param_groups": record["param_groups"]})
    scheduler.load_state_dict(record["scheduler"])
    run.rng.bit_generator.state = record["rng_numpy"]
    torch.set_rng_state(tensors["rng.torch"])
    return state, optimiser, scheduler


def remove(path: str) -> None:
    discard(path)
