"""Hostile files: a pickle payload never runs on load, results folders cannot point outside themselves,
and every result records the SHA-256 of its model and input files."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from bundle_builder import METADATA, inference_config
from sample_paths import SAMPLE_DIR
from napari_seg_explain.cli import main
from napari_seg_explain.core.errors import UserError
from napari_seg_explain.core.models import load_model
from napari_seg_explain.core.results import Explanation

SRC = Path(__file__).resolve().parents[2] / "src" / "napari_seg_explain"
PNG = str(SAMPLE_DIR / "slices" / "mni152_axial_z059.png")
MODEL_DIR = SAMPLE_DIR / "model"


class Payload:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def run(capsys, *argv):
    code = main([*map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def marker(tmp_path) -> Path:
    m = tmp_path / "PWNED"
    assert not m.exists()
    return m


def test_the_payload_is_real(tmp_path, marker):
    """Control: unpickled without restrictions the payload does run its command (so the tests below can fail)."""
    f = tmp_path / "evil.pt"
    torch.save({"w": Payload(marker)}, f)
    torch.load(f, weights_only=False)
    assert marker.exists()


def _card(path: Path) -> None:
    shutil.copy(MODEL_DIR / "mni152_wm_unet.yaml", path.with_suffix(".yaml"))
    text = path.with_suffix(".yaml").read_text().replace("weights: mni152_wm_unet.safetensors", f"weights: {path.name}")
    path.with_suffix(".yaml").write_text(text)


@pytest.mark.parametrize("name, wrap", [("evil.pt", "state_dict"), ("evil.pth", "plain"), ("legacy.pt", "legacy")])
def test_pickled_model_never_runs(tmp_path, capsys, marker, name, wrap):
    f = tmp_path / name
    if wrap == "legacy":  # a bare pickle stream (torch's old non-zip format)
        f.write_bytes(pickle.dumps({"w": Payload(marker)}))
    else:
        torch.save({"state_dict": {"w": Payload(marker)}} if wrap == "state_dict" else {"w": Payload(marker)}, f)
    _card(f)
    with pytest.raises(UserError, match="weights_only=True"):
        load_model(f, device="cpu")
    code, _, err = run(capsys, "--quiet", "segment", PNG, "--model", f, "--device", "cpu", "-o", tmp_path / "m.npy")
    assert code == 2 and err.startswith("error:") and "weights_only=True" in err, err
    assert not marker.exists()


def test_pickled_bundle_weights_never_run(tmp_path, capsys, marker):
    root = tmp_path / "bundle"
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "configs" / "inference.json").write_text(json.dumps(inference_config()))
    (root / "configs" / "metadata.json").write_text(json.dumps(METADATA))
    torch.save({"model": {"w": Payload(marker)}}, root / "models" / "model.pt")
    with pytest.raises(UserError, match="weights_only=True"):
        load_model(root, device="cpu")
    vol = SAMPLE_DIR / "mni152_t1_3mm.nii.gz"
    code, _, err = run(capsys, "--quiet", "segment", vol, "--model", root, "--device", "cpu", "-o", tmp_path / "m.npy")
    assert code == 2 and err.startswith("error:"), err
    assert not marker.exists()


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


def _rewrite_zip(src: Path, dst: Path, edit) -> None:
    """Copy the zip ``src`` to ``dst``, each member's bytes through ``edit(name, data)``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            zout.writestr(name, edit(name, zin.read(name)))


