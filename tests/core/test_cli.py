"""The ``seg-explain`` command line: the documented forms, outputs, sidecars, geometry and user errors."""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from sample_paths import SAMPLE_DIR
from napari_seg_explain.cli import main

VOL = str(SAMPLE_DIR / "mni152_t1.nii.gz")
LABEL = str(SAMPLE_DIR / "mni152_wm_label.nii.gz")
MODEL = str(SAMPLE_DIR / "model" / "mni152_wm_unet.safetensors")
Z = 64
FAST = ["--n", "3", "--screen", "1"]


def run(capsys, *argv):
    code = main([*map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_segment_volume_slice_keeps_geometry(tmp_path, capsys):
    out = tmp_path / "mask.nii.gz"
    code, stdout, _ = run(capsys, "--quiet", "segment", VOL, "--model", MODEL, "--slice", Z, "-o", out)
    assert code == 0
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["command"] == "segment"
    src, res = nib.load(VOL), nib.load(out)
    assert res.shape == src.shape and np.allclose(res.affine, src.affine)
    lab = np.asarray(res.dataobj)
    assert set(np.unique(lab[:, :, Z])) <= {0, 1} and lab[:, :, Z].sum() > 500
    assert lab[:, :, Z + 1].sum() == 0, "only the requested slice is segmented"


def test_pdcr_exact_form_writes_map_and_sidecar(tmp_path, capsys):
    out = tmp_path / "map.nii.gz"
    code, stdout, err = run(capsys, "pdcr", VOL, "--model", MODEL, "--roi-box", 32, 16, 64, 48, "--label", LABEL,
                            "--class", 1, "--slice", Z, "--patch", 8, "--tau", 0.02, *FAST, "--seed", 0,
                            "--device", "cpu", "-o", out)
    assert code == 0, err
    assert "PdCR" in err, "a progress bar goes to stderr"
    lines = stdout.strip().splitlines()
    assert len(lines) == 1, "stdout holds exactly one JSON line"
    summary = json.loads(lines[0])
    assert summary["forward_passes"] > 100 and summary["metric"] == "dice_vs_label"
    src, res = nib.load(VOL), nib.load(out)
    assert res.shape == src.shape and np.allclose(res.affine, src.affine), "NIfTI in -> map out, same geometry"
    data = np.asarray(res.dataobj)
    assert np.isnan(data[:, :, Z + 1]).all() and np.isfinite(data[:, :, Z]).sum() > 0
    assert np.isnan(data[32:64, 16:48, Z]).all(), "the RoI is NaN"
    meta = json.loads((tmp_path / "map.json").read_text())
    assert meta["method"] == "pdcr" and meta["params"]["n"] == 3 and meta["geometry"]["slice_index"] == Z
    assert meta["provenance"]["model"]["sha256"] and meta["provenance"]["seed"] == 0
    assert (tmp_path / "map_roi.nii.gz").exists()


def test_pdcr_same_seed_same_map_npy(tmp_path, capsys):
    maps = []
    for name in ("a.npy", "b.npy"):
        code, _, err = run(capsys, "--quiet", "pdcr", VOL, "--model", MODEL, "--roi-box", 32, 16, 64, 48,
                           "--slice", Z, *FAST, "--seed", 7, "-o", tmp_path / name)
        assert code == 0, err
        maps.append(np.load(tmp_path / name))
    assert maps[0].shape == (128, 104)
    np.testing.assert_array_equal(np.nan_to_num(maps[0], nan=9), np.nan_to_num(maps[1], nan=9))


def test_pdcr_png_with_pool_folder(tmp_path, capsys):
    slices = sorted(p for p in (SAMPLE_DIR / "slices").glob("*.png") if "label" not in p.name)
    pool = tmp_path / "pool"
    pool.mkdir()
    for p in slices[1:]:
        (pool / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "map.npy"
    code, stdout, err = run(capsys, "--quiet", "pdcr", slices[0], "--model", MODEL, "--roi-box", 32, 16, 64, 48,
                            "--pool", pool, *FAST, "-o", out)
    assert code == 0, err
    meta = json.loads((tmp_path / "map.json").read_text())
    assert meta["params"]["pool"]["n_images"] == len(slices) - 1
    assert meta["params"]["metric"] == "soft_dice_vs_own_prediction"


def test_misure_exact_form(tmp_path, capsys):
    out = tmp_path / "sal.nii.gz"
    code, stdout, err = run(capsys, "--quiet", "misure", VOL, "--model", MODEL, "--class", 1, "--slice", Z,
                            "--seed", 0, "--device", "auto", "--iterations", 10, "-o", out)
    assert code == 0, err
    summary = json.loads(stdout)
    assert 0 <= summary["dice_explained"] <= 1 and summary["dilations"] >= 0
    assert (tmp_path / "sal_sufficient_region.nii.gz").exists() and (tmp_path / "sal.json").exists()


@pytest.mark.parametrize("argv, needle", [
    (["pdcr", "missing.nii.gz", "--model", MODEL, "--roi-box", "0", "0", "8", "8", "-o", "{o}"], "missing.nii.gz"),
    (["pdcr", VOL, "--model", MODEL, "--roi-box", "0", "0", "8", "8", "-o", "{o}"], "--slice"),
    (["pdcr", VOL, "--model", MODEL, "--slice", "64", "--roi-box", "100", "0", "200", "8", "-o", "{o}"],
     "does not lie inside"),
    (["pdcr", VOL, "--model", MODEL, "--slice", "500", "--roi-box", "0", "0", "8", "8", "-o", "{o}"], "slice"),
    (["pdcr", VOL, "--model", VOL, "--slice", "64", "--roi-box", "0", "0", "8", "8", "-o", "{o}"], "model"),
    (["pdcr", VOL, "--model", MODEL, "--slice", "64", "-o", "{o}"], "--roi-box"),
    (["pdcr", VOL, "--model", MODEL, "--slice", "64", "--roi-box", "0", "0", "8", "8", "--n", "0", "-o", "{o}"],
     "n must be"),
    (["segment", VOL, "--model", MODEL, "-o", "{d}/no/such/dir/m.nii.gz"], "does not exist"),
    (["segment", VOL, "--model", MODEL, "-o", "{d}/m.txt"], "output format"),
    (["segment", VOL, "--model", MODEL, "--device", "cuda", "-o", "{o}"], "not available"),
])
def test_user_errors_exit_2_with_one_line(tmp_path, capsys, argv, needle):
    argv = [a.format(o=tmp_path / "o.nii.gz", d=tmp_path) for a in argv]
    code, stdout, err = run(capsys, "--quiet", *argv)
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert needle in lines[0]
    assert "Traceback" not in err and stdout == ""
    assert not any(tmp_path.glob("o*")), "nothing is written on error"


def test_image_and_model_that_do_not_fit(tmp_path, capsys):
    rgb = tmp_path / "rgb.png"
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((64, 64, 3), np.uint8), isVector=True), str(rgb))
    code, _, err = run(capsys, "--quiet", "segment", rgb, "--model", MODEL, "-o", tmp_path / "m.nii.gz")
    assert code == 2 and "expects 1 input channel" in err


def test_debug_shows_traceback_and_entry_point(tmp_path):
    res = subprocess.run([sys.executable, "-m", "napari_seg_explain.cli", "--debug", "segment", "nope.nii",
                          "--model", MODEL, "-o", str(tmp_path / "m.nii.gz")], capture_output=True, text=True)
    assert res.returncode == 2 and "Traceback" in res.stderr and "error: " in res.stderr


def test_roi_mask_and_class_by_name(tmp_path, capsys):
    """--roi-mask (a volume: its slice Z is used) and --class given by the card's class name."""
    vol = nib.load(VOL)
    mask = np.zeros(vol.shape, np.uint8)
    mask[40:56, 24:40, Z] = 1
    nib.save(nib.Nifti1Image(mask, vol.affine), str(tmp_path / "roi.nii.gz"))
    out = tmp_path / "m.npy"
    code, _, err = run(capsys, "--quiet", "pdcr", VOL, "--model", MODEL, "--roi-mask", tmp_path / "roi.nii.gz",
                       "--class", "white_matter", "--slice", Z, *FAST, "-o", out)
    assert code == 0, err
    amap = np.load(out)
    assert np.isnan(amap[40:56, 24:40]).all() and np.isfinite(amap[:32]).all()
    meta = json.loads((tmp_path / "m.json").read_text())
    assert meta["params"]["target_class"] == 1 and meta["roi_pixels"] == 256


def _md5(path):
    import hashlib

    return hashlib.md5(open(path, "rb").read()).hexdigest()


def test_outputs_never_replace_inputs(tmp_path, capsys):
    scan = tmp_path / "scan.nii.gz"
    scan.write_bytes(open(VOL, "rb").read())
    label = tmp_path / "label.nii.gz"
    label.write_bytes(open(LABEL, "rb").read())
    before = _md5(scan), _md5(label)
    for argv in (["segment", scan, "--model", MODEL, "--slice", Z, "-o", scan],
                 ["pdcr", scan, "--model", MODEL, "--slice", Z, "--roi-box", 32, 16, 64, 48, "--label", label,
                  "-o", label],
                 ["misure", scan, "--model", MODEL, "--slice", Z, "-o", tmp_path / "scan.nii.gz"]):
        code, _, err = run(capsys, "--quiet", *argv)
        assert code == 2 and "would overwrite the input" in err, err
    assert (_md5(scan), _md5(label)) == before


@pytest.mark.parametrize("argv, needle", [
    (["segment", VOL, "--model", MODEL, "--batch-size", "0", "-o", "{o}"], "--batch-size"),
    (["pdcr", VOL, "--model", MODEL, "--slice", "64", "--roi-box", "32", "16", "64", "48", "--pool-exclude", "-1",
      "-o", "{o}"], ">= 0"),
    (["pdcr", VOL, "--model", MODEL, "--slice", "64", "--roi-box", "32", "16", "64", "48", "--tau", "nan",
      "-o", "{o}"], "tau"),
    (["pdcr", VOL, "--model", MODEL, "--slice", "64", "--roi-box", "0", "0", "8", "8", "-o", "{o}"],
     "no pixel of class 1 inside the RoI"),
    (["segment", VOL, "--model", MODEL, "-o", "/proc/m.nii.gz"], "could not write"),
])
def test_more_user_errors(tmp_path, capsys, argv, needle):
    code, stdout, err = run(capsys, "--quiet", *[a.format(o=tmp_path / "o.nii.gz") for a in argv])
    assert code == 2 and needle in err and err.count("\n") == 1, err


def test_flags_after_the_subcommand_and_large_tau(tmp_path, capsys):
    out = tmp_path / "m.npy"
    code, stdout, err = run(capsys, "pdcr", VOL, "--model", MODEL, "--slice", Z, "--roi-box", 32, 16, 64, 48,
                            "--tau", 0.5, "--n", 3, "--screen", 1, "-o", out, "--quiet")
    assert code == 0, err
    assert "PdCR" not in err, "--quiet after the sub-command silences the bar"
    meta = json.loads((tmp_path / "m.json").read_text())
    assert sum(meta["stats"]["histogram"].values()) == meta["stats"]["n_blocks"]


def test_demo_writes_maps_and_figure(tmp_path, capsys):
    code, stdout, err = run(capsys, "--quiet", "demo", "-o", tmp_path / "demo", "--n", 2)
    assert code == 0, err
    summary = json.loads(stdout)
    names = {p.split("/")[-1] for p in summary["files"]}
    assert {"segmentation.nii.gz", "pdcr_map.nii.gz", "pdcr_map.json", "misure_saliency.nii.gz", "demo.png"} <= names
    assert summary["slice"] in range(56, 72), "a held-out slice of the sample model"
    from PIL import Image as PILImage

    assert PILImage.open(tmp_path / "demo" / "demo.png").size[0] > 1000


def test_one_slice_volume_needs_no_slice_and_falls_back_to_the_image_itself(tmp_path, capsys):
    """A single DICOM file reads as a one-slice volume: explained as a 2-D image, pool = the image itself."""
    import nibabel as nib

    vol = nib.load(VOL)
    one = nib.Nifti1Image(np.asarray(vol.dataobj)[:, :, 64:65], vol.affine)
    path = tmp_path / "one_slice.nii.gz"
    nib.save(one, path)
    out = tmp_path / "m.npy"
    code, stdout, err = run(capsys, "--quiet", "pdcr", path, "--model", MODEL, "--roi-box", 32, 16, 64, 48,
                            "--n", 2, "--screen", 1, "--device", "cpu", "-o", out)
    assert code == 0, err
    summary = json.loads(stdout)
    assert any("explained image itself" in w for w in summary["warnings"])
    code, stdout, err = run(capsys, "--quiet", "segment", path, "--model", MODEL, "-o", tmp_path / "s.nii.gz")
    assert code == 0, err
