"""Typed options and the error hierarchy: validated when built, JSON round trip, one-line messages."""

from __future__ import annotations

import json

import pytest

from optsar_plugin import errors
from optsar_plugin.accuracy import AssessOptions, SampleOptions
from optsar_plugin.errors import InputError
from optsar_plugin.inference import InferenceOptions, classify
from optsar_plugin.options import ALLOCATIONS, CLOUD_MODES, DEVICES, MODELS, PRECISIONS, cloud_handling


def test_inference_options_are_checked_when_built():
    assert InferenceOptions(optical_bands="2,3,4", tile_size=256).optical_bands == (2, 3, 4)
    for bad, match in (({"tile_size": 0}, "Tile size 0 is not allowed"), ({"tile_size": 100}, "multiple of 32"),
                       ({"tile_size": 128, "overlap": 64}, "less than half"), ({"device": "gpu0"}, "Unknown device"),
                       ({"precision": "int8"}, "Unknown precision"), ({"cloud_mode": "x"}, "Unknown cloud mode"),
                       ({"batch_size": 0}, "Batch size must be .* at least 1"), ({"model": "unet"}, "Unknown model"),
                       ({"extent": (1, 2, 3)}, "four numbers"), ({"optical_bands": ["B2"]}, "not a band number")):
        with pytest.raises(InputError, match=match):
            InferenceOptions(**bad)
    assert InferenceOptions(device="CUDA:1").device == "cuda:1"


def test_options_travel_as_json_and_merge_with_keywords():
    opts = InferenceOptions(optical_bands=[1, 2], extent=(0, 0, 10, 10), tile_size=256, precision="bf16")
    again = InferenceOptions.from_dict(json.loads(json.dumps(opts.to_dict())))
    assert again == opts
    assert InferenceOptions.of(opts, batch_size=8).batch_size == 8
    assert InferenceOptions.of({"tile_size": 128}, overlap=16) == InferenceOptions(tile_size=128, overlap=16)
    with pytest.raises(InputError, match="Unknown option 'tilesize'"):
        InferenceOptions.from_dict({"tilesize": 256})
    with pytest.raises(TypeError, match="unexpected keyword argument 'tilesize'"):
        classify("o.tif", "s.tif", "c.safetensors", "out.tif", tilesize=256)


def test_accuracy_options():
    assert AssessOptions(ignore_values="0; 9,9").ignore_values == (0, 9)
    with pytest.raises(InputError, match="confidence level must be between 0.5 and 1"):
        AssessOptions(confidence=1.5)
    with pytest.raises(InputError, match="integer class codes"):
        AssessOptions(ignore_values="water")
    assert SampleOptions(allocation="Olofsson").allocation == "olofsson"
    with pytest.raises(InputError, match="must not be negative"):
        SampleOptions(total=-1)
    assert SampleOptions.from_dict(SampleOptions(seed=3).to_dict()).seed == 3


def test_one_home_for_the_enumerations():
    assert DEVICES == ("auto", "cuda", "cpu") and "fp16" in PRECISIONS and "keep" in CLOUD_MODES
    assert MODELS == ("mosfnet", "specsar_former", "cloudlulc_net") and "olofsson" in ALLOCATIONS
    assert cloud_handling("auto", "cloudlulc_net") == "keep" and cloud_handling(None, "mosfnet") == "zero"


def test_error_hierarchy_and_one_line_messages():
    kinds = {cls: cls.kind for cls in (errors.InputError, errors.CheckpointError, errors.DependencyError,
                                       errors.Cancelled, errors.Terminated)}
    assert kinds == {errors.InputError: "input", errors.CheckpointError: "checkpoint",
                     errors.DependencyError: "dependency", errors.Cancelled: "cancelled",
                     errors.Terminated: "terminated"}
    assert all(issubclass(c, errors.OptsarError) for c in kinds)
    assert issubclass(errors.MissingDependencyError, errors.DependencyError)
    assert str(errors.InputError("a\n  multi-line\tmessage ")) == "a multi-line message"
