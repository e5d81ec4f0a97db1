"""optsar:samplescene: the demo scene from the Toolbox, each layer styled when it loads."""

from __future__ import annotations

from pathlib import Path


def test_sample_scene_outputs_load_styled(processing_provider, tmp_path):
    from qgis.core import (
        QgsApplication,
        QgsProcessingContext,
        QgsProcessingFeedback,
        QgsProject,
        QgsRasterLayer,
        QgsVectorLayer,
    )

    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    alg = QgsApplication.processingRegistry().createAlgorithmById("optsar:samplescene")
    results, ok = alg.run({"OUTPUT_FOLDER": str(tmp_path / "scene"), "SIZE": 96, "SEED": 3, "CLOUDS": True}, context,
                          QgsProcessingFeedback())
    assert ok
    expected = {"OPTICAL": "multibandcolor", "SAR": "singlebandgray", "CLOUD_MASK": "paletted", "TRUTH": "paletted",
                "REFERENCE_TRAIN": "categorizedSymbol", "REFERENCE_TEST": "categorizedSymbol"}
    for output, renderer in expected.items():
        path = results[output]
        assert Path(path).is_file(), output
        assert context.willLoadLayerOnCompletion(path), output
        details = context.layerToLoadOnCompletionDetails(path)
        layer = (QgsVectorLayer(path, output, "ogr") if output.startswith("REFERENCE") else QgsRasterLayer(path, output))
        assert layer.isValid(), output
        details.postProcessor().postProcessLayer(layer, context, QgsProcessingFeedback())
        assert layer.renderer().type() == renderer, (output, layer.renderer().type())
    truth = QgsRasterLayer(results["TRUTH"], "truth")
    context.layerToLoadOnCompletionDetails(results["TRUTH"]).postProcessor().postProcessLayer(truth, context, None)
    labels = [c.label for c in truth.renderer().classes()]
    assert "water" in labels and "built" in labels
    ref = QgsVectorLayer(results["REFERENCE_TRAIN"], "ref", "ogr")
    context.layerToLoadOnCompletionDetails(results["REFERENCE_TRAIN"]).postProcessor().postProcessLayer(ref, context, None)
    categories = {c.value(): c.symbol().color().name().upper() for c in ref.renderer().categories()}
    assert categories["water"] == "#419BDF"  # the Dynamic World colour, as in the truth map
