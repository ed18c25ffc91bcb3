#!/usr/bin/env bash
# GPU check for the README's performance section (issue 11): run on a machine with an NVIDIA GPU, from the
# repository root (the package installed, or importable from src/), in about 5 minutes:
#
#     bash benchmarks/gpu_check.sh 2>&1 | tee gpu_check.log          # COMPILE=1 adds torch.compile (+1-2 min)
#
# 1. the GPU's name and torch's view of it;
# 2. the engine / PdCR / MiSuRe tests with the test device forced to CUDA (SEG_EXPLAIN_TEST_DEVICE=cuda, read
#    by the `test_device` fixture in tests/conftest.py: the speed-option tests of tests/core/test_engine.py run
#    on the GPU against the CPU);
# 3. bench_pdcr.py --quick on CUDA (the small sample model; exact mode), one JSON line;
# 4. PdCR on the sample: exact vs amp fp16 / bf16 vs channels_last + torch.compile (max map difference);
# 5. bench_gpu_unet.py: a 31 M-parameter U-Net at 256x256, our engine (exact, bf16 + channels-last) vs the
#    one-block loop like the authors', 8 RoIs in one run vs 8 loop runs; JSON lines, the last a summary.
# Each step has its own time limit and its exit status is printed; a failed step does not stop the others.
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu UNET_ARGS="--size 64 --features 8 --train-seconds 5": a dry run without a GPU
status=0
step() { local name=$1; shift; echo "== $name"; local t0=$SECONDS; "$@"; local rc=$?
         echo "== $name: exit $rc in $((SECONDS - t0)) s"; [ $rc -eq 0 ] || status=1; }

step "GPU" bash -c 'timeout 30 nvidia-smi -L; timeout 60 '"$PY"' -c "import torch; assert torch.cuda.is_available(), \"torch sees no CUDA device\"; print(\"torch\", torch.__version__, \"CUDA\", torch.version.cuda, torch.cuda.get_device_name(0), \"bf16:\", torch.cuda.is_bf16_supported())"'

step "tests on CUDA" env SEG_EXPLAIN_TEST_DEVICE=cuda timeout 150 "$PY" -m pytest -q -p no:cacheprovider \
    -o addopts="" -p no:xvfb tests/core/test_engine.py tests/core/test_pdcr.py tests/core/test_pdcr_speed.py \
    tests/core/test_misure.py

step "bench_pdcr --quick --device cuda (exact mode)" timeout 150 "$PY" benchmarks/bench_pdcr.py --quick --device "$DEVICE"

step "PdCR on the sample: exact vs amp fp16 / bf16 vs channels_last + compile" timeout 120 "$PY" - "$DEVICE" <<'PYEOF'
import json, sys, time, warnings
import numpy as np
sys.path.insert(0, "benchmarks")
from bench_pdcr import sample_setup
from napari_seg_explain.core.explainers.pdcr import PdCRConfig, explain_pdcr

model, plane, pool, wm, roi = sample_setup(sys.argv[1])
ref = None
for name, amp, opts in [("exact", False, {}), ("warm-up exact", False, {}), ("amp fp16", "float16", {}),
                        ("amp bf16", "bfloat16", {}), ("exact channels_last+compile", False,
                                                       {"channels_last": True, "compile": True})]:
    model.set_speed(**({"channels_last": False, "compile": False} | opts))
    cfg = PdCRConfig(n=10, amp=bool(amp), seed=0)
    model.amp_dtype = amp or "float16"
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        expl = explain_pdcr(model, plane, roi, 1, pool=pool, config=cfg)
    sec = time.perf_counter() - t0
    ref = expl.map if ref is None else ref
    diff = float(np.nanmax(np.abs(expl.map - ref))) if np.isfinite(expl.map).any() else None
    print(json.dumps({"bench": "gpu_check_pdcr", "mode": name, "seconds": round(sec, 2),
                      "forward_passes": expl.provenance.get("forward_passes"), "max_abs_diff_vs_exact": diff,
                      "batch_size": expl.provenance.get("batch_size"), "speed": expl.provenance.get("speed"),
                      "warnings": [str(w.message)[:120] for w in caught if "compile" in str(w.message)],
                      "device": str(model.device)}), flush=True)
PYEOF

step "bench_gpu_unet (31 M parameters, 256x256)" timeout "${UNET_TIMEOUT:-240}" "$PY" benchmarks/bench_gpu_unet.py \
    --device "$DEVICE" ${COMPILE:+--compile} ${UNET_ARGS:-}
echo "== gpu_check: $([ $status -eq 0 ] && echo all steps passed || echo some steps FAILED)"
exit $status
