"""Model loading in every format, model cards, preprocessing, activations, devices: real files in tmp_path."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from napari_seg_explain.core.errors import IncompatibleInputError, ModelLoadError, UserError
from napari_seg_explain.core.modelcard import ModelCard, find_card, load_card
from napari_seg_explain.core.models import (
    SegmentationModel,
    available_devices,
    class_probability,
    labels_from_probs,
    load_model,
    resolve_device,
)

HAS_GPU = available_devices()[0] != "cpu"


class TinyNet(nn.Module):
    """Conv logits (B, K, H, W); K == 1 for a single-output model."""

    def __init__(self, cin: int = 1, k: int = 2, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(cin, k, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * 3.0


class PosNet(nn.Module):
    """Logits depend on the absolute position (a random bias map), so only ``size`` inputs work."""

    def __init__(self, size: tuple[int, ...], k: int = 3):
        super().__init__()
        torch.manual_seed(1)
        conv = nn.Conv2d if len(size) == 2 else nn.Conv3d
        self.conv = conv(1, k, 3, padding=1)
        self.register_buffer("bias", torch.randn(1, k, *size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.bias


def _write_card(path, **fields):
    path.write_text(yaml.safe_dump(fields))
    return path


def _images(n=3, c=1, size=32, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(n, c, size, size)).astype(np.float32))


def _reference(net: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        logits = net.eval()(x)
    return (logits.softmax(1) if logits.shape[1] > 1 else logits.sigmoid()).numpy()


# ------------------------------------------------------------------------------- formats
MONAI_KW = {
    "UNet": dict(spatial_dims=2, in_channels=1, out_channels=2, channels=[4, 8], strides=[2], num_res_units=0),
    "BasicUNet": dict(spatial_dims=2, in_channels=1, out_channels=2, features=[4, 4, 8, 8, 16, 4]),
    "SegResNet": dict(spatial_dims=2, in_channels=1, out_channels=2, init_filters=8, blocks_down=[1, 1],
                      blocks_up=[1], norm=["group", {"num_groups": 4}]),
    "SwinUNETR": dict(spatial_dims=2, in_channels=1, out_channels=2, feature_size=12, depths=[1, 1, 1, 1],
                      num_heads=[1, 1, 1, 1]),
}


def _monai_net(arch: str) -> nn.Module:
    import monai.networks.nets as nets

    torch.manual_seed(2)
    net = getattr(nets, arch)(**MONAI_KW[arch])
    with torch.no_grad():  # weights unlike a fresh init: the loader must really load them
        for p in net.parameters():
            p.mul_(1.5).add_(0.01)
    return net.eval()


def _state_dict_file(tmp_path, arch, kind):
    net = _monai_net(arch)
    sd = net.state_dict()
    if kind == "safetensors":
        from safetensors.torch import save_file

        path = tmp_path / f"{arch}.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    elif kind == "pth":
        path = tmp_path / f"{arch}.pth"
        torch.save(sd, path)
    else:  # checkpoint dict from DataParallel training, saved as .pt (not TorchScript)
        path = tmp_path / f"{arch}.pt"
        torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)
    _write_card(path.with_suffix(".yaml"), name=arch, architecture={"name": arch, "kwargs": MONAI_KW[arch]},
                in_channels=1, classes=["bg", "fg"])
    return path, net


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """torch.export programs (exporting costs ~1 s each, so once per module): dynamic and static batch."""
    d = tmp_path_factory.mktemp("export")
    net = TinyNet().eval()
    dyn = torch.export.export(net, (_images(2),), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},))
    torch.export.save(dyn, str(d / "dynamic.pt2"))
    torch.export.save(torch.export.export(net, (_images(1),)), str(d / "static.pt2"))
    return d, net


def _make(case, tmp_path, exported):
    """(model file, original torch module, expected format, image size) for one case of the table."""
    if case == "script.pt":
        net = TinyNet().eval()
        torch.jit.script(net).save(str(tmp_path / "m.pt"))
        return tmp_path / "m.pt", net, "torchscript", 32
    if case == "trace.ts":
        net = TinyNet(k=1).eval()
        torch.jit.trace(net, _images(1)).save(str(tmp_path / "m.ts"))
        return tmp_path / "m.ts", net, "torchscript", 32
    if case in ("export-dynamic.pt2", "export-static.pt2"):
        d, net = exported
        return d / f"{case.split('-')[1].split('.')[0]}.pt2", net, "torch.export", 32
    if case in ("onnx-dynamic", "onnx-static"):
        net = TinyNet(k=3).eval()
        path = tmp_path / "m.onnx"
        axes = {"x": {0: "batch"}} if case == "onnx-dynamic" else None
        torch.onnx.export(net, (_images(1),), str(path), dynamo=False, input_names=["x"], dynamic_axes=axes)
        return path, net, "onnx", 32
    arch, kind = case.split(".")
    if arch == "SwinUNETR":
        pytest.importorskip("einops", reason="MONAI's SwinUNETR needs einops")
    path, net = _state_dict_file(tmp_path, arch, kind)
    return path, net, "state_dict", 64 if arch == "SwinUNETR" else 32


FORMAT_CASES = [
    "script.pt", "trace.ts", "export-dynamic.pt2", "export-static.pt2", "onnx-dynamic", "onnx-static",
    "UNet.safetensors", "BasicUNet.safetensors", "SegResNet.safetensors", "SwinUNETR.safetensors",
    "UNet.pth", "UNet.pt",
]


@pytest.mark.parametrize("case", FORMAT_CASES)
def test_format_gives_same_probabilities_as_torch(case, tmp_path, exported):
    path, net, fmt, size = _make(case, tmp_path, exported)
    model = load_model(path, device="cpu")
    assert model.format == fmt and model.source == str(path)
    assert model.supports_gradients == (fmt != "onnx")
    x = _images(3, size=size)  # batch of 3 (a static-batch export must fall back to per-sample)
    want = _reference(net, x)
    probs = model.predict(x.numpy(), batch_size=3)
    assert probs.shape == want.shape and probs.dtype == np.float32
    np.testing.assert_allclose(probs, want, atol=1e-5)
    np.testing.assert_allclose(model.predict(x[1].numpy()), want[1], atol=1e-5)  # single image (C, H, W)
    assert model.forward_passes == 4
    if case == "export-static.pt2":
        assert model.per_sample
    if fmt == "state_dict":
        assert model.card.architecture == case.split(".")[0]  # card found beside the weights
    if model.supports_gradients:
        xg = x[:2].clone().requires_grad_(True)
        model.forward_normalized(xg)[:, 0].sum().backward()
        assert xg.grad is not None and xg.grad.abs().sum() > 0


def test_card_given_as_yaml_path_finds_weights(tmp_path):
    (tmp_path / "weights").mkdir()
    path, net = _state_dict_file(tmp_path / "weights", "UNet", "safetensors")
    path.with_suffix(".yaml").unlink()  # no card beside the weights: only the explicit one
    card = _write_card(tmp_path / "my card.yaml", name="wm", weights="weights/UNet.safetensors",
                       architecture={"name": "UNet", "kwargs": MONAI_KW["UNet"]})
    model = load_model(card, device="cpu")
    assert model.name == "wm" and model.source == str(path) and model.card.source == str(card)
    x = _images(2)
    np.testing.assert_allclose(model.predict(x), _reference(net, x), atol=1e-5)
    # without 'weights:' the card's stem names the .safetensors file
    _write_card(tmp_path / "weights" / "UNet.yaml", architecture={"name": "UNet", "kwargs": MONAI_KW["UNet"]})
    assert load_model(tmp_path / "weights" / "UNet.yaml").source == str(path)
    # and a card can be handed over as a path or a ModelCard next to a model file
    assert load_model(path, card=card).name == "wm"
    assert load_model(path, card=load_card(card)).name == "wm"


def test_card_found_beside_model(tmp_path):
    net = TinyNet().eval()
    torch.jit.script(net).save(str(tmp_path / "seg.pt"))
    assert find_card(tmp_path / "seg.pt") is None
    assert load_model(tmp_path / "seg.pt").card.normalization == "none"
    _write_card(tmp_path / "seg.yml", name="beside", normalization="minmax", classes=["a", "b"])
    assert find_card(tmp_path / "seg.pt") == tmp_path / "seg.yml"
    model = load_model(tmp_path / "seg.pt")
    assert model.name == "beside" and model.card.classes == ("a", "b") and model.card.normalization == "minmax"
    x = _images(1) * 50 + 7
    xn = (x - x.min()) / (x.max() - x.min())
    np.testing.assert_allclose(model.predict(x), _reference(net, xn), atol=1e-5)


# -------------------------------------------------------------------------------- safety
class _Payload:
    """Unpickling this creates ``marker``: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("how", ["torch.save", "torch.save-legacy", "pickle.dump", "whole-module"])
