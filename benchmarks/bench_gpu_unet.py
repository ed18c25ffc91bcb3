"""PdCR on a U-Net-sized model, for a GPU (run by benchmarks/gpu_check.sh); JSON lines, the last a summary.

    python benchmarks/bench_gpu_unet.py --device cuda            # 31 M parameters at 256x256 (a few minutes)
    python benchmarks/bench_gpu_unet.py --device cpu --size 64 --features 8 --train-seconds 5   # smoke test

The model: MONAI's BasicUNet (features 64..1024: the classical 31 M-parameter U-Net, instance norm, which
couples distant pixels) trained for ``--train-seconds`` on the sample's slices resized to ``--size`` (white
matter, the held-out slice 64 and its neighbours left out). Measured in one run, on the same image, RoI and
draws (the pool: the other slices):

* the model's raw batched rate, fp32 and bf16 autocast + channels-last, over batch sizes;
* the ``--blocks`` blocks nearest a RoI: the one-block loop like the authors' (benchmarks/bench_pdcr.py, fp32)
  vs our engine in exact mode (fp32) and with ``amp`` bf16 + channels-last: passes/s, ratios, map agreement;
* 8 RoIs in one of our runs (bf16 + channels-last) vs 8 runs of the block loop on the whole image (the loop
  runs until ``--loop-seconds``; the rest is extrapolated from each RoI's exact pass counts at the loop's
  measured screening and estimation rates, and said so);
* with ``--compile`` (after the summary line): the same work through ``torch.compile`` (compile time apart).

On the CPU it is only a smoke test (the raw rates there are one batch at a time, not the engine's workers).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def emit(**kw) -> dict:
    print(json.dumps(kw), flush=True)
    return kw


def setup(args):
    """The trained BasicUNet as two models (fp32 as loaded; a channels-last copy), the image, pool and RoI."""
    import torch
    import torch.nn.functional as F
    from monai.networks.nets import BasicUNet

    from napari_seg_explain.core.images import read_image
    from napari_seg_explain.core.modelcard import ModelCard
    from napari_seg_explain.core.models import SegmentationModel
    from napari_seg_explain.core.perturb.pools import pool_from_arrays
    from napari_seg_explain.core.rois import roi_from_box
    from napari_seg_explain.core.sample import SAMPLE_LABEL, SAMPLE_VOLUME, pick_box, sample_path

    dev = torch.device(args.device)
    f = args.features
    torch.manual_seed(0)
    net = BasicUNet(2, 1, 2, features=(f, 2 * f, 4 * f, 8 * f, 16 * f, f), norm=("instance", {"affine": True}))
    card = ModelCard(name=f"BasicUNet-{f}", spatial_dims=2, in_channels=1, classes=("background", "white matter"),
                     normalization="minmax")
    model = SegmentationModel(net, card, device=str(dev))
    params = sum(p.numel() for p in net.parameters())
    vol, lab = read_image(sample_path(SAMPLE_VOLUME)), read_image(sample_path(SAMPLE_LABEL))
    zs = [z for z in range(vol.n_slices) if lab.slice2d(z).any()]
    size = (args.size, args.size)
    x = F.interpolate(torch.as_tensor(np.stack([vol.slice2d(z) for z in zs])), size=size, mode="bilinear")
    y = F.interpolate(torch.as_tensor(np.stack([lab.slice2d(z) for z in zs])).float(), size=size)[:, 0].long()
    train = [i for i, z in enumerate(zs) if abs(z - 64) > 5]
    xn, yd = model.normalize(x[train]).to(dev), (y[train] > 0).long().to(dev)
    opt = torch.optim.Adam(model.net.parameters(), lr=1e-3)
    model.net.train()
    steps, t0, g = 0, time.perf_counter(), torch.Generator().manual_seed(0)
    while time.perf_counter() - t0 < args.train_seconds:
        idx = torch.randint(len(train), (args.train_batch,), generator=g).to(dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            loss = F.cross_entropy(model.net(xn[idx]), yd[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
    model.net.eval()
    plane = x[zs.index(64)].numpy()
    pred = model.predict(plane)[1] > 0.5
    truth = (y[zs.index(64)] > 0).numpy()
    dice = 2 * (pred & truth).sum() / max(1, pred.sum() + truth.sum())
    pool = pool_from_arrays(model, [x[i].numpy() for i in train], source="other slices (resized)")
    roi = roi_from_box(size, *pick_box(pred, size=args.size // 8))
    fast = SegmentationModel(copy.deepcopy(model.net), card, device=str(dev))
    fast.set_speed(channels_last=True, amp_dtype="bfloat16")
    emit(bench="gpu_unet_setup", device=str(dev), gpu=torch.cuda.get_device_name(0) if dev.type == "cuda" else None,
         torch=torch.__version__, parameters_millions=round(params / 1e6, 2), size=args.size, train_steps=steps,
         train_seconds=args.train_seconds, heldout_dice=round(float(dice), 3), roi_pixels=int(roi.sum()),
         predicted_pixels=int(pred.sum()), cudnn_tf32=bool(torch.backends.cudnn.allow_tf32))
    return model, fast, plane, pool, pred, roi


def raw_rate(model, plane, sizes, amp, seconds: float = 0.5) -> tuple[float, int]:
    """Best images/s of the model's forward on unperturbed copies over batch ``sizes`` (synchronised)."""
    import torch

    x0 = model.normalize(torch.as_tensor(plane)[None])
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)
    best = (0.0, 0)
    with torch.inference_mode():
        for bs in sizes:
            xb = x0.repeat(bs, 1, 1, 1)
            model.forward_normalized(xb, amp=amp)
            sync()
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                model.forward_normalized(xb, amp=amp)
                n += bs
            sync()
            best = max(best, (n / (time.perf_counter() - t0), bs))
    return best


