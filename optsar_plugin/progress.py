"""Progress and cancellation: one small interface shared by inference, training and accuracy.

The engine calls ``feedback.progress(fraction, message)`` between windows or steps
and checks ``feedback.is_canceled()``; the Processing algorithms pass an adapter
around ``QgsProcessingFeedback``, the CLI a printing one.
"""

from __future__ import annotations

import sys
from typing import Optional, Protocol

from .errors import Cancelled


class Feedback(Protocol):
    def progress(self, fraction: float, message: Optional[str] = None) -> None: ...
    def info(self, message: str) -> None: ...
    def warning(self, message: str) -> None: ...
    def is_canceled(self) -> bool: ...


class NullFeedback:
    """Feedback that says nothing and is never cancelled (library and test use)."""

    def progress(self, fraction: float, message: Optional[str] = None) -> None:
        pass

    def info(self, message: str) -> None:
        pass

    def warning(self, message: str) -> None:
        pass

    def is_canceled(self) -> bool:
        return False


class PrintFeedback(NullFeedback):
    """Feedback for the command line: messages on stderr, percentage on change."""

    def __init__(self, stream=None, quiet: bool = False):
        self._stream = stream or sys.stderr
        self._quiet = quiet
        self._last = -1

    def progress(self, fraction: float, message: Optional[str] = None) -> None:
        pct = int(round(100 * max(0.0, min(1.0, fraction))))
        if self._quiet or (pct == self._last and not message):
            return
        self._last = pct
        print(f"[{pct:3d}%] {message or ''}".rstrip(), file=self._stream, flush=True)

    def info(self, message: str) -> None:
        if not self._quiet:
            print(message, file=self._stream, flush=True)

    def warning(self, message: str) -> None:
        print(f"WARNING: {message}", file=self._stream, flush=True)


def check_cancel(feedback: Feedback) -> None:
    """Raise :class:`Cancelled` if the user asked to stop."""
    if feedback is not None and feedback.is_canceled():
        raise Cancelled("Cancelled by the user.")
