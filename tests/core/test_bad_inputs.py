"""The bad-input matrix: every case through the CLI (exit 2, one ``error:`` line, inputs untouched, nothing left
behind) and through the Python API (a ``UserError`` with the same sentence). Real files in tmp_path."""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from PIL import Image as PILImage
from torch import nn

from sample_paths import SAMPLE_DIR
from napari_seg_explain.cli import main
from napari_seg_explain.core import input_checks
from napari_seg_explain.core.errors import UserError

MODEL = SAMPLE_DIR / "model" / "mni152_wm_unet.safetensors"
PNG = SAMPLE_DIR / "slices" / "mni152_axial_z062.png"
PNG_LABEL = SAMPLE_DIR / "slices" / "mni152_axial_z062_label.png"
BOX = ["--roi-box", "32", "16", "64", "48"]
FAST = ["--n", "1", "--screen", "1", "--device", "cpu", "--seed", "0"]


# --------------------------------------------------------------------------- real files

class Logits(nn.Module):
    """(B, 1, H, W) -> (B, 2, H, W) logits: background where the image is dark, class 1 where it is bright."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([-x, x], dim=1)


class Raises(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise ValueError("layer 3 exploded")


class ReturnsNaN(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, x], dim=1) * float("nan")


class ReturnsLabels(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (torch.cat([-x, x], dim=1) > 0).to(torch.int64)


class WrongShape(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([-x, x], dim=1)[:, :, ::2, ::2]


class OutOfMemory(nn.Module):
    """What a TorchScript model on a full GPU raises (simulated: no GPU needed)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")


def ts_model(tmp: Path, net: nn.Module, name: str, in_channels: int = 1) -> Path:
    """A TorchScript file with its model card beside it."""
    path = tmp / f"{name}.pt"
    torch.jit.save(torch.jit.script(net), str(path))
    (tmp / f"{name}.yaml").write_text(yaml.safe_dump({"name": name, "in_channels": in_channels, "spatial_dims": 2,
                                                      "classes": ["background", "fg"], "normalization": "minmax"}))
    return path


def nifti(path: Path, arr: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(arr, np.eye(4)), str(path))
    return path


def cut(path: Path, keep: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def png_array() -> np.ndarray:
    return np.asarray(PILImage.open(PNG))


def sitk_file(path: Path, arr: np.ndarray) -> Path:
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(arr), str(path))
    return path


# --------------------------------------------------------------------------- the matrix

@dataclass
class Case:
    """``argv``: the CLI form ({t} = tmp folder); ``api``: the same through Python (returns nothing, raises);
    ``needle``: a word of the sentence; ``inputs``: the files to hash."""

    argv: list[str]
    api: Callable[[], Any] | None
    needle: str
    inputs: list[Path] = field(default_factory=list)
    patch: Callable[[Any], None] | None = None
    api_needle: str | None = None  # the API's own sentence (when it checks at another layer than the CLI)


def api_read(path: Path) -> Callable[[], Any]:
    from napari_seg_explain import read_image

    return lambda: read_image(path)


def api_segment(image: Path, model: Path, card: Path | None = None) -> Callable[[], Any]:
    from napari_seg_explain import load_model, read_image

    def run():
        img, m = read_image(image), load_model(model, card, device="cpu")
        m.check_channels(img.n_channels)
        return m.segment(img)
    return run


def api_job(image: Path, model: Path = MODEL, **kw: Any) -> Callable[[], Any]:
    """What ``seg-explain pdcr`` does, through the Python API."""
    from napari_seg_explain import job_from_files, load_model, read_image
    from napari_seg_explain.core.explainers import registry

    def run():
        img, m = read_image(image), load_model(model, device="cpu")
        m.check_channels(img.n_channels)
        spec = registry.get("pdcr")
        cfg = spec.make_config(n=1, screen=1, seed=0)
        job = job_from_files(m, img, "pdcr", config=cfg, image_path=str(image), **kw)
        return _drive(job.run(m))
    return run


