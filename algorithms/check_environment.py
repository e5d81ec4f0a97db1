"""optsar:checkenvironment: what the engine worker's Python can run (torch, CUDA, GPU, memory, timm) and QGIS's own Python."""

from __future__ import annotations

from qgis.core import (
    QgsProcessingException,
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
    TAGS = ("torch", "cuda", "gpu", "diagnostics", "worker", "python")
    HELP = (
        "Reports what OptSAR Fusion can use. The networks run in a separate Python process, the engine worker "
        "(PyTorch never loads inside QGIS); this algorithm starts it and reports its Python (WORKER_PYTHON, and where "
        "it was found: the provider setting 'Python for the engine worker', the OPTSAR_PYTHON environment variable, "
        "the environment 'Install dependencies' prepared, or the plugin folder's .venv), PyTorch and its CUDA build, "
        "whether a CUDA GPU is visible (name and memory), the machine's memory, timm (needed by MOSFNet's ConvNeXtV2 "
        "encoders) and the optional mamba-ssm CUDA kernels. QGIS's own Python is reported separately "
        "(QGIS_PYTHON_VERSION).<br>"
        "No parameters. Outputs: REPORT (text), WORKER_PYTHON, PYTHON_VERSION (the worker's), TORCH_VERSION, "
        "CUDA_AVAILABLE, GPU_NAME, GPU_MEMORY_GIB, MEMORY_GIB, TIMM_VERSION, MAMBA_SSM_VERSION, QGIS_PYTHON_VERSION, "
        "READY (true when everything needed to run the networks imports in the worker).<br>"
        "If READY is false, run 'Install dependencies'."
    )

    REPORT = "REPORT"
    WORKER_PYTHON = "WORKER_PYTHON"
    PYTHON_VERSION = "PYTHON_VERSION"
    TORCH_VERSION = "TORCH_VERSION"
    CUDA_AVAILABLE = "CUDA_AVAILABLE"
    GPU_NAME = "GPU_NAME"
    GPU_MEMORY_GIB = "GPU_MEMORY_GIB"
    MEMORY_GIB = "MEMORY_GIB"
    TIMM_VERSION = "TIMM_VERSION"
    MAMBA_SSM_VERSION = "MAMBA_SSM_VERSION"
    QGIS_PYTHON_VERSION = "QGIS_PYTHON_VERSION"
    READY = "READY"

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addOutput(QgsProcessingOutputString(self.REPORT, "Environment report"))
        self.addOutput(QgsProcessingOutputString(self.WORKER_PYTHON, "Engine worker's Python"))
        self.addOutput(QgsProcessingOutputString(self.PYTHON_VERSION, "Python version (engine worker)"))
        self.addOutput(QgsProcessingOutputString(self.TORCH_VERSION, "PyTorch version"))
        self.addOutput(QgsProcessingOutputBoolean(self.CUDA_AVAILABLE, "CUDA GPU available"))
        self.addOutput(QgsProcessingOutputString(self.GPU_NAME, "GPU name"))
        self.addOutput(QgsProcessingOutputNumber(self.GPU_MEMORY_GIB, "GPU memory (GiB)"))
        self.addOutput(QgsProcessingOutputNumber(self.MEMORY_GIB, "Memory (GiB)"))
        self.addOutput(QgsProcessingOutputString(self.TIMM_VERSION, "timm version"))
        self.addOutput(QgsProcessingOutputString(self.MAMBA_SSM_VERSION, "mamba-ssm version"))
        self.addOutput(QgsProcessingOutputString(self.QGIS_PYTHON_VERSION, "QGIS's own Python version"))
        self.addOutput(QgsProcessingOutputBoolean(self.READY, "Ready to run the networks"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from optsar_plugin.environment import format_report

        from .worker_client import find_python, qgis_python_summary, run_job

        qgis_py = qgis_python_summary()
        qgis_line = (f"QGIS's Python     {qgis_py['version']} ({qgis_py['executable']}); torch importable there: "
                     f"{qgis_py['torch_importable']} - the engine never imports it in QGIS")
        report, worker, problem = {}, "", ""
        try:
            worker, source = find_python()
            report = run_job("environment", {}, feedback, python=worker)
            text = f"Engine worker     {worker} (from {source})\n{format_report(report)}\n{qgis_line}"
        except QgsProcessingException as exc:
            problem = str(exc)
            text = f"Engine worker     not usable: {problem}\n{qgis_line}\nReady             no"
        feedback.pushInfo(text)
        return {
            self.REPORT: text,
            self.WORKER_PYTHON: worker,
            self.PYTHON_VERSION: str(report.get("python") or ""),
            self.TORCH_VERSION: str(report.get("torch") or ""),
            self.CUDA_AVAILABLE: bool(report.get("cuda_available")),
            self.GPU_NAME: report.get("gpu_name") or "",
            self.GPU_MEMORY_GIB: report.get("gpu_memory_gib") or 0.0,
            self.MEMORY_GIB: report.get("memory_gib") or 0.0,
            self.TIMM_VERSION: str(report.get("timm") or ""),
            self.MAMBA_SSM_VERSION: str(report.get("mamba_ssm") or ""),
            self.QGIS_PYTHON_VERSION: qgis_py["version"],
            self.READY: bool(report.get("ready")) and not problem,
        }
