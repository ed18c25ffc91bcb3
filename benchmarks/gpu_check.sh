#!/usr/bin/env bash
# GPU check for the README's performance section (issue 11): run on a machine with an NVIDIA GPU, from the
# repository root, in under 5 minutes:
#
#     bash benchmarks/gpu_check.sh 2>&1 | tee gpu_check.log
#
# 1. the GPU's name (nvidia-smi -L);
# 2. the engine / PdCR / CUDA tests with the test device forced to CUDA (SEG_EXPLAIN_TEST_DEVICE=cuda, read by
#    the `test_device` fixture in tests/conftest.py: tests/core/test_engine.py's speed-option tests run on the
#    GPU against the CPU; the other tests build their models on the CPU as before);
# 3. bench_pdcr.py --quick on CUDA (exact mode), one JSON line;
# 4. the amp variant (inline Python below): PdCR on the sample (N=10) in exact mode, amp fp16, amp bf16 and exact + channels_last +
#    torch.compile, one JSON line each (seconds, forward passes, max |map difference| to exact mode, the
#    speed options the result recorded).
# Every step has its own time limit; the script stops at the first failure (set -euo pipefail).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=PASSIVE
PY=${PYTHON:-python}

echo "== GPU"
timeout 30 nvidia-smi -L
timeout 60 "$PY" -c 'import torch; assert torch.cuda.is_available(), "torch sees no CUDA device"; print("torch", torch.__version__, "CUDA", torch.version.cuda, torch.cuda.get_device_name(0), "bf16:", torch.cuda.is_bf16_supported())'

echo "== tests on CUDA"
SEG_EXPLAIN_TEST_DEVICE=cuda timeout 150 "$PY" -m pytest tests/core -q -x -p no:cacheprovider -k "cuda or engine or pdcr or device"

echo "== bench_pdcr --quick --device cuda (exact mode)"
timeout 150 "$PY" benchmarks/bench_pdcr.py --quick --device cuda

echo "== PdCR on the sample: exact vs amp fp16 / bf16 vs channels_last + compile"
timeout 150 "$PY" - "${DEVICE:-cuda}" <<'PYEOF'
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
