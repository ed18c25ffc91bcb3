"""Check a ``torch.export`` archive (``.pt2``) before ``torch.export.load`` unpickles parts of it.

``torch.export.load`` reads the graph and raw weights safely, but unpickles without restriction what the
archive marks as pickled: weights or constants with ``use_pickle``, custom and opaque objects, and the sample
inputs (``weights_only=False`` as a fallback; also the state dict, constants and inputs of the older 2.7 format). A hostile archive can therefore run code. Here every pickled
member must load with ``torch.load(weights_only=True)``, and custom/opaque Python objects are refused.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

from ..errors import ModelLoadError

_OBJECT_PREFIXES = ("custom_obj_", "opaque_obj_")
_LEGACY = ("serialized_state_dict.json", "serialized_constants.json", "serialized_example_inputs.json")
_PLAIN = ("version", "byteorder", "archive_format", "archive_version", "serialization_id")  # exact base names


def _refuse(path: Path, member: str, why: str) -> ModelLoadError:
    return ModelLoadError(f"{path.name} holds {member}, {why}, which loading would unpickle with code allowed: "
                          "refusing it; export the model again with plain tensors or use .safetensors + a card")


def check_pt2(path: Path) -> None:
    """Raise :class:`ModelLoadError` if loading the archive at ``path`` could unpickle arbitrary objects."""
    import torch

    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile):
        return  # not an archive: torch.export.load refuses it with its own message, unpickling nothing
    with zf:
        names = zf.namelist()
        raw: set[str] = set()  # members a config lists as raw tensor bytes (read without unpickling)
        pickled: set[str] = set()  # members any config marks use_pickle: always checked, whatever their name
        configs: set[str] = set()
        for name in names:
            if not name.endswith("_config.json") or "/data/" not in f"/{name}":
                continue
            configs.add(name)
            try:
                config = json.loads(zf.read(name)).get("config") or {}
            except (ValueError, AttributeError) as exc:
                raise ModelLoadError(f"{path.name}: cannot read {name} ({exc}); export the model again") from exc
            folder = name.rsplit("/", 1)[0]
            for meta in config.values():
                member = str((meta or {}).get("path_name", ""))
                if member.startswith(_OBJECT_PREFIXES):
                    raise _refuse(path, f"{folder}/{member}", "a Python object")
                if "/" in member or "\\" in member or ".." in member:
                    raise _refuse(path, f"{folder}/{member}", "a weight path outside its folder")
                (pickled if (meta or {}).get("use_pickle") else raw).add(f"{folder}/{member}")
        raw -= pickled  # a member one config calls raw and another pickled is checked
        for name in names:  # everything else under data/ (sample inputs, pickled tensors) is unpickled
            base = name.rsplit("/", 1)[-1]
            legacy = base in _LEGACY  # the 2.7 format: torch.save bytes named .json
            if name not in pickled and not legacy and (
                    name in raw or name in configs or name.endswith("/") or base in _PLAIN
                    or "/data/" not in f"/{name}"):
                continue
            if legacy and not zf.getinfo(name).file_size:
                continue
            try:
                torch.load(io.BytesIO(zf.read(name)), map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001 - anything weights_only refuses
                raise _refuse(path, name, f"a pickle that is not plain tensors ({type(exc).__name__})") from exc
