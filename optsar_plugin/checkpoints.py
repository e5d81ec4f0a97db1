"""Checkpoints: one safetensors file holding the weights and everything needed to use them.

Layout (safetensors, https://github.com/huggingface/safetensors): an 8-byte
little-endian header length, a JSON header describing each tensor (dtype,
shape, byte range) plus a ``__metadata__`` string map, then the raw tensor
bytes.  OptSAR Fusion stores its metadata as one JSON string under
``__metadata__["optsar"]``::

    format_version  1 (a reader refuses a newer one)
    model           {"name": registry name, "config": constructor kwargs incl.
                     optical_bands, sar_bands, num_classes}
    bands           {"optical": [names in order], "sar": [names in order]}
    normalisation   {"optical": stats, "sar": stats}   (normalisation.compute_stats)
    classes         [{"code", "name", "color"}] in logit-index order
    nodata          {"output": 255, "ignore_index": 255}
    tile_size       training tile size in pixels
    training        provenance: data paths, epochs, metrics, ...
    created         ISO-8601 UTC time the file was written
    content_hash    sha256 of the weights (see below)

Safety: loading never unpickles.  The weights are read with safetensors only,
so a ``torch.save``/pickle file - which can run arbitrary code when unpickled -
is refused before anything is deserialised.  :func:`read_metadata` and
:func:`verify_hash` use only the standard library (no torch), so the QGIS side
can validate a checkpoint where torch is missing.

Content hash (our definition; safetensors has none): sha256 over the tensors in
sorted name order, each contributing ``json.dumps([name, dtype, shape])`` +
``"\\n"`` (dtype as safetensors spells it: ``F32``, ``I64``...) followed by its
raw little-endian bytes - exactly the bytes stored in the file, so the hash
can be recomputed from the file without torch.  It guards against corrupted
or swapped weights, not against a deliberate forgery (anyone can rewrite it).

Weights are always saved from CPU copies, so a checkpoint saved from a CUDA
model loads on a machine without a GPU.
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import json
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from .errors import OptsarError
from .fileio import publish, temp_path

FORMAT_VERSION = 1
METADATA_KEY = "optsar"
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit
_READ_CHUNK = 1 << 22

# torch dtype name -> safetensors dtype code (only used on the torch side).
_DTYPE_CODES = {
    "float64": "F64",
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint8": "U8",
    "bool": "BOOL",
}

PathLike = Union[str, "os.PathLike[str]"]


# -- header (stdlib only) ------------------------------------------------------------------


def _refuse_message(path: Path, head: bytes) -> Optional[str]:
    """A specific message for the pickle-based formats people will try to load."""
    if head.startswith(b"PK\x03\x04"):
        return (
            f"Checkpoint '{path}' is a PyTorch torch.save (zip/pickle) file. OptSAR Fusion refuses to load "
            "pickle-based files because unpickling can run arbitrary code; only OptSAR Fusion safetensors "
            "checkpoints (written by the Train algorithm) are accepted."
        )
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return (
            f"Checkpoint '{path}' is a Python pickle file. OptSAR Fusion refuses to load pickle files because "
            "unpickling can run arbitrary code; only OptSAR Fusion safetensors checkpoints are accepted."
        )
    return None


def _read_header(path: PathLike) -> Tuple[Dict, Dict, int, int]:
    """(tensor entries, optsar metadata, data start offset, file size); validates the layout."""
    p = Path(path)
    if not p.exists():
        raise OptsarError(f"Checkpoint '{p}' does not exist.")
    if not p.is_file():
        raise OptsarError(f"Checkpoint '{p}' is not a file.")
    size = p.stat().st_size
    try:
        with open(p, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise OptsarError(f"Checkpoint '{p}' is empty or truncated ({size} bytes).")
            refused = _refuse_message(p, head)
            if refused:
                raise OptsarError(refused)
            n = int.from_bytes(head, "little")
            if n > MAX_HEADER_BYTES or n < 2:
                raise OptsarError(f"Checkpoint '{p}' is not a safetensors checkpoint (invalid header length).")
            if 8 + n > size:
                raise OptsarError(
                    f"Checkpoint '{p}' is truncated: its header needs {8 + n} bytes, the file has {size}."
                )
            raw = fh.read(n)
    except OSError as exc:
        raise OptsarError(f"Cannot read checkpoint '{p}': {exc.strerror or exc}.") from None
    if not raw.lstrip().startswith(b"{"):
        raise OptsarError(f"Checkpoint '{p}' is not a safetensors checkpoint (no JSON header).")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise OptsarError(f"Checkpoint '{p}' is corrupted: its header is not valid JSON.") from None
    if not isinstance(header, dict):
        raise OptsarError(f"Checkpoint '{p}' is corrupted: its header is not a JSON object.")
    meta_map = header.pop("__metadata__", None) or {}
    end = 0
    for name, entry in header.items():
        try:
            begin, stop = (int(v) for v in entry["data_offsets"])
            str(entry["dtype"])
            [int(d) for d in entry["shape"]]
        except (KeyError, TypeError, ValueError):
            raise OptsarError(f"Checkpoint '{p}' is corrupted: bad header entry for tensor '{name}'.") from None
        if not 0 <= begin <= stop:
            raise OptsarError(f"Checkpoint '{p}' is corrupted: bad byte range for tensor '{name}'.")
        end = max(end, stop)
    data_start = 8 + n
    if data_start + end > size:
        raise OptsarError(
            f"Checkpoint '{p}' is truncated: the weights need {data_start + end} bytes, the file has {size}."
        )
    if data_start + end < size:
        raise OptsarError(
            f"Checkpoint '{p}' is corrupted: {size - data_start - end} unexpected bytes after the weights."
        )
    if not isinstance(meta_map, dict) or METADATA_KEY not in meta_map:
        raise OptsarError(
            f"'{p}' is a safetensors file but not an OptSAR Fusion checkpoint (it has no '{METADATA_KEY}' metadata)."
        )
    try:
        meta = json.loads(meta_map[METADATA_KEY])
    except (TypeError, ValueError):
        raise OptsarError(f"Checkpoint '{p}' is corrupted: its OptSAR metadata is not valid JSON.") from None
    if not isinstance(meta, dict):
        raise OptsarError(f"Checkpoint '{p}' is corrupted: its OptSAR metadata is not a JSON object.")
    version = meta.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise OptsarError(f"Checkpoint '{p}' has no valid format_version in its metadata.")
    if version > FORMAT_VERSION:
        raise OptsarError(
            f"Checkpoint '{p}' uses checkpoint format {version}, newer than this OptSAR Fusion reads "
            f"(up to {FORMAT_VERSION}). Update the plugin to use it."
        )
    model = meta.get("model")
    if (
        not isinstance(model, dict)
        or not isinstance(model.get("name"), str)
        or not isinstance(model.get("config"), dict)
    ):
        raise OptsarError(f"Checkpoint '{p}' metadata lacks the model name and configuration.")
    return header, meta, data_start, size


def read_metadata(path: PathLike) -> Dict:
    """The checkpoint's OptSAR metadata, from the header only (standard library, no torch).

    Checks the file layout (not truncated, not a pickle, not a newer format) but
    not the weights; :func:`verify_hash` reads those.
    """
    return _read_header(path)[1]


def _hash_prefix(name: str, dtype: str, shape: Sequence[int]) -> bytes:
    return (json.dumps([name, dtype, [int(d) for d in shape]]) + "\n").encode("utf-8")


def file_content_hash(path: PathLike) -> str:
    """sha256 of the weights as stored in the file (see the module docstring); stdlib only."""
    header, _, data_start, _ = _read_header(path)
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for name in sorted(header):
            entry = header[name]
            begin, stop = (int(v) for v in entry["data_offsets"])
            h.update(_hash_prefix(name, entry["dtype"], entry["shape"]))
            fh.seek(data_start + begin)
            left = stop - begin
            while left:
                chunk = fh.read(min(left, _READ_CHUNK))
                if not chunk:
                    raise OptsarError(f"Checkpoint '{path}' is truncated.")
                h.update(chunk)
                left -= len(chunk)
    return h.hexdigest()


def verify_hash(path: PathLike) -> str:
    """Recompute the weights' hash from the file; returns it, or raises :class:`OptsarError` on a mismatch."""
    meta = read_metadata(path)
    expected = meta.get("content_hash")
    if not expected:
        raise OptsarError(f"Checkpoint '{path}' has no content_hash in its metadata.")
    actual = file_content_hash(path)
    if actual != expected:
        raise OptsarError(
            f"Checkpoint '{path}' is corrupted or was modified: the weights' hash {actual[:12]}... "
            f"does not match the recorded {str(expected)[:12]}...."
        )
    return actual


