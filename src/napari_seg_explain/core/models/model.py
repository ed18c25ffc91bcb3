"""A loaded segmentation model: feed it as its model card says, get probabilities.

Shapes: images are channels-first ``(C, H, W)``; batches ``(B, C, H, W)``; probabilities
``(B, K, H, W)`` in the image's own pixel grid (the card's fit is undone on the output).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import IncompatibleInputError, UserError
from ..input_checks import check_scores, model_error
from ..modelcard import ModelCard
from .devices import resolve_device, sha256_module
from .speed import SpeedOptions

if TYPE_CHECKING:
    import torch

    from ..images import Image
    from ..progress import Progress


_COUNT_LOCK = threading.Lock()


def _shown(t: "torch.Tensor", count: int | None) -> tuple[int, ...]:
    """A shape as the user's batch had it (the engine runs a lone image beside a copy of itself)."""
    return (t.shape[0] if count is None else count, *t.shape[1:])


class SegmentationModel(SpeedOptions):
    """A loaded network plus its card: normalise, fit, run in batches, activate, undo the fit."""

    def __init__(self, net: Any, card: ModelCard | None = None, *, device: str = "auto", fmt: str = "module",
                 source: str | None = None, sha256: str | None = None) -> None:
        import torch

        self.card = card or ModelCard(name=type(net).__name__)
        self.device = resolve_device(device)
        self.format = fmt
        self.source = source
        self.is_onnx = fmt == "onnx"
        self.net = net
        if isinstance(net, torch.nn.Module):
            _set_training(net, False)
            self.net = net.to(self.device)
        self.sha256 = sha256 or (sha256_module(net) if isinstance(net, torch.nn.Module) else "unknown")
        self.per_sample = False  # set when an exported program refuses batches > 1
        self.forward_passes = 0  # images passed through the network so far
        self.batch_sizes: dict[tuple[int, ...], int] = {}  # automatic batch size per input shape (engine.py)
        self.init_speed()

    # --- description -------------------------------------------------------------------------
    @property
    def supports_gradients(self) -> bool:
        return not self.is_onnx

    @property
    def channel_names(self) -> tuple[str, ...]:
        """Names of the input channels (the card's ``channels``; nnU-Net: dataset.json), or ``()``."""
        return tuple(self.card.channels)

    @property
    def name(self) -> str:
        return self.card.name or (Path(self.source).stem if self.source else "model")

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable provenance: what the model is and how it is fed."""
        return {"name": self.name, "source": self.source, "format": self.format, "sha256": self.sha256,
                "device": str(self.device), "card": self.card.to_dict(), "speed": self.speed_info()}

    def check_channels(self, n_channels: int) -> None:
        want = self.card.in_channels
        if want is not None and want != n_channels:
            raise IncompatibleInputError(
                f"model {self.name!r} expects {want} input channel(s) but the image has {n_channels}; "
                "pick an image with matching contrasts (an RGB file for a grayscale model? save it as grayscale)")

    # --- preprocessing -----------------------------------------------------------------------
    def normalize(self, x: "torch.Tensor", like: "torch.Tensor | None" = None) -> "torch.Tensor":
        """Intensity normalisation from the card, per image and per channel. ``x``: (B, C, *spatial).

        ``like``: take the statistics (min/max, mean/std) from this ``(1, C, *S)`` image instead of each image
        of ``x`` (replacement crops are mapped as the explained image is).
        """
        import torch

        x = self._to_device(x).to(torch.float32)
        method = self.card.normalization
        if method == "none":
            return x
        ref = x if like is None else like.to(self.device, torch.float32)
        dims = tuple(range(2, ref.ndim))
        if method == "minmax":
            lo, hi = ref.amin(dim=dims, keepdim=True), ref.amax(dim=dims, keepdim=True)
            scale = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
            return (x - lo) / scale
        if method == "zscore":
            mean, std = ref.mean(dim=dims, keepdim=True), ref.std(dim=dims, keepdim=True)
            return (x - mean) / torch.where(std > 0, std, torch.ones_like(std))
        lo = self.card.ct_center - self.card.ct_width / 2
        return (x.clamp(lo, lo + self.card.ct_width) - lo) / self.card.ct_width

    def _fit(self, x: "torch.Tensor") -> tuple["torch.Tensor", Callable[["torch.Tensor"], "torch.Tensor"]]:
        """Fit (B, C, *S) to the card's input size; returns the fitted batch and the inverse for outputs."""
        import torch.nn.functional as F

        size = self.card.input_size
        spatial = tuple(x.shape[2:])
        if not size or tuple(size) == spatial:
            return x, lambda y: y
        if len(size) != len(spatial):
            raise IncompatibleInputError(f"model {self.name!r} takes {len(size)}-D inputs, got {len(spatial)}-D")
        if self.card.fit == "resize":
            mode = "bilinear" if len(size) == 2 else "trilinear"
            return (F.interpolate(x, size=size, mode=mode, align_corners=False),
                    lambda y: F.interpolate(y, size=spatial, mode=mode, align_corners=False))
        pads, crops = [], []
        for have, want in zip(spatial, size):
            d = want - have
            before = abs(d) // 2
            pads.append((before, abs(d) - before) if d > 0 else (0, 0))
            crops.append((before, before + want) if d < 0 else (0, have))
        xc = x[(slice(None), slice(None)) + tuple(slice(a, b) for a, b in crops)]
        flat = [p for pair in reversed(pads) for p in pair]
        xp = F.pad(xc, flat)

        def undo(y: "torch.Tensor") -> "torch.Tensor":
            yc = y[(slice(None), slice(None)) + tuple(slice(a, y.shape[2 + i] - b) for i, (a, b) in enumerate(pads))]
            neg = [(a, have - b) for (a, b), have in zip(crops, spatial)]
            return F.pad(yc, [p for pair in reversed(neg) for p in pair])  # zero logits outside a crop

        return xp, undo

    # --- running -------------------------------------------------------------------------------
    def _run(self, x: "torch.Tensor") -> "torch.Tensor":
        import torch

        if self.is_onnx:
            sess = self.net
            inp = sess.get_inputs()[0]
            arr = x.detach().cpu().numpy().astype(np.float32)
            if inp.shape and inp.shape[0] == 1 and arr.shape[0] > 1:  # exported with a static batch of 1
                out = np.concatenate([sess.run(None, {inp.name: arr[i:i + 1]})[0] for i in range(arr.shape[0])])
            else:
                out = sess.run(None, {inp.name: arr})[0]
            return torch.from_numpy(out).to(x.device)
        if self.channels_last and self.device.type == "cuda" and x.ndim in (4, 5):
            x = x.contiguous(memory_format=torch.channels_last if x.ndim == 4 else torch.channels_last_3d)
        if self.per_sample:
            return torch.cat([_first_tensor(self.net(x[i:i + 1])) for i in range(x.shape[0])])
        if self._compiled is not None:
            try:
                return _first_tensor(self._compiled(x))
            except torch.OutOfMemoryError:
                raise
            except Exception as exc:  # noqa: BLE001 - compile is an optimisation: fall back to eager
                if "32-bit index" in str(exc):
                    raise  # the batch is too large for any kernel: the engine halves it, compiled or not
                self._compile_failed(exc)
        try:
            return _first_tensor(self.net(x))
        except Exception:
            if self.format != "torch.export" or x.shape[0] == 1:
                raise
            self.per_sample = True  # exported with a static batch of 1
            return self._run(x)

    def activate(self, logits: "torch.Tensor") -> "torch.Tensor":
        act = self.card.output_activation
        if act == "auto":
            act = "softmax" if logits.shape[1] > 1 else "sigmoid"
        if act == "softmax":
            return logits.softmax(dim=1)
        if act == "sigmoid":
            return logits.sigmoid()
        return logits

    def forward_normalized(self, x: "torch.Tensor", *, amp: bool | str = False, count: int | None = None
                           ) -> "torch.Tensor":
        """Probabilities ``(B, K, *S)`` float32 for an already normalised batch ``(B, C, *S)``.

        Differentiable when called with gradients enabled (not for ONNX). ``amp`` turns on CUDA
        autocast (opt-in speed mode; exact mode runs in the model's own precision): ``True`` in the model's
        ``amp_dtype`` (:meth:`set_speed`), or ``"float16"`` / ``"bfloat16"``. A no-op on the CPU. ``count``: the
        forward passes to count (default: the batch; the engine counts a lone image run beside a copy once).
        """
        import torch

        xf, undo = self._fit(self._to_device(x))
        use_amp = bool(amp) and self.device.type == "cuda"
        dtype = None
        if use_amp:
            dtype = getattr(torch, {"fp16": "float16", "bf16": "bfloat16"}.get(amp, amp)) if isinstance(amp, str) \
                else self._amp_torch_dtype()
        with torch.autocast("cuda", dtype=dtype, enabled=use_amp):
            try:
                logits = self._run(xf)
            except Exception as exc:  # noqa: BLE001 - one sentence naming the likely cause
                raise model_error(self.name, self.device, count or x.shape[0], _shown(xf, count), exc) from exc
        with _COUNT_LOCK:  # the engine's CPU workers call this side by side
            self.forward_passes += x.shape[0] if count is None else count
        if logits.ndim != xf.ndim or logits.shape[2:] != xf.shape[2:]:
            raise IncompatibleInputError(
                f"model {self.name!r} returned shape {_shown(logits, count)} for input {_shown(xf, count)}; "
                "export a model that returns (B, K, *spatial) scores with the input's spatial size")
        check_scores(self.name, logits, _shown(xf, count), finite=False)
        probs = self.activate(undo(logits.float()))
        check_scores(self.name, probs, _shown(xf, count))
        return probs

    def predict_batches(self, images: "np.ndarray | torch.Tensor", *, batch_size: int = 0, amp: bool | None = None,
                        stage: str = "segmenting") -> Generator["Progress", None, np.ndarray]:
        """Generator form of :meth:`predict` (through the batched :class:`~..engine.Engine`): yields Progress."""
        import torch

        from ..engine import Engine

        x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
        single = x.ndim == self.card.spatial_dims + 1
        if single:
            x = x[None]
        self.check_channels(x.shape[1])
        amp = self.device.type == "cuda" if amp is None else amp
        if self.needs_sliding_window(tuple(x.shape[2:])):
            probs = yield from self._sliding_window(x, amp, stage)
        else:
            engine = Engine(self, batch_size, amp=amp)
            with self.eval_mode():
                probs = yield from engine.run(len(x), lambda a, b: self.normalize(x[a:b]), lambda p: p, stage=stage,
                                              shape=tuple(x.shape[1:]))
        probs = probs.numpy()
        return probs[0] if single else probs

    def needs_sliding_window(self, spatial: tuple[int, ...]) -> bool:
        """A 3-D model with a patch size (card ``input_size``) runs over a larger volume window by window."""
        size = self.card.input_size
        return self.card.spatial_dims == 3 and bool(size) and tuple(spatial) != tuple(size)

    def _sliding_window(self, x: "torch.Tensor", amp: bool, stage: str) -> Generator["Progress", None, "torch.Tensor"]:
        """MONAI's sliding-window inference (overlap 0.5, Gaussian weighting, as nnU-Net and MONAI bundles do) over
        each volume of ``x`` ``(B, C, *S)``; windows of the card's patch size, padded at the borders."""
        import torch
        from monai.inferers import sliding_window_inference

        from ..progress import Progress

        out = []
        size = tuple(int(s) for s in self.card.input_size)
        with self.eval_mode():
            for i in range(len(x)):
                with torch.inference_mode():
                    xn = self.normalize(x[i:i + 1])
                    out.append(sliding_window_inference(xn, size, 1, lambda w: self.forward_normalized(w, amp=amp),
                                                        overlap=0.5, mode="gaussian").float().cpu())
                yield Progress(i + 1, len(x), stage)
        return torch.cat(out)

    def predict(self, images: "np.ndarray | torch.Tensor", *, batch_size: int = 0, amp: bool | None = None,
                progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Probabilities for raw images ``(C, *S)`` or ``(B, C, *S)`` -> ``(K, *S)`` / ``(B, K, *S)``.

        ``batch_size`` 0 = automatic; ``progress(done, total)`` after every batch.
        """
        from ..progress import drive

        return drive(self.predict_batches(images, batch_size=batch_size, amp=amp),
                     (lambda ev: progress(ev.done, ev.total)) if progress else None)

    def segment_batches(self, images: Any, *, batch_size: int = 0,
                        stage: str = "segmenting") -> Generator["Progress", None, np.ndarray]:
        """Labels of raw images ``(B, C, *S)`` -> ``(B, *S)`` through the Engine, keeping no probabilities.

        ``images``: an array, or anything with ``len()`` whose slices ``images[a:b]`` are such arrays (a lazy
        view of a large volume: only one batch of planes is in memory at a time).
        """
        import torch

        from ..engine import Engine

        first = np.asarray(images[0:1], dtype=np.float32)
        self.check_channels(first.shape[1])
        engine = Engine(self, batch_size, amp=self.device.type == "cuda")

        def build(a: int, b: int) -> "torch.Tensor":
            return self.normalize(torch.as_tensor(np.asarray(images[a:b], dtype=np.float32)))


        def labels(p: "torch.Tensor") -> "torch.Tensor":
            return (p[:, 0] > 0.5) if p.shape[1] == 1 else p.argmax(dim=1)

        with self.eval_mode():
            lab = yield from engine.run(len(images), build, labels, stage=stage, shape=tuple(first.shape[1:]))
        k = len(self.card.classes) or 2
        return lab.numpy().astype(np.uint8 if k <= 256 else np.int16)

    def segment(self, image: "Image", slice_index: int | None = None, *, batch_size: int = 0,
                progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Label map in the image's spatial shape (or the slice's, with ``slice_index``)."""
        from ..progress import drive

        self.check_channels(image.n_channels)
        if self.card.spatial_dims == 3 and image.spatial_ndim == 3:
            from ..orient import reorder_for  # the model's voxel order in, the display order out

            order = reorder_for(image, self.card.orientation)
            probs = self.predict(order.channels(image.data).astype(np.float32), batch_size=1)
            return order.display(labels_from_probs(probs))
        if image.spatial_ndim == 2 or slice_index is not None:
            return labels_from_probs(self.predict(image.slice2d(slice_index), batch_size=batch_size))
        vol = np.moveaxis(image.data.astype(np.float32), -1, 0)  # (K slices, C, I, J)
        labels = drive(self.segment_batches(vol, batch_size=batch_size),
                       (lambda ev: progress(ev.done, ev.total)) if progress else None)
        return np.moveaxis(labels, 0, -1)

    @contextmanager
    def eval_mode(self) -> Iterator[None]:
        """Run in eval mode and restore the caller's train/eval state afterwards."""
        import torch

        net = self.net
        was_training = isinstance(net, torch.nn.Module) and net.training
        if isinstance(net, torch.nn.Module):
            _set_training(net, False)
        try:
            yield
        finally:
            if was_training:
                _set_training(net, True)

    def with_card(self, **changes: Any) -> "SegmentationModel":
        """A copy sharing the network but with card fields changed (e.g. for tests or overrides)."""
        clone = type(self).__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.card = replace(self.card, **changes)
        return clone


def _set_training(net: "torch.nn.Module", mode: bool) -> None:
    """``net.train(mode)``; torch.export modules refuse it (their mode is fixed at export time)."""
    try:
        net.train(mode)
    except NotImplementedError:
        pass


def _first_tensor(out: Any) -> "torch.Tensor":
    """Adapter for networks returning tuples/lists (deep supervision) or dicts: take the main output."""
    import torch

    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (list, tuple)) and out:
        return _first_tensor(out[0])
    if isinstance(out, dict) and out:
        return _first_tensor(out.get("out", next(iter(out.values()))))
    raise IncompatibleInputError(f"model returned {type(out).__name__}, not a tensor")


def class_probability(probs: "torch.Tensor", class_index: int) -> "torch.Tensor":
    """Probability map of one class from ``(B, K, *S)``; a single-logit model has classes {0, 1}."""
    k = probs.shape[1]
    if k == 1:
        if class_index not in (0, 1):
            raise UserError(f"class {class_index} does not exist: this single-output model has classes 0 and 1")
        return probs[:, 0] if class_index == 1 else 1 - probs[:, 0]
    if not 0 <= class_index < k:
        raise UserError(f"class {class_index} does not exist: the model has classes 0..{k - 1}")
    return probs[:, class_index]


def labels_from_probs(probs: np.ndarray, axis: int = 0) -> np.ndarray:
    """Label map: argmax over classes, or ``p > 0.5`` for a single-output model. uint8 (int16 if > 255)."""
    if probs.shape[axis] == 1:
        return (np.take(probs, 0, axis=axis) > 0.5).astype(np.uint8)
    lab = probs.argmax(axis=axis)
    return lab.astype(np.uint8 if probs.shape[axis] <= 256 else np.int16)