@pytest.mark.parametrize("with_card", [False, True], ids=["no-card", "card"])
def test_pickled_code_is_refused_and_never_runs(tmp_path, how, with_card):
    marker = tmp_path / "pwned"
    obj = {"conv.weight": torch.zeros(1), "x": _Payload(marker)}
    path = tmp_path / ("evil.pt" if how == "whole-module" else "evil.pth")
    if how == "torch.save":
        torch.save(obj, path)
    elif how == "torch.save-legacy":
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    elif how == "pickle.dump":
        path.write_bytes(pickle.dumps(obj))
    else:
        torch.save(TinyNet(), path)
    if how != "whole-module":  # the payload is live: an unsafe load would run it
        (torch.load(path, weights_only=False) if how != "pickle.dump" else pickle.loads(path.read_bytes()))
        assert marker.exists()
        marker.unlink()
    if with_card:
        _write_card(path.with_suffix(".yaml"), architecture={"name": "UNet", "kwargs": MONAI_KW["UNet"]})
    with pytest.raises(ModelLoadError, match="weights_only=True"):
        load_model(path)
    assert not marker.exists()


# -------------------------------------------------------------------------------- errors
def _unet_sd():
    return _monai_net("UNet").state_dict()


def _err_missing(tmp_path):
    return tmp_path / "nope.pt", "does not exist"


