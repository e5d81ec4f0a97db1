"""Checkpoints: safetensors + metadata, safe loading, clear errors, compatibility checks."""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
import types
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="checkpoints need torch (installed by make env)")
from torch import nn  # noqa: E402

from optsar_plugin import checkpoints as ck  # noqa: E402
from optsar_plugin import models  # noqa: E402
from optsar_plugin.errors import CheckpointError, InputError, OptsarError  # noqa: E402
from tests.helpers import model_inputs  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

# Small configurations of the three networks (64 x 64 tiles on the CPU).
TINY = {
    "mosfnet": {
        "optical_bands": 4,
        "sar_bands": 1,
        "num_classes": 5,
        "decoder_channels": 32,
        "d_state": 4,
        "ssm_ratio": 1.0,
    },
    "specsar_former": {
        "optical_bands": 4,
        "sar_bands": 2,
        "num_classes": 5,
        "embed_dims": [16, 32, 32, 64],
        "depths": [1, 1, 1, 1],
        "num_heads": [1, 1, 1, 1],
        "sr_ratios": [8, 4, 2, 1],
        "decoder_dim": 32,
    },
    "cloudlulc_net": {
        "optical_bands": 4,
        "sar_bands": 2,
        "num_classes": 5,
        "channels": 8,
        "num_blocks": 1,
        "order": 2,
        "embed_dim": 16,
        "depth": 1,
        "heads": 2,
    },
}

CLASSES = [
    {"code": 0, "name": "water", "color": "#419BDF"},
    {"code": 1, "name": "trees", "color": "#397D49"},
    {"code": 2, "name": "grass", "color": "#88B053"},
    {"code": 4, "name": "crops", "color": "#E49635"},
    {"code": 6, "name": "built", "color": "#C4281B"},
]


def _metadata(optical=4, sar=2, classes=CLASSES):
    return {
        "bands": {"optical": [f"B{i + 1}" for i in range(optical)], "sar": ["VV", "VH"][:sar]},
        "normalisation": {
            "optical": {
                "method": "robust_zscore",
                "to_db": False,
                "center": [0.1] * optical,
                "scale": [0.05] * optical,
                "clip": 6.0,
            },
            "sar": {
                "method": "robust_zscore",
                "to_db": True,
                "center": [-12.0] * sar,
                "scale": [3.0] * sar,
                "clip": 6.0,
            },
        },
        "classes": classes,
        "nodata": {"output": 255, "ignore_index": 255},
        "tile_size": 64,
        "training": {"data": ["/data/s2.tif", "/data/s1.tif"], "epochs": 2, "metrics": {"miou": 0.5}},
    }


# -- a tiny stand-in model registered for the error-path tests -----------------------------


