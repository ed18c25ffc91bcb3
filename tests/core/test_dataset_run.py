"""Dataset runs from a manifest: tidy results, resumable after a kill, identical on a local Dask cluster,
failures recorded per row."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from napari_seg_explain.cli import main
from napari_seg_explain.core.errors import UserError
from napari_seg_explain.core.images import read_image
from napari_seg_explain.core.manifest import read_manifest
from napari_seg_explain.core.sample import SAMPLE_CARD, SAMPLE_LABEL, SAMPLE_VOLUME, sample_path

ROWS = [("32 24 48 40", 57), ("32 64 48 80", 57), ("32 24 48 40", 60), ("32 64 48 80", 60)]
FAST = ["--set", "pdcr.n=2", "--set", "pdcr.screen=1", "--set", "seed=3"]


def manifest(tmp_path: Path, rows=ROWS, extra: list[str] | None = None) -> Path:
    p = tmp_path / "manifest.csv"
    lines = ["image,roi,class,label,slice,name"]
    lines += [f"{sample_path(SAMPLE_VOLUME)},{roi},1,{sample_path(SAMPLE_LABEL)},{z},z{z} {i}"
              for i, (roi, z) in enumerate(rows)]
    p.write_text("\n".join(lines + (extra or [])) + "\n")
    return p


def batch(m: Path, out: Path, *more: str) -> int:
    return main(["--quiet", "batch", str(m), "--model", str(sample_path(SAMPLE_CARD)), *FAST, *more, "-o", str(out)])


def records(out: Path) -> list[dict]:
    with (out / "results.csv").open() as fh:
        return list(csv.DictReader(fh))


def test_manifest_errors_name_the_line(tmp_path) -> None:
    with pytest.raises(UserError, match="line 6: roi"):  # header + 4 rows + the bad one
        read_manifest(manifest(tmp_path, extra=[f"{sample_path(SAMPLE_VOLUME)},1 2 3,1,,60,bad"]))
    (tmp_path / "x.csv").write_text("picture\nfoo.png\n")
    with pytest.raises(UserError, match="'image' column"):
        read_manifest(tmp_path / "x.csv")
    rows = read_manifest(manifest(tmp_path))
    assert rows[2].roi_box == (32, 24, 48, 40) and rows[2].slice_index == 60 and rows[2].label


@pytest.mark.slow
def test_rerun_skips_finished_tasks_and_records_failures(tmp_path) -> None:
    m = manifest(tmp_path, rows=ROWS[:2] + [("0 0 8 8", 60)])  # the last RoI holds no white matter: fails
    out = tmp_path / "run"
    assert batch(m, out) == 0
    recs = records(out)
    assert [r["status"] for r in recs] == ["ok", "ok", "failed"] and "no pixel" in recs[2]["error"]
    assert float(recs[0]["M0"]) > 50 and int(recs[0]["forward_passes"]) > 0
    stamps = {p: p.stat().st_mtime_ns for p in (out / "results").glob("*.record.json")}
    assert batch(m, out) == 0  # finished rows skipped, the failed one tried again
    again = {p: p.stat().st_mtime_ns for p in (out / "results").glob("*.record.json")}
    changed = [p for p in stamps if stamps[p] != again[p]]
    assert len(changed) == 1 and json.loads(changed[0].read_text())["status"] == "failed"


@pytest.mark.slow
def test_a_killed_run_resumes_with_only_the_missing_rows(tmp_path) -> None:
    m = manifest(tmp_path)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "napari_seg_explain.cli", "--quiet", "batch", str(m), "--model",
           str(sample_path(SAMPLE_CARD)), *FAST, "-o", str(out)]
    proc = subprocess.Popen(cmd, env=os.environ | {"OMP_WAIT_POLICY": "PASSIVE"})
    deadline = time.time() + 120
    while time.time() < deadline and not list((out / "results").glob("*.record.json")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = {p.name: p.stat().st_mtime_ns for p in (out / "results").glob("*.record.json")}
    assert 1 <= len(first) < len(ROWS), "killed after the first row and before the last"
    assert not (out / "results.csv").exists()
    assert batch(m, out) == 0
    final = {p.name: p.stat().st_mtime_ns for p in (out / "results").glob("*.record.json")}
    assert len(final) == len(ROWS)
    assert all(final[k] == v for k, v in first.items())  # finished rows were not computed again
    assert all(r["status"] == "ok" for r in records(out))


@pytest.mark.slow
def test_local_dask_cluster_gives_identical_maps(tmp_path) -> None:
    m = manifest(tmp_path, rows=ROWS[:2])
    assert batch(m, tmp_path / "local", "--method", "pdcr", "--method", "misure") == 0
    assert batch(m, tmp_path / "dask", "--method", "pdcr", "--method", "misure", "--workers", "2") == 0
    maps = sorted((tmp_path / "local" / "results").glob("*.nii.gz"))
    assert len(maps) >= 8
    for f in maps:
        a = read_image(f).data
        b = read_image(tmp_path / "dask" / "results" / f.name).data
        assert np.array_equal(a, b, equal_nan=True), f.name
    assert [r["key"] for r in records(tmp_path / "local")] == [r["key"] for r in records(tmp_path / "dask")]


@pytest.mark.slow
def test_compare_writes_metrics_table_and_plots(tmp_path) -> None:
    m = manifest(tmp_path, rows=ROWS[:2])
    out = tmp_path / "cmp"
    assert main(["--quiet", "compare", str(m), "--model", str(sample_path(SAMPLE_CARD)), *FAST, "--method", "pdcr",
                 "--method", "occlusion", "--steps", "4", "--draws", "1", "-o", str(out)]) == 0
    recs = records(out)
    assert len(recs) == 4 and all(r["status"] == "ok" for r in recs)
    for r in recs:  # the curve starts at the unperturbed Dice; an effect map finds something the model uses
        full = json.loads((out / "results" / f"{r['key']}.record.json").read_text())
        assert full["eval_deletion_curve"][0] == pytest.approx(full["eval_M0"])
        assert len(full["eval_deletion_curve"]) == 5
    table = (out / "table.md").read_text()
    assert "| pdcr |" in table and "| occlusion |" in table and "attribution score" in table
    for name in ("curves.png", "shares.png", "maps_row1_mni152_wm_unet.png"):
        assert (out / name).stat().st_size > 5000


def test_a_dataset_run_result_reruns_identically_from_its_sidecar(tmp_path, capsys) -> None:
    """A task's sidecar records its inputs (and their SHA-256) as the CLI does, so `seg-explain rerun` recomputes
    it; the batch worker's fixed thread count and batch size give the same map as the rerun's automatic ones
    (every CPU image goes through the same single-threaded kernels)."""
    m = manifest(tmp_path, rows=ROWS[:1])
    out = tmp_path / "run"
    assert batch(m, out) == 0
    sidecar, = [p for p in (out / "results").glob("*.json") if not p.name.endswith(".record.json")]
    meta = json.loads(sidecar.read_text())
    assert meta["run"]["inputs"]["model"] == str(Path(sample_path(SAMPLE_CARD)).resolve())
    hashes = meta["provenance"]["inputs_sha256"]
    assert hashes["image"] and hashes["label"], hashes
    capsys.readouterr()
    code = main(["--quiet", "rerun", str(sidecar), "-o", str(tmp_path / "again.nii.gz"), "--device", "cpu"])
    res = json.loads(capsys.readouterr().out)
    assert code == 0 and res["identical"] is True and res["max_abs_diff"] == 0.0, res
