"""optsar:installdependencies: install the pinned PyTorch/timm into a plugin-local folder."""

from __future__ import annotations

import importlib
import sys

from qgis.core import (
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
)

from .base import OptsarAlgorithm


class InstallDependenciesAlgorithm(OptsarAlgorithm):
    NAME = "installdependencies"
    DISPLAY = "Install dependencies (PyTorch, timm)"
    GROUP = "Setup"
    GROUP_ID = "setup"
    HELP_ANCHOR = "optsarinstalldependencies"
    TAGS = ("pip", "torch", "install", "cuda")
    HELP = (
        "Installs the pinned PyTorch, torchvision, timm and safetensors with pip into a folder inside the "
        "plugin (ext-libs), which the plugin adds to Python's path. The build is chosen from what "
        "<code>nvidia-smi</code> reports: a CUDA build when an NVIDIA driver is present, the CPU build "
        "otherwise; mamba-ssm (optional, MOSFNet's fast scan) is built only when a CUDA toolchain (nvcc) exists. "
        "A torch that already imports with CUDA is never replaced.<br>"
        "<b>DRY_RUN</b>: only report the pip commands that would run.<br>"
        "Outputs: <b>PLAN</b> (what was decided and why) and <b>REPORT</b> (the environment afterwards). "
        "Restart QGIS after an installation."
    )

    DRY_RUN = "DRY_RUN"
    PLAN = "PLAN"
    REPORT = "REPORT"

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterBoolean(self.DRY_RUN, "Only show what would be installed", False))
        self.addOutput(QgsProcessingOutputString(self.PLAN, "Installation plan"))
        self.addOutput(QgsProcessingOutputString(self.REPORT, "Environment report"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from optsar_plugin.environment import environment_report, format_report
        from optsar_plugin.installer import plan_install, probe, run_plan, site_dir

        from .base import FeedbackAdapter

        dry = self.parameterAsBoolean(parameters, self.DRY_RUN, context)
        plan = plan_install(probe())
        lines = plan.reasons + ["$ " + " ".join(c) for c in plan.commands]
        if not plan.commands:
            lines.append("Nothing to install.")
        text = "\n".join(lines)
        feedback.pushInfo(text)
        if plan.commands and not dry:
            self.run_engine(run_plan, plan, FeedbackAdapter(feedback))
            target = site_dir()
            if target not in sys.path:
                sys.path.append(target)
            importlib.invalidate_caches()
        report = format_report(environment_report())
        feedback.pushInfo(report)
        return {self.PLAN: text, self.REPORT: report}