class Tiny(nn.Module):
    """Conv + BatchNorm (an int64 buffer) + a bf16 buffer + a tied weight: the awkward cases."""

    model_name = "tiny"

    def __init__(self, optical_bands=4, sar_bands=2, num_classes=5, width=4):
        super().__init__()
        self.config = dict(optical_bands=optical_bands, sar_bands=sar_bands, num_classes=num_classes, width=width)
        self.conv = nn.Conv2d(optical_bands + sar_bands, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.head = nn.Conv2d(width, num_classes, 1)
        self.aux = nn.Conv2d(width, num_classes, 1)
        self.aux.weight = self.head.weight  # shared storage: safetensors refuses it unless copied
        self.register_buffer("scale", torch.tensor([1.5], dtype=torch.bfloat16))

    def forward(self, optical, sar):
        x = torch.relu(self.bn(self.conv(torch.cat([optical, sar], 1))))
        return self.head(x) * self.scale.float()


@pytest.fixture
def tiny_registry(monkeypatch):
    module = types.ModuleType("optsar_test_tiny")
    module.build = lambda optical_bands, sar_bands, num_classes, **options: Tiny(
        optical_bands, sar_bands, num_classes, **options
    )
    Tiny.__module__ = "optsar_test_tiny"
    monkeypatch.setitem(sys.modules, "optsar_test_tiny", module)
    monkeypatch.setitem(models._REGISTRY, "tiny", models.ModelInfo("tiny", "Tiny", "optsar_test_tiny", "test", "none"))
    monkeypatch.setattr(models, "MODEL_NAMES", tuple(models._REGISTRY))
    return module


def _trained_tiny():
    torch.manual_seed(0)
    m = Tiny()
    m.train()
    with torch.no_grad():  # give BatchNorm non-default running stats
        m(torch.randn(2, 4, 16, 16) * 3 + 1, torch.randn(2, 2, 16, 16))
    return m.eval()


@pytest.fixture
def tiny_ckpt(tmp_path, tiny_registry):
    path = tmp_path / "tiny.safetensors"
    ck.save_checkpoint(path, _trained_tiny(), _metadata())
    return path


def _inputs(optical=4, sar=2, size=64):
    return model_inputs(optical, sar, size)


# -- the three networks ---------------------------------------------------------------------


@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_save_load_gives_identical_outputs(tmp_path, name):
    config = TINY[name]
    torch.manual_seed(0)
    model = models.build_model(name, **config).eval()
    optical, sar = _inputs(config["optical_bands"], config["sar_bands"])
    with torch.no_grad():
        before = model(optical, sar)
    meta = _metadata(config["optical_bands"], config["sar_bands"])
    # No "model" entry: the name comes from model.model_name or the registry module, the config from model.config.
    path = tmp_path / f"{name}.safetensors"
    written = ck.save_checkpoint(path, model, meta)
    assert written["model"]["name"] == name
    assert written["model"]["config"] == json.loads(json.dumps(model.config))
    loaded, read = ck.load_checkpoint(path, device="cpu")
    assert read == written == ck.read_metadata(path)
    assert not loaded.training
    assert all(p.device.type == "cpu" for p in loaded.parameters())
    with torch.no_grad():
        after = loaded(optical, sar)
    assert after.shape == (1, config["num_classes"], 64, 64)
    assert torch.equal(before, after)
    assert ck.verify_hash(path) == written["content_hash"]


# -- metadata and hashing -------------------------------------------------------------------


def test_metadata_is_filled_and_hash_matches_file(tiny_ckpt):
    meta = ck.read_metadata(tiny_ckpt)
    assert meta["format_version"] == ck.FORMAT_VERSION == 1
    assert meta["model"] == {
        "name": "tiny",
        "config": {"optical_bands": 4, "sar_bands": 2, "num_classes": 5, "width": 4},
    }
    assert meta["bands"] == {"optical": ["B1", "B2", "B3", "B4"], "sar": ["VV", "VH"]}
    assert meta["classes"] == CLASSES
    assert meta["tile_size"] == 64 and meta["training"]["epochs"] == 2
    assert meta["nodata"] == {"output": 255, "ignore_index": 255}
    assert meta["created"].endswith("+00:00")
    assert len(meta["content_hash"]) == 64
    assert ck.file_content_hash(tiny_ckpt) == meta["content_hash"]
    assert [c.code for c in ck.class_scheme(meta)] == [0, 1, 2, 4, 6]
    assert not list(tiny_ckpt.parent.glob("*.tmp"))


def test_tiny_round_trip_keeps_buffers_and_tied_weights(tiny_ckpt):
    ref = _trained_tiny()
    loaded, _ = ck.load_checkpoint(tiny_ckpt)
    for key, value in ref.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert loaded.scale.dtype == torch.bfloat16
    optical, sar = _inputs()
    with torch.no_grad():
        assert torch.equal(ref(optical, sar), loaded(optical, sar))


def test_read_metadata_and_verify_hash_need_no_torch(tiny_ckpt):
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['safetensors'] = None\n"
        "from optsar_plugin.checkpoints import read_metadata, verify_hash\n"
        f"m = read_metadata({str(tiny_ckpt)!r}); h = verify_hash({str(tiny_ckpt)!r})\n"
        "assert h == m['content_hash']; print(m['model']['name'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "tiny"


def test_model_name_from_metadata_attribute_or_module(tmp_path, tiny_registry):
    m = _trained_tiny()
    assert ck.save_checkpoint(tmp_path / "a.safetensors", m, _metadata())["model"]["name"] == "tiny"
    m.model_name = None  # no attribute value: the registry module the class lives in names it
    assert ck.save_checkpoint(tmp_path / "b.safetensors", m, _metadata())["model"]["name"] == "tiny"
    Tiny.__module__ = "somewhere_else"
    with pytest.raises(OptsarError, match="Cannot tell which model"):
        ck.save_checkpoint(tmp_path / "c.safetensors", m, _metadata())
    assert (
        ck.save_checkpoint(tmp_path / "d.safetensors", m, {**_metadata(), "model": {"name": "tiny"}})["model"]["name"]
        == "tiny"
    )
    del m.model_name
    Tiny.__module__ = "optsar_test_tiny"
    with pytest.raises(OptsarError, match="names model 'cloudlulc_net' but the network is a 'tiny'"):
        ck.save_checkpoint(tmp_path / "e.safetensors", m, {**_metadata(), "model": {"name": "cloudlulc_net"}})
    assert not (tmp_path / "c.safetensors").exists() and not (tmp_path / "e.safetensors").exists()


def test_save_checks_counts_and_json(tmp_path, tiny_registry):
    m = _trained_tiny()
    with pytest.raises(CheckpointError, match=r"field 'classes' must list 5 class\(es\), one per model output"):
        ck.save_checkpoint(tmp_path / "x.safetensors", m, _metadata(classes=CLASSES[:4]))
    with pytest.raises(CheckpointError, match=r"field 'bands.optical' must list 4 band name\(s\)"):
        ck.save_checkpoint(tmp_path / "x.safetensors", m, _metadata(optical=3))
    bad = _metadata()
    bad["training"]["data"] = {object()}
    with pytest.raises(OptsarError, match="not JSON-serialisable"):
        ck.save_checkpoint(tmp_path / "x.safetensors", m, bad)
    assert list(tmp_path.iterdir()) == []


# -- refusing what must not load ------------------------------------------------------------


class _Payload:
    """Unpickling this creates the marker file: the code a malicious checkpoint would run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickle_payload_is_refused_and_never_runs(tmp_path, tiny_registry):
    control = tmp_path / "control_marker"
    pickle.loads(pickle.dumps(_Payload(control)))
    assert control.exists(), "the payload must be real for this test to mean anything"

    marker = tmp_path / "pwned"
    raw = tmp_path / "raw.safetensors"
    raw.write_bytes(pickle.dumps({"state_dict": _Payload(marker)}, protocol=4))
    zipped = tmp_path / "model.pt"
    torch.save({"state_dict": _Payload(marker)}, zipped)
    for path, kind in ((raw, "pickle"), (zipped, "torch.save")):
        for fn in (ck.load_checkpoint, ck.read_metadata, ck.verify_hash):
            with pytest.raises(OptsarError, match=rf"'{path}'.*{kind}.*refuses"):
                fn(path)
    assert not marker.exists()


def test_truncated_and_corrupted_files(tiny_ckpt, tmp_path):
    data = tiny_ckpt.read_bytes()
    short = tmp_path / "short.safetensors"
    short.write_bytes(data[:-10])
    for fn in (ck.read_metadata, ck.load_checkpoint):
        with pytest.raises(OptsarError, match=r"short\.safetensors' is truncated"):
            fn(short)
    stub = tmp_path / "stub.safetensors"
    stub.write_bytes(data[:30])
    with pytest.raises(OptsarError, match=r"stub\.safetensors' is truncated"):
        ck.load_checkpoint(stub)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(OptsarError, match="empty or truncated"):
        ck.load_checkpoint(empty)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(OptsarError, match=r"junk\.bin' is (not a safetensors|truncated)"):
        ck.load_checkpoint(junk)

    flipped = bytearray(data)
    flipped[-3] ^= 0xFF  # a weight byte
    bad = tmp_path / "flipped.safetensors"
    bad.write_bytes(bytes(flipped))
    with pytest.raises(OptsarError, match=r"flipped\.safetensors' is corrupted or was modified"):
        ck.load_checkpoint(bad)
    with pytest.raises(OptsarError, match=r"flipped\.safetensors' is corrupted or was modified"):
        ck.verify_hash(bad)

    header = bytearray(data)
    header[9] = ord("#")  # inside the JSON header
    badh = tmp_path / "header.safetensors"
    badh.write_bytes(bytes(header))
    with pytest.raises(OptsarError, match=r"header\.safetensors' is corrupted"):
        ck.read_metadata(badh)


def test_missing_file(tmp_path):
    with pytest.raises(OptsarError, match=r"'.*nothere\.safetensors' does not exist"):
        ck.load_checkpoint(tmp_path / "nothere.safetensors")


def _rewrite_metadata(src, dst, change):
    """Copy a checkpoint with its OptSAR metadata edited (weights untouched)."""
    from safetensors.torch import load_file, save_file

    meta = ck.read_metadata(src)
    change(meta)
    save_file(load_file(str(src)), str(dst), metadata={"format": "pt", "optsar": json.dumps(meta)})
    return dst


def test_newer_format_unknown_model_and_wrong_architecture(tiny_ckpt, tmp_path):
    newer = _rewrite_metadata(tiny_ckpt, tmp_path / "newer.safetensors", lambda m: m.update(format_version=2))
    with pytest.raises(OptsarError, match=r"newer\.safetensors' uses checkpoint format 2, newer .*Update the plugin"):
        ck.load_checkpoint(newer)
    unknown = _rewrite_metadata(tiny_ckpt, tmp_path / "unknown.safetensors", lambda m: m["model"].update(name="foonet"))
    with pytest.raises(OptsarError, match=r"unknown\.safetensors' is for model 'foonet'.*does not know"):
        ck.load_checkpoint(unknown)
    wider = _rewrite_metadata(tiny_ckpt, tmp_path / "wider.safetensors", lambda m: m["model"]["config"].update(width=8))
    with pytest.raises(OptsarError, match=r"wider\.safetensors': the weights do not match the tiny architecture"):
        ck.load_checkpoint(wider)
    badopt = _rewrite_metadata(
        tiny_ckpt, tmp_path / "badopt.safetensors", lambda m: m["model"]["config"].update(depth=3)
    )
    with pytest.raises(OptsarError, match=r"badopt\.safetensors'.*(configuration does not fit|cannot rebuild)"):
        ck.load_checkpoint(badopt)


def test_plain_safetensors_without_optsar_metadata(tmp_path):
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(3)}, str(plain))
    with pytest.raises(
        OptsarError, match=r"plain\.safetensors' is a safetensors file but not an OptSAR Fusion checkpoint"
    ):
        ck.load_checkpoint(plain)
    assert struct.unpack("<Q", plain.read_bytes()[:8])[0] > 0


def test_load_on_requested_device(tiny_ckpt):
    model, _ = ck.load_checkpoint(tiny_ckpt, device=torch.device("cpu"))
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    with pytest.raises(OptsarError, match="Unknown device 'gpu0'"):
        ck.load_checkpoint(tiny_ckpt, device="gpu0")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU to save from")
def test_checkpoint_saved_on_cuda_loads_on_cpu(tmp_path, tiny_registry):
    model = _trained_tiny().cuda()
    ck.save_checkpoint(tmp_path / "cuda.safetensors", model, _metadata())
    loaded, _ = ck.load_checkpoint(tmp_path / "cuda.safetensors", device="cpu")
    optical, sar = _inputs()
    with torch.no_grad():
        ref = model(optical.cuda(), sar.cuda()).cpu()
        assert torch.allclose(loaded(optical, sar), ref, atol=1e-5)


# -- compatibility --------------------------------------------------------------------------


def test_check_compatible(tiny_ckpt):
    meta = ck.read_metadata(tiny_ckpt)
    assert ck.check_compatible(meta, model_name="tiny", optical_bands=["b1", "B2", "B3", "B4"], sar_bands=2) == []
    with pytest.raises(InputError) as err:
        ck.check_compatible(meta, optical_bands=3, sar_bands=["VV"], path=tiny_ckpt)
    msg = str(err.value)
    assert str(tiny_ckpt) in msg and "\n" not in msg
    assert "trained on 4 optical band(s) in this order: B1, B2, B3, B4; 3 band(s) were chosen" in msg
    assert "trained on 2 SAR band(s) in this order: VV, VH; 1 band(s) were chosen" in msg
    with pytest.raises(InputError, match="holds a tiny network, but model is mosfnet"):
        ck.check_compatible(meta, model_name="mosfnet")
    with pytest.raises(InputError, match=r"expects the SAR bands in the order VV, VH; the bands chosen are VH, VV"):
        ck.check_compatible(meta, sar_bands=["VH", "VV"])
    warnings = ck.check_compatible(meta, sar_bands=["HH", "HV"])
    assert len(warnings) == 1 and "HH" in warnings[0]
    with pytest.raises(InputError, match="order"):
        ck.check_compatible(meta, sar_bands=["HH", "HV"], strict_names=True)


def test_check_fit_names_the_parameters_and_checks_the_tile(tiny_ckpt):
    """The one validator: the algorithms pass their parameter names, the tile defaults to the checkpoint's."""
    from optsar_plugin.metadata import BandChoice, check_fit

    meta = ck.load_metadata(tiny_ckpt)
    labels = {"model": "MODEL", "optical_bands": "OPTICAL_BANDS", "sar_bands": "SAR_BANDS"}
    with pytest.raises(InputError, match=r"2 band\(s\) of 'opt.tif' were chosen \(3, 1\)\. Set OPTICAL_BANDS"):
        check_fit(meta, optical=BandChoice.of([3, 1], source="opt.tif"), labels=labels)
    with pytest.raises(InputError, match="but MODEL is mosfnet"):
        check_fit(meta, model="mosfnet", labels=labels)
    assert check_fit(meta, optical=BandChoice.of([1, 2, 3, 4], ["B1", "B2", "B3", None])) == []  # names incomplete
    with pytest.raises(InputError, match="Tile size 100"):
        check_fit(meta, tile_size=100)
    with pytest.raises(InputError, match="less than half"):
        check_fit(meta, tile_size=64, overlap=32)
    assert meta.default_tile() == 64


# -- the metadata schema ------------------------------------------------------------------------


@pytest.mark.parametrize("change,field", [
    (lambda m: m.update(extra_field=1), "extra_field"),
    (lambda m: m.pop("classes"), "classes"),
    (lambda m: m["classes"].__setitem__(1, "trees"), r"classes\[1\]"),
    (lambda m: m["classes"][2].update(color="green"), r"classes\[2\]\.color"),
    (lambda m: m["classes"][2].update(code=255), r"classes\[2\]\.code"),
    (lambda m: m["classes"][0].pop("name"), r"classes\[0\]\.name"),
    (lambda m: m.update(normalisation="zscore"), "normalisation"),
    (lambda m: m["normalisation"]["optical"].update(method="minmax"), r"normalisation\.optical\.method"),
    (lambda m: m["normalisation"]["sar"]["scale"].__setitem__(0, 0.0), r"normalisation\.sar\.scale\[0\]"),
    (lambda m: m["normalisation"]["optical"].update(center=[0.1]), r"normalisation\.optical\.center"),
    (lambda m: m.update(bands=4), "bands"),
    (lambda m: m["bands"].update(optical=["B1"]), r"bands\.optical"),
    (lambda m: m["model"]["config"].update(num_classes="5"), r"model\.config\.num_classes"),
    (lambda m: m.update(tile_size=-3), "tile_size"),
    (lambda m: m.update(content_hash="xyz"), "content_hash"),
    (lambda m: m.update(nodata={"output": 0}), "nodata"),
    (lambda m: m.update(format_version="1"), "format_version"),
])
def test_metadata_outside_the_schema_is_refused_naming_the_field(tiny_ckpt, tmp_path, change, field):
    bad = _rewrite_metadata(tiny_ckpt, tmp_path / "bad.safetensors", change)
    with pytest.raises(CheckpointError, match=rf"'{bad}' metadata field '{field}'") as err:
        ck.read_metadata(bad)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("where", ["header", "metadata"])
def test_deeply_nested_json_is_one_clear_line(tiny_ckpt, tmp_path, where):
    """JSON nested 100 000 levels deep must not raise RecursionError (it aborted qgis_process)."""
    bomb = "[" * 100_000 + "]" * 100_000
    path = tmp_path / f"{where}.safetensors"
    if where == "metadata":
        from safetensors.torch import save_file

        save_file({"w": torch.zeros(2)}, str(path), metadata={"optsar": bomb})
    else:
        header = ('{"__metadata__": {"optsar": "{}"}, "x": ' + bomb + "}").encode()
        path.write_bytes(len(header).to_bytes(8, "little") + header)
    for fn in (ck.read_metadata, ck.verify_hash, ck.load_checkpoint):
        with pytest.raises(CheckpointError, match=rf"'{path}' is corrupted: its (header|OptSAR metadata) is nested"):
            fn(path)
    moderate = tmp_path / "deep.safetensors"
    _rewrite_metadata(tiny_ckpt, moderate, lambda m: m.update(training={"a": json.loads("[" * 40 + "]" * 40)}))
    with pytest.raises(CheckpointError, match="nested more than 32 levels"):
        ck.read_metadata(moderate)


def test_metadata_object_round_trips(tiny_ckpt):
    meta = ck.load_metadata(tiny_ckpt)
    assert meta.model == "tiny" and meta.optical_bands == ("B1", "B2", "B3", "B4") and meta.num_classes == 5
    assert meta.classes.codes == [0, 1, 2, 4, 6] and meta.normalisation["sar"]["to_db"] is True
    assert ck.CheckpointMetadata.from_dict(meta.to_dict(), "x") == meta
    assert meta.to_dict() == ck.read_metadata(tiny_ckpt)


def test_a_configuration_is_checked_against_the_stored_tensors_before_anything_is_allocated(tiny_ckpt, tmp_path):
    """An edited configuration: a larger network than the file holds is stopped at once on the meta device (no
    memory, no time); one of the same size but other shapes names the first tensor that differs."""
    import time

    bomb = _rewrite_metadata(tiny_ckpt, tmp_path / "bomb.safetensors",
                             lambda m: m["model"]["config"].update(width=2_000_000))  # 24 G values in the first conv
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match=r"bomb\.safetensors': its model configuration \(width=2000000\) "
                                              r"describes a larger tiny network than the \d+ tensors"):
        ck.load_checkpoint(bomb)
    assert time.perf_counter() - t0 < 1.0
    narrow = _rewrite_metadata(tiny_ckpt, tmp_path / "narrow.safetensors", lambda m: m["model"]["config"].update(width=2))
    with pytest.raises(CheckpointError, match=r"narrow\.safetensors': the weights do not match .* of another shape "
                                              r"\(e\.g\. aux\.weight: \[5, 4, 1, 1\] in the file, \[5, 2, 1, 1\] for this configuration\)"):
        ck.load_checkpoint(narrow)
