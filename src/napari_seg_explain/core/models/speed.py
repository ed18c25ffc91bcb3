"""Opt-in CUDA speed options of a :class:`~.model.SegmentationModel` (all off by default = exact mode, each a
recorded no-op on the CPU): channels-last memory format, ``torch.compile`` with an eager fallback, pinned host
staging buffers, and the autocast dtype of ``amp``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import UserError

if TYPE_CHECKING:
    import torch


class SpeedOptions:
    """Mixin: the speed options' state, :meth:`set_speed`, :meth:`speed_info` and host-to-device copies."""

    device: "torch.device"
    net: Any
    card: Any

    def init_speed(self) -> None:
        self.channels_last = False
        self.pin_memory = False
        self.amp_dtype = "float16"  # what amp=True autocasts to on CUDA (torch's default)
        self.cpu_workers = 0  # CPU: batches run side by side on this many threads (0 = auto: the cores, <= 8)
        self.speed_notes: list[str] = []  # fallbacks taken (compile failed, pinning refused, ...)
        self._compile_requested = False
        self._compiled: Any = None
        self._pinned: Any = None
        self._pinned_event: Any = None

    def set_speed(self, *, channels_last: bool | None = None, compile: bool | None = None,  # noqa: A002
                  pin_memory: bool | None = None, amp_dtype: str | None = None,
                  cpu_workers: int | None = None) -> "SpeedOptions":
        """Opt-in CUDA speed options (results record them, :meth:`speed_info`); on the CPU each is a no-op.

        ``channels_last``: the network and 4-D/5-D inputs in channels-last memory format (CUDA, torch modules);
        ``compile``: ``torch.compile`` the network (CUDA, ``torch.nn.Module`` formats); if compiling or the
        compiled network fails, the eager network runs and a note is recorded; ``pin_memory``: batches built
        on the host (segmentation, predict) go through a pinned staging buffer, copied asynchronously;
        ``amp_dtype``: ``float16`` | ``bfloat16`` | ``auto`` (bf16 where the GPU supports it) for ``amp=True``;
        ``cpu_workers``: on the CPU, batches run side by side on this many threads (0 = auto, 1 = one batch at a
        time on torch's intra-op threads; ``cpu_parallel.py``).
        """
        import torch

        if cpu_workers is not None:
            if int(cpu_workers) < 0:
                raise UserError(f"cpu workers must be >= 0 (0 = automatic), got {cpu_workers}")
            self.cpu_workers = int(cpu_workers)
        if amp_dtype is not None:
            amp_dtype = {"fp16": "float16", "half": "float16", "bf16": "bfloat16"}.get(amp_dtype, amp_dtype)
            if amp_dtype not in ("float16", "bfloat16", "auto"):
                raise UserError(f"amp dtype must be float16, bfloat16 or auto (got {amp_dtype!r})")
            self.amp_dtype = amp_dtype
        if pin_memory is not None:
            self.pin_memory = bool(pin_memory)
        cuda_module = self.device.type == "cuda" and isinstance(self.net, torch.nn.Module)
        if channels_last is not None:
            self.channels_last = bool(channels_last)
            if cuda_module and self.channels_last:
                fmt = torch.channels_last_3d if self.card.spatial_dims == 3 else torch.channels_last
                try:
                    self.net = self.net.to(memory_format=fmt)
                except Exception as exc:  # noqa: BLE001 - a module that refuses it runs as it is
                    self.speed_notes.append(f"channels_last: the network refused it ({exc}); inputs only")
        if compile is not None:
            self._compile_requested = bool(compile)
            self._compiled = None
            if self._compile_requested and cuda_module and not isinstance(self.net, torch.jit.ScriptModule):
                try:
                    self._compiled = torch.compile(self.net)
                except Exception as exc:  # noqa: BLE001 - compile is an optimisation: fall back to eager
                    self._compile_failed(exc)
        return self

    def _compile_failed(self, exc: BaseException) -> None:
        import warnings

        self._compiled = None
        msg = f"torch.compile failed, running the network uncompiled: {type(exc).__name__}: {exc}"[:300]
        self.speed_notes.append(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)

    def _amp_torch_dtype(self) -> "torch.dtype":
        import torch

        if self.amp_dtype == "auto":
            return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float16
        return getattr(torch, self.amp_dtype)

    def speed_info(self, amp: bool | str = False) -> dict[str, Any]:
        """What a result records: each speed option as requested and as actually used on this device."""
        cuda = self.device.type == "cuda"
        why = "" if cuda else " (CPU: no-op)"
        use_amp = bool(amp) and cuda
        return {"amp": (str(self._amp_torch_dtype()).replace("torch.", "") if use_amp
                        else ("off (CPU: autocast is CUDA-only)" if amp else "off")),
                "channels_last": ("on" if cuda else f"off{why}") if self.channels_last else "off",
                "compile": ("on" if self._compiled is not None else
                            ("off (fell back to eager)" if cuda else f"off{why}")) if self._compile_requested
                else "off",
                "pin_memory": ("on" if cuda else f"off{why}") if self.pin_memory else "off",
                "notes": list(self.speed_notes)}

    def _to_device(self, x: "torch.Tensor") -> "torch.Tensor":
        """Move ``x`` to the model's device; host batches through a reused pinned buffer with ``pin_memory``."""
        import torch

        if not (self.pin_memory and self.device.type == "cuda" and x.device.type == "cpu"):
            return x.to(self.device)
        try:
            with torch.inference_mode(False):
                if self._pinned_event is not None:
                    self._pinned_event.synchronize()  # the previous async copy has left the buffer
                buf = self._pinned
                if buf is None or buf.dtype != x.dtype or buf.numel() < x.numel():
                    buf = self._pinned = torch.empty(x.numel(), dtype=x.dtype).pin_memory()
                staged = buf[: x.numel()].view(x.shape)
                staged.copy_(x)
                out = staged.to(self.device, non_blocking=True)
                self._pinned_event = torch.cuda.Event()
                self._pinned_event.record()
            return out
        except RuntimeError as exc:  # pinning refused (e.g. locked-memory limits): plain copies from now on
            self.pin_memory = False
            self._pinned = self._pinned_event = None
            self.speed_notes.append(f"pin_memory: refused ({exc}); plain host-to-device copies"[:300])
            return x.to(self.device)
