"""Explain what a medical-image segmentation model looked at (PdCR, MiSuRe), in napari and from Python."""

__version__ = "0.1.0"
