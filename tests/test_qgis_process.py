"""The plugin through QGIS's own command line, as batch users run it."""

from __future__ import annotations

from tests.qgis_process import run_algorithm_json, run_qgis_process


def test_list_shows_the_provider_and_its_algorithms():
    out = run_qgis_process(["list"]).stdout
    assert "OptSAR Fusion" in out
    for alg in ("optsar:checkenvironment", "optsar:installdependencies", "optsar:classify", "optsar:train",
                "optsar:assessaccuracy", "optsar:stratifiedsample"):
        assert alg in out, f"{alg} missing from qgis_process list"


def test_checkenvironment_json_reports_torch():
    import torch

    result = run_algorithm_json("optsar:checkenvironment", {})
    assert result["algorithm_details"]["id"] == "optsar:checkenvironment"
    assert result["results"]["TORCH_VERSION"] == str(torch.__version__)
    assert result["results"]["READY"] is True


def test_installdependencies_dry_run_plans_nothing_destructive():
    result = run_algorithm_json("optsar:installdependencies", {"DRY_RUN": "true"})
    plan = result["results"]["PLAN"]
    # torch imports here without CUDA and there is no GPU: nothing to replace.
    assert "kept" in plan
    assert "torch==" not in plan


def test_errors_reach_batch_users_as_one_line_and_non_zero_exit():
    proc = run_qgis_process(["run", "optsar:classify", "--", "OPTICAL=/nonexistent/optical.tif",
                             "SAR=/nonexistent/sar.tif", "CHECKPOINT=/nonexistent/model.safetensors",
                             "MODEL=cloudlulc_net", "OUTPUT=/tmp/never.tif"], check=False)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stdout + proc.stderr