def _evil_pt2(tmp_path: Path, marker: Path, where: str) -> Path:
    good = tmp_path / "good.pt2"
    torch.export.save(torch.export.export(_Net(), (torch.zeros(1, 1, 16, 16),)), str(good))
    buf = io.BytesIO()
    torch.save({"x": Payload(marker)}, buf)

    def edit(name: str, data: bytes) -> bytes:
        if where == "sample_inputs" and "/sample_inputs/" in name:
            return buf.getvalue()
        if where == "weights" and name.endswith("_weights_config.json"):
            cfg = json.loads(data)
            for meta in cfg["config"].values():
                meta["use_pickle"] = True
            return json.dumps(cfg).encode()
        if where == "weights" and "/weights/weight_" in name:
            return buf.getvalue()
        if where == "weights_named_json" and name.endswith("_weights_config.json"):
            cfg = json.loads(data)  # a pickled weight whose file is named like plain JSON
            cfg["config"]["evil"] = {"path_name": "evil.json", "use_pickle": True}
            return json.dumps(cfg).encode()
        if where == "decoy_config" and name.endswith("_weights_config.json"):
            cfg = json.loads(data)
            for meta in cfg["config"].values():
                meta["use_pickle"] = True
            return json.dumps(cfg).encode()
        if where == "decoy_config" and "/weights/weight_" in name:
            return buf.getvalue()
        return data

    evil = tmp_path / f"evil_{where}.pt2"
    if where == "legacy":  # torch 2.7's format: the state dict as torch.save bytes named .json
        with zipfile.ZipFile(evil, "w") as zf:
            zf.writestr("version", "8.0")
            zf.writestr("serialized_exported_program.json", b"{}")
            zf.writestr("serialized_state_dict.json", buf.getvalue())
        return evil
    _rewrite_zip(good, evil, edit)
    extra = {"weights_named_json": {"evil.json": buf.getvalue()},
             "decoy_config": {"decoy_config.json": None}}.get(where, {})
    if extra:
        with zipfile.ZipFile(evil) as zf:
            folder = next(n for n in zf.namelist() if n.endswith("_weights_config.json")).rsplit("/", 1)[0]
            weights = json.loads(zf.read(f"{folder}/model_weights_config.json"))["config"] \
                if f"{folder}/model_weights_config.json" in zf.namelist() else {}
        with zipfile.ZipFile(evil, "a") as zf:
            for member, data in extra.items():
                if data is None:  # a second config calling the same weights raw
                    data = json.dumps({"config": {k: dict(v, use_pickle=False) for k, v in weights.items()}}).encode()
                zf.writestr(f"{folder}/{member}", data)
    return evil


def test_torch_export_load_alone_would_run_a_payload(tmp_path, marker):
    """Control: torch.export.load unpickles an archive's sample inputs with code allowed (hence check_pt2)."""
    evil = _evil_pt2(tmp_path, marker, "sample_inputs")
    try:
        torch.export.load(str(evil))
    except Exception:  # noqa: BLE001 - it may fail after unpickling
        pass
    assert marker.exists()


@pytest.mark.parametrize("where", ["sample_inputs", "weights", "legacy", "weights_named_json", "decoy_config"])
def test_pickled_pt2_never_runs(tmp_path, capsys, marker, where):
    evil = _evil_pt2(tmp_path, marker, where)
    with pytest.raises(UserError, match="refusing it"):
        load_model(evil, device="cpu")
    code, _, err = run(capsys, "--quiet", "segment", PNG, "--model", evil, "--device", "cpu", "-o", tmp_path / "m.npy")
    assert code == 2 and err.startswith("error:") and "refusing it" in err, err
    assert not marker.exists()
    assert load_model(tmp_path / "good.pt2", device="cpu").format == "torch.export"  # a plain archive loads


def test_pickled_torchscript_never_runs(tmp_path, capsys, marker):
    good = tmp_path / "good.pt"
    torch.jit.save(torch.jit.script(_Net()), str(good))
    evil = tmp_path / "evil_ts.pt"
    _rewrite_zip(good, evil, lambda name, data: pickle.dumps({"x": Payload(marker)}, protocol=2)
                 if name.endswith(("constants.pkl", "data.pkl")) else data)
    with pytest.raises(UserError, match="TorchScript"):
        load_model(evil, device="cpu")
    code, _, err = run(capsys, "--quiet", "segment", PNG, "--model", evil, "--device", "cpu", "-o", tmp_path / "m.npy")
    assert code == 2 and err.startswith("error:"), err
    assert not marker.exists()