def _drive(gen: Any) -> Any:
    from napari_seg_explain.core.progress import drive

    return drive(gen, None)


def segment_argv(image: Path, model: Path = MODEL) -> list[str]:
    return ["segment", str(image), "--model", str(model), "-o", "{t}/out/mask.nii.gz"]


def pdcr_argv(image: Path = PNG, *extra: str, model: Path = MODEL) -> list[str]:
    return ["pdcr", str(image), "--model", str(model), *extra, *FAST, "-o", "{t}/out/map.nii.gz"]


def _image_cases(t: Path) -> dict[str, Case]:
    vol = np.random.default_rng(0).normal(100, 20, (24, 20, 6)).astype(np.float32)
    c: dict[str, Case] = {}

    def img(name: str, path: Path, needle: str) -> None:
        c[name] = Case(segment_argv(path), api_read(path), needle, [path])

    (t / "zero.nii.gz").write_bytes(b"")
    img("nifti-zero-byte", t / "zero.nii.gz", "could not read")
    (t / "zero.nii").write_bytes(b"")
    img("nii-zero-byte", t / "zero.nii", "could not read")
    img("nifti-truncated-gz", cut(nifti(t / "trunc.nii.gz", vol), 0.5), "could not read")
    img("nifti-truncated-data", cut(nifti(t / "trunc.nii", vol), 0.6), "could not read")
    (t / "noise.nii.gz").write_bytes(np.random.default_rng(1).bytes(4000))
    img("nifti-corrupt", t / "noise.nii.gz", "could not read")
    (t / "hdr.nii.gz").write_bytes(gzip.compress(np.random.default_rng(2).bytes(2000)))
    img("nifti-corrupt-header", t / "hdr.nii.gz", "could not read")
    (t / "zero.png").write_bytes(b"")
    img("png-zero-byte", t / "zero.png", "could not read")
    (t / "trunc.png").write_bytes(PNG.read_bytes()[:300])
    img("png-truncated", t / "trunc.png", "could not read")
    (t / "noise.png").write_bytes(b"\x89PNG\r\n\x1a\n" + np.random.default_rng(3).bytes(3000))
    img("png-corrupt", t / "noise.png", "could not read")
    (t / "zero.dcm").write_bytes(b"")
    img("dicom-zero-byte", t / "zero.dcm", "could not read")
    dcm = sitk_file(t / "one.dcm", png_array().astype(np.int16))
    img("dicom-truncated", cut(dcm, 0.3), "could not read")
    (t / "dcmdir").mkdir()
    (t / "dcmdir" / "notes.txt").write_text("not a DICOM slice")
    img("dicom-folder-without-series", t / "dcmdir", "holds no DICOM series")
    (t / "zero.nrrd").write_bytes(b"")
    img("nrrd-zero-byte", t / "zero.nrrd", "could not read")
    img("nrrd-truncated", cut(sitk_file(t / "trunc.nrrd", vol.transpose(2, 1, 0)), 0.5), "could not read")
    (t / "bad.nrrd").write_bytes(b"NRRD0004\ntype: sausage\ndimension: 9\n\n" + bytes(100))
    img("nrrd-corrupt-header", t / "bad.nrrd", "could not read")
    (t / "png_named.nii.gz").write_bytes(PNG.read_bytes())
    img("wrong-extension-png-as-nifti", t / "png_named.nii.gz", "could not read")
    (t / "nifti_named.png").write_bytes(nifti(t / "v.nii", vol).read_bytes())
    img("wrong-extension-nifti-as-png", t / "nifti_named.png", "could not read")
    (t / "scan.xyz").write_bytes(b"12345")
    img("unknown-extension", t / "scan.xyz", "unknown image type")
    img("missing-file", t / "nope.nii.gz", "image not found")
    np.save(t / "five.npy", np.zeros((2, 2, 4, 4, 4), np.float32))
    img("5d-npy", t / "five.npy", "expected (H, W)")
    nifti(t / "five.nii.gz", np.zeros((8, 8, 4, 2, 3), np.float32))
    img("5d-nifti", t / "five.nii.gz", "dimensions")
    big = t / "big.nii"
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((4096, 4096, 4096))
    hdr.set_data_dtype(np.float32)
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4)), str(big))
    img_hdr = nib.load(str(big))
    raw = bytearray(big.read_bytes())  # a header announcing 256 GiB in front of a few bytes
    raw[:348] = hdr.binaryblock
    raw[108:112] = img_hdr.header.binaryblock[108:112]  # vox_offset
    big.write_bytes(bytes(raw))
    img("too-large-for-memory", big, "GiB")
    (t / "big.nrrd").write_bytes(b"NRRD0004\ntype: float\ndimension: 3\nsizes: 4096 4096 4096\nendian: little\n"
                                 b"encoding: raw\n\n" + bytes(64))
    img("too-large-nrrd", t / "big.nrrd", "GiB")
    return c


