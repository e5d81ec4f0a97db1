"""Class styling: .qml styles, GDAL colour tables and category names, read back by QGIS and GDAL."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from optsar_plugin import styles
from optsar_plugin.classes import ClassScheme, LandCoverClass, load_known_schemes
from optsar_plugin.errors import OptsarError
from tests.helpers import write_raster


@pytest.fixture
def scheme():
    # Class 0 is a real class; a gap at 3; a name QGIS and XML must escape; non-ASCII.
    return ClassScheme(
        [
            LandCoverClass(0, "water", "#419BDF"),
            LandCoverClass(1, "trees & <shrubs>", "#397D49"),
            LandCoverClass(2, 'Bâti "urbain"', "#C4281B"),
            LandCoverClass(4, "crops", "#E49635"),
        ]
    )


def _classes(s):
    return [(c.code, c.name, c.color) for c in s.classes]


def _write_raster(path, data=None):
    """An 8 x 8 uint8 classification (codes 0-4, one nodata pixel), or ``data``."""
    if data is None:
        data = (np.arange(64, dtype="uint8").reshape(8, 8) % 5).astype("uint8")
        data[0, 0] = 255
    write_raster(path, data, dtype="uint8", nodata=255, origin=(500000, 4000080))
    return path


# -- QML ----------------------------------------------------------------------------------


def test_qml_round_trip_keeps_codes_names_colours(tmp_path, scheme):
    qml = styles.write_qml(tmp_path / "out.tif", scheme, opacity=0.75)
    assert qml == tmp_path / "out.qml"
    text = qml.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE qgis")
    assert '<rasterrenderer type="paletted" band="1" opacity="0.75"' in text
    assert '<paletteEntry value="0" color="#419bdf" label="water" alpha="255" />' in text
    back = styles.read_qml_classes(qml)
    assert _classes(back) == _classes(scheme)
    assert back.source == "qml"
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("scheme_id", sorted(load_known_schemes()))
def test_qml_round_trip_known_schemes(tmp_path, scheme_id):
    s = load_known_schemes()[scheme_id]
    back = styles.read_qml_classes(styles.write_qml(tmp_path / "x.qml", s))
    assert _classes(back) == _classes(s)


def test_read_qml_errors_name_the_file(tmp_path):
    with pytest.raises(OptsarError, match="missing.qml.*does not exist"):
        styles.read_qml_classes(tmp_path / "missing.qml")
    bad = tmp_path / "bad.qml"
    bad.write_text("<qgis><pipe>", encoding="utf-8")
    with pytest.raises(OptsarError, match="bad.qml.*not a valid"):
        styles.read_qml_classes(bad)
    grey = tmp_path / "grey.qml"
    grey.write_text('<qgis><pipe><rasterrenderer type="singlebandgray" band="1"/></pipe></qgis>', encoding="utf-8")
    with pytest.raises(OptsarError, match="grey.qml.*no paletted"):
        styles.read_qml_classes(grey)
    with pytest.raises(OptsarError, match="opacity"):
        styles.write_qml(tmp_path / "o.qml", load_known_schemes()["dynamic_world"], opacity=2)


def test_read_qml_drops_nodata_entry_and_reads_pseudocolour(tmp_path):
    qml = tmp_path / "p.qml"
    qml.write_text(
        """<qgis><pipe><rasterrenderer type="singlebandpseudocolor" band="1"><rastershader>
        <colorrampshader colorRampType="EXACT"><item value="1" label="forest" color="#00ff00" alpha="255"/>
        <item value="3" label="" color="#0000ff" alpha="255"/><item value="255" label="nodata" color="#000000" alpha="0"/>
        </colorrampshader></rastershader></rasterrenderer></pipe></qgis>""",
        encoding="utf-8",
    )
    assert _classes(styles.read_qml_classes(qml)) == [(1, "forest", "#00FF00"), (3, "3", "#0000FF")]


# -- GDAL colour table and category names ---------------------------------------------------


def test_apply_class_metadata_path_gdal_sees_table_and_names(tmp_path, scheme):
    gdal = pytest.importorskip("osgeo.gdal", reason="GDAL Python bindings are part of QGIS")
    tif = _write_raster(tmp_path / "c.tif")
    styles.apply_class_metadata(tif, scheme)
    with rasterio.open(tif) as ds:
        cmap = ds.colormap(1)
        assert cmap[0] == (65, 155, 223, 255)
        assert cmap[4] == (228, 150, 53, 255)
        assert cmap[255] == (0, 0, 0, 0)
        assert ds.nodata == 255
    ds = gdal.Open(str(tif))
    band = ds.GetRasterBand(1)
    band.GetMetadata()  # GDAL 3.6 GTiff: loads the .aux.xml, which GetCategoryNames alone does not
    assert band.GetCategoryNames() == ["water", "trees & <shrubs>", 'Bâti "urbain"', "", "crops"]
    assert band.GetColorInterpretation() == gdal.GCI_PaletteIndex
    band = ds = None
    assert _classes(styles.read_raster_classes(tif)) == _classes(scheme)


def test_apply_class_metadata_on_open_rasterio_dataset(tmp_path, scheme):
    tif = tmp_path / "open.tif"
    data = np.zeros((8, 8), "uint8")
    with rasterio.open(
        tif,
        "w",
        driver="GTiff",
        width=8,
        height=8,
        count=1,
        dtype="uint8",
        crs="EPSG:4326",
        transform=from_origin(0, 1, 0.1, 0.1),
        nodata=255,
    ) as ds:
        ds.write(data, 1)
        styles.apply_class_metadata(ds, scheme)
    assert (tmp_path / "open.tif.aux.xml").is_file()
    assert _classes(styles.read_raster_classes(tif)) == _classes(scheme)
    with rasterio.open(tif) as ds:
        with pytest.raises(OptsarError, match="read-only"):
            styles.apply_class_metadata(ds, scheme)


def test_without_gdal_bindings_writes_what_gdal_reads(tmp_path, scheme, monkeypatch):
    """The rasterio-only path (no osgeo on a pip-only machine) is interchangeable with GDAL's."""
    tif = _write_raster(tmp_path / "r.tif")
    # Something else already in the PAM side-car must survive the merge.
    (tmp_path / "r.tif.aux.xml").write_text(
        '<PAMDataset><PAMRasterBand band="1"><Description>classes</Description></PAMRasterBand></PAMDataset>',
        encoding="utf-8",
    )
    monkeypatch.setattr(styles, "_gdal", lambda: None)
    styles.apply_class_metadata(tif, scheme)
    assert _classes(styles.read_raster_classes(tif)) == _classes(scheme)
    monkeypatch.undo()
    gdal = pytest.importorskip("osgeo.gdal", reason="GDAL Python bindings are part of QGIS")
    ds = gdal.Open(str(tif))
    band = ds.GetRasterBand(1)
    band.GetMetadata()  # GDAL 3.6 GTiff: loads the .aux.xml, which GetCategoryNames alone does not
    assert band.GetCategoryNames() == ["water", "trees & <shrubs>", 'Bâti "urbain"', "", "crops"]
    assert band.GetDescription() == "classes"
    band = ds = None
    assert _classes(styles.read_raster_classes(tif)) == _classes(scheme)


