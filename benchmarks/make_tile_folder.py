"""Cut a PdCR intervention-tile folder from the sample volume, following the PdCR authors' recipe.

    python benchmarks/make_tile_folder.py OUT_DIR [--slice 65] [--exclude 5] [--per-image 100] [--n-tiles 1000] [--seed 0]

The authors' recipe (their ``create_PdCR_test_dataset.py``): every image that is not a test image is cut into
the grid-aligned 8x8 blocks of its (resized) pixel grid, 100 distinct grid blocks of each image are picked at
random, and each is saved as a PNG named ``<image stem>_<grid row>_<grid column>.png``. Nothing is filtered:
background (constant) tiles are kept. Their 1,000-tile demo folder is a random subset of such a folder
(1,000 tiles from 773 different images).

Here the "other images" are the axial slices of ``sample_data/mni152_t1.nii.gz`` that contain brain, except
the explained slice and its ``--exclude`` neighbours on each side. Each slice is converted to 8 bits with the
min-max of the whole volume, exactly as ``sample_data/build_sample_data.py`` makes the PNGs in
``sample_data/slices/`` (so tiles and the explained 8-bit slice share one intensity scale, as the authors'
uint8 tiles and images do). Tiles are saved as 8-bit greyscale PNGs ``mni152_zZZZ_<row>_<col>.png``
(readable by the authors' loader and by ``pool_from_paths``). Deterministic for a given ``--seed``.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
VOLUME = REPO / "sample_data" / "mni152_t1.nii.gz"


def volume_8bit(path: Path = VOLUME) -> np.ndarray:
    """The T1 volume ``(H, W, Z)`` as uint8, min-max over the whole volume (``build_sample_data.write_pngs``)."""
    from napari_seg_explain import read_image

    data = read_image(path).data[0].astype(np.float32)  # display orientation (P, L, S) = the file's order
    lo, hi = float(data.min()), float(data.max())
    return np.round((data - lo) / (hi - lo) * 255.0).astype(np.uint8)


def make_tiles(out_dir: str | Path, explained_slice: int, *, exclude: int = 5, per_image: int = 100,
               n_tiles: int | None = 1000, block: int = 8, seed: int = 0, volume: np.ndarray | None = None) -> dict:
    """Write the tiles to ``out_dir``; returns a summary (counts, slices used, constant tiles)."""
    from PIL import Image

    vol = volume_8bit() if volume is None else volume
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    h, w, nz = vol.shape
    slices = [z for z in range(nz) if abs(z - explained_slice) > exclude and vol[:, :, z].max() > 0]
    cut: list[tuple[int, int, int]] = []
    for z in slices:
        grid = [(z, i, j) for i in range(h // block) for j in range(w // block)]
        cut += rng.sample(grid, min(per_image, len(grid)))
    if n_tiles is not None and n_tiles < len(cut):
        cut = rng.sample(cut, n_tiles)
    n_const = 0
    for z, i, j in cut:
        tile = vol[i * block:(i + 1) * block, j * block:(j + 1) * block, z]
        n_const += int(tile.min() == tile.max())
        Image.fromarray(np.ascontiguousarray(tile), mode="L").save(out / f"mni152_z{z:03d}_{i}_{j}.png")
    return {"dir": str(out), "n": len(cut), "n_constant": n_const, "n_source_slices": len(slices),
            "n_slices_used": len({c[0] for c in cut}), "exclude": exclude, "per_image": per_image, "seed": seed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--slice", type=int, default=65, help="explained slice (left out with its neighbours)")
    ap.add_argument("--exclude", type=int, default=5)
    ap.add_argument("--per-image", type=int, default=100)
    ap.add_argument("--n-tiles", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    print(make_tiles(a.out_dir, a.slice, exclude=a.exclude, per_image=a.per_image, n_tiles=a.n_tiles, seed=a.seed))


if __name__ == "__main__":
    main()