def _value_cases(t: Path) -> dict[str, Case]:
    arr = png_array().astype(np.float32)
    c: dict[str, Case] = {}
    nan = arr.copy()
    nan[5, 5] = np.nan
    inf = arr.copy()
    inf[7, 9] = np.inf
    for name, a in (("nan-voxels", nan), ("inf-voxels", inf), ("constant-image", np.full_like(arr, 42.0))):
        p = nifti(t / f"{name}.nii.gz", a)
        c[name] = Case(pdcr_argv(p, *BOX), api_job(p, roi_box=[32, 16, 64, 48]),
                       "constant" if name == "constant-image" else "NaN or infinite", [p])
    rgb = t / "rgb.png"
    PILImage.fromarray(np.stack([png_array().astype(np.uint8)] * 3, -1)).save(rgb)
    c["model-channels-mismatch"] = Case(segment_argv(rgb), api_segment(rgb, MODEL), "input channel", [rgb])
    return c


def _model_cases(t: Path) -> dict[str, Case]:
    c: dict[str, Case] = {}
    for name, net, needle in (("model-output-shape", WrongShape(), "returned shape"),
                              ("model-raises", Raises(), "failed on an input"),
                              ("model-returns-nan", ReturnsNaN(), "NaN"),
                              ("model-wrong-dtype", ReturnsLabels(), "int64"),
                              ("model-out-of-memory", OutOfMemory(), "out of memory")):
        m = ts_model(t, net, name)
        c[name] = Case(segment_argv(PNG, m), api_segment(PNG, m), needle, [m, m.with_suffix(".yaml")])
    c["model-missing"] = Case(segment_argv(PNG, t / "nope.pt"), api_segment(PNG, t / "nope.pt"), "does not exist")
    (t / "zero.pt").write_bytes(b"")
    c["model-zero-byte"] = Case(segment_argv(PNG, t / "zero.pt"), api_segment(PNG, t / "zero.pt"), "zero.pt",
                                [t / "zero.pt"])
    (t / "noise.safetensors").write_bytes(np.random.default_rng(4).bytes(500))
    (t / "noise.yaml").write_text(MODEL.with_suffix(".yaml").read_text())
    c["model-corrupt-weights"] = Case(segment_argv(PNG, t / "noise.safetensors"),
                                      api_segment(PNG, t / "noise.safetensors"), "noise.safetensors",
                                      [t / "noise.safetensors"])
    (t / "nocard").mkdir()
    bare = t / "nocard" / "w.safetensors"
    bare.write_bytes(MODEL.read_bytes())
    c["model-card-missing"] = Case(segment_argv(PNG, bare), api_segment(PNG, bare), "model card", [bare])
    for name, text, needle in (("card-malformed-yaml", "name: [unclosed\n  in: {", "cannot read model card"),
                               ("card-not-a-mapping", "- just\n- a list\n", "YAML mapping"),
                               ("card-bad-value", "spatial_dims: 5\n", "spatial_dims")):
        (t / name).mkdir()
        w = t / name / "w.safetensors"
        w.write_bytes(MODEL.read_bytes())
        (t / name / "w.yaml").write_text(text)
        c[name] = Case(segment_argv(PNG, w), api_segment(PNG, w), needle, [w, w.with_suffix(".yaml")])
    (t / "model.txt").write_text("weights")
    c["model-wrong-extension"] = Case(segment_argv(PNG, t / "model.txt"), api_segment(PNG, t / "model.txt"),
                                      "unsupported model file", [t / "model.txt"])
    return c


