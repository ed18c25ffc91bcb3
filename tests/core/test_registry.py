"""The registry is the only dispatch path: a toy explainer registered here reaches the CLI with no other edit."""

from __future__ import annotations

import json

import numpy as np
import pytest
import toy_explainer as toy

from napari_seg_explain.cli import main
from napari_seg_explain.core.errors import UserError
from napari_seg_explain.core.explainers import registry
from napari_seg_explain.core.explainers.base import ExplainerSpec, config_params
from napari_seg_explain.core.results import Explanation
from sample_paths import SAMPLE_DIR

VOL = SAMPLE_DIR / "mni152_t1.nii.gz"
MODEL = SAMPLE_DIR / "model" / "mni152_wm_unet.safetensors"
Z = 64


@pytest.fixture
def toy_registered():
    registry.register(toy.SPEC, replace=True)
    yield toy.SPEC
    registry.unregister(toy.NAME)


def test_builtins_and_their_parameters():
    assert {"pdcr", "misure"} <= set(registry.names())
    pd = registry.get("pdcr")
    flags = {p.name: p.flag for p in pd.params()}
    assert flags["n"] == "--n" and flags["batch_size"] == "--batch-size" and flags["patch"] == "--patch"
    assert pd.uses("pool") and pd.uses("label") and pd.uses("roi") and 3 in pd.dims
    assert registry.get("misure").uses("gradients")
    with pytest.raises(UserError, match="unknown explainer 'nope'"):
        registry.get("nope")
    with pytest.raises(UserError, match="has no parameter bogus"):
        pd.make_config(bogus=1)


def test_spec_validation():
    with pytest.raises(ValueError, match="unknown needs"):
        ExplainerSpec(name="x", title="X", paper="", config=toy.ToyConfig, run=toy.toy_run, needs=frozenset({"gpu"}))
    with pytest.raises(ValueError, match="already registered"):
        registry.register(ExplainerSpec(name="pdcr", title="X", paper="", config=toy.ToyConfig, run=toy.toy_run))
    with pytest.raises(UserError, match="gain must be in"):
        toy.ToyConfig(gain=-1)
    assert [p.name for p in config_params(toy.ToyConfig)] == ["gain", "seed"]


def test_toy_explainer_reaches_the_cli(toy_registered, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["explain", "--help"])
    assert toy.NAME in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([toy.NAME, "--help"])
    assert "--gain" in capsys.readouterr().out
    out = tmp_path / "toy.npy"
    code = main(["--quiet", "explain", toy.NAME, str(VOL), "--model", str(MODEL), "--slice", str(Z), "--gain", "3",
                 "--device", "cpu", "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads(captured.out)
    assert summary["total"] > 0 and summary["command"] == toy.NAME
    expl = Explanation.load(out)
    assert expl.method == toy.NAME and expl.params["gain"] == 3.0
    np.testing.assert_allclose(expl.maps["doubled"], 2 * expl.map)
    assert expl.run["roi_name"] and len(expl.run["id"]) == 12