def _object_npy(path: Path, marker: Path) -> None:
    arr = np.empty((2,), dtype=object)
    arr[0] = Payload(marker)
    np.save(path, arr, allow_pickle=True)


def test_pickled_result_map_never_runs(tmp_path, capsys, marker):
    expl = Explanation("occlusion", np.zeros((4, 4), np.float32), provenance={"x": 1})
    expl.save(tmp_path / "r.npy")
    _object_npy(tmp_path / "r.npy", marker)
    with pytest.raises(UserError):
        Explanation.load(tmp_path / "r.npy")
    assert not marker.exists()


def test_pickled_npy_image_never_runs(tmp_path, capsys, marker):
    img = tmp_path / "img.npy"
    _object_npy(img, marker)
    code, _, err = run(capsys, "--quiet", "segment", img, "--model", MODEL_DIR / "mni152_wm_unet.safetensors",
                       "--device", "cpu", "-o", tmp_path / "m.npy")
    assert code == 2 and err.startswith("error:"), err
    assert not marker.exists()


def _calls(text: str, name: str) -> list[str]:
    """The argument text of every ``name(...)`` call (parentheses balanced)."""
    out = []
    for m in re.finditer(re.escape(name) + r"\(", text):
        depth, i = 1, m.end()
        while depth and i < len(text):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        out.append(text[m.start():i])
    return out


def test_every_load_in_the_package_refuses_pickles():
    """np.load always with allow_pickle=False; torch.load only with weights_only=True (nnU-Net's own loader,
    outside this package, is the documented exception)."""
    for f in SRC.rglob("*.py"):
        text = f.read_text()
        for call in _calls(text, "np.load"):
            assert "allow_pickle=False" in call, f"{f}: {call}"
        for call in _calls(text, "torch.load"):
            assert "weights_only=True" in call or "weights_only=False" in call and f.name == "nnunet.py", f"{f}: {call}"
        assert "pickle.load" not in text and "import pickle" not in text, f
        if "torch.export.load(" in text:  # it unpickles parts of the archive: checked first
            assert "check_pt2(" in text, f


# --- results folders and sidecars that point outside themselves ------------------------------------------

@pytest.fixture
def saved(tmp_path) -> Path:
    """A result saved as .npy with an extra map and a RoI, in tmp_path/res."""
    folder = tmp_path / "res"
    folder.mkdir()
    roi = np.zeros((4, 4), bool)
    roi[1:3, 1:3] = True
    Explanation("misure", np.ones((4, 4), np.float32), roi=roi, maps={"extra": np.zeros((4, 4), np.float32)},
                provenance={"x": 1}).save(folder / "r.npy")
    return folder / "r.npy"


def _edit_files(sidecar: Path, key: str, value: str) -> None:
    meta = json.loads(sidecar.read_text())
    meta["files"][key] = value
    sidecar.write_text(json.dumps(meta))


def test_saved_result_loads(saved):
    back = Explanation.load(saved)
    assert back.roi.sum() == 4 and set(back.maps) == {"extra"}


@pytest.mark.parametrize("bad", ["../outside.npy", "ABS", "sub/r_extra.npy", "nul\x00.npy"])
def test_sidecar_paths_outside_the_folder_are_refused(saved, bad):
    outside = saved.parent.parent / "outside.npy"
    np.save(outside, np.full((4, 4), 7, np.float32))
    bad = str(outside) if bad == "ABS" else bad
    _edit_files(saved.with_suffix(".json"), "extra", bad)
    with pytest.raises(UserError, match="outside its folder|not a usable file name"):
        Explanation.load(saved)