def _roi_pool_cases(t: Path) -> dict[str, Case]:
    c: dict[str, Case] = {}
    shape = png_array().shape
    empty = t / "empty_roi.png"
    PILImage.fromarray(np.zeros(shape, np.uint8)).save(empty)
    c["roi-empty-mask"] = Case(pdcr_argv(PNG, "--roi-mask", str(empty)), api_job(PNG, roi_mask=str(empty)),
                               "covers no pixel", [empty])
    c["roi-outside-image"] = Case(pdcr_argv(PNG, "--roi-box", "200", "200", "240", "240"),
                                  api_job(PNG, roi_box=[200, 200, 240, 240]), "does not lie inside")
    c["roi-inverted-box"] = Case(pdcr_argv(PNG, "--roi-box", "64", "48", "32", "16"),
                                 api_job(PNG, roi_box=[64, 48, 32, 16]), "does not lie inside")
    small = t / "small_roi.png"
    PILImage.fromarray(np.ones((10, 10), np.uint8)).save(small)
    c["roi-mask-wrong-size"] = Case(pdcr_argv(PNG, "--roi-mask", str(small)), api_job(PNG, roi_mask=str(small)),
                                    "shape", [small])
    dark = nifti(t / "dark.nii.gz", np.zeros(shape, np.float32) + np.linspace(0, 1, shape[1], dtype=np.float32))
    dark_model = ts_model(t, Logits(), "bright")
    no_label = t / "no_label.png"
    PILImage.fromarray(np.zeros(shape, np.uint8)).save(no_label)
    c["roi-prediction-and-label-empty"] = Case(
        pdcr_argv(dark, "--roi-box", "0", "0", "8", "8", "--label", str(no_label), model=dark_model),
        api_job(dark, dark_model, roi_box=[0, 0, 8, 8], label=str(no_label)), "no pixel of class 1",
        [dark, no_label, dark_model])
    (t / "empty_pool").mkdir()
    c["pool-empty-folder"] = Case(pdcr_argv(PNG, *BOX, "--pool", str(t / "empty_pool")),
                                  api_job(PNG, roi_box=[32, 16, 64, 48], pool=[str(t / "empty_pool")]),
                                  "pool")
    (t / "tiny_pool").mkdir()
    for i in range(3):
        PILImage.fromarray(np.full((4, 4), 50 * i, np.uint8)).save(t / "tiny_pool" / f"t{i}.png")
    c["pool-smaller-than-block"] = Case(pdcr_argv(PNG, *BOX, "--pool", str(t / "tiny_pool")),
                                        api_job(PNG, roi_box=[32, 16, 64, 48], pool=[str(t / "tiny_pool")]),
                                        "at least 8 pixels", sorted((t / "tiny_pool").iterdir()))
    c["pool-missing"] = Case(pdcr_argv(PNG, *BOX, "--pool", str(t / "nope")),
                             api_job(PNG, roi_box=[32, 16, 64, 48], pool=[str(t / "nope")]), "does not exist")
    return c


