"""Devices and model identity: ``auto`` = CUDA, then MPS, then CPU; SHA-256 of files and modules."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UserError

if TYPE_CHECKING:
    import torch


def available_devices() -> list[str]:
    """Devices this machine can run on, best first (what a device dropdown lists)."""
    import torch

    out = []
    if torch.cuda.is_available():
        out.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        out.append("mps")
    return out + ["cpu"]


def resolve_device(name: str = "auto") -> "torch.device":
    """``auto`` = CUDA, then MPS, then CPU; an explicit device that is not available is an error."""
    import torch

    name = (name or "auto").lower()
    if name == "auto":
        return torch.device(available_devices()[0])
    base = name.split(":")[0]
    if base not in ("cpu", "cuda", "mps"):
        raise UserError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps")
    if base not in available_devices():
        raise UserError(f"device {name!r} is not available on this machine (available: "
                        f"{', '.join(available_devices())}); choose auto or cpu")
    return torch.device(name)


_HASHES: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file, read in 1 MiB chunks; cached by (real path, size, mtime) so a dataset run hashes each
    pool or model file once."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def sha256_module(module: Any) -> str:
    """Hash of a module's parameters and buffers (for models handed over in Python)."""
    h = hashlib.sha256()
    for key, t in sorted(module.state_dict().items()):
        h.update(key.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
