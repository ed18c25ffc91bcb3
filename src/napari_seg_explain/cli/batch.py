"""``seg-explain batch`` and ``seg-explain compare``: methods x models x manifest rows, locally or on Dask.

    seg-explain batch MANIFEST --model MODEL [--model M2 ...] [--method pdcr ...] [--set [METHOD.]NAME=VALUE ...]
                      [--scheduler ADDRESS | --workers N] [--threads 1] [--batch-size 8] [--device auto] -o DIR
    seg-explain compare MANIFEST --model MODEL [--model M2 ...] [--method pdcr --method misure ...] ... -o DIR

``batch`` writes each task's map and JSON under ``DIR/results/`` and a tidy ``DIR/results.csv``; ``compare``
adds the papers' evaluation metrics per task, ``DIR/table.md`` (per method and per model) and plots. A rerun
skips finished tasks (keyed by inputs, parameters and model); failed tasks are recorded and rerun.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..core.errors import UserError
from .common import batch_size


def add_batch_parsers(sub: Any, flags: list[argparse.ArgumentParser]) -> None:
    for name, help_ in (("batch", "explain every row of a manifest CSV (locally or on a Dask cluster)"),
                        ("compare", "compare methods and models on a manifest: metrics, table, plots")):
        p = sub.add_parser(name, parents=flags, help=help_, description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("manifest", help="CSV with columns image[,roi,class,label,slice,pool,name]")
        p.add_argument("--model", action="append", required=True, dest="models", metavar="MODEL",
                       help="model file, card or folder (repeat for several models)")
        p.add_argument("--method", action="append", dest="methods", metavar="METHOD",
                       help="registered method (repeat; default pdcr)" if name == "batch" else
                       "registered method (repeat; default pdcr, misure and the baselines that are registered)")
        p.add_argument("--set", action="append", default=[], metavar="[METHOD.]NAME=VALUE",
                       help="a method parameter, e.g. pdcr.n=20 or seed=1 (every method having it)")
        p.add_argument("--scheduler", help="address of a running Dask scheduler (tcp://host:8786)")
        p.add_argument("--workers", type=int, default=0, help="start a local Dask cluster of N worker processes")
        p.add_argument("--gpus", action="store_true", help="one GPU per task as a Dask worker resource ('GPU')")
        p.add_argument("--threads", type=int, default=1,
                       help="torch threads per task (default 1: results are bit-identical on every worker)")
        p.add_argument("--batch-size", type=batch_size, default=8, metavar="N|auto",
                       help="images per forward pass (default 8, fixed so that every worker batches alike)")
        p.add_argument("--device", default="auto")
        p.add_argument("-o", "--output", required=True, help="output folder (created; reused to resume)")
        if name == "compare":
            g = p.add_argument_group("evaluation (docs/methods.md, 'Evaluation metrics')")
            g.add_argument("--k", type=int, default=10, help="salient blocks perturbed for the attribution score")
            g.add_argument("--steps", type=int, default=20, help="steps of the deletion and insertion curves")
            g.add_argument("--draws", type=int, default=3, help="replacement draws averaged per perturbed image")
        p.set_defaults(func=cmd_batch, evaluate=name == "compare")


def parse_settings(items: list[str], methods: list[str]) -> dict[str, dict[str, Any]]:
    """``[METHOD.]NAME=VALUE`` -> per-method parameter values, typed as each method's parameter is."""
    from ..core.explainers import registry

    out: dict[str, dict[str, Any]] = {m: {} for m in methods}
    for item in items:
        if "=" not in item:
            raise UserError(f"--set {item!r}: write NAME=VALUE or METHOD.NAME=VALUE")
        name, value = item.split("=", 1)
        method, _, pname = name.rpartition(".")
        targets = [method] if method else methods
        hit = False
        for m in targets:
            if m not in out:
                raise UserError(f"--set {item!r}: {m} is not one of the methods of this run ({', '.join(methods)})")
            info = {p.name: p for p in registry.get(m).params()}.get(pname)
            if info is None:
                continue
            out[m][pname] = _typed(info, value)
            hit = True
        if not hit:
            raise UserError(f"--set {item!r}: no method of this run has a parameter {pname!r}")
    return out


def _typed(info: Any, text: str) -> Any:
    if info.type is bool:
        return text.lower() in ("1", "true", "yes", "on")
    parts = [p for p in text.replace(",", " ").split() if p]
    conv = info.type if info.type in (int, float, str) else type(info.default if not isinstance(info.default, tuple)
                                                                   else info.default[0])
    try:
        vals = [conv(p) for p in parts] if conv is not str else [text]
    except ValueError as exc:
        raise UserError(f"--set {info.name}={text!r}: not a {conv.__name__}") from exc
    return vals[0] if len(vals) == 1 else tuple(vals)


def default_methods(evaluate: bool) -> list[str]:
    from ..core.explainers import registry

    if not evaluate:
        return ["pdcr"]
    return [m for m in ("pdcr", "misure", "seg_gradcam", "rise", "occlusion") if m in registry.names()]


def cmd_batch(args: argparse.Namespace) -> dict[str, Any]:
    from ..core.dataset_run import run_tasks
    from ..core.explainers import registry
    from ..core.manifest import Task, read_manifest

    rows = read_manifest(args.manifest)
    methods = [m if m in registry.names() else m.replace("-", "_") for m in args.methods or []] \
        or default_methods(args.evaluate)
    for m in methods:
        registry.get(m)  # unknown methods: a clear error before anything runs
    settings = parse_settings(args.set, methods)
    models = [str(Path(m).resolve()) for m in args.models]
    for m in models:
        if not Path(m).exists():
            raise UserError(f"model {m} does not exist")
    tasks = []
    for model in models:
        for method in methods:
            params = dict(settings[method])
            if "batch_size" in {p.name for p in registry.get(method).params()}:
                params.setdefault("batch_size", args.batch_size)
            ev = {"k": args.k, "steps": args.steps, "draws": args.draws} if args.evaluate else {}
            tasks += [Task(row, method, params, model, evaluate=args.evaluate, eval_options=ev) for row in rows]
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise UserError(f"-o {out} is a file; give a folder")

    def progress(done: int, total: int, rec: dict[str, Any] | None) -> None:
        if rec is not None and not args.quiet:
            status = rec["status"] if rec["status"] == "ok" else f"FAILED ({rec.get('error', '')})"
            print(f"[{done}/{total}] {rec['method']} {Path(rec['model']).name} {rec['name']}: {status}",
                  file=sys.stderr)

    records = run_tasks(tasks, out, scheduler=args.scheduler, workers=args.workers, device=args.device,
                        threads=args.threads, gpus=args.gpus, progress=progress)
    files = [out / "results.csv"]
    if args.evaluate:
        from .compare_report import write_report

        files += write_report(records, out)
    failed = [r for r in records if r["status"] != "ok"]
    return {"command": args.command, "output": str(out), "files": [str(f) for f in files], "tasks": len(records),
            "ok": len(records) - len(failed), "failed": len(failed),
            "errors": [f"{r['name']} ({r['method']}): {r.get('error')}" for r in failed][:10]}