def _err_suffix(tmp_path):
    (tmp_path / "m.h5").write_bytes(b"\x89HDF")
    return tmp_path / "m.h5", r"unsupported model file m\.h5: use one of .*\.safetensors"


def _err_no_card(tmp_path):
    torch.save(_unet_sd(), tmp_path / "m.pth")
    return tmp_path / "m.pth", r"only weights \(a state dict\): add a model card m\.yaml naming the architecture"


def _with_card(tmp_path, sd, arch="UNet", kwargs=None):
    torch.save(sd, tmp_path / "m.pth")
    _write_card(tmp_path / "m.yaml", architecture={"name": arch, "kwargs": kwargs or MONAI_KW["UNet"]})
    return tmp_path / "m.pth"


def _err_unknown_arch(tmp_path):
    return _with_card(tmp_path, _unet_sd(), arch="UNetPlusPlusPlus"), "'UNetPlusPlusPlus' is not a MONAI network"


def _err_bad_kwargs(tmp_path):
    return _with_card(tmp_path, _unet_sd(), kwargs={"spatial_dims": 2, "bogus": 1}), r"cannot build UNet"


def _err_missing_keys(tmp_path):
    sd = _unet_sd()
    sd.pop(next(iter(sd)))
    return _with_card(tmp_path, sd), r"do not fit UNet.*1 missing keys.*check the architecture kwargs"


def _err_unexpected_keys(tmp_path):
    return _with_card(tmp_path, {**_unet_sd(), "extra.weight": torch.zeros(2)}), r"1 unexpected keys.*extra\.weight"


