"""Checkpoints: one safetensors file holding the weights and everything needed to use them.

Layout (safetensors, https://github.com/huggingface/safetensors): an 8-byte
little-endian header length, a JSON header describing each tensor (dtype,
shape, byte range) plus a ``__metadata__`` string map, then the raw tensor
bytes.  OptSAR Fusion stores its metadata as one JSON string under
``__metadata__["optsar"]``; its schema and the typed object it is read into are
:class:`optsar_plugin.metadata.CheckpointMetadata` (model name and
configuration, band names, normalisation, classes, training tile, provenance,
``created``, ``content_hash``, ``format_version``).

Reading:

* :func:`load_metadata` -> :class:`~optsar_plugin.metadata.CheckpointMetadata`, validated
  once against the schema (standard library only, no torch: the QGIS side can check a
  checkpoint where torch is missing); :func:`read_metadata` is its JSON form (a dict).
* :func:`load_model` -> ``(network, CheckpointMetadata)``; :func:`load_checkpoint` the same
  with the dict.
* :func:`verify_hash` / :func:`file_content_hash` recompute the weights' hash from the file.

Every problem is a :class:`~optsar_plugin.errors.CheckpointError` naming the file, on one
line; no exception of a parser escapes (the JSON nesting depth is bounded).

Safety: loading never unpickles.  The weights are read with safetensors only,
so a ``torch.save``/pickle file - which can run arbitrary code when unpickled -
is refused before anything is deserialised.

Content hash (our definition; safetensors has none): sha256 over the tensors in
sorted name order, each contributing ``json.dumps([name, dtype, shape])`` +
``"\\n"`` (dtype as safetensors spells it: ``F32``, ``I64``...) followed by its
raw little-endian bytes - exactly the bytes stored in the file, so the hash
can be recomputed from the file without torch.  It guards against corrupted
or swapped weights, not against a deliberate forgery (anyone can rewrite it).

The model configuration (``model.config`` in the metadata) is *not* covered by the content
hash: the hash is a checksum of the weights, not a signature (whoever can edit the
configuration can recompute any hash), and the configuration is what rebuilds the network.
It is checked instead, before anything is allocated: :func:`load_model` builds the network
on PyTorch's ``meta`` device (shapes only, no memory, no weight initialisation), stops as
soon as it would hold more tensors or values than the file stores (``channels=12000`` or
``depth=300000`` is refused in well under a second instead of asking for gigabytes), and
requires the network's tensors to be exactly the file's (names and shapes).  Only then
are the weights read and the network built for real.

Weights are always saved from CPU copies, so a checkpoint saved from a CUDA
model loads on a machine without a GPU.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import threading
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from .errors import CheckpointError, InputError, OptsarError
from .fileio import OutputSet
from .metadata import FORMAT_VERSION, MAX_JSON_DEPTH, BandChoice, CheckpointMetadata, check_fit, json_depth, load_json

__all__ = [
    "FORMAT_VERSION", "METADATA_KEY", "CheckpointMetadata", "load_metadata", "read_metadata", "load_model",
    "load_checkpoint", "save_checkpoint", "file_content_hash", "verify_hash", "class_scheme", "check_compatible",
]

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


def _raw_header(p: Path) -> Tuple[bytes, int]:
    """(the JSON header's bytes, the file size) after checking that the file can hold them."""
    if not p.exists():
        raise CheckpointError(f"Checkpoint '{p}' does not exist.")
    if not p.is_file():
        raise CheckpointError(f"Checkpoint '{p}' is not a file.")
    size = p.stat().st_size
    try:
        with open(p, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise CheckpointError(f"Checkpoint '{p}' is empty or truncated ({size} bytes).")
            refused = _refuse_message(p, head)
            if refused:
                raise CheckpointError(refused)
            n = int.from_bytes(head, "little")
            if n > MAX_HEADER_BYTES or n < 2:
                raise CheckpointError(f"Checkpoint '{p}' is not a safetensors checkpoint (invalid header length).")
            if 8 + n > size:
                raise CheckpointError(
                    f"Checkpoint '{p}' is truncated: its header needs {8 + n} bytes, the file has {size}."
                )
            raw = fh.read(n)
    except OSError as exc:
        raise CheckpointError(f"Cannot read checkpoint '{p}': {exc.strerror or exc}.") from None
    if not raw.lstrip().startswith(b"{"):
        raise CheckpointError(f"Checkpoint '{p}' is not a safetensors checkpoint (no JSON header).")
    return raw, size


def _check_tensors(p: Path, header: Dict, data_start: int, size: int) -> None:
    """Every tensor entry is well formed and the byte ranges account for the whole file."""
    end = 0
    for name, entry in header.items():
        try:
            begin, stop = (int(v) for v in entry["data_offsets"])
            str(entry["dtype"])
            [int(d) for d in entry["shape"]]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"Checkpoint '{p}' is corrupted: bad header entry for tensor '{name}'.") from None
        if not 0 <= begin <= stop:
            raise CheckpointError(f"Checkpoint '{p}' is corrupted: bad byte range for tensor '{name}'.")
        end = max(end, stop)
    if data_start + end > size:
        raise CheckpointError(
            f"Checkpoint '{p}' is truncated: the weights need {data_start + end} bytes, the file has {size}."
        )
    if data_start + end < size:
        raise CheckpointError(
            f"Checkpoint '{p}' is corrupted: {size - data_start - end} unexpected bytes after the weights."
        )


def _read_header(path: PathLike) -> Tuple[Dict, CheckpointMetadata, int]:
    """(tensor entries, validated metadata, data start offset)."""
    p = Path(path)
    raw, size = _raw_header(p)
    header = load_json(raw, f"Checkpoint '{p}' is corrupted: its header")
    if not isinstance(header, dict):
        raise CheckpointError(f"Checkpoint '{p}' is corrupted: its header is not a JSON object.")
    meta_map = header.pop("__metadata__", None) or {}
    data_start = 8 + len(raw)
    _check_tensors(p, header, data_start, size)
    if not isinstance(meta_map, dict) or not isinstance(meta_map.get(METADATA_KEY), str):
        raise CheckpointError(
            f"'{p}' is a safetensors file but not an OptSAR Fusion checkpoint (it has no '{METADATA_KEY}' metadata)."
        )
    meta = load_json(meta_map[METADATA_KEY], f"Checkpoint '{p}' is corrupted: its OptSAR metadata")
    return header, CheckpointMetadata.from_dict(meta, str(p)), data_start


def load_metadata(path: PathLike) -> CheckpointMetadata:
    """The checkpoint's metadata, from the header only, validated against the schema (no torch).

    Checks the file layout (not truncated, not a pickle, not a newer format) but not the
    weights; :func:`verify_hash` reads those.
    """
    return _read_header(path)[1]


def read_metadata(path: PathLike) -> Dict:
    """:func:`load_metadata` in its JSON form (a dict; see :meth:`CheckpointMetadata.to_dict`)."""
    return load_metadata(path).to_dict()


def _hash_prefix(name: str, dtype: str, shape: Sequence[int]) -> bytes:
    return (json.dumps([name, dtype, [int(d) for d in shape]]) + "\n").encode("utf-8")


def file_content_hash(path: PathLike) -> str:
    """sha256 of the weights as stored in the file (see the module docstring); stdlib only."""
    header, _, data_start = _read_header(path)
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
                    raise CheckpointError(f"Checkpoint '{path}' is truncated.")
                h.update(chunk)
                left -= len(chunk)
    return h.hexdigest()


def verify_hash(path: PathLike) -> str:
    """Recompute the weights' hash from the file; returns it, or raises :class:`CheckpointError` on a mismatch."""
    meta = load_metadata(path)
    if not meta.content_hash:
        raise CheckpointError(f"Checkpoint '{path}' has no content_hash in its metadata.")
    actual = file_content_hash(path)
    if actual != meta.content_hash:
        raise CheckpointError(
            f"Checkpoint '{path}' is corrupted or was modified: the weights' hash {actual[:12]}... "
            f"does not match the recorded {meta.content_hash[:12]}...."
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
            raise CheckpointError(f"Tensor '{name}' has dtype {t.dtype}, which checkpoints do not support.")
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
            raise CheckpointError(f"The metadata names model '{name}' but the network is a '{other}'.")
    if not name:
        raise CheckpointError(
            "Cannot tell which model this network is: give metadata['model']['name'] "
            f"(one of {', '.join(MODEL_NAMES)})."
        )
    model_info(name)  # raises OptsarError for an unknown name
    return name


def _metadata_to_save(model, metadata) -> Dict:
    """The metadata dict to write: the model's name and configuration filled in, validated (no hash yet)."""
    meta = metadata.to_dict() if isinstance(metadata, CheckpointMetadata) else json.loads(json.dumps(
        dict(metadata or {}), default=_unserialisable))
    model_meta = dict(meta.get("model") or {})
    name = _model_name(model, model_meta.get("name"))
    config = model_meta.get("config")
    if config is None:
        config = getattr(model, "config", None)
    if not isinstance(config, dict):
        raise CheckpointError(f"Model '{name}' has no configuration dict (model.config) to store.")
    meta["model"] = {"name": name, "config": json.loads(json.dumps(config, default=_unserialisable))}
    meta["format_version"] = FORMAT_VERSION
    meta.setdefault("nodata", {"output": 255, "ignore_index": 255})
    meta.pop("created", None)
    meta.pop("content_hash", None)
    if json_depth(meta) > MAX_JSON_DEPTH:
        raise CheckpointError(f"Checkpoint metadata is nested more than {MAX_JSON_DEPTH} levels deep.")
    CheckpointMetadata.from_dict(meta, written=False)
    return meta


def _unserialisable(value):
    raise CheckpointError(f"Checkpoint metadata is not JSON-serialisable: {type(value).__name__} {value!r:.60}.")


def save_checkpoint(path: PathLike, model, metadata) -> Dict:
    """Write ``model``'s weights and ``metadata`` to the safetensors file ``path``; returns the metadata written.

    ``metadata``: a :class:`CheckpointMetadata` or its JSON form, where ``model`` may be
    absent (the name then comes from ``model.model_name`` or the registry module the
    network's class lives in, the configuration from ``model.config``).  It is validated
    against the schema before anything is written; ``format_version``, ``nodata``,
    ``created`` and ``content_hash`` are filled in.  The file is written beside ``path``
    under a temporary name and renamed into place (:class:`~optsar_plugin.fileio.OutputSet`).
    """
    from .deps import require

    require("torch", "saving a checkpoint")
    st = require("safetensors.torch", "saving a checkpoint")
    meta = _metadata_to_save(model, metadata)
    # CPU copies (a CUDA model saves as CPU tensors); copying also unties shared storage,
    # which safetensors refuses to save.
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    meta["created"] = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    meta["content_hash"] = _tensor_hash(tensors)
    encoded = json.dumps(meta, ensure_ascii=False)
    with OutputSet() as outs:
        tmp = outs.add(path, "output checkpoint", make_folder=True)
        try:
            st.save_file(tensors, tmp, metadata={"format": "pt", METADATA_KEY: encoded})
        except OSError as exc:
            raise InputError(f"Cannot write checkpoint '{path}': {exc.strerror or exc}.") from None
        outs.publish()
    return json.loads(encoded)


def _read_tensors(p: Path, meta: CheckpointMetadata):
    """The weights, read with safetensors and checked against the content hash."""
    from .deps import require

    st = require("safetensors.torch", "loading a checkpoint")
    try:
        tensors = st.load_file(str(p), device="cpu")
    except Exception as exc:  # SafetensorError has no importable base class across versions
        raise CheckpointError(f"Checkpoint '{p}' is corrupted: safetensors cannot read its weights ({exc}).") from None
    if not meta.content_hash:
        raise CheckpointError(f"Checkpoint '{p}' has no content_hash in its metadata.")
    if _tensor_hash(tensors) != meta.content_hash:
        raise CheckpointError(
            f"Checkpoint '{p}' is corrupted or was modified: the weights do not match the recorded content hash."
        )
    return tensors


def _torch_device(device):
    import torch

    if not isinstance(device, str):
        return device
    if device.lower() == "auto":
        from .devices import resolve_device

        return resolve_device("auto")
    try:
        return torch.device(device)
    except RuntimeError:
        raise InputError(f"Unknown device '{device}': use auto, cuda or cpu.") from None


def load_model(path: PathLike, device="cpu"):
    """``(network, CheckpointMetadata)``: the network rebuilt from the metadata, weights loaded strictly, in eval mode.

    ``device`` is a torch device or a name ('cpu', 'cuda', 'cuda:1', 'auto').  Never
    unpickles; refuses truncated, corrupted, unknown-model, newer-format and
    hash-mismatched files with a :class:`CheckpointError` naming the file.
    """
    from .deps import require

    require("torch", "loading a checkpoint")
    from .models import build_model

    p = Path(path)
    header, meta, _ = _read_header(p)
    _check_known_model(meta.model, p)
    check_architecture(p, meta, header)  # on the meta device: nothing allocated yet
    tensors = _read_tensors(p, meta)
    model = _build(build_model, p, meta)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        detail = " ".join(line.strip() for line in str(exc).strip().splitlines()[:3])
        raise CheckpointError(
            f"Checkpoint '{p}': the weights do not match the {meta.model} architecture of this version ({detail})."
        ) from None
    model.to(_torch_device(device))
    model.eval()
    return model, meta


def _build(build_model, p: Path, meta: CheckpointMetadata):
    """The network the metadata describes; configuration problems are :class:`CheckpointError` naming the file."""
    from .models import complete_config

    files = sorted(k for k in meta.config if str(k).endswith("_path"))
    if files:  # e.g. MOSFNet's pretrained_path: read when building, never part of a stored architecture
        raise CheckpointError(f"Checkpoint '{p}': its model configuration names a file ({files[0]}); a checkpoint's "
                              "configuration describes the architecture only.")
    try:
        return build_model(meta.model, **complete_config(meta.model, meta.config))
    except OptsarError as exc:
        raise CheckpointError(f"Checkpoint '{p}': cannot rebuild model '{meta.model}': {exc}") from None
    except (TypeError, ValueError, OverflowError) as exc:
        raise CheckpointError(f"Checkpoint '{p}': its configuration does not fit model '{meta.model}': "
                              f"{' '.join(str(exc).split())[:200]}") from None


class _TooLarge(Exception):
    """Raised inside a network's constructor by :class:`_SizeLimit`."""


class _SizeLimit:
    """While a network is built in this thread: stop as soon as it holds more tensors or values than ``tensors`` and
    ``values`` (a PyTorch parameter-registration hook, removed on exit)."""

    def __init__(self, tensors: int, values: int):
        self.max_tensors, self.max_values = tensors, values
        self.tensors = self.values = 0

    def _hook(self, module, name, param):
        if param is None or threading.get_ident() != self._thread:
            return None
        self.tensors += 1
        self.values += param.numel()
        if self.tensors > self.max_tensors or self.values > self.max_values:
            raise _TooLarge()
        return None

    def __enter__(self):
        from torch.nn.modules.module import register_module_parameter_registration_hook

        self._thread = threading.get_ident()
        self._handle = register_module_parameter_registration_hook(self._hook)
        return self

    def __exit__(self, *exc):
        self._handle.remove()


def check_architecture(path: PathLike, meta: CheckpointMetadata, header: Dict) -> None:
    """The configuration rebuilds exactly the stored tensors: checked on the meta device, before any allocation.

    ``header``: the file's tensor entries (``_read_header``).  A configuration asking for a
    larger network than the file holds stops the build at the first tensor too many (a
    memory or time bomb in edited metadata; constructors may make and drop a few tensors, so the limit is twice
    the file's count and values plus a margin); then every tensor's name and shape must match.  A network whose
    constructor cannot run on the meta device is built on the CPU under the same limit.
    """
    import torch

    from .models import build_model

    p = Path(path)
    shapes = {name: tuple(int(d) for d in entry["shape"]) for name, entry in header.items()}
    values = sum(math.prod(shape) for shape in shapes.values())
    limit = (2 * len(shapes) + 256, 2 * values + (1 << 22))  # constructors may make and drop a few tensors
    try:
        try:
            with _SizeLimit(*limit), torch.device("meta"):
                net = _build(build_model, p, meta)
        except NotImplementedError:  # a constructor that reads a tensor's values: on the CPU, within the same limit
            with _SizeLimit(*limit):
                net = _build(build_model, p, meta)
    except _TooLarge:
        raise CheckpointError(
            f"Checkpoint '{p}': its model configuration ({_config_text(meta.config)}) describes a larger "
            f"{meta.model} network than the {len(shapes)} tensors ({values} values) the file holds; "
            "the metadata was edited or belongs to other weights."
        ) from None
    built = {name: tuple(t.shape) for name, t in net.state_dict().items()}
    missing, unexpected = sorted(set(built) - set(shapes)), sorted(set(shapes) - set(built))
    wrong = [n for n in sorted(set(built) & set(shapes)) if built[n] != shapes[n]]
    if missing or unexpected or wrong:
        detail = "; ".join(x for x in (
            f"{len(missing)} tensor(s) missing from the file (e.g. {missing[0]})" if missing else "",
            f"{len(unexpected)} unexpected tensor(s) (e.g. {unexpected[0]})" if unexpected else "",
            f"{len(wrong)} of another shape (e.g. {wrong[0]}: {list(shapes[wrong[0]])} in the file, "
            f"{list(built[wrong[0]])} for this configuration)" if wrong else "") if x)
        raise CheckpointError(
            f"Checkpoint '{p}': the weights do not match the {meta.model} architecture its configuration describes "
            f"in this version ({detail})."
        )


def _config_text(config) -> str:
    text = ", ".join(f"{k}={v!r}" for k, v in config.items() if k not in ("optical_bands", "sar_bands", "num_classes"))
    return text[:160] + ("..." if len(text) > 160 else "")


def _check_known_model(name: str, path: Path) -> None:
    from . import models  # the registry, read at call time: tests register stand-in networks

    if name not in models.MODEL_NAMES:
        raise CheckpointError(
            f"Checkpoint '{path}' is for model '{name}', which this version of OptSAR Fusion does not know "
            f"(known: {', '.join(models.MODEL_NAMES)})."
        )


def load_checkpoint(path: PathLike, device="cpu"):
    """``(network, metadata dict)``: :func:`load_model` with the metadata in its JSON form."""
    model, meta = load_model(path, device)
    return model, meta.to_dict()


# -- classes and compatibility --------------------------------------------------------------


def class_scheme(metadata):
    """The checkpoint's classes (a :class:`~optsar_plugin.classes.ClassScheme` in logit order)."""
    return CheckpointMetadata.coerce(metadata).classes


def _band_choice(value) -> Optional[BandChoice]:
    if value is None:
        return None
    if isinstance(value, int):
        return BandChoice(value)
    names = [str(v) for v in value]
    return BandChoice(len(names), names=tuple(names))


def check_compatible(metadata, *, model_name: Optional[str] = None, optical_bands=None, sar_bands=None,
                     path: Optional[PathLike] = None, strict_names: bool = False) -> List[str]:
    """:func:`optsar_plugin.metadata.check_fit` for band counts or band-name lists; returns the warnings.

    Kept for callers that describe bands by count or names only (fine-tuning);
    raises :class:`~optsar_plugin.errors.InputError` when the inputs do not fit.
    """
    meta = CheckpointMetadata.coerce(metadata, str(path or ""))
    return check_fit(meta, model=model_name, optical=_band_choice(optical_bands), sar=_band_choice(sar_bands),
                     checkpoint=str(path or ""), strict_names=strict_names)
