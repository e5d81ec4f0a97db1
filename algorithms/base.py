"""What every OptSAR Fusion algorithm shares: group, icon, help link, engine-error handling.

Algorithms stay thin: parameters in, one engine call, outputs out.  Engine errors
(:class:`optsar_plugin.errors.OptsarError`) become ``QgsProcessingException`` with the
engine's message, so ``qgis_process`` users see one line and a non-zero exit code.
"""

from __future__ import annotations

import os
from typing import Callable

from qgis.core import QgsProcessingAlgorithm, QgsProcessingException
from qgis.PyQt.QtGui import QIcon

PLUGIN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ICON_DIR = os.path.join(PLUGIN_DIR, "resources", "icons")
README_URL = "https://github.com/optsar-fusion/optsar_fusion/blob/main/README.md"


class FeedbackAdapter:
    """Presents a ``QgsProcessingFeedback`` as the engine's :class:`optsar_plugin.progress.Feedback`."""

    def __init__(self, feedback, start: float = 0.0, end: float = 100.0):
        self._fb = feedback
        self._start = start
        self._span = end - start

    def progress(self, fraction, message=None):
        if self._fb is None:
            return
        self._fb.setProgress(self._start + self._span * max(0.0, min(1.0, float(fraction))))
        if message:
            self._fb.setProgressText(message)

    def info(self, message):
        if self._fb is not None:
            self._fb.pushInfo(message)

    def warning(self, message):
        if self._fb is not None:
            self._fb.reportError(message, fatalError=False)

    def is_canceled(self):
        return bool(self._fb is not None and self._fb.isCanceled())


class OptsarAlgorithm(QgsProcessingAlgorithm):
    """Base class: subclasses set ``NAME``, ``DISPLAY``, ``GROUP``, ``GROUP_ID``, ``ICON``, ``HELP``, ``TAGS``."""

    NAME = ""
    DISPLAY = ""
    GROUP = "Land cover"
    GROUP_ID = "landcover"
    ICON = "optsar.svg"
    HELP = ""
    HELP_ANCHOR = "algorithm-reference"
    TAGS = ()

    def name(self):
        return self.NAME

    def displayName(self):
        return self.DISPLAY

    def group(self):
        return self.GROUP

    def groupId(self):
        return self.GROUP_ID

    def tags(self):
        return ["optsar", "sar", "optical", "fusion", "land cover", *self.TAGS]

    def shortHelpString(self):
        return self.HELP

    def helpUrl(self):
        return f"{README_URL}#{self.HELP_ANCHOR}"

    def icon(self):
        return QIcon(os.path.join(ICON_DIR, self.ICON))

    def svgIconPath(self):
        return os.path.join(ICON_DIR, self.ICON)

    def createInstance(self):
        return type(self)()

    @staticmethod
    def run_engine(call: Callable, *args, **kwargs):
        """Run an engine function; its user-facing errors become ``QgsProcessingException``."""
        from optsar_plugin.errors import OptsarError

        try:
            return call(*args, **kwargs)
        except OptsarError as exc:
            raise QgsProcessingException(str(exc)) from None
