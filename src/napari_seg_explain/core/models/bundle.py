"""MONAI bundles (``configs/inference.json|yaml``, ``configs/metadata.json``, ``models/model.pt|ts``).

The network comes from the config's ``network_def`` (``monai.bundle.ConfigParser``), the weights from
``models/model.pt`` (a state dict read with ``weights_only=True``, possibly under ``model``/``state_dict``)
or ``models/model.ts`` (TorchScript): nothing is unpickled with code. The scan is preprocessed in memory by
the bundle's own ``preprocessing`` (its loader and channel-first transforms skipped: the image is handed
over as the MetaTensor they would give), segmented with its ``inferer`` and post-processed by its own
``postprocessing`` (writers skipped), so labels match what the bundle's inference writes for that file.

Security: the config is parsed by MONAI's ``ConfigParser``, which imports and calls every ``_target_`` and
evaluates ``$`` expressions as Python; nothing here restricts that, so a bundle's config is code: load only
bundles you trust (see docs/security.md).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ModelLoadError
from ..modelcard import ModelCard
from .bundle_space import BundleSpace, image_metatensor, run_preprocessing
from .devices import sha256_file
from .loading import _read_state_dict
from .space import PreprocessingModel

if TYPE_CHECKING:
    import torch

    from ..images import Image
    from ..progress import Progress

CONFIG_NAMES = ("inference.json", "inference.yaml", "inference.yml")
WEIGHT_NAMES = ("model.pt", "model.ts")
_SAVERS = ("SaveImaged", "SaveImage", "SaveClassificationd", "SaveImageD", "SaveImageDict")


def _config_file(path: Path) -> Path | None:
    return next((path / "configs" / n for n in CONFIG_NAMES if (path / "configs" / n).is_file()), None)


def is_bundle_dir(path: str | Path) -> bool:
    """A folder with ``configs/inference.json`` (or ``.yaml``) and ``models/model.pt`` or ``models/model.ts``."""
    p = Path(path)
    return p.is_dir() and _config_file(p) is not None and any((p / "models" / w).is_file() for w in WEIGHT_NAMES)


def _classes(meta: dict[str, Any], n_out: int) -> tuple[str, ...]:
    outputs = (meta.get("network_data_format") or {}).get("outputs") or {}
    out = outputs.get("pred") or next(iter(outputs.values()), {}) if isinstance(outputs, dict) else {}
    chans = (out or {}).get("channel_def") or {}
    return tuple(str(chans.get(str(k), chans.get(k, f"class {k}"))) for k in range(n_out))


def _walk_targets(node: Any) -> Generator[dict, None, None]:
    """Every ``{"_target_": ...}`` mapping of a raw config tree."""
    if isinstance(node, dict):
        if "_target_" in node:
            yield node
        for v in node.values():
            yield from _walk_targets(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk_targets(v)


def _activation(post: Any, n_out: int) -> str:
    for node in _walk_targets(post):
        name = str(node["_target_"]).rsplit(".", 1)[-1]
        if name in ("Activationsd", "Activations"):
            if node.get("softmax") is True:
                return "softmax"
            if node.get("sigmoid") is True:
                return "sigmoid"
    return "softmax" if n_out > 1 else "sigmoid"


def _out_channels(net: "torch.nn.Module", raw_def: Any, in_channels: int, spatial_dims: int) -> int:
    import torch

    if isinstance(raw_def, dict) and isinstance(raw_def.get("out_channels"), int):
        return int(raw_def["out_channels"])
    with torch.inference_mode():
        return int(net(torch.zeros((1, in_channels) + (32,) * spatial_dims)).shape[1])


def load_bundle(path: str | Path, device: str = "auto") -> "BundleModel":
    """Load a MONAI bundle folder (see the module docstring) onto ``device``."""
    from monai.bundle import ConfigParser

    root = Path(path)
    cfg_file = _config_file(root)
    weights = next((root / "models" / w for w in WEIGHT_NAMES if (root / "models" / w).is_file()), None)
    if cfg_file is None or weights is None:
        raise ModelLoadError(f"{root} is not a MONAI bundle: it needs configs/inference.json (or .yaml) and "
                             "models/model.pt (a state dict) or models/model.ts (TorchScript)")
    parser = ConfigParser()
    try:
        parser.read_config(str(cfg_file))
        meta_file = root / "configs" / "metadata.json"
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        parser.read_meta(meta)
        parser["bundle_root"] = str(root)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"cannot read the bundle config {cfg_file}: {exc}") from exc
    return BundleModel(parser, meta, root, cfg_file, weights, device)


class BundleModel(PreprocessingModel):
    """A MONAI bundle: network + its preprocessing, inferer and postprocessing (see the module docstring)."""

    explain_deviations = ("perturbations are applied to the bundle's preprocessed image (after its resampling "
                          "and intensity scaling)",
                          "explained on one window of the inferer's roi_size around the RoI (the bundle's own "
                          "inference slides windows over the whole scan)")

    def __init__(self, parser: Any, meta: dict[str, Any], root: Path, cfg_file: Path, weights: Path,
                 device: str = "auto") -> None:
        import torch

        self.parser, self.meta, self.root = parser, meta, root
        self.image_key = self._image_key()
        try:
            self.preprocessing = parser.get_parsed_content("preprocessing")
            self.inferer = parser.get_parsed_content("inferer") if "inferer" in parser else None
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(f"cannot build the bundle's preprocessing/inferer from {cfg_file.name}: "
                                 f"{exc}") from exc
        if weights.suffix == ".ts":
            try:
                net = torch.jit.load(str(weights), map_location="cpu")
            except Exception as exc:  # noqa: BLE001
                raise ModelLoadError(f"cannot load TorchScript model {weights}: {exc}") from exc
            fmt_net = "torchscript"
        else:
            try:
                net = parser.get_parsed_content("network_def")
            except Exception as exc:  # noqa: BLE001
                raise ModelLoadError(f"cannot build the bundle's network_def from {cfg_file.name}: {exc}") from exc
            state = _read_state_dict(weights)
            try:
                net.load_state_dict(state, strict=True)
            except RuntimeError as exc:
                raise ModelLoadError(f"the weights in {weights} do not fit the bundle's network_def: {exc}") from exc
            fmt_net = "state_dict"
        raw_def = parser.get("network_def")
        roi = tuple(int(s) for s in getattr(self.inferer, "roi_size", ()) or ()) or None
        dims = int((raw_def or {}).get("spatial_dims", len(roi) if roi else 3)) if isinstance(raw_def, dict) else (
            len(roi) if roi else 3)
        in_ch = int(raw_def.get("in_channels", 1)) if isinstance(raw_def, dict) else 1
        n_out = _out_channels(net, raw_def, in_ch, dims)
        card = ModelCard(
            name=str(meta.get("name") or root.name), description=str(meta.get("description", ""))[:200],
            spatial_dims=dims, in_channels=in_ch, classes=_classes(meta, n_out),
            output_activation=_activation(parser.get("postprocessing"), n_out), normalization="none",
            input_size=roi if roi and len(roi) == 3 else None, source=str(root), orientation="file")
        digest = hashlib.sha256((sha256_file(weights) + sha256_file(cfg_file)).encode()).hexdigest()
        super().__init__(net, card, device=device, fmt="monai-bundle", source=str(root), sha256=digest)
        self.net_format = fmt_net

    def _image_key(self) -> str:
        for node in _walk_targets(self.parser.get("preprocessing")):
            if str(node["_target_"]).rsplit(".", 1)[-1] == "LoadImaged":
                keys = node.get("keys", "image")
                return str(keys[0] if isinstance(keys, list) else keys)
        return "image"

    # --- the contract ---------------------------------------------------------------------------
    def prepare(self, image: "Image") -> tuple[np.ndarray, BundleSpace]:
        self.check_channels(image.n_channels)
        data = run_preprocessing(self.preprocessing, self.image_key, image_metatensor(image, self.image_key))
        pre = data[self.image_key]
        space = BundleSpace(image, pre, self.preprocessing, self.image_key)
        return np.asarray(pre.detach().cpu().numpy(), dtype=np.float32), space

    def _window_settings(self) -> dict[str, Any]:
        inf = self.inferer
        return {"sw_batch_size": int(getattr(inf, "sw_batch_size", 1)), "overlap": getattr(inf, "overlap", 0.25),
                "mode": str(getattr(getattr(inf, "mode", "constant"), "value", getattr(inf, "mode", "constant")))}

    def segment_scan(self, image: "Image") -> Generator["Progress", None, np.ndarray]:
        import torch

        from ..progress import Progress

        self.check_channels(image.n_channels)
        yield Progress(0, 1, "segmenting")
        data = run_preprocessing(self.preprocessing, self.image_key, image_metatensor(image, self.image_key))
        pre = data[self.image_key]
        space = BundleSpace(image, pre, self.preprocessing, self.image_key)
        with self.eval_mode(), torch.inference_mode():
            x = pre[None].to(self.device)
            logits = self.inferer(x, self.net) if self.inferer is not None else self.net(x)
        pred = logits[0].detach().cpu()
        labels = self._postprocess(data, pred)
        if labels is None or tuple(labels.shape[1:]) != space.file_shape:
            labels = self._invert_and_discretize(data, pred)
        labels_display = space.reorder.display(np.asarray(labels[0].numpy()))
        yield Progress(1, 1, "segmenting")
        return np.rint(labels_display).astype(np.uint8 if len(self.card.classes) < 256 else np.int32)

    def _postprocess(self, data: dict, pred: "torch.Tensor") -> "torch.Tensor | None":
        """The bundle's own postprocessing (writers skipped) on ``pred``: labels ``(1, *file shape)``, or None."""
        from monai.transforms import Compose

        try:
            post = self.parser.get_parsed_content("postprocessing")
        except Exception:  # noqa: BLE001 - no usable postprocessing: activation + argmax + inversion here
            return None
        transforms = [t for t in (post.flatten().transforms if isinstance(post, Compose) else [post])
                      if type(t).__name__ not in _SAVERS]
        from monai.data import MetaTensor

        d = dict(data)
        d["pred"] = pred if isinstance(pred, MetaTensor) else MetaTensor(pred)
        try:
            for t in transforms:
                d = t(d)
        except Exception:  # noqa: BLE001
            return None
        out = d.get("pred")
        if out is None or out.ndim != pred.ndim or out.shape[0] != 1:
            return None
        return out.detach().cpu().float()

    def _invert_and_discretize(self, data: dict, pred: "torch.Tensor") -> "torch.Tensor":
        """Without a usable postprocessing: activation, probabilities inverted (bilinear, as bundles do), argmax."""
        from monai.data import MetaTensor
        from monai.transforms import Invertd

        probs = MetaTensor(self.activate(pred[None].float())[0])
        inv = Invertd("pred", transform=self.preprocessing, orig_keys=self.image_key, nearest_interp=False)
        probs = inv({self.image_key: data[self.image_key], "pred": probs})["pred"].detach().cpu()
        return probs.argmax(0, keepdim=True) if probs.shape[0] > 1 else (probs > 0.5).long()

    def _sliding_window(self, x: "torch.Tensor", amp: bool, stage: str) -> Generator["Progress", None, "torch.Tensor"]:
        """As the base class, with the bundle inferer's overlap, blending mode and window batch size."""
        import torch
        from monai.inferers import sliding_window_inference

        from ..progress import Progress

        out, size, sw = [], tuple(int(s) for s in self.card.input_size), self._window_settings()
        with self.eval_mode():
            for i in range(len(x)):
                with torch.inference_mode():
                    xn = self.normalize(x[i:i + 1])
                    out.append(sliding_window_inference(xn, size, sw["sw_batch_size"],
                                                        lambda w: self.forward_normalized(w, amp=amp),
                                                        overlap=sw["overlap"], mode=sw["mode"]).float().cpu())
                yield Progress(i + 1, len(x), stage)
        return torch.cat(out)

    def summary(self) -> dict[str, Any]:
        spacing = None
        for node in _walk_targets(self.parser.get("preprocessing")):
            if str(node["_target_"]).rsplit(".", 1)[-1] in ("Spacingd", "Spacing"):
                spacing = node.get("pixdim")
        return super().summary() | {"spacing": spacing,
                                    "inferer": type(self.inferer).__name__ if self.inferer is not None else None,
                                    **({"overlap": self._window_settings()["overlap"]} if self.card.input_size else {})}

    @property
    def channel_names(self) -> tuple[str, ...]:
        inputs = (self.meta.get("network_data_format") or {}).get("inputs") or {}
        first = next(iter(inputs.values()), {}) if isinstance(inputs, dict) else {}
        chans = (first or {}).get("channel_def") or {}
        return tuple(str(chans[k]) for k in sorted(chans, key=lambda k: int(k))) if chans else ()