def _err_shape_mismatch(tmp_path):
    kw = {**MONAI_KW["UNet"], "out_channels": 3}
    return _with_card(tmp_path, _unet_sd(), kwargs=kw), r"(?s)do not fit UNet.*size mismatch.*check the architecture"


def _err_not_tensors(tmp_path):
    torch.save({"a": 1, "b": [1, 2]}, tmp_path / "m.pth")
    return tmp_path / "m.pth", "does not hold a state dict of tensors"


def _err_garbage(suffix, msg):
    def make(tmp_path):
        (tmp_path / f"m{suffix}").write_bytes(b"not a model at all" * 10)
        _write_card(tmp_path / "m.yaml", architecture={"name": "UNet", "kwargs": MONAI_KW["UNet"]})
        return tmp_path / f"m{suffix}", msg
    return make


ERROR_CASES = {
    "missing-file": _err_missing,
    "unknown-suffix": _err_suffix,
    "state-dict-without-card": _err_no_card,
    "unknown-architecture": _err_unknown_arch,
    "bad-architecture-kwargs": _err_bad_kwargs,
    "missing-keys": _err_missing_keys,
    "unexpected-keys": _err_unexpected_keys,
    "shape-mismatch": _err_shape_mismatch,
    "not-tensors": _err_not_tensors,
    "garbage.safetensors": _err_garbage(".safetensors", "cannot read weights from m.safetensors"),
    "garbage.pt": _err_garbage(".pt", "neither TorchScript nor a plain state dict"),
    "garbage.pt2": _err_garbage(".pt2", "cannot load torch.export program m.pt2"),
    "garbage.onnx": _err_garbage(".onnx", "onnxruntime cannot load m.onnx"),
}


@pytest.mark.parametrize("case", ERROR_CASES)
def test_load_errors_are_helpful(tmp_path, case):
    path, msg = ERROR_CASES[case](tmp_path)
    with pytest.raises(ModelLoadError, match=msg) as info:
        load_model(path)
    assert isinstance(info.value, UserError)


BAD_CARDS = [
    ("normalization: {method: foo}", r"normalization method 'foo' is not one of"),
    ("normalization: foo", r"normalization method 'foo'"),
    ("normalization: {method: ct_window, center: 40}", "needs 'center' and 'width'"),
    ("normalization: {method: ct_window, center: 40, width: 0}", "'width' must be > 0"),
    ("fit: stretch", r"fit 'stretch' is not one of \('pad', 'resize'\)"),
    ("input_size: [32]", "input_size must list 2 positive sizes"),
    ("{spatial_dims: 3, input_size: [32, 32]}", "input_size must list 3 positive sizes"),
    ("input_size: [32, 0]", "input_size must list 2 positive sizes"),
    ("output_activation: relu", "output_activation 'relu' is not one of"),
    ("spatial_dims: 4", "spatial_dims must be 2 or 3"),
    ("in_channels: 0", "in_channels must be a positive integer"),
    ("in_channels: three", r"wrong type .*'three'"),
    ("input_size: [a, b]", r"wrong type .*'a'"),
    ("architecture: [UNet]", "'architecture' must be a name or"),
    ("- just\n- a list", "must be a YAML mapping"),
    ("a: [unclosed", "cannot read model card"),
]


@pytest.mark.parametrize("text, msg", BAD_CARDS, ids=[t for t, _ in BAD_CARDS])
def test_bad_card_values(tmp_path, text, msg):
    card = tmp_path / "m.yaml"
    card.write_text(text)
    with pytest.raises(ModelLoadError, match=msg) as info:
        load_card(card)
    assert str(card) in str(info.value)
    torch.jit.script(TinyNet()).save(str(tmp_path / "m.pt"))  # the card beside a model is checked on load
    with pytest.raises(ModelLoadError, match=msg):
        load_model(tmp_path / "m.pt")


