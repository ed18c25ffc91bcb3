"""Load a model file safely: TorchScript, ``torch.export`` programs, state dicts + a MONAI architecture, ONNX.

Nothing is unpickled with arbitrary code execution: ``.pt``/``.pth`` state dicts are read with
``weights_only=True``, TorchScript and ``.pt2`` archives through their own loaders.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ModelLoadError
from ..input_checks import one_line
from ..modelcard import ModelCard, find_card, load_card
from .devices import sha256_file

if TYPE_CHECKING:
    import torch

    from .model import SegmentationModel

MODEL_SUFFIXES = (".pt", ".ts", ".pt2", ".safetensors", ".pth", ".onnx")


def _is_torchscript_archive(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except zipfile.BadZipFile:
        return False
    return any("/code/" in n or n.endswith("constants.pkl") for n in names)


def _build_architecture(card: ModelCard, path: Path) -> "torch.nn.Module":
    import monai.networks.nets as nets

    if not card.architecture:
        raise ModelLoadError(
            f"{path.name} holds only weights (a state dict): add a model card {path.with_suffix('.yaml').name} "
            "naming the architecture, e.g. 'architecture: {name: UNet, kwargs: {spatial_dims: 2, ...}}'")
    cls = getattr(nets, card.architecture, None)
    if cls is None or not isinstance(cls, type):
        raise ModelLoadError(f"architecture {card.architecture!r} is not a MONAI network "
                             "(e.g. UNet, BasicUNet, SegResNet, SwinUNETR)")
    try:
        return cls(**card.architecture_kwargs)
    except Exception as exc:  # noqa: BLE001 - any constructor failure is the card's fault
        raise ModelLoadError(f"cannot build {card.architecture}({card.architecture_kwargs}): {exc}") from exc


def _read_state_dict(path: Path) -> dict[str, "torch.Tensor"]:
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(
            f"{path.name} is neither TorchScript nor a plain state dict loadable with weights_only=True "
            f"({type(exc).__name__}); save the weights with torch.save(model.state_dict()) or as .safetensors"
        ) from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ModelLoadError(f"{path.name} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def _load_network(path: Path, card: ModelCard) -> tuple[Any, str]:
    """Returns (callable network, format name)."""
    import torch

    suffix = path.suffix.lower()
    if suffix == ".onnx":
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ModelLoadError("ONNX models need onnxruntime: pip install 'napari-seg-explain[onnx]'") from exc
        try:
            return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]), "onnx"
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(f"onnxruntime cannot load {path.name}: {exc}") from exc
    if suffix == ".pt2":
        from .pt2_check import check_pt2

        check_pt2(path)  # torch.export.load unpickles some members without weights_only
        try:
            return torch.export.load(str(path)).module(), "torch.export"
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(f"cannot load torch.export program {path.name}: {exc}") from exc
    if suffix in (".pt", ".ts") and _is_torchscript_archive(path):
        try:
            return torch.jit.load(str(path), map_location="cpu"), "torchscript"
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(f"cannot load TorchScript model {path.name}: {exc}") from exc
    if suffix in (".pt", ".pth", ".safetensors"):
        try:
            state = _read_state_dict(path)
        except ModelLoadError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(f"cannot read weights from {path.name} ({one_line(exc)}): the file is damaged or not "
                                 "what its extension says; download or save it again") from exc
        net = _build_architecture(card, path)
        try:
            result = net.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # strict=False still raises on shape mismatches
            raise ModelLoadError(f"the weights in {path.name} do not fit {card.architecture}"
                                 f"({card.architecture_kwargs}): {exc}; check the architecture kwargs in the "
                                 "model card") from exc
        if result.missing_keys or result.unexpected_keys:
            raise ModelLoadError(
                f"the weights in {path.name} do not fit {card.architecture}({card.architecture_kwargs}): "
                f"{len(result.missing_keys)} missing keys (e.g. {result.missing_keys[:3]}), "
                f"{len(result.unexpected_keys)} unexpected keys (e.g. {result.unexpected_keys[:3]}); "
                "check the architecture kwargs in the model card")
        return net, "state_dict"
    raise ModelLoadError(f"unsupported model file {path.name}: use one of {', '.join(MODEL_SUFFIXES)}")


def _load_folder(path: Path, device: str, options: dict[str, Any]) -> "SegmentationModel":
    from .nnunet import is_nnunet_dir, load_nnunet

    if is_nnunet_dir(path):
        return load_nnunet(path, device, **{k: v for k, v in options.items() if v is not None})
    from .bundle import is_bundle_dir, load_bundle

    if is_bundle_dir(path):
        return load_bundle(path, device)
    raise ModelLoadError(f"{path} is a folder but neither an nnU-Net v2 model folder (dataset.json, plans.json, "
                         "fold_*/checkpoint_final.pth) nor a MONAI bundle (configs/inference.json, models/model.pt)")


def load_model(path: str | Path, card: str | Path | ModelCard | None = None, device: str = "auto",
               **folder_options: Any) -> "SegmentationModel":
    """Load a model file (and its card: given, or ``<stem>.yaml`` beside it) onto ``device``.

    A folder is an nnU-Net v2 trained-model folder (``folder_options``: ``folds``, ``checkpoint``,
    ``mirroring``, ``ensemble``; see :func:`.nnunet.load_nnunet`) or a MONAI bundle.
    """
    path = Path(path)
    if path.is_dir():
        return _load_folder(path, device, folder_options)
    if path.suffix.lower() in (".yaml", ".yml"):
        c = load_card(path)
        weights = path.parent / (c.weights or path.with_suffix(".safetensors").name)
        return load_model(weights, c, device)
    if not path.is_file():
        raise ModelLoadError(f"model file {path} does not exist; check the path")
    if card is None:
        found = find_card(path)
        card = load_card(found) if found else ModelCard(name=path.stem)
    elif not isinstance(card, ModelCard):
        card = load_card(card)
    net, fmt = _load_network(path, card)
    digest = hashlib.sha256((sha256_file(path) + repr(card.to_dict() | {"source": None})).encode()).hexdigest()
    from .model import SegmentationModel

    return SegmentationModel(net, card, device=device, fmt=fmt, source=str(path), sha256=digest)
