"""Checks on inputs before the work starts: memory a file would need, finite and non-constant pixels, write errors.

Each raises a :class:`~.errors.UserError` whose one sentence says what is wrong and what to do.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .errors import ImageReadError, IncompatibleInputError, OutOfMemory, UserError

if TYPE_CHECKING:
    import torch

#: share of the available memory one image may take once read (float32 copies and the model's batches need the rest)
MEMORY_SHARE = 0.5


def available_memory() -> int:
    """Bytes of memory available now (psutil when installed, else ``os.sysconf``; 0 when unknown)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 0


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def check_fits_in_memory(path: str | os.PathLike, shape: Sequence[int], itemsize: int) -> None:
    """Refuse, before reading, an image whose voxels (as float32 at least) would not fit in memory."""
    need = int(np.prod([int(s) for s in shape], dtype=np.float64)) * max(int(itemsize), 4)
    free = available_memory()
    if free and need > free * MEMORY_SHARE:
        raise ImageReadError(f"{Path(path).name} is too large to read here: its {' x '.join(map(str, shape))} voxels "
                             f"need {gib(need)} of memory but only {gib(free)} is available; crop or downsample it "
                             "first, or use a machine with more memory")


def check_pixels(arr: np.ndarray, what: str = "the explained image") -> None:
    """Refuse NaN/Inf pixels and a constant image: the model would see no structure to explain."""
    bad = int(arr.size - np.count_nonzero(np.isfinite(arr))) if arr.dtype.kind == "f" else 0
    if bad:
        raise IncompatibleInputError(f"{what} contains {bad} NaN or infinite value(s); replace them (e.g. with 0 or "
                                     "the background value) and save the image again")
    if arr.size and float(arr.min()) == float(arr.max()):
        raise IncompatibleInputError(f"{what} is constant (every pixel is {float(arr.min()):g}): there is nothing "
                                     "to explain; check that the right file and slice are loaded")


def write_error(path: str | os.PathLike, exc: OSError) -> UserError:
    """One sentence for a failed write: a full disk, a read-only or forbidden folder, anything else."""
    code = getattr(exc, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT):
        why = "the disk is full (or over quota); free some space or choose another output folder"
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = "the folder is not writable; choose a folder you can write to"
    else:
        why = f"{getattr(exc, 'strerror', None) or exc}; check the output folder and try again"
    return UserError(f"could not write {path}: {why}")


def one_line(exc: BaseException, limit: int = 240) -> str:
    """A library's (often multi-line) exception as one short line: its last informative line."""
    skip = ("Exception thrown in SimpleITK", "[nrrd]", "File ", "The following operation failed", "- ")
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.strip().startswith(skip)]
    text = lines[-1] if lines else type(exc).__name__
    text = re.sub(r"^(s?itk::)?(ITK )?ERROR:\s*(\w+\(0x[0-9a-fA-F]+\):\s*)?", "", text, flags=re.IGNORECASE)
    text = text.rstrip(".:; ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_out_of_memory(exc: BaseException) -> bool:
    """An error that says the device ran out of memory (TorchScript and ONNX raise plain errors with these words)."""
    text = str(exc).lower()
    return "out of memory" in text or "failed to allocate memory" in text


def check_scores(name: str, scores: "torch.Tensor", shape: tuple[int, ...], finite: bool = True) -> None:
    """A model's output must be real-valued scores (not labels) and, with ``finite``, hold no NaN or infinity."""
    import torch

    if not scores.is_floating_point():
        raise IncompatibleInputError(
            f"model {name!r} returned {str(scores.dtype).replace('torch.', '')} values, not scores; export the model "
            "so that it returns logits or probabilities (float), not labels")
    if finite and not bool(torch.isfinite(scores).all()):
        raise IncompatibleInputError(f"model {name!r} returned NaN or infinite values for an input of shape {shape}; "
                                     "check the model's weights and the card's normalization")


def model_error(name: str, device: Any, n: int, shape: tuple[int, ...], exc: BaseException) -> UserError:
    """One sentence for a failed forward pass of ``n`` images: out of memory, or a batch too large for 32-bit
    indexing (CUDA kernels refuse a tensor of over 2^31 elements: a 31 M U-Net at 256x256 in a batch of 256),
    both :class:`OutOfMemory` so that the engine halves the batch; else the model does not fit the input."""
    import torch

    if isinstance(exc, torch.OutOfMemoryError) or is_out_of_memory(exc):
        return OutOfMemory(f"the {device} ran out of memory on a batch of {n} images: lower the batch size or use "
                           "a smaller input")
    if isinstance(exc, RuntimeError) and "32-bit index" in str(exc) and n > 1:
        return OutOfMemory(f"a batch of {n} images is too large for the {device}'s kernels (over 2^31 elements in "
                           "one tensor): lower the batch size")
    return IncompatibleInputError(
        f"model {name!r} failed on an input of shape {shape} ({one_line(exc)}): check that the image's channels "
        "and size fit the model (model card 'in_channels', 'input_size', 'fit')")