def test_card_accepts_spellings(tmp_path):
    card = load_card(_write_card(tmp_path / "c.yaml", normalization={"method": "CT-Window", "center": 40,
                                                                     "width": 400},
                                 fit="RESIZE", output_activation="Sigmoid", input_size=[8, 8],
                                 architecture="UNet", classes=["bg", "wm"]))
    assert (card.normalization, card.ct_center, card.ct_width) == ("ct_window", 40.0, 400.0)
    assert (card.fit, card.output_activation, card.input_size, card.architecture) == ("resize", "sigmoid", (8, 8),
                                                                                        "UNet")
    assert card.name == "c" and card.class_index("wm") == 1 and card.class_index("0") == 0
    with pytest.raises(ModelLoadError, match="'gm' is not one of the model's classes"):
        card.class_index("gm")
    assert load_card(_write_card(tmp_path / "z.yaml", normalization="z-score")).normalization == "zscore"


# ---------------------------------------------------------------------------- preprocessing
def _model(net, **card):
    return SegmentationModel(net, ModelCard(name="t", **card), device="cpu")


def test_normalization_values():
    x = torch.tensor([[[[-1000.0, -160.0, 40.0], [140.0, 240.0, 3000.0]]]])  # (1, 1, 2, 3)
    ct = _model(nn.Identity(), normalization="ct_window", ct_center=40, ct_width=400).normalize(x)
    np.testing.assert_allclose(ct[0, 0], [[0, 0, 0.5], [0.75, 1, 1]], atol=1e-6)

    x2 = torch.tensor([[[[2.0, 4.0], [6.0, 10.0]], [[5.0, 5.0], [5.0, 5.0]]]])  # two channels; 2nd constant
    mm = _model(nn.Identity(), normalization="minmax").normalize(torch.cat([x2, x2 * 3 - 1]))
    np.testing.assert_allclose(mm[0, 0], [[0, 0.25], [0.5, 1]], atol=1e-6)
    np.testing.assert_allclose(mm[1, 0], [[0, 0.25], [0.5, 1]], atol=1e-6)  # per image
    np.testing.assert_allclose(mm[:, 1], 0, atol=1e-6)  # constant channel: no division by zero

    z = _model(nn.Identity(), normalization="zscore").normalize(x2)
    np.testing.assert_allclose(z[0, 0], (x2[0, 0] - 5.5) / x2[0, 0].std(), atol=1e-6)
    assert float(z[0, 0].mean()) == pytest.approx(0, abs=1e-6)
    np.testing.assert_allclose(z[0, 1], 0, atol=1e-6)
    assert torch.equal(_model(nn.Identity()).normalize(x2), x2)

    # predict applies the card's normalisation (identity model, no activation: output == normalised input)
    out = _model(nn.Identity(), normalization="ct_window", ct_center=40, ct_width=400,
                 output_activation="none").predict(x[0].numpy())
    np.testing.assert_allclose(out, ct[0], atol=1e-6)


def test_fit_pad_larger_than_image():
    net = PosNet((40, 36))
    model = _model(net, normalization="minmax", input_size=(40, 36), fit="pad")
    x = _images(2, size=30)[..., :27] * 20 + 100  # (2, 1, 30, 27) -> pad rows 5 + 5, cols 4 + 5
    probs = model.predict(x)
    assert probs.shape == (2, 3, 30, 27)
    xn = (x - x.amin((2, 3), keepdim=True)) / (x.amax((2, 3), keepdim=True) - x.amin((2, 3), keepdim=True))
    with torch.no_grad():
        want = net(F.pad(xn, (4, 5, 5, 5)))[:, :, 5:35, 4:31].softmax(1)
    np.testing.assert_allclose(probs, want, atol=1e-5)


