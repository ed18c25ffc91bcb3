"""PdCR speed as ratios (not a test): ours vs a naive per-block loop on the same work, and vs raw throughput.

    python benchmarks/bench_pdcr.py [--n 50] [--blocks 40] [--device auto]

* naive: the authors' loop shape -- one block at a time, a batch of S screening copies, then (if it passes
  screening) a batch of N copies, tiles gathered on the host -- on the first ``--blocks`` blocks;
* ours: the batched engine on the same blocks (same S, N, pool);
* raw: the model's own forward throughput at our batch size on unperturbed copies.
Prints images/s for each and the ratios ours/naive and ours/raw (1.0 = no overhead beyond the model).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main() -> None:
    import torch

    from napari_seg_explain.core.explainers.pdcr import PdCRConfig, explain_pdcr
    from napari_seg_explain.core.images import read_image
    from napari_seg_explain.core.models import class_probability, load_model
    from napari_seg_explain.core.perturb.pools import pool_from_volume
    from napari_seg_explain.core.rois import roi_from_box
    from napari_seg_explain.core.sample import SAMPLE_CARD, SAMPLE_VOLUME, sample_path

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--screen", type=int, default=3)
    ap.add_argument("--blocks", type=int, default=40, help="blocks for the naive loop (it is slow)")
    ap.add_argument("--batch-size", type=int, default=0, help="0 = automatic (the default everywhere)")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    image = read_image(sample_path(SAMPLE_VOLUME))
    model = load_model(sample_path(SAMPLE_CARD), device=args.device)
    z = 64
    plane = image.slice2d(z)
    h, w = plane.shape[1:]
    pool = pool_from_volume(model, image, z)
    b = 8
    # the RoI is every row below a band of blocks at the top, so both methods evaluate blocks of that band
    nx = -(-w // b)
    band_rows = -(-args.blocks // nx)
    roi = np.zeros((h, w), bool)
    roi[(band_rows + 1) * b:, :] = True
    cfg = PdCRConfig(n=args.n, screen=args.screen, batch_size=args.batch_size)
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)

    # ours
    sync()
    t0 = time.perf_counter()
    expl = explain_pdcr(model, plane, roi, 1, pool=pool, config=cfg)
    sync()
    t_ours = time.perf_counter() - t0
    n_ours = expl.stats["forward_passes"]

    # naive: per block, batches of S and N, host-side tile gathering, as the authors' loop does
    gen = torch.Generator().manual_seed(0)
    raw_image = torch.as_tensor(plane)[None]
    x0 = model.normalize(raw_image)
    bound = pool.bind(model, raw_image)  # crops mapped as the explained image, as ours does
    roi_t = torch.as_tensor(roi.ravel(), device=model.device)
    n_naive, blocks_done = 0, 0
    sync()
    t0 = time.perf_counter()
    with torch.inference_mode():
        p0 = class_probability(model.forward_normalized(x0), 1).reshape(-1)[roi_t]
        ref = (p0 > 0.5).float()

        def score(p):
            return 100 * 2 * (p * ref).sum(1) / (p.sum(1) + ref.sum() + 1e-10)

        m0 = score(p0[None])
        for by in range(0, h, b):
            for bx in range(0, w, b):
                if roi[by:by + b, bx:bx + b].any() or blocks_done >= args.blocks:
                    continue
                for stage, k in enumerate((args.screen, args.n)):
                    draws = pool.draw(k, b, gen)
                    tiles = bound.crops(draws, b).cpu()  # host round trip, as loading tiles per block does
                    xb = torch.nn.functional.pad(x0, (0, b, 0, b)).repeat(k, 1, 1, 1)
                    xb[:, :, by:by + b, bx:bx + b] = tiles.permute(0, 3, 1, 2).to(model.device)
                    p = class_probability(model.forward_normalized(xb[:, :, :h, :w]), 1).reshape(k, -1)[:, roi_t]
                    delta = score(p) - m0
                    n_naive += k
                    if stage == 0 and bool((delta.abs() < cfg.tau).all()):
                        break
                blocks_done += 1
    sync()
    t_naive = time.perf_counter() - t0

    # raw model throughput at the batch size ours used
    bs = int(expl.provenance["batch_size"])
    xb = x0.repeat(bs, 1, 1, 1)
    reps = max(1, n_ours // bs)
    sync()
    t0 = time.perf_counter()
    with torch.inference_mode():
        for _ in range(reps):
            model.forward_normalized(xb)
    sync()
    t_raw = time.perf_counter() - t0
    ours, naive, raw = n_ours / t_ours, n_naive / t_naive, reps * bs / t_raw
    # per-block wall time is what a user waits for: compare it on the same kind of work
    per_block_ours, per_block_naive = t_ours / expl.stats["n_blocks"], t_naive / blocks_done
    print(f"device={model.device} torch={torch.__version__} threads={torch.get_num_threads()}")
    print(f"ours : {n_ours} forward passes in {t_ours:.2f} s -> {ours:.1f} img/s ({expl.stats['n_blocks']} blocks, "
          f"{expl.stats['n_blocks_screened_in']} past screening)")
    print(f"naive: {n_naive} forward passes in {t_naive:.2f} s -> {naive:.1f} img/s ({blocks_done} blocks)")
    print(f"raw  : {reps * bs} forward passes in {t_raw:.2f} s -> {raw:.1f} img/s (batch {bs}, "
          f"{expl.provenance['batch_mode']}; timings ms/img {expl.provenance['batch_timings_ms_per_image']})")
    print(f"throughput ratio ours/naive = {ours / naive:.2f}x   ours/raw = {ours / raw:.2f}")
    print(f"time per block: ours {1e3 * per_block_ours:.1f} ms, naive {1e3 * per_block_naive:.1f} ms "
          f"-> speed-up {per_block_naive / per_block_ours:.2f}x")


if __name__ == "__main__":
    main()
