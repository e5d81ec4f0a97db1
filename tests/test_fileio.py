"""Atomic outputs: ordinary permissions, nothing left behind on failure, SIGTERM or SIGKILL, inputs never replaced."""

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from optsar_plugin.errors import InputError
from optsar_plugin.fileio import (
    OutputSet,
    atomic_write_bytes,
    atomic_write_text,
    publish,
    same_file,
    sweep_leftovers,
    temp_path,
)

ROOT = Path(__file__).resolve().parent.parent


def test_published_file_has_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        target = tmp_path / "report.html"
        atomic_write_text(target, "<html></html>")
        assert stat.S_IMODE(target.stat().st_mode) == 0o644  # mkstemp alone would give 0600
        assert target.read_text() == "<html></html>"
    finally:
        os.umask(old)


def test_failed_write_leaves_no_file(tmp_path):
    target = tmp_path / "out.csv"
    with pytest.raises(TypeError):
        atomic_write_bytes(target, None)  # fails inside the write, after the temporary file exists
    assert os.listdir(tmp_path) == []


def test_temp_path_without_create_is_free_for_drivers(tmp_path):
    tmp = temp_path(tmp_path / "points.gpkg", create=False)
    assert not os.path.exists(tmp) and tmp.endswith(".gpkg")
    open(tmp, "w").close()
    publish(tmp, tmp_path / "points.gpkg")
    assert os.listdir(tmp_path) == ["points.gpkg"]


# -- OutputSet: a run's outputs ----------------------------------------------------------------


def test_outputs_are_published_together_with_their_side_cars(tmp_path):
    (tmp_path / "map.tif.aux.xml").write_text("stale")  # an earlier run's side-car must not survive
    with OutputSet() as outs:
        a = outs.add(tmp_path / "map.tif", "map", sidecars=(".aux.xml",))
        b = outs.add(tmp_path / "report.html", "report")
        Path(a).write_text("raster")
        Path(b).write_text("html")
        assert sorted(os.listdir(tmp_path)) == sorted([Path(a).name, Path(b).name, "map.tif.aux.xml"])
        outs.publish()
    assert sorted(os.listdir(tmp_path)) == ["map.tif", "report.html"]
    with OutputSet() as outs:
        a = outs.add(tmp_path / "map.tif", "map", sidecars=(".aux.xml",))
        Path(a).write_text("new raster")
        Path(a + ".aux.xml").write_text("<PAMDataset/>")
        outs.publish()
    assert (tmp_path / "map.tif.aux.xml").read_text() == "<PAMDataset/>"