@pytest.mark.parametrize("k", [3, 1])
def test_fit_pad_smaller_than_image_crops_centre(k):
    net = PosNet((16, 16), k=k)
    model = _model(net, input_size=(16, 16), fit="pad")
    x = _images(1, size=30)[..., :27]  # crop rows 7:23, cols 5:21
    probs = model.predict(x)
    assert probs.shape == (1, k, 30, 27)
    with torch.no_grad():
        logits = net(x[..., 7:23, 5:21])
    want = logits.softmax(1) if k > 1 else logits.sigmoid()
    np.testing.assert_allclose(probs[..., 7:23, 5:21], want, atol=1e-5)
    outside = np.ones((30, 27), bool)
    outside[7:23, 5:21] = False
    np.testing.assert_allclose(probs[..., outside], 1 / k if k > 1 else 0.5, atol=1e-6)  # zero logits


def test_fit_pad_mixed_and_3d():
    net = PosNet((40, 16))
    x = _images(1, size=30)[..., :27]  # rows 30 -> 40 (pad 5, 5), cols 27 -> 16 (crop 5:21)
    probs = _model(net, input_size=(40, 16)).predict(x)
    with torch.no_grad():
        want = net(F.pad(x[..., 5:21], (0, 0, 5, 5)))[:, :, 5:35].softmax(1)
    np.testing.assert_allclose(probs[..., 5:21], want, atol=1e-5)
    np.testing.assert_allclose(probs[..., :5], 1 / 3, atol=1e-6)

    net3 = PosNet((8, 6, 10), k=2)
    v = torch.randn(1, 6, 6, 6)  # (C, I, J, K)
    p3 = _model(net3, spatial_dims=3, input_size=(8, 6, 10)).predict(v)
    assert p3.shape == (2, 6, 6, 6)
    with torch.no_grad():
        want3 = net3(F.pad(v[None], (2, 2, 0, 0, 1, 1)))[:, :, 1:7, :, 2:8].softmax(1)[0]
    np.testing.assert_allclose(p3, want3, atol=1e-5)


def test_fit_resize():
    net = PosNet((16, 16))
    model = _model(net, input_size=(16, 16), fit="resize")
    x = _images(2, size=30)[..., :27]
    probs = model.predict(x)
    assert probs.shape == (2, 3, 30, 27)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    with torch.no_grad():
        logits = net(F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False))
        want = F.interpolate(logits, size=(30, 27), mode="bilinear", align_corners=False).softmax(1)
    np.testing.assert_allclose(probs, want, atol=1e-5)
    # an image already at the input size is not touched
    x16 = _images(1, size=16)
    with torch.no_grad():
        np.testing.assert_allclose(model.predict(x16), net(x16).softmax(1), atol=1e-5)