def ours(model, plane, pool, rois, args, exclude=None, amp=False, repeats: int = 2):
    """Our engine: (explanations of the fastest of ``repeats`` runs, its seconds)."""
    from napari_seg_explain.core.explainers.pdcr import PdCRConfig, explain_pdcr_multi

    best = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = explain_pdcr_multi(model, plane, rois, 1, pool=pool, exclude=exclude,
                                 config=PdCRConfig(n=args.n, seed=0, amp=amp))
        sec = time.perf_counter() - t0
        best = (out, sec) if best is None or sec < best[1] else best
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--features", type=int, default=64, help="BasicUNet base width (64: 31 M parameters)")
    ap.add_argument("--train-seconds", type=float, default=20.0)
    ap.add_argument("--train-batch", type=int, default=16)
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--blocks", type=int, default=64)
    ap.add_argument("--loop-seconds", type=float, default=60.0, help="cap on the 8 block-loop runs")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--multi-compiled", action="store_true",
                    help="only the 8-RoI comparison, our run through torch.compile (bf16 + channels-last)")
    args = ap.parse_args()

    from bench_pdcr import block_loop, eight_rois, near_blocks
    from napari_seg_explain.core.explainers.pdcr import PdCRConfig
    from napari_seg_explain.core.explainers.pdcr_agreement import agreement

    t_all = time.perf_counter()
    model, fast, plane, pool, pred, roi = setup(args)
    cuda = model.device.type == "cuda"
    # (at 256x256 a batch of 256 puts over 2^31 elements in one tensor of this U-Net: CUDA kernels refuse it,
    # the engine halves its start of 256 once)
    if args.multi_compiled:
        return multi_compiled(args, model, fast, plane, pool, pred, roi, t_all)
    raw32 = raw_rate(model, plane, (16, 32, 64, 128) if cuda else (4, 8, 16), False)
    raw16 = raw_rate(fast, plane, (32, 64, 128) if cuda else (4, 8, 16), "bfloat16")
    emit(bench="gpu_unet_raw", fp32_img_per_s=round(raw32[0], 1), fp32_batch=raw32[1],
         bf16_cl_img_per_s=round(raw16[0], 1), bf16_cl_batch=raw16[1])
    cfg = PdCRConfig(n=args.n, seed=0)
    excl = near_blocks(roi, 8, args.blocks)
    block_loop(model, plane, pool, roi, cfg, near_blocks(roi, 8, 2))  # warm-up (kernels, allocator)
    loop_passes, t_loop, loop_ates = block_loop(model, plane, pool, roi, cfg, excl)
    (ex,), t_ex = ours(model, plane, pool, [roi], args, exclude=excl)
    (bf,), t_bf = ours(fast, plane, pool, [roi], args, exclude=excl, amp=True)
    loop_rate, ex_rate = loop_passes / t_loop, ex.stats["forward_passes"] / t_ex
    bf_rate = bf.stats["forward_passes"] / t_bf
    same = emit(bench="gpu_unet_same_work", blocks=len(loop_ates), passes=ex.stats["forward_passes"],
                loop_img_per_s=round(loop_rate, 1), exact_img_per_s=round(ex_rate, 1),
                bf16_cl_img_per_s=round(bf_rate, 1), speedup_exact_vs_block_loop=round(ex_rate / loop_rate, 3),
                speedup_bf16_cl_vs_block_loop=round(bf_rate / loop_rate, 3),
                throughput_fraction_exact=round(ex_rate / raw32[0], 3),
                throughput_fraction_bf16_cl=round(bf_rate / raw16[0], 3),
                exact_batch=ex.provenance["batch_size"], bf16_batch=bf.provenance["batch_size"],
                bf16_vs_exact={k: round(v, 4) for k, v in agreement(ex, bf).items()})
    rois = eight_rois(pred, roi, size=args.size // 8)
    multi, t_multi = ours(fast, plane, pool, rois, args, amp=True, repeats=1)
    alone = [(e.stats["passes_screening"], e.stats["n_blocks_screened_in"] * args.n) for e in multi]
    none = np.zeros_like(roi)
    spent, measured, timing = 0.0, 0, {"screen": [0, 0.0], "estimate": [0, 0.0]}
    for r in rois:
        if spent >= args.loop_seconds:
            break
        _, sec, _ = block_loop(model, plane, pool, r, cfg, none, timings=timing)
        spent += sec
        measured += 1
    rate_s = timing["screen"][0] / max(timing["screen"][1], 1e-9)
    rate_e = timing["estimate"][0] / max(timing["estimate"][1], 1e-9) if timing["estimate"][0] else loop_rate
    rest = sum(s / rate_s + e / rate_e for s, e in alone[measured:])
    loop8 = spent + rest
    emit(bench="gpu_unet_summary", n_rois=len(rois), multi_seconds=round(t_multi, 1),
                   multi_passes=multi[0].stats["forward_passes"], loop_8_runs_seconds=round(loop8, 1),
                   loop_runs_measured=measured, loop_runs_extrapolated=len(rois) - measured,
                   loop_screen_img_per_s=round(rate_s, 1), loop_estimate_img_per_s=round(rate_e, 1),
                   eight_rois_sooner_than_8_loop_runs=round(loop8 / t_multi, 2),
                   speedup_bf16_cl_vs_block_loop=same["speedup_bf16_cl_vs_block_loop"],
                   speedup_exact_vs_block_loop=same["speedup_exact_vs_block_loop"],
                   throughput_fraction_exact=same["throughput_fraction_exact"],
                   throughput_fraction_bf16_cl=same["throughput_fraction_bf16_cl"],
                   bench_seconds=round(time.perf_counter() - t_all, 1), device=str(model.device))
    if args.compile and cuda:  # last: compiling takes a minute or two
        fast.set_speed(compile=True)
        t0 = time.perf_counter()
        ours(fast, plane, pool, [roi], args, exclude=near_blocks(roi, 8, 8), amp=True, repeats=1)
        t_compile = time.perf_counter() - t0
        (cp,), t_cp = ours(fast, plane, pool, [roi], args, exclude=excl, amp=True)
        emit(bench="gpu_unet_compile", first_run_seconds=round(t_compile, 1),
             img_per_s=round(cp.stats["forward_passes"] / t_cp, 1),
             speedup_vs_block_loop=round(cp.stats["forward_passes"] / t_cp / loop_rate, 3),
             speed=cp.provenance.get("speed"), vs_exact={k: round(v, 4) for k, v in agreement(ex, cp).items()})
        fast.set_speed(compile=False)


def multi_compiled(args, model, fast, plane, pool, pred, roi, t_all: float) -> None:
    """8 RoIs in one compiled run (compiled first on a few blocks, timed apart) vs 8 block-loop runs."""
    from bench_pdcr import block_loop, eight_rois, near_blocks
    from napari_seg_explain.core.explainers.pdcr import PdCRConfig

    fast.set_speed(compile=True)
    t0 = time.perf_counter()
    ours(fast, plane, pool, [roi], args, exclude=near_blocks(roi, 8, 8), amp=True, repeats=1)
    t_compile = time.perf_counter() - t0
    rois = eight_rois(pred, roi, size=args.size // 8)
    multi, t_multi = ours(fast, plane, pool, rois, args, amp=True, repeats=1)
    cfg, none = PdCRConfig(n=args.n, seed=0), np.zeros_like(roi)
    alone = [(e.stats["passes_screening"], e.stats["n_blocks_screened_in"] * args.n) for e in multi]
    spent, measured, timing = 0.0, 0, {"screen": [0, 0.0], "estimate": [0, 0.0]}
    block_loop(model, plane, pool, roi, cfg, near_blocks(roi, 8, 2))  # warm-up
    for r in rois:
        if spent >= args.loop_seconds:
            break
        spent += block_loop(model, plane, pool, r, cfg, none, timings=timing)[1]
        measured += 1
    rate_s = timing["screen"][0] / timing["screen"][1]
    rate_e = timing["estimate"][0] / timing["estimate"][1]
    loop8 = spent + sum(s / rate_s + e / rate_e for s, e in alone[measured:])
    emit(bench="gpu_unet_multi_compiled", n_rois=len(rois), compile_first_run_seconds=round(t_compile, 1),
         multi_seconds=round(t_multi, 1), multi_passes=multi[0].stats["forward_passes"],
         multi_img_per_s=round(multi[0].stats["forward_passes"] / t_multi, 1), loop_8_runs_seconds=round(loop8, 1),
         loop_runs_measured=measured, loop_runs_extrapolated=len(rois) - measured,
         eight_rois_sooner_than_8_loop_runs=round(loop8 / t_multi, 2),
         including_compile=round(loop8 / (t_multi + t_compile), 2), speed=multi[0].provenance.get("speed"),
         batch_size=multi[0].provenance.get("batch_size"), bench_seconds=round(time.perf_counter() - t_all, 1))


if __name__ == "__main__":
    main()
