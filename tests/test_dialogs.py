"""Every algorithm's Processing dialog builds offscreen, with its parameters' widgets."""

from __future__ import annotations

import pytest

ALGORITHMS = ["optsar:checkenvironment", "optsar:installdependencies", "optsar:classify", "optsar:train",
              "optsar:assessaccuracy", "optsar:stratifiedsample", "optsar:samplescene"]


@pytest.mark.parametrize("alg_id", ALGORITHMS)
def test_dialog_builds(alg_id, processing_provider, qgis_iface, qgis_app, monkeypatch):
    import processing
    from qgis.core import QgsApplication
    from qgis.gui import QgsBrowserGuiModel

    # pytest-qgis's stub iface returns a MagicMock here; the real dialog needs a browser model.
    model = QgsBrowserGuiModel()
    monkeypatch.setattr(qgis_iface, "browserModel", lambda: model, raising=False)

    alg = QgsApplication.processingRegistry().algorithmById(alg_id)
    assert alg is not None, alg_id
    dialog = processing.createAlgorithmDialog(alg_id, {})
    assert dialog is not None, alg_id
    try:
        panel = dialog.mainWidget()
        assert panel is not None
        # Every visible parameter got a wrapper (the dialog did not silently drop one).
        visible = [p.name() for p in alg.parameterDefinitions()
                   if not p.flags() & p.Flag.FlagHidden and not p.isDestination()]
        wrappers = getattr(panel, "wrappers", {})
        assert set(visible) <= set(wrappers), (alg_id, set(visible) - set(wrappers))
        for name in visible:
            assert wrappers[name] is not None and wrappers[name].wrappedWidget() is not None, (alg_id, name)
    finally:
        dialog.close()
        dialog.deleteLater()
