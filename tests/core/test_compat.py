"""Inputs unlike the training data are warned about (CLI and result), never refused."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import yaml

from napari_seg_explain.cli import main
from napari_seg_explain.core.compat import input_warnings
from napari_seg_explain.core.errors import ModelLoadError
from napari_seg_explain.core.modelcard import ModelCard, load_card
from sample_paths import SAMPLE_DIR

VOL = SAMPLE_DIR / "mni152_t1.nii.gz"
CARD = SAMPLE_DIR / "model" / "mni152_wm_unet.yaml"
MR = ModelCard(modality="MR", intensity_range=(0.0, 100.0), spacing=(1.5, 1.5))


@pytest.mark.parametrize("image, spacing, needle", [
    (np.linspace(-1024, 1500, 4096).reshape(1, 64, 64), (1.5, 1.5), "looks like CT"),
    (np.linspace(5000, 9000, 4096).reshape(1, 64, 64), (1.5, 1.5), "outside the training range"),
    (np.linspace(0, 5000, 4096).reshape(1, 64, 64), (1.5, 1.5), "times wider or narrower"),
    (np.linspace(0, 90, 4096).reshape(1, 64, 64), (0.4, 0.4), "pixel spacing 0.4 x 0.4"),
])
def test_clear_mismatches_are_named(image, spacing, needle):
    warnings = input_warnings(MR, image, spacing)
    assert len(warnings) == 1 and needle in warnings[0]


def test_matching_inputs_and_cards_without_expectations_give_no_warning():
    img = np.linspace(0, 90, 4096).reshape(1, 64, 64)
    assert input_warnings(MR, img, (1.4, 1.6)) == []
    assert input_warnings(ModelCard(), np.linspace(-1024, 3000, 4096).reshape(1, 64, 64), (0.5, 0.5)) == []
    ct = ModelCard(modality="CT")
    assert input_warnings(ct, np.linspace(-1024, 3000, 4096).reshape(1, 64, 64)) == []
    assert "trained on CT" in input_warnings(ct, img)[0]


def test_card_expectations_are_validated(tmp_path):
    raw = yaml.safe_load(CARD.read_text())
    raw["expects"] = {"modality": "mr", "intensity_range": [0, 120], "spacing": [1.5, 1.5]}
    raw["receptive_field"] = 60
    path = tmp_path / "card.yaml"
    path.write_text(yaml.safe_dump(raw))
    card = load_card(path)
    assert card.modality == "MR" and card.intensity_range == (0.0, 120.0) and card.receptive_field == 60
    raw["expects"]["spacing"] = [1.5]
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ModelLoadError, match="expects.spacing"):
        load_card(path)


def test_cli_warns_and_the_result_records_it(tmp_path, capsys):
    """A CT-like scan given to the (MR) sample model: a warning on stderr, in the JSON line and the sidecar."""
    raw = yaml.safe_load(CARD.read_text())
    raw["expects"] = {"modality": "MR", "spacing": [1.5, 1.5]}
    card = tmp_path / "card.yaml"
    card.write_text(yaml.safe_dump(raw))
    vol = nib.load(VOL)
    data = np.asarray(vol.dataobj, dtype=np.float32)
    ct = nib.Nifti1Image(data / data.max() * 2000 - 1000, vol.affine)  # air at -1000 HU
    nib.save(ct, tmp_path / "ct.nii.gz")
    out = tmp_path / "map.npy"
    code = main(["--quiet", "misure", str(tmp_path / "ct.nii.gz"), "--model", str(SAMPLE_DIR / "model" /
                 "mni152_wm_unet.safetensors"), "--card", str(card), "--slice", "64", "--iterations", "2",
                 "--device", "cpu", "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "warning: input unlike the model's training data" in captured.err and "looks like CT" in captured.err
    assert any("looks like CT" in w for w in json.loads(captured.out)["warnings"])
    assert any("looks like CT" in w for w in json.loads((tmp_path / "map.json").read_text())["warnings"])