def _enospc(*_a: Any, **_k: Any) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def _output_cases(t: Path) -> dict[str, Case]:
    from napari_seg_explain import read_image, write_map

    c: dict[str, Case] = {}
    like = read_image(PNG)

    def api_write(path: str) -> Callable[[], Any]:
        return lambda: write_map(path, np.zeros(like.spatial_shape, np.uint8), like)

    seg = ["segment", str(PNG), "--model", str(MODEL), "-o"]
    c["output-folder-missing"] = Case([*seg, "{t}/no/such/m.nii.gz"], api_write(str(t / "no" / "such" / "m.nii.gz")),
                                      "does not exist", api_needle="does not exist")
    c["output-folder-unwritable"] = Case([*seg, "/sys/m.nii.gz"], api_write("/sys/m.nii.gz"), "not writable",
                                         api_needle="not writable")
    c["output-format-unknown"] = Case([*seg, "{t}/out/m.txt"], api_write(str(t / "out" / "m.txt")), "m.txt",
                                      api_needle="cannot write 'm.txt'")
    c["disk-full-segment"] = Case(segment_argv(PNG), api_write(str(t / "out" / "mask.nii.gz")), "disk is full",
                                  patch=lambda mp: mp.setattr(os, "replace", _enospc))
    c["disk-full-explain"] = Case(pdcr_argv(PNG, *BOX), None, "disk is full",
                                  patch=lambda mp: mp.setattr(os, "replace", _enospc))
    (t / "out").mkdir(exist_ok=True)
    (t / "out" / "old.nii.gz").write_bytes(b"the user's earlier mask")
    c["output-exists-segment"] = Case([*seg, "{t}/out/old.nii.gz"], None, "--overwrite", [t / "out" / "old.nii.gz"])
    (t / "out" / "old_map.json").write_text("{}")
    c["output-sidecar-exists"] = Case(["pdcr", str(PNG), "--model", str(MODEL), *BOX, *FAST, "-o",
                                       "{t}/out/old_map.nii.gz"], None, "--overwrite", [t / "out" / "old_map.json"])
    (t / "out" / "old.json").write_text("{}")
    c["output-json-exists"] = Case(["pdcr", str(PNG), "--model", str(MODEL), *BOX, *FAST, "-o", "{t}/out/old.json"],
                                   None, "--overwrite", [t / "out" / "old.json"])
    (t / "out" / "old.csv").write_text("source,key\n")
    c["output-exists-reliability"] = Case(["reliability", "predict", str(t / "out" / "old.json"), "--model-json",
                                           str(t / "out" / "old.json"), "-o", "{t}/out/old.csv"], None, "--overwrite",
                                          [t / "out" / "old.csv"])
    c["output-exists-demo"] = Case(["demo", "--n", "1", "-o", "{t}/out"], None, "--overwrite", [t / "out"])
    return c


BUILDERS = (_image_cases, _value_cases, _model_cases, _roi_pool_cases, _output_cases)
NAMES = {
    _image_cases: ["nifti-zero-byte", "nii-zero-byte", "nifti-truncated-gz", "nifti-truncated-data", "nifti-corrupt",
                   "nifti-corrupt-header", "png-zero-byte", "png-truncated", "png-corrupt", "dicom-zero-byte",
                   "dicom-truncated", "dicom-folder-without-series", "nrrd-zero-byte", "nrrd-truncated",
                   "nrrd-corrupt-header", "wrong-extension-png-as-nifti", "wrong-extension-nifti-as-png",
                   "unknown-extension", "missing-file", "5d-npy", "5d-nifti", "too-large-for-memory",
                   "too-large-nrrd"],
    _value_cases: ["nan-voxels", "inf-voxels", "constant-image", "model-channels-mismatch"],
    _model_cases: ["model-output-shape", "model-raises", "model-returns-nan", "model-wrong-dtype",
                   "model-out-of-memory", "model-missing", "model-zero-byte", "model-corrupt-weights",
                   "model-card-missing", "card-malformed-yaml", "card-not-a-mapping", "card-bad-value",
                   "model-wrong-extension"],
    _roi_pool_cases: ["roi-empty-mask", "roi-outside-image", "roi-inverted-box", "roi-mask-wrong-size",
                      "roi-prediction-and-label-empty", "pool-empty-folder", "pool-smaller-than-block",
                      "pool-missing"],
    _output_cases: ["output-folder-missing", "output-folder-unwritable", "output-format-unknown", "disk-full-segment",
                    "disk-full-explain", "output-exists-segment", "output-sidecar-exists", "output-json-exists",
                    "output-exists-reliability", "output-exists-demo"],
}
CASES = [(b, n) for b in BUILDERS for n in NAMES[b]]