# -- torch side ----------------------------------------------------------------------------


def _tensor_hash(tensors: Dict) -> str:
    """The same hash as :func:`file_content_hash`, from CPU tensors in memory."""
    import torch

    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        dtype = _DTYPE_CODES.get(str(t.dtype).replace("torch.", ""))
        if dtype is None:
            raise OptsarError(f"Tensor '{name}' has dtype {t.dtype}, which checkpoints do not support.")
        h.update(_hash_prefix(name, dtype, t.shape))
        flat = t.detach().contiguous().reshape(-1)
        if flat.numel():
            h.update(memoryview(flat.view(torch.uint8).numpy()))
    return h.hexdigest()


def _model_name(model, given: Optional[str]) -> str:
    from .models import MODEL_NAMES, model_info

    attr = getattr(model, "model_name", None)
    inferred = None
    module = type(model).__module__.rsplit(".", 1)[-1]  # the plugin may be imported under another package name
    for n in MODEL_NAMES:
        if model_info(n).module.rsplit(".", 1)[-1] == module:
            inferred = n
    name = given or attr or inferred
    for other in (attr, inferred):
        if other and other != name:
            raise OptsarError(f"The metadata names model '{name}' but the network is a '{other}'.")
    if not name:
        raise OptsarError(
            "Cannot tell which model this network is: give metadata['model']['name'] "
            f"(one of {', '.join(MODEL_NAMES)})."
        )
    model_info(name)  # raises OptsarError for an unknown name
    return name


