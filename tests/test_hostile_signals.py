"""Hostile events (issue 12): real kills mid-run and two runs writing the same output at once.

Through the engine's command line, the engine worker (``python -m optsar_plugin worker``, as QGIS
starts it) and ``qgis_process``.  After each: no temporary file is left (SIGKILL cannot be caught:
its leftovers are recognisable and the next run in the folder removes them), nothing at the
output path unless a run completed, every input byte-identical, no process left behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import rasterio

from tests.helpers import QGIS_PROCESS, qgis_env
from tests.hostile import TEMP_MARK, snapshot

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def big(hostile_data, tmp_path_factory):
    """A 1024 x 1024 scene and the tiny checkpoint: classified with 64 px tiles, batch 1 and test-time
    augmentation d4 (:data:`SLOW`) it takes seconds even on a fast CPU, long enough to be killed half-way
    (a 512 x 512 scene without TTA was written in 0.3 s, before the signal came)."""
    from optsar_plugin.sample_scene import make_sample_scene

    folder = tmp_path_factory.mktemp("hostile_big")
    paths = make_sample_scene(folder / "scene", size=1024, seed=5, clouds=False)
    return {"optical": paths["optical"], "sar": paths["sar"], "checkpoint": hostile_data["CK"], "folder": folder}


SLOW = ("--tta", "d4")  # 8 passes per window: a run lasts long enough to be interrupted


def classify_cmd(big, output, *extra):
    return [sys.executable, "-m", "optsar_plugin", "classify", "--optical", big["optical"], "--sar", big["sar"],
            "--checkpoint", big["checkpoint"], "--device", "cpu", "--tile-size", "64", "--batch-size", "1",
            *SLOW, "--output", str(output), *extra]


def temps(folder: Path):
    return sorted(p.name for p in Path(folder).iterdir() if TEMP_MARK in p.name)


def wait_for_temp(folder: Path, proc, seconds: float = 120.0) -> None:
    """Until the run has reserved its temporary files (and written for a moment)."""
    t0 = time.monotonic()
    while not temps(folder):
        assert proc.poll() is None, f"the run ended before it was killed: {proc.communicate()}"
        assert time.monotonic() - t0 < seconds, "no temporary file appeared"
        time.sleep(0.05)
    time.sleep(0.5)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def children(pid: int):
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def test_cli_sigterm_mid_run_cleans_up_and_exits(big, tmp_path):
    inputs = snapshot(Path(big["folder"]))
    proc = subprocess.Popen(classify_cmd(big, tmp_path / "map.tif", "--confidence", str(tmp_path / "conf.tif")),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_temp(tmp_path, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert [line for line in err.splitlines() if "error" in line.lower()] == [
        "error: Stopped by SIGTERM; no output was written."]
    assert "Traceback" not in err
    assert os.listdir(tmp_path) == []
    assert snapshot(Path(big["folder"])) == inputs


def test_cli_sigkill_leftovers_are_swept_by_the_next_run(big, hostile_data, tmp_path):
    proc = subprocess.Popen(classify_cmd(big, tmp_path / "map.tif"), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_for_temp(tmp_path, proc)
    proc.kill()
    proc.wait()
    left = temps(tmp_path)
    assert left and all(f"-{proc.pid}-" in name for name in left)  # recognisable: named after the dead writer
    assert not (tmp_path / "map.tif").exists()
    small = {"optical": f"{hostile_data['S']}/optical.tif", "sar": f"{hostile_data['S']}/sar.tif",
             "checkpoint": hostile_data["CK"]}
    done = subprocess.run(classify_cmd(small, tmp_path / "next.tif"), cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(tmp_path)) == ["next.qml", "next.tif", "next.tif.aux.xml"]


def worker_job(big, output):
    return json.dumps({"protocol": 1, "function": "classify", "kwargs": {
        "optical": big["optical"], "sar": big["sar"], "checkpoint": big["checkpoint"], "output": str(output),
        "device": "cpu", "tile_size": 64, "batch_size": 1, "tta": "d4"}})


def start_worker(big, output):
    proc = subprocess.Popen([sys.executable, "-m", "optsar_plugin", "worker"], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdin.write(worker_job(big, output))
    proc.stdin.close()
    proc.stdin = None  # communicate() must not flush it again
    return proc


def test_worker_sigterm_mid_run_reports_cancelled_and_cleans_up(big, tmp_path):
    proc = start_worker(big, tmp_path / "map.tif")
    wait_for_temp(tmp_path, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    events = [json.loads(line) for line in out.splitlines()]
    assert proc.returncode == 3 and events[-1]["event"] == "error" and events[-1]["kind"] == "cancelled", (out, err)
    assert "Traceback" not in err and os.listdir(tmp_path) == []


def test_worker_sigkill_leftovers_are_swept(big, tmp_path):
    from optsar_plugin.fileio import sweep_leftovers

    proc = start_worker(big, tmp_path / "map.tif")
    wait_for_temp(tmp_path, proc)
    proc.kill()
    proc.communicate()
    assert temps(tmp_path)  # what the QGIS side (worker_client) sweeps after a worker died
    assert sweep_leftovers(tmp_path) and os.listdir(tmp_path) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_qgis_process_killed_mid_run_leaves_no_worker_and_no_file(big, tmp_path, sig):
    """qgis_process dies (a closed terminal, a killed job): the worker notices within seconds and cleans up."""
    inputs = snapshot(Path(big["folder"]) / "scene")
    args = [QGIS_PROCESS, "run", "optsar:classify", "--", f"OPTICAL={big['optical']}", f"SAR={big['sar']}",
            f"CHECKPOINT={big['checkpoint']}", "DEVICE=cpu", "TILE_SIZE=64", "BATCH_SIZE=1", "TTA=d4",
            f"OUTPUT={tmp_path / 'map.tif'}"]
    proc = subprocess.Popen(args, env=qgis_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_temp(tmp_path, proc, seconds=180)
    workers = children(proc.pid)
    assert workers, "qgis_process runs the classification in a worker process"
    proc.send_signal(sig)
    proc.wait(timeout=60)
    t0 = time.monotonic()
    while (any(alive(w) for w in workers) or temps(tmp_path)) and time.monotonic() - t0 < 20:
        time.sleep(0.2)
    assert not any(alive(w) for w in workers), "the worker outlived qgis_process"
    assert os.listdir(tmp_path) == []
    assert {k: v for k, v in snapshot(Path(big["folder"]) / "scene").items() if not k.endswith(".aux.xml")} == {
        k: v for k, v in inputs.items() if not k.endswith(".aux.xml")}


def test_two_classifications_writing_the_same_output_at_once(hostile_data, tmp_path):
    small = {"optical": f"{hostile_data['S']}/optical.tif", "sar": f"{hostile_data['S']}/sar.tif",
             "checkpoint": hostile_data["CK"]}
    inputs = snapshot(Path(hostile_data["D"]))
    procs = [subprocess.Popen(classify_cmd(small, tmp_path / "map.tif"), cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert [r[0] for r in results] == [0, 0], results
    assert sorted(os.listdir(tmp_path)) == ["map.qml", "map.tif", "map.tif.aux.xml"]
    with rasterio.open(tmp_path / "map.tif") as ds:
        assert ds.colormap(1) and set(map(int, ds.read(1).ravel())) <= {0, 4, 6, 255}
    assert snapshot(Path(hostile_data["D"])) == inputs


def test_two_samples_writing_the_same_layer_at_once(hostile_data, tmp_path):
    from osgeo import ogr

    cmd = [sys.executable, "-m", "optsar_plugin", "sample", f"{hostile_data['S']}/truth.tif",
           str(tmp_path / "points.gpkg"), "--total", "40", "--min-per-class", "0"]
    procs = [subprocess.Popen(cmd + ["--seed", str(k)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for k in range(2)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    assert [r[0] for r in results] == [0, 0], results
    assert os.listdir(tmp_path) == ["points.gpkg"]
    ds = ogr.Open(str(tmp_path / "points.gpkg"))
    assert ds.GetLayer(0).GetFeatureCount() == 40


@pytest.mark.parametrize("limit", [4_000, 60_000], ids=["at_close", "mid_write"])
def test_a_full_disk_is_one_line_and_publishes_nothing(big, tmp_path, limit):
    """A file-size limit stands in for a full disk: GDAL fails while the blocks are written or when the file is
    closed (rasterio 1.3 closes without an exception: the corrupt map used to be published)."""
    import resource

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    cmd = classify_cmd(big, tmp_path / "map.tif", "--confidence", str(tmp_path / "conf.tif"), "--tile-size", "256",
                       "--batch-size", "4")  # the later options win: a quick run
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, preexec_fn=small_files, timeout=600)
    lines = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert f"Cannot write the output raster in the folder '{tmp_path}'" in lines[0], lines
    assert "Traceback" not in proc.stderr and os.listdir(tmp_path) == []


def test_training_killed_mid_epoch_resumes_to_the_weights_of_an_uninterrupted_run(hostile_data, tmp_path):
    """SIGKILL in the middle of epoch 2: the checkpoint is not written, the state of epoch 1 is kept; --resume
    continues from it to the very weights a run that was never interrupted writes, and says so."""
    from optsar_plugin.checkpoints import read_metadata
    from optsar_plugin.training.resume import SUFFIX

    s = hostile_data["S"]

    def cmd(output, *extra):
        return [sys.executable, "-m", "optsar_plugin", "train", "--optical", f"{s}/optical.tif", "--sar", f"{s}/sar.tif",
                "--reference", f"{s}/reference_train.gpkg", "--class-field", "class_name", "--model", "cloudlulc_net",
                "--epochs", "3", "--steps-per-epoch", "2", "--tile-size", "64", "--batch-size", "2", "--device", "cpu",
                "--seed", "3", "--output", str(output), *extra]

    whole = subprocess.run(cmd(tmp_path / "whole.safetensors"), cwd=ROOT, capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr
    out = tmp_path / "killed" / "model.safetensors"
    out.parent.mkdir()
    state = Path(str(out) + SUFFIX)
    proc = subprocess.Popen(cmd(out), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:  # progress lines: kill once epoch 2 has started
        if state.exists() and "Epoch 2/3, step 1/2" in line:
            break
    proc.kill()
    proc.wait()
    assert state.exists() and not out.exists()
    resumed = subprocess.run(cmd(out, "--resume"), cwd=ROOT, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "Resuming from" in resumed.stderr and "resumed at step 2." in resumed.stderr
    assert "Traceback" not in resumed.stderr
    assert read_metadata(out)["content_hash"] == read_metadata(tmp_path / "whole.safetensors")["content_hash"]
    assert sorted(os.listdir(out.parent)) == ["model.safetensors"]  # state removed, the killed run's leftovers swept
