"""The hostile-input suite's data and checks (issue 12): what a careless or hostile user hands the plugin.

Used by ``tests/test_hostile_*.py`` (never a test module itself).  :func:`build_data` writes one tree
of inputs - a small sample scene, a tiny checkpoint, crafted rasters, checkpoints and layers, links
and a non-ASCII folder - and every case of ``tests/hostile_cases.py`` runs against it.  A case
states its input and what must happen; :func:`check` asserts it:

* the exit status (0 where the input is odd but valid, e.g. non-ASCII paths);
* exactly one line carries the error, and it names the problem and the file or parameter
  (the case's ``message`` regular expression);
* no traceback anywhere (stdout, stderr, the error message), no echo of GDAL's errors (``ERROR 1: ...``);
* nothing at the output paths, no temporary file anywhere (``.optsar-`` names), no stray file;
* every input byte-identical afterwards (sha256 of every file of the data tree before and after).

Placeholders in a case's arguments: ``{D}`` the data tree, ``{S}`` the scene folder in it, ``{C}``
the crafted inputs, ``{CK}`` the tiny checkpoint, ``{U}`` the non-ASCII folder, ``{RO}`` a
read-only folder, ``{O}`` the case's own (empty) output folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

TEMP_MARK = ".optsar-"
UNICODE_DIR = "données_ümlaut_日本"
GDAL_ECHO = re.compile(r"^ERROR \d+: ", re.M)  # GDAL's default error handler, around the one line
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|^\s+File \".*\", line \d+", re.M)


@dataclass(frozen=True)
class Case:
    """One hostile input: run by ``route`` with ``args`` (placeholders, see the module docstring).

    ``route``: ``cli`` (``python -m optsar_plugin ARGS``), ``worker`` (a worker job: ``args`` is
    ``{"function": ..., "kwargs": {...}}``), ``qgis_process`` (``args`` = ``{"algorithm", "params"}``),
    ``processing`` (the same through ``processing.run`` in a QGIS process).  ``status``: the expected
    exit status (the worker's, qgis_process's; ``processing``: 0 ok, 1 exception).  ``message``: a
    regular expression the one error line must match - it names the problem and the file or parameter.
    ``absent``: paths that must not exist afterwards (every output named in ``args`` by default);
    ``present``: paths that must exist (cases expected to succeed).  ``needs``: a capability of the
    data tree the case needs (``readonly``); ``max_seconds``: an upper bound on the run (memory and
    time bombs), measured inside the process for ``cli``/``worker``.  ``prepare``: files the user already has
    beside the outputs; ``expect``: what the output must say (a warning).
    """

    name: str
    route: str
    args: object
    status: int
    message: str = ""
    note: str = ""
    absent: Tuple[str, ...] = ()
    present: Tuple[str, ...] = ()
    needs: str = ""
    max_seconds: Optional[float] = None
    prepare: Tuple[Tuple[str, str], ...] = ()  # (path, text) written before the run (files a user already has)
    expect: str = ""  # a regular expression the run's output must match (a warning)


# -- the data tree ---------------------------------------------------------------------------------


def build_data(root: Path) -> Dict[str, str]:
    """Write the inputs every case uses under ``root``; returns the placeholder values (see the module docstring)."""
    from optsar_plugin.sample_scene import make_sample_scene
    from tests.helpers import random_checkpoint

    root = Path(root)
    data = root / "data"
    scene = data / "scene"
    crafted = data / "crafted"
    crafted.mkdir(parents=True)
    paths = make_sample_scene(scene, size=96, seed=3)
    ck = data / "tiny.safetensors"
    random_checkpoint(paths["optical"], paths["sar"], ck)
    _crafted_rasters(scene, crafted)
    _crafted_checkpoints(ck, crafted)
    _crafted_vectors(scene, crafted)
    _links(data, scene)
    (data / "scenes.csv").write_text("name,optical,sar\nscene,scene/optical.tif,scene/sar.tif\n")
    (data / "scenes_optical.csv").write_text("name,optical,sar\noptical,scene/optical.tif,scene/sar.tif\n")
    unicode_dir = _unicode_copy(data, scene, ck)
    readonly = data / "readonly"
    readonly.mkdir()
    (root / "out").mkdir()
    values = {"D": str(data), "S": str(scene), "C": str(crafted), "CK": str(ck), "U": str(unicode_dir),
              "RO": str(readonly), "OUT": str(root / "out")}
    values["readonly"] = "yes" if make_read_only(readonly) else ""
    (root / "values.json").write_text(json.dumps(values, ensure_ascii=False))
    return values


def _write(path, data, like, dtype=None, nodata=None, count=None):
    import rasterio

    with rasterio.open(like) as ds:
        profile = dict(driver="GTiff", width=data.shape[-1], height=data.shape[-2], crs=ds.crs, transform=ds.transform)
    data = data if data.ndim == 3 else data[None]
    with rasterio.open(path, "w", count=count or data.shape[0], dtype=dtype or data.dtype, nodata=nodata,
                       **profile) as out:
        out.write(data.astype(dtype or data.dtype))
    return str(path)


def _crafted_rasters(scene: Path, c: Path) -> None:
    import rasterio

    optical = scene / "optical.tif"
    with rasterio.open(optical) as ds:
        opt = ds.read()
    with rasterio.open(scene / "truth.tif") as ds:
        truth = ds.read(1)
    (c / "empty.tif").write_bytes(b"")
    (c / "text.tif").write_text("this is a text file, not a raster\n")
    (c / "badheader.tif").write_bytes(b"II*\x00" + b"\xff" * 200)
    (c / "nobands.vrt").write_text('<VRTDataset rasterXSize="96" rasterYSize="96"><SRS>EPSG:32633</SRS>'
                                   '<GeoTransform>601000,10,0,5297000,0,-10</GeoTransform></VRTDataset>')
    # truncated mid-read: the header (at the start) is complete, the strips are not
    rng = np.random.default_rng(0)
    full = _write(c / "full.tif", rng.integers(0, 3000, (10, 96, 96)).astype("uint16"), optical)
    raw = Path(full).read_bytes()
    (c / "truncated.tif").write_bytes(raw[: len(raw) // 2])
    os.remove(full)
    full = _write(c / "map_full.tif", rng.integers(0, 5, (1, 96, 96)).astype("uint8"), optical, nodata=255)
    raw = Path(full).read_bytes()
    (c / "map_truncated.tif").write_bytes(raw[: len(raw) // 2])
    os.remove(full)
    _write(c / "complex_optical.tif", opt.astype("complex64"), optical)
    _write(c / "complex_sar.tif", np.ones((2, 96, 96), "complex64"), optical)
    _write(c / "complex_map.tif", truth.astype("complex64"), optical)
    _write(c / "float_map.tif", truth.astype("float32") + 0.5, optical)
    _write(c / "sar_one_band.tif", np.ones((1, 96, 96), "float32"), optical)
    _write(c / "continuous.tif", (np.arange(96 * 96) % 2000).reshape(96, 96).astype("int16"), optical)
    os.symlink("/dev/zero", c / "dev_zero.tif")
    os.mkfifo(c / "fifo.tif")
    _many_named_classes(c / "many_classes.tif", optical)
    _gpkg_raster(scene / "truth.tif", c / "truth_raster.gpkg")


def _many_named_classes(path: Path, like: Path) -> None:
    """200 named classes (0-199) and no .qml: an unmatched reference name must not list them all."""
    from optsar_plugin.classes import ClassScheme, LandCoverClass, generated_palette
    from optsar_plugin.styles import apply_class_metadata

    values = (np.arange(96 * 96) % 200).reshape(96, 96).astype("uint8")
    _write(path, values, like, nodata=255)
    palette = generated_palette(200)
    apply_class_metadata(path, ClassScheme([LandCoverClass(i, f"land cover type {i}", palette[i]) for i in range(200)]))


def _gpkg_raster(src: Path, dst: Path) -> None:
    from osgeo import gdal

    gdal.UseExceptions()
    gdal.Translate(str(dst), str(src), format="GPKG")


def _crafted_checkpoints(ck: Path, c: Path) -> None:
    raw = ck.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    weights = raw[8 + n:]
    meta = json.loads(header["__metadata__"]["optsar"])

    def write(name, header_bytes, body=weights):
        header_bytes += b" " * ((8 - len(header_bytes) % 8) % 8)
        (c / name).write_bytes(len(header_bytes).to_bytes(8, "little") + header_bytes + body)

    def with_meta(name, edit):
        m = json.loads(json.dumps(meta))
        m = edit(m) or m
        h = dict(header)
        h["__metadata__"] = dict(header["__metadata__"], optsar=m if isinstance(m, str) else json.dumps(m))
        write(name, json.dumps(h).encode())

    deep = "[" * 100_000 + "]" * 100_000
    write("deep_header.safetensors", (json.dumps(header)[:-1] + ', "x": ' + deep + "}").encode())
    with_meta("deep_meta.safetensors", lambda m: deep)
    with_meta("no_classes.safetensors", lambda m: m.pop("classes") and None)
    with_meta("class_not_dict.safetensors", lambda m: m.update(classes=["water", "crops", "built"]))
    with_meta("bad_colour.safetensors", lambda m: m["classes"][1].update(color="red"))
    with_meta("html_colour.safetensors", lambda m: m["classes"][1].update(color='#000000" onload="alert(1)'))
    with_meta("norm_string.safetensors", lambda m: m.update(normalisation="robust"))
    with_meta("bands_int.safetensors", lambda m: m.update(bands=10))
    with_meta("scale_zero.safetensors", lambda m: m["normalisation"]["optical"]["scale"].__setitem__(0, 0))
    with_meta("method_unknown.safetensors", lambda m: m["normalisation"]["optical"].update(method="minmax"))
    with_meta("channels_bomb.safetensors", lambda m: m["model"]["config"].update(channels=12000))
    with_meta("depth_bomb.safetensors", lambda m: m["model"]["config"].update(depth=300000))
    with_meta("channels_1024.safetensors", lambda m: m["model"]["config"].update(channels=1024))  # within bounds
    with_meta("depth_48.safetensors", lambda m: m["model"]["config"].update(depth=48))
    with_meta("pretrained_path.safetensors", lambda m: m["model"]["config"].update(pretrained_path="/dev/zero"))
    with_meta("bogus_option.safetensors", lambda m: m["model"]["config"].update(bogus=1))
    with_meta("unknown_model.safetensors", lambda m: m["model"].update(name="resnet_lstm"))
    with_meta("newer_format.safetensors", lambda m: m.update(format_version=2))
    with_meta("code_255.safetensors", lambda m: m["classes"][1].update(code=255))
    with_meta("extra_field.safetensors", lambda m: m.update(surprise={"a": 1}))
    h = dict(header)
    h["__metadata__"] = {"format": "pt"}
    write("not_optsar.safetensors", json.dumps(h).encode())
    flipped = bytearray(weights)
    flipped[len(flipped) // 2] ^= 0xFF
    write("weights_modified.safetensors", json.dumps(header).encode(), bytes(flipped))
    (c / "truncated.safetensors").write_bytes(raw[: len(raw) * 2 // 3])
    (c / "empty.safetensors").write_bytes(b"")
    (c / "text.safetensors").write_text("checkpoint? no.\n" * 10)
    (c / "pickle.pt").write_bytes(pickle.dumps({"weights": [1, 2, 3]}, protocol=4))
    with zipfile.ZipFile(c / "torch_save.pt", "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"w": 1}))


def _crafted_vectors(scene: Path, c: Path) -> None:
    from tests.helpers import write_vector

    x0, y0 = 601000.0, 5297000.0  # the sample scene's top-left corner (EPSG:32633, 10 m)

    def box(c0, r0, c1, r1):
        xa, xb, ya, yb = x0 + 10 * c0, x0 + 10 * c1, y0 - 10 * r0, y0 - 10 * r1
        return f"POLYGON(({xa} {ya},{xb} {ya},{xb} {yb},{xa} {yb},{xa} {ya}))"

    line = f"LINESTRING({x0 + 100} {y0 - 100}, {x0 + 500} {y0 - 500})"
    write_vector(c / "lines.gpkg", [(line, 1), (line, 2)])
    shutil.copy2(scene / "reference_train.gpkg", c / "ref.safetensors.resume.safetensors")  # a layer, oddly named
    write_vector(c / "ref_255.gpkg", [(box(0, 0, 20, 20), 255), (box(30, 30, 50, 50), 1), (box(60, 60, 80, 80), 2)])
    write_vector(c / "unknown_name.gpkg", [(box(0, 0, 20, 20), "rainforest")], field_type="str")
    write_vector(c / "far_away.gpkg", [(box(5000, 5000, 5010, 5010), 1)])
    write_vector(c / "real_field.gpkg", [(box(0, 0, 20, 20), 1.5)], field_type="real")
    (c / "text.gpkg").write_text("not a geopackage")
    from osgeo import ogr, osr

    shp = c / "shp"
    shp.mkdir()
    ds = ogr.GetDriverByName("ESRI Shapefile").CreateDataSource(str(shp / "ref.shp"))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    lyr = ds.CreateLayer("ref", srs, ogr.wkbPolygon)
    lyr.CreateField(ogr.FieldDefn("cls", ogr.OFTInteger))
    for geom, value in [(box(0, 0, 20, 20), 0), (box(30, 30, 50, 50), 4)]:
        f = ogr.Feature(lyr.GetLayerDefn())
        f.SetField("cls", value)
        f.SetGeometry(ogr.CreateGeometryFromWkt(geom))
        lyr.CreateFeature(f)
    ds = None


def _links(data: Path, scene: Path) -> None:
    (data / "link").symlink_to(scene, target_is_directory=True)
    os.link(scene / "sar.tif", data / "hard_sar.tif")
    (data / "optical_link.tif").symlink_to(scene / "optical.tif")


def _unicode_copy(data: Path, scene: Path, ck: Path) -> Path:
    u = data / UNICODE_DIR
    u.mkdir()
    for name in ("optical.tif", "sar.tif", "truth.tif", "truth.tif.aux.xml", "truth.qml", "reference.gpkg"):
        if (scene / name).exists():
            shutil.copy2(scene / name, u / ("ñ_" + name))
    shutil.copy2(ck, u / "modèle.safetensors")
    return u


def make_read_only(folder: Path) -> bool:
    """Make ``folder`` refuse new files - chmod, and for root (who ignores modes) the immutable attribute; whether
    it worked."""
    os.chmod(folder, 0o555)
    if os.geteuid() == 0 and shutil.which("chattr"):
        subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
    probe = folder / "probe"
    try:
        probe.write_text("x")
    except OSError:
        return True
    probe.unlink()
    return False


def undo_read_only(folder: Path) -> None:
    if os.geteuid() == 0 and shutil.which("chattr"):
        subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
    os.chmod(folder, 0o755)


# -- running and checking --------------------------------------------------------------------------


def fill(value, values: Dict[str, str]):
    """``value`` with every placeholder replaced (strings, lists and dicts, recursively)."""
    if isinstance(value, str):
        return value.format(**values)
    if isinstance(value, (list, tuple)):
        return [fill(v, values) for v in value]
    if isinstance(value, dict):
        return {k: fill(v, values) for k, v in value.items()}
    return value


def snapshot(folder: Path) -> Dict[str, str]:
    """{relative path: sha256} of every regular file under ``folder`` (symlinks not followed, listed as links)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, folder)
            if os.path.islink(p):
                out[rel] = "link:" + os.readlink(p)
            elif os.path.isfile(p):
                h = hashlib.sha256()
                with open(p, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        h.update(chunk)
                out[rel] = h.hexdigest()
            else:
                out[rel] = "special"
    return out


def diff(before: Dict[str, str], after: Dict[str, str]) -> Dict[str, List[str]]:
    return {"changed": sorted(k for k in before if k in after and after[k] != before[k]),
            "removed": sorted(k for k in before if k not in after),
            "added": sorted(k for k in after if k not in before)}


def outputs_named(case: Case, values: Dict[str, str]) -> List[str]:
    """The output paths a case names: every argument value in its own output folder."""
    out_dir = values["O"]
    found = []

    def walk(v):
        if isinstance(v, str) and v.startswith(out_dir + os.sep):
            found.append(v)
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x)
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)

    walk(fill(case.args, values))
    return found


