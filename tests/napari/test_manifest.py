"""The npe2 manifest: single source, valid, discoverable, menus napari accepts, icon shipped."""

from __future__ import annotations

import importlib.resources
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import napari_seg_explain
from napari_seg_explain.napari.reader import EXTENSIONS

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = "napari-seg-explain"


def _widgets_module_exists() -> bool:
    """True once the widget package is a real package (``widgets/__init__.py``), not a bare folder."""
    spec = importlib.util.find_spec("napari_seg_explain.napari.widgets")
    return spec is not None and spec.origin is not None


def _manifest():
    from npe2 import PluginManifest

    return PluginManifest.from_file(ROOT / "napari.yaml")


def test_top_level_manifest_is_the_single_source():
    packaged = Path(napari_seg_explain.__file__).parent / "napari.yaml"
    if ROOT / "src" in Path(napari_seg_explain.__file__).resolve().parents:  # editable install
        assert packaged.is_symlink() and packaged.resolve() == (ROOT / "napari.yaml").resolve()
    else:  # installed from a wheel: a real file with the same text
        assert packaged.read_text() == (ROOT / "napari.yaml").read_text()
    mf = _manifest()
    assert mf.name == PLUGIN and mf.display_name == "Segmentation Explainer"


def test_npe2_validate_installed_plugin():
    cmd = [sys.executable, "-m", "npe2", "validate", PLUGIN]
    if _widgets_module_exists():
        cmd.append("--imports")
    # npe2 prints "✔ ... valid!": decode as UTF-8 whatever the locale (CI runs with LANG unset = ASCII)
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", PYTHONIOENCODING="utf-8")
    res = subprocess.run(cmd, capture_output=True, encoding="utf-8", errors="replace", timeout=300, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "valid" in res.stdout


def test_contributions():
    mf = _manifest()
    c = mf.contributions
    commands = {cmd.id: cmd.python_name for cmd in c.commands}
    assert commands["napari-seg-explain.get_reader"] == "napari_seg_explain.napari.reader:get_reader"
    assert commands["napari-seg-explain.write_layer"] == "napari_seg_explain.napari.writer:write_layer"
    assert commands["napari-seg-explain.make_widget"] == "napari_seg_explain.napari.widgets:SegExplainWidget"
    (reader,) = c.readers
    assert reader.accepts_directories
    assert {p.lstrip("*") for p in reader.filename_patterns} == set(EXTENSIONS)
    assert sorted(str(lt) for w in c.writers for lt in w.layer_types) == ["image", "labels"]
    assert {s.key: s.display_name for s in c.sample_data} == {
        "sample_scan": "MNI152 T1 (sample scan, with sample model)",
        "sample_label": "MNI152 white-matter label",
        "sample_slice": "MNI152 axial slice (PNG)",
    }
    assert [(w.command, w.display_name) for w in c.widgets] == [
        ("napari-seg-explain.make_widget", "Segmentation Explainer")]


def test_menus_are_contributable_in_napari():
    from napari._app_model.constants._menus import is_menu_contributable

    mf = _manifest()
    assert mf.contributions.menus, "expected at least the Layers > Segment entry"
    for menu_id in mf.contributions.menus:
        assert is_menu_contributable(menu_id), menu_id
    assert [i.command for i in mf.contributions.menus["napari/layers/segment"]] == ["napari-seg-explain.make_widget"]


def test_icon_resource_is_shipped():
    mf = _manifest()
    package, resource = str(mf.icon).split(":")
    icon = importlib.resources.files(package).joinpath(resource)
    assert icon.is_file() and icon.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_npe2_routes_files_to_the_reader(tmp_path):
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    assert PLUGIN in {mf.name for mf in pm.iter_manifests()}
    for name in ("scan.nii.gz", "SCAN.NII.GZ", "slice.png", "ct.nrrd", "x.mha", "y.dcm"):
        readers = {r.command for r in pm.iter_compatible_readers([str(tmp_path / name)])}
        assert "napari-seg-explain.get_reader" in readers, name
    assert "napari-seg-explain.get_reader" in {r.command for r in pm.iter_compatible_readers([str(tmp_path)])}