# ------------------------------------------------------------------------------ activation
def test_activation_without_card():
    x = _images(2)
    two = _model(TinyNet(k=2))
    with torch.no_grad():
        logits2 = two.net(x)
    p2 = two.predict(x)
    np.testing.assert_allclose(p2.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(p2, logits2.softmax(1), atol=1e-6)
    one = _model(TinyNet(k=1))
    with torch.no_grad():
        np.testing.assert_allclose(one.predict(x), one.net(x).sigmoid(), atol=1e-6)
    with torch.no_grad():
        np.testing.assert_allclose(_model(TinyNet(k=2), output_activation="none").predict(x), logits2, atol=1e-5)
        np.testing.assert_allclose(_model(TinyNet(k=2), output_activation="sigmoid").predict(x), logits2.sigmoid(),
                                   atol=1e-6)


def test_class_probability_and_labels():
    p = torch.tensor([[[[0.2, 0.7]]]])  # (1, 1, 1, 2): single-output model
    np.testing.assert_allclose(class_probability(p, 1), [[[0.2, 0.7]]])
    np.testing.assert_allclose(class_probability(p, 0), [[[0.8, 0.3]]], atol=1e-7)
    for bad in (2, -1):
        with pytest.raises(UserError, match=f"class {bad} does not exist.*classes 0 and 1"):
            class_probability(p, bad)
    p3 = torch.tensor([[[[0.1]], [[0.3]], [[0.6]]]])  # (1, 3, 1, 1)
    assert float(class_probability(p3, 2)) == pytest.approx(0.6)
    with pytest.raises(UserError, match=r"classes 0\.\.2"):
        class_probability(p3, 3)

    lab1 = labels_from_probs(np.array([[[0.2, 0.5, 0.51]]]))  # (K=1, 1, 3)
    assert lab1.dtype == np.uint8 and lab1.tolist() == [[0, 0, 1]]
    probs = np.array([[[0.1, 0.5]], [[0.7, 0.2]], [[0.2, 0.3]]])  # (K=3, 1, 2)
    lab = labels_from_probs(probs)
    assert lab.dtype == np.uint8 and lab.tolist() == [[1, 0]]
    batch = np.stack([probs, probs[::-1]])  # (B=2, K=3, 1, 2), classes on axis 1
    assert labels_from_probs(batch, axis=1).tolist() == [[[1, 0]], [[1, 2]]]
    many = np.zeros((300, 1, 1))
    many[299] = 1
    big = labels_from_probs(many)
    assert big.dtype == np.int16 and big.tolist() == [[299]]


# --------------------------------------------------------------------------- incompatibility
def test_channel_mismatch_names_both_numbers(tmp_path):
    model = _model(TinyNet(cin=1), in_channels=1)
    with pytest.raises(IncompatibleInputError, match=r"expects 1 input channel\(s\) but the image has 3"):
        model.predict(_images(1, c=3)[0])
    assert model.forward_passes == 0
    # without a card the network itself fails: still an IncompatibleInputError naming the shape
    with pytest.raises(IncompatibleInputError, match=r"failed on an input of shape \(1, 3, 32, 32\).*in_channels"):
        _model(TinyNet(cin=1)).predict(_images(1, c=3)[0])


def test_wrong_output_size_is_incompatible():
    class Down(nn.Module):
        def forward(self, x):
            return F.avg_pool2d(x, 2).repeat(1, 2, 1, 1)

    with pytest.raises(IncompatibleInputError, match=r"returned shape \(1, 2, 16, 16\) for input \(1, 1, 32, 32\)"):
        _model(Down()).predict(_images(1)[0])

    class NoTensor(nn.Module):
        def forward(self, x):
            return {"a": "b"}

    with pytest.raises(IncompatibleInputError, match="not a tensor"):
        _model(NoTensor()).predict(_images(1)[0])


def test_tuple_and_dict_outputs_take_the_main_tensor():
    class Deep(nn.Module):
        def forward(self, x):
            return [{"out": x.repeat(1, 2, 1, 1) * torch.tensor([1.0, -1.0])[:, None, None]}, x[:, :, ::2]]

    x = _images(1)
    np.testing.assert_allclose(_model(Deep(), output_activation="none").predict(x)[:, 1], -x[:, 0], atol=0)


# ---------------------------------------------------------------------------------- devices
@pytest.mark.skipif(HAS_GPU, reason="checks a CPU-only machine")
def test_resolve_device_cpu_only_machine(tmp_path):
    assert resolve_device("auto") == torch.device("cpu") and resolve_device(None) == torch.device("cpu")
    assert resolve_device("CPU") == torch.device("cpu")
    for name in ("cuda", "cuda:1", "mps"):
        with pytest.raises(UserError, match=f"device '{name}' is not available on this machine.*cpu"):
            resolve_device(name)
    torch.jit.script(TinyNet()).save(str(tmp_path / "m.pt"))
    with pytest.raises(UserError, match="not available"):
        load_model(tmp_path / "m.pt", device="cuda")


def test_resolve_device_unknown():
    assert str(resolve_device("auto")) == available_devices()[0]
    with pytest.raises(UserError, match="unknown device 'tpu': use auto, cpu, cuda"):
        resolve_device("tpu")


# ------------------------------------------------------------------------- provenance, state
def test_hash_is_stable_and_tracks_weights(tmp_path):
    path, _ = _state_dict_file(tmp_path, "UNet", "safetensors")
    a, b = load_model(path), load_model(path)
    assert a.sha256 == b.sha256 and len(a.sha256) == 64
    assert a.describe()["sha256"] == a.sha256 and a.describe()["format"] == "state_dict"
    other = tmp_path / "copy"  # the same files elsewhere: same hash (the path is not part of it)
    other.mkdir()
    (other / path.name).write_bytes(path.read_bytes())
    (other / "UNet.yaml").write_bytes(path.with_suffix(".yaml").read_bytes())
    assert load_model(other / path.name).sha256 == a.sha256

    from safetensors.torch import load_file, save_file

    sd = load_file(str(path))
    key = next(iter(sd))
    sd[key] = sd[key].clone()
    sd[key].view(-1)[0] += 1e-3
    save_file(sd, str(path))
    assert load_model(path).sha256 != a.sha256
    # a module handed over in Python is hashed by its weights
    net = TinyNet()
    h = SegmentationModel(net, device="cpu").sha256
    assert h == SegmentationModel(TinyNet(), device="cpu").sha256
    with torch.no_grad():
        net.conv.bias[0] += 1
    assert SegmentationModel(net, device="cpu").sha256 != h


def test_forward_passes_counts_images():
    model = _model(TinyNet())
    seen = []
    model.set_speed(cpu_workers=1)  # one batch per progress step
    model.predict(_images(5), batch_size=2, progress=lambda done, total: seen.append((done, total)))
    assert model.forward_passes == 5 and seen == [(2, 5), (4, 5), (5, 5)]
    seen.clear()
    model.set_speed(cpu_workers=2)  # the 2 images of a step side by side; a lone image still counts once
    model.predict(_images(5), batch_size=2, progress=lambda done, total: seen.append((done, total)))
    assert model.forward_passes == 10 and seen == [(2, 5), (4, 5), (5, 5)]
    model.set_speed(cpu_workers=0)
    model.predict(_images(1)[0])
    assert model.forward_passes == 11
    model.forward_normalized(_images(3))
    assert model.forward_passes == 14


def test_eval_mode_restores_train_mode(exported):
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.Dropout(0.5))
    model = _model(net)
    assert not net.training  # loading puts the network in eval mode
    net.train()
    x = _images(2)
    with model.eval_mode():
        assert not any(m.training for m in net.modules())
        with torch.no_grad():
            np.testing.assert_array_equal(model.predict(x), model.predict(x))  # dropout off
    assert all(m.training for m in net.modules())
    net.eval()
    with model.eval_mode():
        pass
    assert not net.training
    # torch.export modules refuse train()/eval(): loading and eval_mode must still work
    pt2 = load_model(exported[0] / "dynamic.pt2")
    with pt2.eval_mode():
        assert pt2.predict(x).shape == (2, 2, 32, 32)


def test_with_card_shares_the_network():
    model = _model(TinyNet())
    clone = model.with_card(in_channels=3, normalization="minmax")
    assert clone.net is model.net and clone.card.in_channels == 3 and model.card.in_channels is None
    assert clone.card.normalization == "minmax" and model.card.normalization == "none"


def test_card_channels_name_the_inputs(tmp_path) -> None:
    from napari_seg_explain.core.errors import ModelLoadError
    from napari_seg_explain.core.modelcard import load_card

    good = tmp_path / "m.yaml"
    good.write_text("spatial_dims: 2\nchannels: [T1, T1c, T2, FLAIR]\n")
    card = load_card(good)
    assert card.channels == ("T1", "T1c", "T2", "FLAIR") and card.in_channels == 4
    bad = tmp_path / "bad.yaml"
    bad.write_text("spatial_dims: 2\nin_channels: 2\nchannels: [T1, T1c, T2]\n")
    with pytest.raises(ModelLoadError, match="channels names 3 inputs but in_channels is 2"):
        load_card(bad)
