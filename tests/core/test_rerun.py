"""``seg-explain rerun RESULT.json``: a result sidecar holds everything needed to recompute its map."""

from __future__ import annotations

import json
import shutil

import pytest

from sample_paths import SAMPLE_DIR
from napari_seg_explain.cli import main

PNG = str(SAMPLE_DIR / "slices" / "mni152_axial_z059.png")
PNG_LABEL = str(SAMPLE_DIR / "slices" / "mni152_axial_z059_label.png")
MODEL_DIR = SAMPLE_DIR / "model"


def run(capsys, *argv):
    code = main([*map(str, argv)])
    out, err = capsys.readouterr()
    return code, (json.loads(out.strip().splitlines()[-1]) if code == 0 else None), err


@pytest.fixture
def model(tmp_path):
    """A private copy of the sample model (so a test may change it)."""
    d = tmp_path / "model"
    d.mkdir()
    for name in ("mni152_wm_unet.safetensors", "mni152_wm_unet.yaml"):
        shutil.copy(MODEL_DIR / name, d / name)
    return d / "mni152_wm_unet.safetensors"


EXPLAIN = {
    "pdcr": ["--roi-box", 32, 16, 64, 48, "--label", PNG_LABEL, "--n", 3, "--screen", 1, "--seed", 0],
    "misure": ["--iterations", 10, "--seed", 0],
}


@pytest.mark.parametrize("method", ["pdcr", "misure"])
def test_rerun_is_identical(tmp_path, capsys, model, method):
    out = tmp_path / "map.npy"
    code, _, err = run(capsys, "--quiet", method, PNG, "--model", model, *EXPLAIN[method], "--device", "cpu",
                       "-o", out)
    assert code == 0, err
    meta = json.loads((tmp_path / "map.json").read_text())
    assert meta["run"]["inputs"]["image"] and meta["run"]["inputs"]["model"].endswith(".safetensors")
    again = tmp_path / "again.nii.gz"
    code, res, err = run(capsys, "--quiet", "rerun", tmp_path / "map.json", "-o", again, "--device", "cpu")
    assert code == 0, err
    assert res["command"] == "rerun" and res["identical"] is True and res["max_abs_diff"] == 0.0
    assert res["model_sha256_matches"] is True and again.exists() and (tmp_path / "again.json").exists()
    # the rerun's own sidecar is rerunnable too; a map path instead of the sidecar is accepted
    code, res2, err = run(capsys, "--quiet", "rerun", out, "--device", "cpu")
    assert code == 0 and res2["identical"] is True, err


def test_changed_model_is_reported(tmp_path, capsys, model):
    out = tmp_path / "map.npy"
    code, _, err = run(capsys, "--quiet", "pdcr", PNG, "--model", model, *EXPLAIN["pdcr"], "--device", "cpu",
                       "-o", out)
    assert code == 0, err
    from safetensors.torch import load_file, save_file

    weights = load_file(str(model))
    key = next(k for k, v in weights.items() if v.is_floating_point() and v.numel() > 1)
    weights[key] = weights[key] * 1.5
    save_file(weights, str(model))
    code, res, err = run(capsys, "--quiet", "rerun", tmp_path / "map.json", "--device", "cpu")
    assert code == 0, err
    assert res["model_sha256_matches"] is False and res["model_sha256_recorded"] != res["model_sha256_now"]
    assert "sha256 differs" in err
    assert isinstance(res["identical"], bool) and res["max_abs_diff"] is not None, "compared anyway"


def test_missing_recorded_file_is_refused(tmp_path, capsys, model):
    img = tmp_path / "img.png"
    shutil.copy(PNG, img)
    out = tmp_path / "map.npy"
    code, _, err = run(capsys, "--quiet", "misure", img, "--model", model, *EXPLAIN["misure"], "--device", "cpu",
                       "-o", out)
    assert code == 0, err
    img.unlink()
    code, _, err = run(capsys, "--quiet", "rerun", tmp_path / "map.json")
    assert code == 2 and "is not a file" in err and "img.png" in err
    code, _, err = run(capsys, "--quiet", "rerun", tmp_path / "nothing.json")
    assert code == 2 and "is not a file" in err


def test_older_sidecar_names_what_is_missing(tmp_path, capsys, model):
    out = tmp_path / "map.npy"
    code, _, err = run(capsys, "--quiet", "pdcr", PNG, "--model", model, *EXPLAIN["pdcr"], "--device", "cpu",
                       "-o", out)
    assert code == 0, err
    meta = json.loads((tmp_path / "map.json").read_text())
    del meta["run"]["inputs"]  # as written before the inputs were recorded
    (tmp_path / "map.json").write_text(json.dumps(meta))
    code, _, err = run(capsys, "--quiet", "rerun", tmp_path / "map.json")
    assert code == 2 and "no run.inputs" in err and "label" in err


def test_older_misure_sidecar_reruns_from_what_it_holds(tmp_path, capsys, model):
    out = tmp_path / "map.npy"
    code, _, err = run(capsys, "--quiet", "misure", PNG, "--model", model, *EXPLAIN["misure"], "--device", "cpu",
                       "-o", out)
    assert code == 0, err
    meta = json.loads((tmp_path / "map.json").read_text())
    del meta["run"]["inputs"]
    (tmp_path / "map.json").write_text(json.dumps(meta))
    code, res, err = run(capsys, "--quiet", "rerun", tmp_path / "map.json", "--device", "cpu")
    assert code == 0, err
    assert res["notes"] and isinstance(res["identical"], bool)


def test_rerun_output_needs_overwrite_to_replace_a_file(tmp_path, capsys, model):
    out = tmp_path / "map.npy"
    code, _, err = run(capsys, "--quiet", "pdcr", PNG, "--model", model, *EXPLAIN["pdcr"], "--device", "cpu", "-o", out)
    assert code == 0, err
    again = tmp_path / "again.npy"
    for extra, want in (([], 0), ([], 2), (["--overwrite"], 0)):
        code, _, err = run(capsys, "--quiet", "rerun", tmp_path / "map.json", "-o", again, "--device", "cpu", *extra)
        assert code == want, err
        if want == 2:
            assert err.startswith("error:") and "--overwrite" in err
