"""optsar:checkenvironment: what this QGIS's Python can run (torch, CUDA, GPU, timm, mamba-ssm)."""

from __future__ import annotations

from qgis.core import (
    QgsProcessingOutputBoolean,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
)

from .base import OptsarAlgorithm


class CheckEnvironmentAlgorithm(OptsarAlgorithm):
    NAME = "checkenvironment"
    DISPLAY = "Check environment"
    GROUP = "Setup"
    GROUP_ID = "setup"
    HELP_ANCHOR = "optsarcheckenvironment"
    TAGS = ("torch", "cuda", "gpu", "diagnostics")
    HELP = (
        "Reports what OptSAR Fusion can use in this QGIS's Python: the Python version, PyTorch and its "
        "CUDA build, whether a CUDA GPU is visible (name and memory), timm (needed by MOSFNet's "
        "ConvNeXtV2 encoders) and the optional mamba-ssm CUDA kernels for MOSFNet's selective scan.<br>"
        "No parameters. Outputs: REPORT (text), TORCH_VERSION, CUDA_AVAILABLE, GPU_NAME, GPU_MEMORY_GIB, "
        "TIMM_VERSION, MAMBA_SSM_VERSION, READY (true when everything needed to run the networks imports).<br>"
        "If READY is false, run 'Install dependencies'."
    )

    REPORT = "REPORT"
    PYTHON_VERSION = "PYTHON_VERSION"
    TORCH_VERSION = "TORCH_VERSION"
    CUDA_AVAILABLE = "CUDA_AVAILABLE"
    GPU_NAME = "GPU_NAME"
    GPU_MEMORY_GIB = "GPU_MEMORY_GIB"
    TIMM_VERSION = "TIMM_VERSION"
    MAMBA_SSM_VERSION = "MAMBA_SSM_VERSION"
    READY = "READY"

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addOutput(QgsProcessingOutputString(self.REPORT, "Environment report"))
        self.addOutput(QgsProcessingOutputString(self.PYTHON_VERSION, "Python version"))
        self.addOutput(QgsProcessingOutputString(self.TORCH_VERSION, "PyTorch version"))
        self.addOutput(QgsProcessingOutputBoolean(self.CUDA_AVAILABLE, "CUDA GPU available"))
        self.addOutput(QgsProcessingOutputString(self.GPU_NAME, "GPU name"))
        self.addOutput(QgsProcessingOutputNumber(self.GPU_MEMORY_GIB, "GPU memory (GiB)"))
        self.addOutput(QgsProcessingOutputString(self.TIMM_VERSION, "timm version"))
        self.addOutput(QgsProcessingOutputString(self.MAMBA_SSM_VERSION, "mamba-ssm version"))
        self.addOutput(QgsProcessingOutputBoolean(self.READY, "Ready to run the networks"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from optsar_plugin.environment import environment_report, format_report

        report = environment_report()
        text = format_report(report)
        feedback.pushInfo(text)
        return {
            self.REPORT: text,
            self.PYTHON_VERSION: str(report["python"]),
            self.TORCH_VERSION: str(report["torch"] or ""),
            self.CUDA_AVAILABLE: report["cuda_available"],
            self.GPU_NAME: report["gpu_name"] or "",
            self.GPU_MEMORY_GIB: report["gpu_memory_gib"] or 0.0,
            self.TIMM_VERSION: str(report["timm"] or ""),
            self.MAMBA_SSM_VERSION: str(report["mamba_ssm"] or ""),
            self.READY: report["ready"],
        }