def test_an_error_discards_every_temporary_file(tmp_path):
    with pytest.raises(RuntimeError):
        with OutputSet() as outs:
            a = outs.add(tmp_path / "map.tif", "map", sidecars=(".aux.xml",))
            Path(a + ".aux.xml").write_text("x")
            outs.add(tmp_path / "style.qml", "style")
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_outputs_never_replace_inputs_however_they_are_named(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    optical = data / "optical.tif"
    optical.write_bytes(b"input")
    (tmp_path / "link").symlink_to(data)
    os.link(optical, data / "hard.tif")
    for name in (f"/{optical}", data / ".." / "data" / "optical.tif", tmp_path / "link" / "optical.tif",
                 data / "hard.tif"):
        with OutputSet([(optical, "optical raster")]) as outs:
            with pytest.raises(InputError, match="same file as the optical raster.*must differ"):
                outs.add(name, "output classification")
    assert optical.read_bytes() == b"input" and sorted(os.listdir(data)) == ["hard.tif", "optical.tif"]
    assert same_file(f"{optical}|layername=x", optical)


def test_an_output_cannot_be_another_outputs_side_car(tmp_path):
    with OutputSet() as outs:
        outs.add(tmp_path / "map.tif", "output classification", sidecars=(".aux.xml",))
        outs.add(tmp_path / "map.qml", "style file")
        with pytest.raises(InputError, match="'.*map.qml' and the style file .* are the same file"):
            outs.add(tmp_path / "map.qml", "confidence output")
        with pytest.raises(InputError, match="are the same file"):
            outs.add(tmp_path / "map.tif.aux.xml", "report")


def test_a_style_that_replaces_someone_elses_file_is_said(tmp_path):
    class Notes:
        def __init__(self):
            self.warnings = []

        def warning(self, message):
            self.warnings.append(message)

    (tmp_path / "map.qml").write_text("the user's own style")
    notes = Notes()
    with OutputSet(feedback=notes) as outs:
        Path(outs.add(tmp_path / "map.tif", "map")).write_text("x")
        Path(outs.add(tmp_path / "map.qml", "style file", primary=tmp_path / "map.tif")).write_text("ours")
        outs.publish()
    assert len(notes.warnings) == 1 and "replaced a file" in notes.warnings[0]


def test_missing_or_read_only_folders_are_clear_errors(tmp_path):
    with OutputSet() as outs:
        with pytest.raises(InputError, match="folder of the map .* does not exist"):
            outs.add(tmp_path / "nope" / "map.tif", "map")
        with pytest.raises(InputError, match="is a folder"):
            outs.add(tmp_path, "map")
        made = outs.add(tmp_path / "new" / "report.html", "report", make_folder=True)
    assert not os.path.exists(made) and (tmp_path / "new").is_dir()


def test_leftovers_of_killed_runs_are_swept_by_the_next_run(tmp_path):
    """SIGKILL cannot be caught: the next run in the folder removes what a dead process of this host left."""
    code = ("import os, sys, time\n"
            "from optsar_plugin.fileio import OutputSet\n"
            "outs = OutputSet()\n"
            "t = outs.add(sys.argv[1], 'map', sidecars=('.aux.xml',))\n"
            "open(t + '.aux.xml', 'w').close()\n"
            "print(t, flush=True)\n"
            "time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "map.tif")], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)
    temp = proc.stdout.readline().strip()
    assert os.path.exists(temp)
    assert sweep_leftovers(tmp_path) == []  # the writer still runs: its files stay
    proc.kill()
    proc.wait()
    (tmp_path / ".notes.txt").write_text("not ours")
    with OutputSet() as outs:
        outs.add(tmp_path / "other.tif", "map")
    assert sorted(os.listdir(tmp_path)) == [".notes.txt"]


def test_sigterm_in_the_cli_removes_temporary_files(tmp_path):
    """The CLI turns SIGTERM into an exception: the run unwinds, its temporary files go, exit status 143."""
    code = ("import sys, time\n"
            "from optsar_plugin import cli\n"
            "from optsar_plugin.fileio import OutputSet\n"
            "class Slow:\n"
            "    @staticmethod\n"
            "    def add_arguments(parser): parser.add_argument('out')\n"
            "    @staticmethod\n"
            "    def run_cli(args, feedback):\n"
            "        with OutputSet() as outs:\n"
            "            print(outs.add(args.out, 'map'), flush=True)\n"
            "            time.sleep(60)\n"
            "sys.modules['slow'] = Slow\n"
            "cli.COMMANDS['slow'] = ('slow', 'test')\n"
            "sys.exit(cli.main(['slow', sys.argv[1]]))\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "map.tif")], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    temp = proc.stdout.readline().strip()
    assert os.path.exists(temp)
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143 and "SIGTERM" in err and "Traceback" not in err
    assert os.listdir(tmp_path) == []


def test_an_inputs_companion_files_are_protected_too(tmp_path):
    """GDAL, SQLite and QGIS read these with the input: writing one changes or corrupts the input."""
    (tmp_path / "optical.tif").write_bytes(b"raster")
    (tmp_path / "ref.shp").write_bytes(b"shapes")
    inputs = [(tmp_path / "optical.tif", "optical raster"), (tmp_path / "ref.shp", "reference layer"),
              (tmp_path / "ref.gpkg", "reference layer"), (tmp_path / "forest.safetensors", "checkpoint", False)]
    for name, role in (("optical.tif.aux.xml", "optical raster"), ("optical.qml", "optical raster"),
                       ("optical.tfw", "optical raster"), ("ref.dbf", "reference layer"),
                       ("ref.gpkg-wal", "reference layer"), ("ref.gpkg-journal", "reference layer")):
        with OutputSet(inputs) as outs:
            with pytest.raises(InputError, match=f"would replace .*{name}.* read together with the {role}"):
                outs.add(tmp_path / name, "report")
    with OutputSet(inputs) as outs:  # a map named after its model: forest.qml is no companion of a checkpoint
        outs.add(tmp_path / "forest.tif", "map")
        outs.add(tmp_path / "forest.qml", "style file")
    with OutputSet(inputs) as outs:  # the style of an output named like an input raster would restyle it
        with pytest.raises(InputError, match="optical.qml.*read together with the optical raster"):
            outs.add(tmp_path / "optical.qml", "style file of the output classification")


def _fake_leftover(folder, pid, start):
    from optsar_plugin import fileio

    path = Path(folder) / f".map.tif.optsar-{fileio._HOST}-{pid}-{start}-abc123.tmp.tif"
    path.write_text("half-written")
    return path


def test_a_recycled_pid_or_a_zombie_does_not_keep_leftovers(tmp_path):
    from optsar_plugin import fileio

    parent = os.getppid()  # alive for the whole test
    mine = _fake_leftover(tmp_path, parent, fileio._start_time(parent))
    recycled = _fake_leftover(tmp_path, parent, fileio._start_time(parent) + 1)  # same pid, another process
    old_style = Path(tmp_path) / f".old.tif.optsar-{fileio._HOST}-{parent}-xyz.tmp.tif"  # version 0.1 names
    old_style.write_text("x")
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    t0 = time.monotonic()
    while fileio._proc_stat(zombie.pid)[0] != "Z" and time.monotonic() - t0 < 10:
        time.sleep(0.05)  # exited, not yet reaped: still "alive" for os.kill(pid, 0)
    dead = _fake_leftover(tmp_path, zombie.pid, 0)
    removed = sweep_leftovers(tmp_path)
    zombie.wait()
    assert sorted(removed) == sorted([str(recycled), str(dead)])
    assert mine.exists() and old_style.exists()


def test_a_full_disk_while_writing_is_one_line_naming_the_folder(tmp_path):
    import errno

    with pytest.raises(InputError, match=f"Cannot write the outputs in '{tmp_path}'.*No space left.*disk is full"):
        with OutputSet() as outs:
            tmp = outs.add(tmp_path / "report.html", "report")
            Path(tmp).write_text("<html>")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert os.listdir(tmp_path) == []
