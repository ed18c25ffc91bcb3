"""Seg-Grad-CAM (Vinogradova, Dibrov, Myers 2020): Grad-CAM for segmentation, a gradient baseline.

Target: ``y = sum_{p in RoI} z_l(p)``, the pre-activation logit of class ``l`` summed over the RoI (no RoI:
over the pixels the model predicts as ``l``; a single-logit model's class 0 is ``-z``). With ``A_k`` the
feature maps of a chosen layer, ``w_k = mean_u dy / dA_k(u)`` (gradients averaged over the layer's spatial
positions), the map is ``ReLU(sum_k w_k A_k)``, upsampled (bilinear / trilinear) to the model's input size,
taken back through the card's fit, and divided by its maximum (so it lies in [0, 1], 0 stays 0).

Layer ``auto``: from the first convolution (``torch.nn.Conv1d/2d/3d``, transposed convolutions) on, the modules
(layers or blocks) whose output has the model's spatial dimensions and the fewest spatial positions (more than
one); of those, the last to run whose channel count is at most that of the widest convolution at that size (a
concatenating skip connection is skipped): the bottleneck block's output, after its normalisation and
activation, before the decoder upsamples. (A bare convolution's output is a poor choice in such networks:
followed by instance norm, its gradients average to 0.) ``input``: the
normalised input itself (any differentiable model, TorchScript included). ``list`` (CLI) prints the layers.
One forward and one backward pass on the model's device; the card's normalisation is applied first, as
:meth:`SegmentationModel.forward_normalized` expects.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import UserError
from ..progress import Progress, drive
from .base import ExplainerSpec, ResultLayer, Stat, batch_size_param, check_ranges, param, seed_param, threshold_param
from .common import check_image, check_mask, provenance
from .registry import register

if TYPE_CHECKING:
    import torch

    from ..models import SegmentationModel
    from ..results import Explanation

AUTO, INPUT, LIST = "auto", "input", "list"


@dataclass(frozen=True)
class SegGradCAMConfig:
    """Seg-Grad-CAM parameters (paper: the bottleneck layer of a U-Net)."""

    layer: str = param(AUTO, label="Layer", advanced=False,
                       tip="named module whose activations are weighted: auto = the last module with the smallest "
                           "spatial output (the bottleneck block), input = the normalised input, list (CLI) = print the "
                           "model's layers and exit")
    threshold: float = threshold_param("probability threshold of the predicted mask (used without a RoI)")
    seed: int = seed_param("recorded; Seg-Grad-CAM draws nothing at random")
    batch_size: int = batch_size_param("recorded for a uniform interface; Seg-Grad-CAM runs one forward and "
                                       "backward pass")

    def __post_init__(self) -> None:
        check_ranges(self, "Seg-Grad-CAM")
        if not isinstance(self.layer, str) or not self.layer.strip():
            raise UserError("Seg-Grad-CAM parameter layer must be a module name, auto, input or list")


def _conv_types() -> tuple[type, ...]:
    from torch import nn

    return (nn.modules.conv._ConvNd,)


def _tensor(out: Any) -> "torch.Tensor | None":
    import torch

    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (list, tuple)) and out:
        return _tensor(out[0])
    if isinstance(out, dict) and out:
        return _tensor(out.get("out", next(iter(out.values()))))
    return None


class _Recorder:
    """Forward hooks on every named module of ``net``: output tensors in the order the modules ran."""

    def __init__(self, net: Any) -> None:
        import torch

        self.outputs: list[tuple[str, Any, "torch.Tensor"]] = []
        self.handles = []
        if not isinstance(net, torch.nn.Module):
            return
        for name, mod in net.named_modules():
            if not name:
                continue
            try:
                self.handles.append(mod.register_forward_hook(self._hook(name)))
            except Exception:  # noqa: BLE001 - TorchScript and exported modules refuse (or ignore) hooks
                pass

    def _hook(self, name: str):
        def hook(mod: Any, inp: Any, out: Any) -> None:
            t = _tensor(out)
            if t is not None:
                self.outputs.append((name, mod, t))
        return hook

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def auto_layer(outputs: list[tuple[str, Any, "torch.Tensor"]], nd: int) -> str | None:
    """The ``auto`` rule (the bottleneck's output): from the first convolution on, the modules (layers or blocks)
    whose output has the fewest spatial positions (more than one); of those, the last to run whose channel count
    is at most that of the widest convolution at that size (a concatenating skip connection is skipped). In a
    U-Net that is the bottleneck block's output, after its normalisation and activation."""
    rows, seen_conv = [], False
    for name, mod, t in outputs:
        is_conv = isinstance(mod, _conv_types())
        seen_conv = seen_conv or is_conv
        if seen_conv and t.ndim == nd + 2 and int(np.prod(t.shape[2:])) > 1:
            rows.append((name, is_conv, int(np.prod(t.shape[2:])), int(t.shape[1])))
    if not rows:
        return None
    smallest = min(r[2] for r in rows)
    conv_ch = [r[3] for r in rows if r[1] and r[2] == smallest] or [r[3] for r in rows if r[1]]
    fits = [r[0] for r in rows if r[2] == smallest and r[3] <= max(conv_ch)]
    return fits[-1] if fits else None


def _logits(model: "SegmentationModel", x: "torch.Tensor") -> "torch.Tensor":
    """Pre-activation logits ``(1, K, *S)`` of a normalised batch (the card's fit applied and undone)."""
    xf, undo = model._fit(x)
    out = model._run(xf)
    model.forward_passes += x.shape[0]
    if out.ndim != xf.ndim or out.shape[2:] != xf.shape[2:]:
        from ..errors import IncompatibleInputError

        raise IncompatibleInputError(f"model {model.name!r} returned shape {tuple(out.shape)} for input "
                                     f"{tuple(xf.shape)}; a segmentation model must return (B, K, *spatial)")
    return undo(out.float()), xf, undo


def _no_gradients(model: "SegmentationModel") -> UserError:
    return UserError(f"Seg-Grad-CAM needs gradients; model {model.name!r} ({model.format}) gives none. Use "
                     "occlusion, RISE or PdCR, or load the model as TorchScript/state dict")


def layer_table(model: "SegmentationModel", image: np.ndarray) -> tuple[list[dict[str, Any]], str | None]:
    """Every named module that ran on ``image`` ``(C, *S)``: name, type, output shape (in order); the auto pick."""
    import torch

    image = check_image(model, image, dims=SPEC_DIMS)
    rec = _Recorder(model.net)
    try:
        with model.eval_mode(), torch.inference_mode():
            _logits(model, model.normalize(torch.as_tensor(image, device=model.device)[None]))
    finally:
        rec.close()
    rows = [{"name": n, "type": type(m).__name__, "shape": list(t.shape)} for n, m, t in rec.outputs]
    return rows, auto_layer(rec.outputs, len(image.shape) - 1)


def seg_gradcam(model: "SegmentationModel", image: np.ndarray, roi: np.ndarray | None = None, target: int = 1, *,
                label: np.ndarray | None = None, config: SegGradCAMConfig = SegGradCAMConfig(),
                geometry: dict[str, Any] | None = None) -> Generator[Progress, None, "Explanation"]:
    """Generator form of Seg-Grad-CAM: yields :class:`Progress`, returns an :class:`Explanation`.

    ``image``: ``(C, *S)`` raw intensities; ``roi``: bool ``S`` (the pixels whose logits are summed; None = the
    predicted pixels of ``target``); ``label``: optional ground truth (non-zero = the structure): the logits are
    summed over the RoI's labelled pixels only. ``map``: class activation map in [0, 1] of shape ``S``.
    """
    import torch
    import torch.nn.functional as F

    from ..models import class_probability
    from ..results import Explanation

    if not model.supports_gradients:
        raise _no_gradients(model)
    cfg = config
    if cfg.layer == LIST:
        raise UserError("layer 'list' only prints the model's layers (seg-explain seg-gradcam ... --layer list); "
                        "pick one of them, auto or input to explain")
    t_start = time.perf_counter()
    image = check_image(model, image, dims=SPEC_DIMS)
    shape = tuple(image.shape[1:])
    nd = len(shape)
    roi = check_mask(roi, shape, "RoI")
    roi = roi.astype(bool) if roi is not None else None
    label = check_mask(label, shape, "label")
    pixels = None if label is None else (np.asarray(label) != 0) & (roi if roi is not None else True)
    if pixels is not None and not pixels.any():
        raise UserError("the label has no pixel inside the RoI: nothing to sum the logits over")
    dev = model.device
    passes0 = model.forward_passes
    yield Progress(0, 1, "forward and backward")
    rec = _Recorder(model.net) if cfg.layer != INPUT else None
    try:
        with model.eval_mode(), torch.inference_mode(False), torch.enable_grad():
            x = model.normalize(torch.as_tensor(image, device=dev)[None]).detach().requires_grad_(True)
            logits, xf, undo = _logits(model, x)
            probs = model.activate(logits)
            k = logits.shape[1]
            z = (logits[:, 0] if target == 1 else -logits[:, 0]) if k == 1 else None
            class_probability(probs, target)  # checks the class index (a UserError naming the classes)
            if z is None:
                z = logits[:, target]
            if pixels is not None:
                region = torch.as_tensor(pixels, device=dev)
                where = "RoI and label" if roi is not None else "label"
            elif roi is not None:
                region = torch.as_tensor(roi, device=dev)
                where = "RoI"
            else:
                region = (class_probability(probs, target)[0] > cfg.threshold).detach()
                where = "predicted mask"
                if not bool(region.any()):
                    raise UserError(f"the model predicts no pixel of class {target} in this image: draw a RoI over "
                                    "the structure to explain")
            y = z[0][region].sum()
            if cfg.layer == INPUT:
                name, act = INPUT, x
            else:
                outs = rec.outputs
                if not outs and (isinstance(model.net, torch.jit.ScriptModule) or not isinstance(model.net, torch.nn.Module)
                                 or model.format in ("torchscript", "torch.export")):
                    raise UserError(f"model {model.name!r} ({model.format}) does not expose its layers (TorchScript "
                                    "and exported models hide them): use layer 'input', or load the model as a "
                                    "state dict with its architecture")
                name = auto_layer(outs, nd) if cfg.layer == AUTO else cfg.layer
                if name is None:
                    raise UserError(f"model {model.name!r} has no convolution layer with {nd}-D outputs for layer "
                                    "'auto': name a layer (seg-explain seg-gradcam ... --layer list) or use input")
                hits = [t for n, _, t in outs if n == name]
                if not hits:
                    known = ", ".join(dict.fromkeys(n for n, _, _ in outs))
                    raise UserError(f"layer {name!r} did not run in model {model.name!r}; its layers: {known}")
                act = hits[-1]
                if act.ndim != nd + 2:
                    raise UserError(f"layer {name!r} has output shape {tuple(act.shape)}: Seg-Grad-CAM needs a "
                                    f"feature map (1, K, {nd} spatial axes)")
                if not act.requires_grad:
                    raise UserError(f"layer {name!r} does not depend on the input through differentiable "
                                    "operations: pick another layer")
            (grad,) = torch.autograd.grad(y, [act], allow_unused=True)
    finally:
        if rec is not None:
            rec.close()
    with torch.inference_mode():
        a = act.detach()
        g = torch.zeros_like(a) if grad is None else grad.detach()
        w = g.mean(dim=tuple(range(2, a.ndim)), keepdim=True)  # (1, K, 1...)
        cam = torch.relu((w * a).sum(dim=1, keepdim=True)).float()
        if name != INPUT:  # feature map -> the fitted input's size -> back through the card's fit
            if tuple(cam.shape[2:]) != tuple(xf.shape[2:]):
                cam = F.interpolate(cam, size=tuple(xf.shape[2:]), mode="bilinear" if nd == 2 else "trilinear",
                                    align_corners=False)
            cam = undo(cam)
        cam = cam[0, 0]
        peak = float(cam.max())
        cam_np = (cam / peak if peak > 0 else cam).cpu().numpy().astype(np.float32)
    warnings_out = []
    if peak <= 0:
        warnings_out.append(f"the class activation map of layer {name!r} is 0 everywhere (every weighted sum is "
                            "negative or the gradients vanish): try another layer")
    map_ = np.clip(cam_np, 0, 1)
    yield Progress(1, 1, "forward and backward", partial=map_)
    stats = {"layer": name, "layer_shape": list(a.shape), "target_logit_sum": float(y.detach()),
             "n_target_pixels": int(region.sum()), "cam_peak": peak, "positive_weights": int((w > 0).sum()),
             "forward_passes": model.forward_passes - passes0}
    devs = ["Layer 'auto': the last module with the smallest spatial output, no wider than its convolutions (the "
            "bottleneck block's output); the paper picks a U-Net's bottleneck by hand.",
            "The map is divided by its maximum (0 stays 0; [0, 1]) rather than min-max normalised.",
            "One forward and one backward pass (gradients flow to the activations only; the model's .grad is untouched)."]
    if where == "predicted mask":
        devs.append("No RoI: the logits are summed over the pixels the model predicts as the class.")
    elif label is not None:
        devs.append(f"Logits summed over the {where} pixels (the labelled structure), not the whole RoI box.")
    if name == INPUT:
        devs.append("Layer 'input': the weighted sum runs over the normalised input channels (no feature layer).")
    params = asdict(cfg) | {"target_class": int(target), "layer_used": name, "target_region": where}
    return Explanation(method="seg_gradcam", map=map_, roi=roi, stats=stats, params=params,
                       provenance=provenance(model, t_start, stats["forward_passes"], cfg.seed),
                       deviations=devs, geometry=dict(geometry or {}), warnings=warnings_out)


def explain_seg_gradcam(model: "SegmentationModel", image: np.ndarray, roi: np.ndarray | None = None,
                        target: int = 1, progress=None, cancel=None, **kwargs: Any) -> "Explanation":
    """Blocking Seg-Grad-CAM; ``progress(Progress)`` callback, ``cancel()`` check. See :func:`seg_gradcam`."""
    return drive(seg_gradcam(model, image, roi, target, **kwargs), progress, cancel)


def estimate(config: SegGradCAMConfig, roi: Any) -> int:
    """One forward pass (and its backward pass)."""
    return 1


def summary(expl: "Explanation") -> str:
    s = expl.stats
    return f"Seg-Grad-CAM done: layer {s.get('layer')} {tuple(s.get('layer_shape', ()))}"


SPEC_DIMS = (2, 3)
SPEC = register(ExplainerSpec(
    name="seg_gradcam", title="Seg-Grad-CAM", paper="Vinogradova et al. 2020", config=SegGradCAMConfig,
    run=seg_gradcam, needs=frozenset({"roi_optional", "label", "gradients"}), dims=SPEC_DIMS,
    stats=(Stat("layer", "layer", "{}"), Stat("cam_peak", "peak (before scaling)", "{:.3g}"),
           Stat("n_target_pixels", "pixels summed", "{:d}")),
    layers=(ResultLayer("map", "CAM", "saliency", colorbar=True), ResultLayer("roi", "RoI", "outline")),
    estimate=estimate, summary=summary, stages=(("forward and backward",),),
    description="Gradient-weighted activations of a layer for the RoI's class logits (bottleneck by default)."))