def test_read_raster_classes_without_names_and_errors(tmp_path):
    tif = _write_raster(tmp_path / "plain.tif")
    assert styles.read_raster_classes(tif) is None
    with pytest.raises(OptsarError, match="nothere.tif.*does not exist"):
        styles.read_raster_classes(tmp_path / "nothere.tif")
    with pytest.raises(OptsarError, match="nothere.tif.*does not exist"):
        styles.apply_class_metadata(tmp_path / "nothere.tif", load_known_schemes()["dynamic_world"])


def test_read_raster_classes_ignores_nodata_name_and_fills_missing_colours(tmp_path):
    tif = _write_raster(tmp_path / "n.tif")
    names = [""] * 256
    names[2], names[7], names[255] = "grass", "bare", "nodata"
    styles._write_pam_category_names(tif, names)
    s = styles.read_raster_classes(tif)
    assert s.codes == [2, 7]
    assert s.names == ["grass", "bare"]
    assert all(len(c.color) == 7 and c.color.startswith("#") for c in s.classes)


# -- QGIS reads what we write ---------------------------------------------------------------


def test_qgis_loads_qml_beside_geotiff(qgis_app, tmp_path, scheme):
    from qgis.core import QgsPalettedRasterRenderer, QgsRasterLayer

    tif = _write_raster(tmp_path / "classified.tif")
    styles.apply_class_metadata(tif, scheme)
    styles.write_qml(tif, scheme, opacity=0.6)
    layer = QgsRasterLayer(str(tif), "classified")  # loadDefaultStyle is on by default
    assert layer.isValid()
    renderer = layer.renderer()
    assert isinstance(renderer, QgsPalettedRasterRenderer)
    assert renderer.band() == 1
    assert renderer.opacity() == pytest.approx(0.6)
    got = [(int(c.value), c.label, c.color.name().upper()) for c in renderer.classes()]
    assert got == _classes(scheme)
    # The style's classes are exactly ours: none of the colour table's 256 entries leak in.
    assert len(renderer.classes()) == len(scheme)


def test_qgis_default_renderer_uses_category_names_without_qml(qgis_app, tmp_path, scheme):
    from qgis.core import QgsPalettedRasterRenderer, QgsRasterLayer

    tif = _write_raster(tmp_path / "noqml.tif")
    styles.apply_class_metadata(tif, scheme)
    layer = QgsRasterLayer(str(tif), "noqml")
    renderer = layer.renderer()
    assert isinstance(renderer, QgsPalettedRasterRenderer)
    by_value = {int(c.value): (c.label, c.color.name().upper()) for c in renderer.classes()}
    for c in scheme.classes:
        assert by_value[c.code] == (c.name, c.color)


def test_reads_a_style_saved_by_qgis(qgis_app, tmp_path, scheme):
    from qgis.core import QgsPalettedRasterRenderer, QgsRasterLayer
    from qgis.PyQt.QtGui import QColor

    tif = _write_raster(tmp_path / "q.tif")
    layer = QgsRasterLayer(str(tif), "q")
    classes = [QgsPalettedRasterRenderer.Class(c.code, QColor(c.color), c.name) for c in scheme.classes]
    layer.setRenderer(QgsPalettedRasterRenderer(layer.dataProvider(), 1, classes))
    _, ok = layer.saveNamedStyle(str(tmp_path / "saved_by_qgis.qml"))
    assert ok
    assert _classes(styles.read_qml_classes(tmp_path / "saved_by_qgis.qml")) == _classes(scheme)