def _hashes(paths: list[Path]) -> dict[Path, str]:
    out = {}
    for p in paths:
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        out |= {f: hashlib.sha256(f.read_bytes()).hexdigest() for f in files if f.exists()}
    return out


def _listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.fixture(autouse=True)
def _small_memory(monkeypatch):
    """Pretend the machine has 8 GiB free, so the too-large case fails the same way everywhere."""
    monkeypatch.setattr(input_checks, "available_memory", lambda: 8 << 30)


def test_the_matrix_has_at_least_40_cases():
    assert len(CASES) >= 40 and len({n for _, n in CASES}) == len(CASES)


@pytest.mark.parametrize("builder, name", CASES, ids=[n for _, n in CASES])
def test_bad_input(tmp_path, capsys, monkeypatch, builder, name):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    case = builder(tmp_path)[name]
    sample = [MODEL, MODEL.with_suffix(".yaml"), PNG, PNG_LABEL]
    before, listing = _hashes(case.inputs + sample), _listing(tmp_path)
    argv = [a.replace("{t}", str(tmp_path)) for a in case.argv]
    with monkeypatch.context() as mp:
        if case.patch:
            case.patch(mp)
        code = main(["--quiet", *argv])
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("warning: ")]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and out == ""
    message = lines[0][len("error: "):]
    assert case.needle in message, message
    if os.environ.get("SEG_EXPLAIN_DUMP_MESSAGES"):  # docs/reliability.md is written from these
        with open(os.environ["SEG_EXPLAIN_DUMP_MESSAGES"], "a") as fh:
            fh.write(f"{name}\t{' '.join(case.argv[:1])}\t{message.replace(str(tmp_path), '<dir>')}\n")
    assert _hashes(case.inputs + sample) == before, "an input was modified"
    assert _listing(tmp_path) == listing, "a file was left behind"
    if case.api is None:
        return
    with monkeypatch.context() as mp:
        if case.patch:
            case.patch(mp)
        with pytest.raises(UserError) as info:
            case.api()
    if case.api_needle:
        assert case.api_needle in str(info.value)
    else:
        assert str(info.value) == message, "the API raises the sentence the CLI prints"
    assert _hashes(case.inputs + sample) == before
    assert _listing(tmp_path) == listing


def test_debug_shows_the_traceback(tmp_path, capsys):
    (tmp_path / "zero.nii.gz").write_bytes(b"")
    code = main(["--quiet", "--debug", "segment", str(tmp_path / "zero.nii.gz"), "--model", str(MODEL),
                 "-o", str(tmp_path / "m.nii.gz")])
    _, err = capsys.readouterr()
    assert code == 2 and "Traceback" in err and err.strip().splitlines()[-1].startswith("error: could not read")


def test_overwrite_replaces_an_existing_output(tmp_path, capsys):
    out = tmp_path / "mask.npy"
    out.write_bytes(b"old")
    code = main(["--quiet", "segment", str(PNG), "--model", str(MODEL), "-o", str(out), "--overwrite"])
    capsys.readouterr()
    assert code == 0 and np.load(out).shape == png_array().shape
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.npy"], "no temporary file is left"
