"""optsar:installdependencies: prepare the engine worker's Python (a venv with the pinned PyTorch, timm...)."""

from __future__ import annotations

import os

from qgis.core import (
    QgsProcessingException,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
)

from .base import FeedbackAdapter, OptsarAlgorithm


class InstallDependenciesAlgorithm(OptsarAlgorithm):
    NAME = "installdependencies"
    DISPLAY = "Install dependencies (PyTorch, timm)"
    GROUP = "Setup"
    GROUP_ID = "setup"
    HELP_ANCHOR = "optsarinstalldependencies"
    TAGS = ("pip", "torch", "install", "cuda", "venv", "worker")
    HELP = (
        "Prepares the Python in which the networks run. PyTorch never loads inside QGIS: 'Train', 'Classify' and "
        "'Check environment' start a separate Python process, the engine worker. This algorithm creates that "
        "worker's environment - a virtual environment made from QGIS's own Python with its system packages visible "
        "(GDAL, rasterio and numpy that come with QGIS), in the QGIS profile folder "
        "(<code>optsar_fusion/worker-env</code>, so a plugin update keeps it) - and installs the pinned PyTorch, "
        "torchvision, timm and safetensors with pip (numpy kept below 2; rasterio only if it does not import). The "
        "build follows what <code>nvidia-smi</code> reports: a CUDA build when an NVIDIA driver is present, the CPU "
        "build otherwise; mamba-ssm (optional) is built only when a CUDA toolchain (nvcc) exists. PyTorch comes "
        "first from PyTorch's own wheel index, else from pip's configured index (PyPI): an index that cannot be "
        "reached is skipped with a message saying so. A worker Python that already runs the networks (with CUDA "
        "when there is a GPU) is kept. The CUDA build needs several GB of disk.<br>"
        "<b>DRY_RUN</b>: only report what would be done.<br>"
        "Outputs: <b>PLAN</b> (what was decided and why), <b>PYTHON</b> (the worker's Python) and <b>REPORT</b> "
        "(the worker's environment afterwards). No restart of QGIS is needed."
    )

    DRY_RUN = "DRY_RUN"
    PLAN = "PLAN"
    PYTHON = "PYTHON"
    REPORT = "REPORT"

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterBoolean(self.DRY_RUN, "Only show what would be installed", False))
        self.addOutput(QgsProcessingOutputString(self.PLAN, "Installation plan"))
        self.addOutput(QgsProcessingOutputString(self.PYTHON, "The engine worker's Python"))
        self.addOutput(QgsProcessingOutputString(self.REPORT, "Environment report"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from optsar_plugin.environment import format_report
        from optsar_plugin.installer import environment_of, plan_install, probe, run_plan

        from .worker_client import find_python, managed_env_dir

        try:
            current = find_python()[0]
        except QgsProcessingException:
            current = None
        feedback.pushInfo(f"Probing the worker's Python: {current or 'none yet'}")
        plan = plan_install(probe(current), managed_env_dir())
        text = "\n".join(plan.describe())
        feedback.pushInfo(text)
        if (plan.steps or plan.create_env) and not self.parameterAsBoolean(parameters, self.DRY_RUN, context):
            done = self.run_engine(run_plan, plan, FeedbackAdapter(feedback))
            feedback.pushInfo("Done: " + "; ".join(done))
        python = plan.python if os.path.isfile(plan.python) else (current or "")
        env = environment_of(python) if python else {}
        report = format_report(env) if env else f"The worker's Python ({python or 'none'}) cannot report its environment."
        feedback.pushInfo(report)
        return {self.PLAN: text, self.PYTHON: python, self.REPORT: report}
