"""Training learns something real: the Sen1Floods11 chip, defaults, a map assessed on pixels never trained on.

The real Sentinel-1/2 chip lives in ``../shared/realdata`` (not part of the project); the
test skips without it.  SpecSAR-Former (the fastest network per step on a CPU) trains
with the default settings on the labels of the western half of the chip - only the
step budget is cut to keep the test short - and classifies the whole chip with the
defaults; water IoU and OA on the eastern half must be far above what a map without
skill gets (all water: IoU 0.36; all land: OA 0.64).  ``bench_realdata.py`` runs the full
comparison with the random forest.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from optsar_plugin.inference import classify
from optsar_plugin.training import train

STEPS = 300
CHIP = "Spain_7370579"


@pytest.mark.slow
def test_default_training_on_the_real_chip_maps_water_on_the_unseen_half(realdata, tmp_path):
    folder = realdata / "sen1floods11"
    s2, s1, label = (folder / f"{CHIP}_{k}Hand.tif" for k in ("S2", "S1", "Label"))
    if not all(p.is_file() for p in (s2, s1, label)):
        pytest.skip("the Sen1Floods11 chip is not in ../shared/realdata")
    with rasterio.open(label) as src:
        truth, profile = src.read(1), src.profile
    west = np.zeros(truth.shape, bool)
    west[:, : truth.shape[1] // 2] = True
    codes = np.where((truth >= 0) & west, truth, 255).astype(np.uint8)
    profile.update(dtype="uint8", nodata=255)
    with rasterio.open(tmp_path / "west_labels.tif", "w", **profile) as dst:
        dst.write(codes, 1)
    result = train(str(s2), str(s1), str(tmp_path / "m.safetensors"), labels=str(tmp_path / "west_labels.tif"),
                   model="specsar_former", max_steps=STEPS)
    assert result["plan"]["tile"] == 128 and result["steps"] <= STEPS
    assert result["best"]["val_miou"] > 0.6  # the held-out blocks of the western half
    out = classify(str(s2), str(s1), result["checkpoint"], str(tmp_path / "map.tif"))
    with rasterio.open(out["output"]) as ds:
        pred = ds.read(1)
    east = ~west & (truth >= 0)
    t, p = truth[east] == 1, pred[east] == 1
    iou = (t & p).sum() / (t | p).sum()
    oa = (t == p).mean()
    assert iou > 0.5 and oa > 0.75, (iou, oa)