def qgis_statistics(case: Case, added: str, values: Dict[str, str]) -> bool:
    """Whether ``added`` (relative to the data tree) is the ``.aux.xml`` in which GDAL keeps the statistics QGIS
    computes when it loads an input raster as a layer (its default contrast stretch): QGIS does this for every
    raster a user adds, before any plugin code runs; the raster itself is untouched."""
    if case.route not in ("qgis_process", "processing") or not added.endswith(".aux.xml"):
        return False
    path = Path(values["D"]) / added
    if not path.with_name(path.name[: -len(".aux.xml")]).exists():
        return False
    text = path.read_text(encoding="utf-8", errors="replace")
    return "<PAMDataset>" in text and ("STATISTICS_" in text or "<Histograms>" in text)


def error_lines(text: str) -> List[str]:
    """The lines of a run's output that carry an error (``error:``, qgis_process's indented message)."""
    return [line.strip() for line in text.splitlines() if re.search(r"(^|\s|:)error:", line, re.I)]


def check(case: Case, result: Dict, values: Dict[str, str]) -> None:
    """Assert everything the suite promises about ``case`` (see the module docstring); ``result`` from a runner:
    ``status``, ``text`` (all output), ``message`` (the error line(s)), ``seconds``, ``data`` (diff of the data
    tree), ``out_files`` (what is in the case's output folder afterwards)."""
    where = f"case {case.name} ({case.note or case.route}):\n{result.get('text', '')[-3000:]}"
    assert result["status"] == case.status, f"exit status {result['status']}, expected {case.status}; {where}"
    text = result.get("text", "")
    assert not TRACEBACK.search(text), f"a traceback reached the user; {where}"
    assert not GDAL_ECHO.search(text), f"GDAL's own error lines reached the user; {where}"
    if case.status != 0:
        lines = [m for m in result["message"] if m]
        assert len(lines) == 1, f"expected one error line, got {lines}; {where}"
        assert re.search(case.message, lines[0], re.I | re.S), f"{lines[0]!r} does not match {case.message!r}"
    data = result["data"]
    assert not data["changed"] and not data["removed"], f"inputs changed or removed: {data}; {where}"
    stray = [p for p in data["added"] if (TEMP_MARK in p or case.status != 0) and not qgis_statistics(case, p, values)]
    assert not stray, f"files left in the data tree: {stray}; {where}"
    temps = [p for p in result["out_files"] if TEMP_MARK in p]
    assert not temps, f"temporary files left: {temps}; {where}"
    for path in fill(list(case.absent), values) + (outputs_named(case, values) if case.status != 0 else []):
        assert not os.path.exists(path), f"{path} exists after a failed run; {where}"
    prepared = {os.path.basename(p) for p, _ in fill([list(x) for x in case.prepare], values)}
    if case.status != 0:
        left = [f for f in result["out_files"] if f not in prepared]
        assert not left, f"the failed run left {left}; {where}"
    if case.expect:
        assert re.search(case.expect, text, re.I), f"the output does not say {case.expect!r}; {where}"
    for path in fill(list(case.present), values):
        assert os.path.exists(path), f"{path} is missing; {where}"
    if case.max_seconds is not None:
        assert result["seconds"] < case.max_seconds, f"took {result['seconds']:.2f} s; {where}"


def case_values(values: Dict[str, str], case: Case) -> Dict[str, str]:
    """The placeholder values of one case: its own output folder ``{O}`` (created empty)."""
    out = Path(values["OUT"]) / case.name
    out.mkdir(exist_ok=True)
    v = {**values, "O": str(out)}
    for path, text in fill([list(x) for x in case.prepare], v):
        if not os.path.exists(path):
            Path(path).write_text(text, encoding="utf-8")
    return v


def run_subprocess_case(case: Case, values: Dict[str, str], argv: Sequence[str], env=None, timeout=300,
                        cwd=None) -> Dict:
    """Run a real process for ``case``: snapshot the data tree around it; the result :func:`check` reads."""
    import time

    v = case_values(values, case)
    before = snapshot(Path(values["D"]))
    t0 = time.perf_counter()
    proc = subprocess.run(list(argv), env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    text = proc.stdout + "\n" + proc.stderr
    return {"status": proc.returncode, "text": text, "message": error_lines(text), "seconds": seconds,
            "data": diff(before, snapshot(Path(values["D"]))), "out_files": sorted(os.listdir(v["O"]))}
