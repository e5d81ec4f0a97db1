"""Loading a checkpoint's network: once per call (the default) or once per process (:class:`NetworkCache`).

:func:`~optsar_plugin.inference.classify` loads the network from the checkpoint every
time it is called, which is what a single classification wants.  A process that
classifies many scenes with the same checkpoint - a Dask worker of
:func:`optsar_plugin.batch.classify_batch` - passes a :class:`NetworkCache` instead, so
the weights are read, hash-checked and moved to the device once per process.  The
cache is an object its owner holds (the batch layer keeps one per Dask worker); the
engine keeps no global state.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Tuple

from ..errors import CheckpointError, OptsarError


def load_network(path: str, device: str):
    """``(network, CheckpointMetadata)`` from a checkpoint; anything unforeseen is a one-line checkpoint error."""
    from ..checkpoints import load_model

    try:
        return load_model(path, device=device)
    except OptsarError:
        raise
    except Exception as exc:  # corrupted or foreign file: say so instead of a traceback
        raise CheckpointError(f"The checkpoint '{path}' cannot be read ({type(exc).__name__}: {exc}); "
                              "is it an OptSAR Fusion checkpoint, and complete?") from None


class NetworkCache:
    """Networks kept in memory, keyed by checkpoint (real path and weights hash) and device.

    ``load(path, content_hash, device)`` returns ``(network, metadata)``, loading on the
    first request only; ``loads`` counts the loads (what the batch layer reports and tests
    check).  At most ``size`` networks are kept (least recently used dropped), so a
    process that is handed several checkpoints does not keep them all on the GPU.
    A file replaced by another with other weights has another hash, hence another key.
    """

    def __init__(self, size: int = 2):
        self.size = max(1, int(size))
        self.loads = 0
        self._items: OrderedDict[Tuple[str, str, str], tuple] = OrderedDict()

    def load(self, path: str, content_hash: str, device: str):
        key = (os.path.realpath(path), content_hash, str(device))
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        while len(self._items) >= self.size:
            self._items.popitem(last=False)
        item = load_network(path, device)
        self.loads += 1
        self._items[key] = item
        return item

    def __len__(self) -> int:
        return len(self._items)