def test_symlinked_map_leading_out_is_refused(saved):
    outside = saved.parent.parent / "secret.npy"
    np.save(outside, np.full((4, 4), 7, np.float32))
    link = saved.parent / "r_extra.npy"
    link.unlink()
    link.symlink_to(outside)
    with pytest.raises(UserError, match="outside"):
        Explanation.load(saved)
    # a symlink inside the folder to a file inside it is fine
    link.unlink()
    np.save(saved.parent / "real.npy", np.zeros((4, 4), np.float32))
    link.symlink_to(saved.parent / "real.npy")
    assert set(Explanation.load(saved).maps) == {"extra"}


def test_symlinked_folder_entry_is_refused(saved, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    np.save(elsewhere / "r_extra.npy", np.zeros((4, 4), np.float32))
    (saved.parent / "sub").symlink_to(elsewhere, target_is_directory=True)
    _edit_files(saved.with_suffix(".json"), "extra", "sub/r_extra.npy")
    with pytest.raises(UserError, match="outside its folder"):
        Explanation.load(saved)


def test_open_results_refuses_paths_outside(tmp_path):
    from napari_seg_explain.napari.widgets.results_io import INDEX, open_results

    folder = tmp_path / "results"
    folder.mkdir()
    Explanation("occlusion", np.ones((4, 4), np.float32), provenance={"x": 1}).save(folder / "a_map.npy")
    geom = {"shape": [4, 4]}
    np.save(tmp_path / "seg.npy", np.zeros((4, 4), np.uint8))
    for entry in ({"runs": [{"file": "../a_map.npy", "geometry": geom}]},
                  {"runs": [{"file": str(folder / "a_map.npy"), "geometry": geom}]},
                  {"segmentations": [{"name": "s", "file": "../seg.npy", "geometry": geom}]}):
        (folder / INDEX).write_text(json.dumps({"format": "napari-seg-explain results", "version": 2} | entry))
        with pytest.raises(UserError, match="outside its folder"):
            open_results(folder)
    (folder / "seg.npy").symlink_to(tmp_path / "seg.npy")
    (folder / INDEX).write_text(json.dumps({"format": "napari-seg-explain results", "version": 2,
                                            "segmentations": [{"name": "s", "file": "seg.npy", "geometry": geom}]}))
    with pytest.raises(UserError, match="outside"):
        open_results(folder)


@pytest.fixture
def explained(tmp_path, capsys) -> Path:
    """``seg-explain misure`` on the sample slice (model copied into tmp_path): its sidecar."""
    d = tmp_path / "model"
    d.mkdir()
    for name in ("mni152_wm_unet.safetensors", "mni152_wm_unet.yaml"):
        shutil.copy(MODEL_DIR / name, d / name)
    out = tmp_path / "out" / "map.npy"
    out.parent.mkdir()
    code, _, err = run(capsys, "--quiet", "misure", PNG, "--model", d / "mni152_wm_unet.safetensors",
                       "--iterations", 4, "--seed", 0, "--device", "cpu", "-o", out)
    assert code == 0, err
    return out.with_suffix(".json")


def test_rerun_refuses_paths_outside(explained, capsys, tmp_path):
    meta = json.loads(explained.read_text())
    # a listed map outside the folder
    bad = json.loads(json.dumps(meta))
    bad["files"]["map"] = "../../etc/passwd.npy"
    explained.write_text(json.dumps(bad))
    code, _, err = run(capsys, "--quiet", "rerun", explained)
    assert code == 2 and err.startswith("error:") and "outside its folder" in err, err
    # a recorded input given as a relative path (it would resolve inside a folder the sidecar's author controls)
    bad = json.loads(json.dumps(meta))
    bad["run"]["inputs"]["model"] = "model/mni152_wm_unet.safetensors"
    explained.write_text(json.dumps(bad))
    code, _, err = run(capsys, "--quiet", "rerun", explained)
    assert code == 2 and "relative path" in err, err
    # -o onto the result itself is refused; the untouched sidecar reruns
    explained.write_text(json.dumps(meta))
    code, _, err = run(capsys, "--quiet", "rerun", explained, "-o", explained.with_suffix(".npy"), "--device", "cpu")
    assert code == 2 and "overwrite" in err, err
    code, out, err = run(capsys, "--quiet", "rerun", explained, "--device", "cpu")
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["identical"] is True, err


def test_rerun_wants_trust_for_an_nnunet_folder(explained, capsys, tmp_path):
    folder = tmp_path / "nnunet"
    (folder / "fold_0").mkdir(parents=True)
    (folder / "dataset.json").write_text("{}")
    (folder / "plans.json").write_text("{}")
    torch.save({"w": Payload(tmp_path / "PWNED")}, folder / "fold_0" / "checkpoint_final.pth")
    meta = json.loads(explained.read_text())
    meta["run"]["inputs"]["model"] = str(folder)
    explained.write_text(json.dumps(meta))
    code, _, err = run(capsys, "--quiet", "rerun", explained)
    assert code == 2 and "--trust-model" in err, err
    assert not (tmp_path / "PWNED").exists()


# --- SHA-256 of model and input files ---------------------------------------------------------------------

def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_results_record_file_hashes(explained, tmp_path, capsys):
    prov = json.loads(explained.read_text())["provenance"]
    model = tmp_path / "model" / "mni152_wm_unet.safetensors"
    assert prov["model_files_sha256"] == {model.name: sha(model), "mni152_wm_unet.yaml": sha(model.with_suffix(".yaml"))}
    assert prov["inputs_sha256"]["image"] == sha(PNG) and "note" not in prov["inputs_sha256"]
    # label and pool files are hashed too (a pool folder: each image file in it)
    pool = tmp_path / "pool"
    pool.mkdir()
    shutil.copy(PNG, pool / "a.png")
    label = SAMPLE_DIR / "slices" / "mni152_axial_z059_label.png"
    out = tmp_path / "out" / "pdcr.npy"
    code, _, err = run(capsys, "--quiet", "pdcr", PNG, "--model", model, "--roi-box", 32, 16, 64, 48, "--label",
                       label, "--pool", pool, "--n", 2, "--screen", 1, "--seed", 0, "--device", "cpu", "-o", out)
    assert code == 0, err
    got = json.loads(out.with_suffix(".json").read_text())["provenance"]["inputs_sha256"]
    assert got["label"] == sha(label) and got["pool"] == {str(pool / "a.png"): sha(PNG)}


def test_in_memory_inputs_record_null_with_a_note():
    from napari_seg_explain.core.jobs import ExplainJob
    from napari_seg_explain.core.modelcard import ModelCard
    from napari_seg_explain.core.models import SegmentationModel
    from napari_seg_explain.core.progress import drive

    torch.manual_seed(0)
    card = ModelCard(name="in-memory", spatial_dims=2, in_channels=1, classes=("background", "thing"))
    model = SegmentationModel(torch.nn.Conv2d(1, 2, 3, padding=1), card, device="cpu")
    roi = np.zeros((32, 32), bool)
    roi[10:20, 10:20] = True
    image = np.random.default_rng(0).random((1, 32, 32), dtype=np.float32)
    expl = drive(ExplainJob("occlusion", image, roi, 1).run(model))
    h = expl.provenance["inputs_sha256"]
    assert h["image"] is None and "not a file" in h["note"]
    assert "not loaded from a file" in expl.provenance["model_files_sha256"]["note"]


def test_hashes_are_chunked_and_cached(tmp_path, monkeypatch):
    from napari_seg_explain.core.models import devices

    f = tmp_path / "big.bin"
    f.write_bytes(os.urandom(3 << 20))
    assert devices.sha256_file(f) == sha(f)
    reads = []
    real_open = open

    def counting_open(*a, **k):
        reads.append(a[0])
        return real_open(*a, **k)

    monkeypatch.setattr("builtins.open", counting_open)
    assert devices.sha256_file(f) == sha(f) and not [r for r in reads if Path(r) == f.resolve()], "cached"
    monkeypatch.undo()
    f.write_bytes(os.urandom(1 << 20))  # changed file: new size/mtime, hashed again
    assert devices.sha256_file(f) == sha(f)