def _check_consistency(meta: Dict) -> None:
    config = meta["model"]["config"]
    for key in ("optical_bands", "sar_bands", "num_classes"):
        if key not in config:
            raise OptsarError(f"The model configuration lacks '{key}'.")
    bands = meta.get("bands") or {}
    for kind, key in (("optical", "optical_bands"), ("sar", "sar_bands")):
        names = bands.get(kind)
        if names is not None and len(names) != int(config[key]):
            raise OptsarError(
                f"The metadata lists {len(names)} {kind} band name(s) but the model takes {config[key]} {kind} band(s)."
            )
    classes = meta.get("classes")
    if classes is not None:
        from .classes import ClassScheme

        try:
            ClassScheme.from_list(classes)
        except (KeyError, TypeError, ValueError) as exc:
            raise OptsarError(f"The metadata's class list is invalid: {exc}") from None
        if len(classes) != int(config["num_classes"]):
            raise OptsarError(
                f"The metadata lists {len(classes)} classes but the model predicts {config['num_classes']}."
            )


def save_checkpoint(path: PathLike, model, metadata: Dict) -> Dict:
    """Write ``model``'s weights and ``metadata`` to the safetensors file ``path``.

    Fills ``format_version``, ``model`` (name from ``metadata['model']['name']``,
    else ``model.model_name``, else the registry module the network's class lives
    in; config from ``model.config`` unless given), ``created`` and
    ``content_hash``.  Checks that band and class counts agree with the model.
    Writes a temporary file beside ``path`` and renames it into place.
    Returns the metadata as written.
    """
    from .deps import require

    require("torch", "saving a checkpoint")
    st = require("safetensors.torch", "saving a checkpoint")

    meta = copy.deepcopy(dict(metadata or {}))
    model_meta = dict(meta.get("model") or {})
    name = _model_name(model, model_meta.get("name"))
    config = model_meta.get("config")
    if config is None:
        config = getattr(model, "config", None)
    if not isinstance(config, dict):
        raise OptsarError(f"Model '{name}' has no configuration dict (model.config) to store.")
    meta["model"] = {**model_meta, "name": name, "config": dict(config)}
    meta["format_version"] = FORMAT_VERSION
    meta.setdefault("nodata", {"output": 255, "ignore_index": 255})
    _check_consistency(meta)

    # CPU copies (a CUDA model saves as CPU tensors); copying also unties shared storage,
    # which safetensors refuses to save.
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    meta["created"] = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    meta["content_hash"] = _tensor_hash(tensors)
    try:
        encoded = json.dumps(meta, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise OptsarError(f"Checkpoint metadata is not JSON-serialisable: {exc}") from None

    target = Path(path)
    tmp = temp_path(target)
    try:
        st.save_file(tensors, tmp, metadata={"format": "pt", METADATA_KEY: encoded})
        publish(tmp, target)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise OptsarError(f"Cannot write checkpoint '{target}': {exc.strerror or exc}.") from None
        raise
    return json.loads(encoded)


def load_checkpoint(path: PathLike, device="cpu"):
    """``(model, metadata)``: the network rebuilt from the metadata, weights loaded strictly, in eval mode on ``device``.

    ``device`` is a torch device or a name ('cpu', 'cuda', 'cuda:1', 'auto').
    Never unpickles; refuses truncated, corrupted, unknown-model, newer-format
    and hash-mismatched files with an :class:`OptsarError` naming the file.
    """
    from .deps import require

    torch = require("torch", "loading a checkpoint")
    st = require("safetensors.torch", "loading a checkpoint")
    from .models import MODEL_NAMES, build_model, complete_config

    p = Path(path)
    meta = read_metadata(p)
    name, config = meta["model"]["name"], meta["model"]["config"]
    if name not in MODEL_NAMES:
        raise OptsarError(
            f"Checkpoint '{p}' is for model '{name}', which this version of OptSAR Fusion does not know "
            f"(known: {', '.join(MODEL_NAMES)})."
        )
    try:
        tensors = st.load_file(str(p), device="cpu")
    except Exception as exc:  # SafetensorError has no importable base class across versions
        raise OptsarError(f"Checkpoint '{p}' is corrupted: safetensors cannot read its weights ({exc}).") from None
    expected = meta.get("content_hash")
    if not expected:
        raise OptsarError(f"Checkpoint '{p}' has no content_hash in its metadata.")
    if _tensor_hash(tensors) != expected:
        raise OptsarError(
            f"Checkpoint '{p}' is corrupted or was modified: the weights do not match the recorded content hash."
        )
    try:
        model = build_model(name, **complete_config(name, config))
    except OptsarError as exc:
        raise OptsarError(f"Checkpoint '{p}': cannot rebuild model '{name}': {exc}") from None
    except TypeError as exc:
        raise OptsarError(f"Checkpoint '{p}': its configuration does not fit model '{name}': {exc}") from None
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise OptsarError(
            f"Checkpoint '{p}': the weights do not match the {name} architecture of this version ({detail})."
        ) from None
    if isinstance(device, str):
        if device.lower() == "auto":
            from .devices import resolve_device

            device = resolve_device("auto")
        else:
            try:
                device = torch.device(device)
            except RuntimeError:
                raise OptsarError(f"Unknown device '{device}': use auto, cuda or cpu.") from None
    model.to(device)
    model.eval()
    return model, meta


# -- compatibility -------------------------------------------------------------------------


def class_scheme(metadata: Dict):
    """The checkpoint's classes as a :class:`~optsar_plugin.classes.ClassScheme` (logit-index order)."""
    from .classes import ClassScheme

    classes = metadata.get("classes")
    if not classes:
        raise OptsarError("The checkpoint metadata lists no classes.")
    return ClassScheme.from_list(classes, source="checkpoint")


def _band_spec(value) -> Tuple[int, Optional[List[str]]]:
    if value is None:
        return -1, None
    if isinstance(value, int):
        return value, None
    names = [str(v) for v in value]
    return len(names), names


def check_compatible(
    metadata: Dict,
    *,
    model_name: Optional[str] = None,
    optical_bands=None,
    sar_bands=None,
    path: Optional[PathLike] = None,
    strict_names: bool = False,
) -> List[str]:
    """Check that inputs fit a checkpoint; raises :class:`OptsarError` saying what it expects vs what was given.

    ``optical_bands`` / ``sar_bands`` are band counts or lists of band names in
    input order.  Band *counts* must match.  Names are compared case-insensitively
    when both sides have them: the same names in a different order is an error
    (the bands would be fed to the wrong inputs); different names are only a
    warning (returned), because band names are not standardised across data
    providers - unless ``strict_names``.  Returns the warnings.
    """
    where = f"Checkpoint '{path}'" if path is not None else "The checkpoint"
    problems, warnings = [], []
    model = (metadata.get("model") or {}).get("name")
    if model_name is not None and model != model_name:
        problems.append(f"it is a '{model}' model, not '{model_name}'")
    config = (metadata.get("model") or {}).get("config") or {}
    bands = metadata.get("bands") or {}
    for kind, given in (("optical", optical_bands), ("SAR", sar_bands)):
        count, names = _band_spec(given)
        if count < 0:
            continue
        key = kind.lower()
        expected_names = bands.get(key)
        expected_count = len(expected_names) if expected_names is not None else config.get(f"{key}_bands")
        exp_txt = f"{expected_count} {kind} band(s)" + (f" {expected_names}" if expected_names else "")
        got_txt = f"{count}" + (f" {names}" if names else "")
        if expected_count is not None and count != int(expected_count):
            problems.append(f"it expects {exp_txt}, got {got_txt}")
            continue
        if names and expected_names:
            a = [n.strip().lower() for n in expected_names]
            b = [n.strip().lower() for n in names]
            if a != b:
                if sorted(a) == sorted(b) or strict_names:
                    problems.append(f"it expects {kind} bands in the order {expected_names}, got {names}")
                else:
                    warnings.append(
                        f"{kind} band names differ: the checkpoint was trained on {expected_names}, "
                        f"the input has {names}; check the bands are the same and in the same order."
                    )
    if problems:
        raise OptsarError(f"{where} does not fit the input: " + "; ".join(problems) + ".")
    return warnings
