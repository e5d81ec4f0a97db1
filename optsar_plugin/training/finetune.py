"""Fine-tuning: start from a checkpoint of the same network, re-initialising what depends on the classes.

The network, its configuration and its normalisation statistics come from the
checkpoint (``model_size`` is ignored) - the weights were learnt on inputs scaled that
way, and a warning says when the new data are far from them.  The network must be the
same and the band counts must match (names are compared as ``optsar:classify`` does).
When the classes differ, the layers whose shape depends on the number of classes (the
classifier, auxiliary heads, CloudLULC-Net's anchor encoder) start from fresh random
weights and everything else continues from the checkpoint; per-class options of the
configuration (e.g. SpecSAR-Former's ``focal_alpha``) are reset.
"""

from __future__ import annotations

import os
from typing import Dict, List, Tuple

from ..classes import normalise_name
from ..errors import InputError
from .sampler import stats_shift

# Configuration lists that hold one value per stage, not per class.
_STAGE_LISTS = ("optical_bands", "sar_bands", "embed_dims", "depths", "num_heads", "sr_ratios")
SHIFT_WARNING = 3.0  # robust standard deviations


def from_checkpoint(path, model_name: str, scheme, band_spec: Dict, feedback) -> Tuple[object, Dict, List[str]]:
    """(model, metadata, re-initialised tensor names) for fine-tuning from ``path``."""
    from ..checkpoints import check_compatible, load_checkpoint

    net, meta = load_checkpoint(os.fspath(path), device="cpu")
    name = meta["model"]["name"]
    if name != model_name:
        raise InputError(
            f"INIT_CHECKPOINT '{path}' holds a {name} network, but MODEL is {model_name}: fine-tuning needs the same "
            f"network. Choose MODEL {name}, or train {model_name} from scratch."
        )
    for w in check_compatible(meta, model_name=model_name, path=path, **band_spec):
        feedback.warning(w)
    old = [(int(c["code"]), normalise_name(c["name"])) for c in meta.get("classes") or []]
    new = [(c.code, normalise_name(c.name)) for c in scheme]
    if old == new:
        return net, meta, []
    model, dependent = _rebuild_for_classes(net, meta, len(old), len(scheme))
    feedback.warning(
        f"The classes ({', '.join(c.name for c in scheme)}) differ from INIT_CHECKPOINT's "
        f"({', '.join(c['name'] for c in meta.get('classes') or [])}): the {len(dependent)} class-dependent "
        f"tensor(s) ({', '.join(dependent[:6])}{', ...' if len(dependent) > 6 else ''}) start from random weights, "
        "the rest is fine-tuned."
    )
    return model, meta, dependent


def _rebuild_for_classes(net, meta: Dict, old_k: int, new_k: int):
    from ..models import build_model

    name = meta["model"]["name"]
    config = dict(meta["model"]["config"])
    config["num_classes"] = new_k
    for key, value in list(config.items()):  # per-class options cannot carry over
        if isinstance(value, list) and len(value) == old_k and key not in _STAGE_LISTS:
            config[key] = None
    model = build_model(name, **config)
    probe = build_model(name, **{**config, "num_classes": new_k + 1}).state_dict()
    target = model.state_dict()
    dependent = sorted(k for k, v in target.items() if k in probe and probe[k].shape != v.shape)
    for k, v in net.state_dict().items():
        if k in target and k not in dependent and target[k].shape == v.shape:
            target[k] = v
    model.load_state_dict(target)
    return model, dependent


def checkpoint_statistics(meta: Dict, stats_o: Dict, stats_s: Dict, feedback) -> Tuple[Dict, Dict]:
    """The checkpoint's normalisation (warning when the new data are far from it), else the new statistics."""
    norm = meta.get("normalisation") or {}
    if not (norm.get("optical") and norm.get("sar")):
        return stats_o, stats_s
    for kind, old, new in (("optical", norm["optical"], stats_o), ("SAR", norm["sar"], stats_s)):
        if stats_shift(old, new) > SHIFT_WARNING:
            feedback.warning(
                f"The {kind} data differ strongly from INIT_CHECKPOINT's training data (a band median more than "
                "3 robust standard deviations away); check the units and bands."
            )
    return norm["optical"], norm["sar"]
