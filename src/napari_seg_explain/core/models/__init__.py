"""Segmentation models: load any supported file safely (loading.py), run it as its card says (model.py)."""

from .devices import available_devices, resolve_device, sha256_file, sha256_module
from .loading import MODEL_SUFFIXES, load_model
from .model import SegmentationModel, class_probability, labels_from_probs

__all__ = ["available_devices", "resolve_device", "sha256_file", "sha256_module", "MODEL_SUFFIXES", "load_model",
           "SegmentationModel", "class_probability", "labels_from_probs"]
