"""nnU-Net v2 trained-model folders (``dataset.json``, ``plans.json``, ``fold_*/checkpoint_*.pth``).

Loaded through nnU-Net's own ``nnUNetPredictor.initialize_from_trained_model_folder``; preprocessing
(transpose, crop to non-zero, per-channel normalisation, resampling), sliding-window inference, mirroring,
fold ensembling and label handling (softmax or region-based sigmoid) are nnU-Net's own code. nnU-Net reads
its checkpoints with ``torch.load(weights_only=False)``: nothing beyond what nnU-Net itself unpickles is
loaded, but that is a pickle, so open folders you trust (as with ``nnUNetv2_predict``).

Explanations run on one patch of the plans' patch size around the RoI on the preprocessed grid, with one
fold and no mirroring unless ``ensemble=True`` (all loaded folds, mirrored as segmentation is).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ModelLoadError
from ..modelcard import ModelCard
from .devices import resolve_device, sha256_file
from .nnunet_space import NNUNetSpace, as_nnunet_array
from .space import ModelSpace, PreprocessingModel

if TYPE_CHECKING:
    import torch

    from ..images import Image
    from ..progress import Progress


def is_nnunet_dir(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "dataset.json").is_file() and (p / "plans.json").is_file()


def available_folds(path: Path, checkpoint: str) -> list[str]:
    return sorted(d.name.removeprefix("fold_") for d in path.glob("fold_*") if (d / checkpoint).is_file())


def ensemble_net(nets: Sequence["torch.nn.Module"], mirror_axes: Sequence[int]) -> "torch.nn.Module":
    """Mean logits over folds and mirrored inputs, as nnU-Net's predictor combines them."""
    import itertools

    import torch

    class FoldMirrorEnsemble(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.nets = torch.nn.ModuleList(nets)
            self.flips = [c for r in range(len(mirror_axes) + 1)
                          for c in itertools.combinations([a + 2 for a in mirror_axes], r)]

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            total = None
            for net in self.nets:
                for axes in self.flips:
                    y = torch.flip(net(torch.flip(x, axes)), axes) if axes else net(x)
                    total = y if total is None else total + y
            return total / (len(self.nets) * len(self.flips))

    return FoldMirrorEnsemble()


class NNUNetModel(PreprocessingModel):
    """An nnU-Net v2 model: nnU-Net's predictor for whole scans, its network on preprocessed patches."""

    def __init__(self, predictor: Any, folder: Path, folds: list[str], checkpoint: str, *, mirroring: bool,
                 ensemble: bool, device: str) -> None:
        self.predictor = predictor
        self.folder, self.folds, self.checkpoint = folder, folds, checkpoint
        self.mirroring, self.ensemble = mirroring, ensemble
        cm, lm = predictor.configuration_manager, predictor.label_manager
        self.configuration = _configuration_name(predictor)
        self._channels = tuple(str(v) for _, v in sorted(predictor.dataset_json["channel_names"].items(),
                                                          key=lambda kv: int(kv[0])))
        classes = _class_names(predictor.dataset_json, lm)
        card = ModelCard(name=f"{predictor.plans_manager.dataset_name} {self.configuration}",
                         description=f"nnU-Net v2 {predictor.trainer_name}, folds {', '.join(folds)}",
                         spatial_dims=len(cm.patch_size), in_channels=len(self._channels), classes=classes,
                         output_activation="sigmoid" if lm.has_regions else "softmax", normalization="none",
                         input_size=tuple(int(s) for s in cm.patch_size), source=str(folder))
        net = copy.deepcopy(predictor.network)  # the predictor reloads fold weights into its own network
        mirror = list(predictor.allowed_mirroring_axes or ()) if mirroring else []
        if ensemble and (len(predictor.list_of_parameters) > 1 or mirror):
            nets = []
            for params in predictor.list_of_parameters:
                n = copy.deepcopy(net)
                n.load_state_dict(params)
                nets.append(n)
            net = ensemble_net(nets, mirror)
        else:
            net.load_state_dict(predictor.list_of_parameters[0])
        super().__init__(net, card, device=device, fmt="nnU-Net v2", source=str(folder), sha256=_digest(
            folder, folds, checkpoint, mirroring, ensemble))
        self.spacing = tuple(float(s) for s in cm.spacing)

    # --- what the model is ------------------------------------------------------------------------
    @property
    def channel_names(self) -> tuple[str, ...]:
        return self._channels

    @property
    def explain_deviations(self) -> tuple[str, ...]:  # type: ignore[override]
        devs = ["explained on one patch of the plans' patch size around the RoI on nnU-Net's preprocessed grid "
                "(nnU-Net's own prediction slides overlapping Gaussian-weighted windows over the whole scan)"]
        if not self.ensemble:
            if len(self.folds) > 1:
                devs.append(f"explained with fold {self.folds[0]} only (segmentation ensembles folds "
                            f"{', '.join(self.folds)}); ensemble=True explains the ensemble")
            if self.mirroring and self.predictor.allowed_mirroring_axes:
                devs.append("explained without test-time mirroring (segmentation averages mirrored inputs)")
        return tuple(devs)

    def summary(self) -> dict[str, Any]:
        return {"format": "nnU-Net v2", "configuration": self.configuration, "folds": list(self.folds),
                "checkpoint": self.checkpoint, "mirroring": self.mirroring, "explain ensemble": self.ensemble,
                "patch size": list(self.card.input_size or ()), "spacing (mm)": list(self.spacing),
                "channels": list(self._channels), "classes": list(self.card.classes)}

    # --- preprocessing and whole-scan inference --------------------------------------------------
    def prepare(self, image: "Image") -> tuple[np.ndarray, ModelSpace]:
        """nnU-Net's own preprocessing of the scan, and the display <-> preprocessed grid mapping."""
        p = self.predictor
        data, spacing, reorder = as_nnunet_array(image)
        pre = p.configuration_manager.preprocessor_class(verbose=False)
        out, _, props = pre.run_case_npy(data, None, {"spacing": spacing}, p.plans_manager,
                                         p.configuration_manager, p.dataset_json)
        space = NNUNetSpace.from_properties(props, tuple(out.shape[1:]), reorder, p.plans_manager,
                                            self.configuration, list(self.spacing))
        return np.ascontiguousarray(out, dtype=np.float32), space

    def segment_scan(self, image: "Image") -> Generator["Progress", None, np.ndarray]:
        """nnU-Net's prediction of the scan (its sliding window, mirroring and fold ensemble), display grid."""
        import torch
        from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

        from ..progress import Progress

        p = self.predictor
        n = len(p.list_of_parameters)
        yield Progress(0, n + 1, "nnU-Net preprocessing")
        data, space = self.prepared(image)
        props = space.properties  # type: ignore[attr-defined]
        x = torch.from_numpy(data)
        logits = None
        for i, params in enumerate(p.list_of_parameters):  # nnU-Net's predict_logits_from_preprocessed_data
            p.network.load_state_dict(params)
            with torch.inference_mode():
                fold = p.predict_sliding_window_return_logits(x).to("cpu")
            logits = fold if logits is None else logits + fold
            self.forward_passes += 1
            yield Progress(i + 1, n + 1, f"nnU-Net sliding window, fold {self.folds[i]}")
        logits = logits / n
        seg = convert_predicted_logits_to_segmentation_with_correct_shape(
            logits, p.plans_manager, p.configuration_manager, p.label_manager, props, return_probabilities=False)
        yield Progress(n + 1, n + 1, "nnU-Net resampling to the scan")
        seg = np.asarray(seg)
        reorder = space.reorder  # type: ignore[attr-defined]
        return np.ascontiguousarray(seg[0]) if reorder is None else reorder.display(seg.transpose(2, 1, 0))


def _configuration_name(predictor: Any) -> str:
    cm = predictor.configuration_manager
    for name, cfg in predictor.plans_manager.plans["configurations"].items():
        if cfg is cm.configuration or cfg == cm.configuration:
            return name
    return "unknown"


def _class_names(dataset_json: dict[str, Any], label_manager: Any) -> tuple[str, ...]:
    """Output channels' names: labels by value (softmax), or the foreground regions (sigmoid)."""
    labels = dataset_json["labels"]
    if label_manager.has_regions:
        names = {tuple(v) if isinstance(v, (list, tuple)) else (v,): k for k, v in labels.items()}
        return tuple(names.get(tuple(r) if isinstance(r, (list, tuple)) else (r,), f"region {r}")
                     for r in label_manager.foreground_regions)
    by_value = {int(v): k for k, v in labels.items()}
    return tuple(by_value.get(i, f"class {i}") for i in range(max(by_value) + 1))


def _digest(folder: Path, folds: list[str], checkpoint: str, mirroring: bool, ensemble: bool) -> str:
    h = hashlib.sha256()
    for f in ("dataset.json", "plans.json", *(f"fold_{k}/{checkpoint}" for k in folds)):
        h.update(sha256_file(folder / f).encode())
    h.update(json.dumps([folds, checkpoint, mirroring, ensemble]).encode())
    return h.hexdigest()


def load_nnunet(path: str | Path, device: str = "auto", *, folds: Sequence[int | str] | None = None,
                checkpoint: str = "checkpoint_final.pth", mirroring: bool = True,
                ensemble: bool = False) -> NNUNetModel:
    """An nnU-Net v2 trained-model folder. ``folds``: default every fold with ``checkpoint``; ``mirroring``:
    test-time mirroring when segmenting (nnU-Net's default); ``ensemble``: explain the fold/mirror ensemble."""
    import torch

    try:
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    except ImportError as exc:
        raise ModelLoadError("nnU-Net model folders need nnU-Net v2: pip install 'napari-seg-explain[nnunet]'") \
            from exc
    folder = Path(path)
    have = available_folds(folder, checkpoint)
    chosen = [str(f) for f in folds] if folds else have
    missing = [f for f in chosen if f not in have]
    if not chosen or missing:
        raise ModelLoadError(f"{folder} has no {checkpoint} for fold(s) {', '.join(missing) or 'any'}; "
                             f"folds with it: {', '.join(have) or 'none'} (choose --folds / --checkpoint)")
    dev = resolve_device(device)
    quiet = contextlib.redirect_stdout(io.StringIO())  # nnU-Net prints device notes and fold lists
    with quiet:
        predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring,
                                    perform_everything_on_device=dev.type == "cuda", device=torch.device(dev),
                                    verbose=False, verbose_preprocessing=False, allow_tqdm=False)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            predictor.initialize_from_trained_model_folder(
                str(folder), [int(f) if f.isdigit() else f for f in chosen], checkpoint_name=checkpoint)
    except Exception as exc:  # noqa: BLE001 - nnU-Net's own errors, named
        raise ModelLoadError(f"nnU-Net cannot load {folder}: {type(exc).__name__}: {exc}") from exc
    if predictor.configuration_manager.previous_stage_name is not None:
        raise ModelLoadError(f"{folder} is the second stage of an nnU-Net cascade (it needs the low-resolution "
                             "stage's segmentation as input), which is not supported: use the 3d_fullres or 2d folder")
    return NNUNetModel(predictor, folder, chosen, checkpoint, mirroring=mirroring, ensemble=ensemble, device=device)
