"""Dataset runs: many explanation tasks, locally or on a Dask cluster, resumable, failures recorded per task.

Each task writes its result whole into ``OUT/results/``: the map files, the result's JSON sidecar, and last a
``<key>.record.json`` (written atomically). A task whose record says ``ok`` is finished: a rerun skips it, so
a run killed halfway computes only what is missing. ``OUT/results.csv`` (one tidy row per task) is rewritten
whole at the end of every run.

Reproducible across machines: every task runs with a fixed torch thread count (``threads``, default 1) and a
fixed batch size (the caller's; ``seg-explain batch`` uses 8), so a Dask worker computes bit-identical maps
to a local run. One model load per process (worker), cached.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .manifest import Task

_MODELS: dict[tuple[str, str, str], Any] = {}  # one model load per process (per Dask worker)

#: which end of a method's map marks what the model relies on (signed effect maps: most negative = supports)
SALIENT = {"pdcr": "low", "occlusion": "low"}

TIDY_FIRST = ("key", "status", "row", "name", "image", "class", "method", "model", "seconds", "forward_passes",
              "error")


def _model(path: str, options: dict[str, Any], device: str) -> Any:
    from .models import load_model

    key = (path, json.dumps(options, sort_keys=True), device)
    if key not in _MODELS:
        _MODELS[key] = load_model(path, device=device, **options)
    return _MODELS[key]


def record_path(out_dir: str | Path, task: Task) -> Path:
    return Path(out_dir) / "results" / f"{task.key}.record.json"


def finished(out_dir: str | Path, task: Task) -> dict[str, Any] | None:
    """The task's record if it finished ``ok`` in an earlier run (its files are whole), else None."""
    p = record_path(out_dir, task)
    try:
        rec = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    return rec if rec.get("status") == "ok" else None


def _abs(path: Any) -> str | None:
    return str(Path(path).resolve()) if path else None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def run_task(task: Task, out_dir: str, device: str = "auto", threads: int = 1) -> dict[str, Any]:
    """Run one task and write its files; never raises: a failure is a record with ``status: failed``. Torch runs
    on ``threads`` threads meanwhile (restored after: an in-process run leaves the caller's setting alone)."""
    import torch

    before = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        return _run_task(task, out_dir, device)
    finally:
        torch.set_num_threads(before)


def _run_task(task: Task, out_dir: str, device: str) -> dict[str, Any]:
    from .explainers import registry
    from .images import read_image
    from .job_inputs import job_from_files
    from .progress import drive

    t0 = time.perf_counter()
    row = task.row
    rec: dict[str, Any] = {"key": task.key, "row": row.index, "name": row.title, "image": row.image,
                           "class": row.target, "method": task.method, "model": task.model}
    folder = Path(out_dir) / "results"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        model = _model(task.model, task.model_options, device)
        image = read_image(row.image)
        spec = registry.get(task.method)
        job = job_from_files(model, image, task.method, config=spec.make_config(**task.params),
                             slice_index=row.slice_index, roi_box=row.roi_box, roi_mask=row.roi_mask, label=row.label,
                             pool=list(row.pool) or None, target=row.target, image_path=row.image, roi_name=row.title)
        passes0 = model.forward_passes
        expl = drive(job.run(model))
        # what `seg-explain rerun` reads (the CLI's form), hashed into the sidecar on save
        expl.run["inputs"] = {"image": _abs(row.image), "contrasts": [], "model": _abs(task.model), "card": None,
                              "slice_index": row.slice_index, "roi_box": list(row.roi_box) if row.roi_box else None,
                              "roi_mask": _abs(row.roi_mask), "roi_point": None, "target": row.target,
                              "label": _abs(row.label), "pool": [_abs(p) for p in row.pool] or None,
                              "pool_exclude": 5, **{k: task.model_options.get(k) for k in
                                                    ("folds", "checkpoint", "mirroring", "ensemble")}}
        files = expl.save(folder / f"{task.key}.nii.gz", like=image, slice_index=job.geometry.get("slice_index"))
        from .evaluation import summary_metrics

        rec |= flat_stats(expl.stats) | summary_metrics(expl)
        if task.evaluate:
            rec |= _evaluation(model, job, expl, task.eval_options)
        rec |= {"status": "ok", "files": [str(f) for f in files], "warnings": expl.warnings,
                "forward_passes": model.forward_passes - passes0 - int(rec.get("eval_forward_passes", 0))}
    except Exception as exc:  # noqa: BLE001 - recorded per task, the run goes on
        rec |= {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    rec["seconds"] = round(time.perf_counter() - t0, 4)
    _write_atomic(record_path(out_dir, task), json.dumps(rec, default=_json_default))
    return rec


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    return str(obj)


def flat_stats(stats: dict[str, Any]) -> dict[str, Any]:
    """A result's scalar statistics (lists and dicts are left to the JSON sidecar)."""
    return {k: v for k, v in stats.items() if isinstance(v, (int, float, str, bool)) or v is None}


def _evaluation(model: Any, job: Any, expl: Any, options: dict[str, Any]) -> dict[str, Any]:
    """The papers' metrics on the explained frame (the job's image, RoI and label; the map cut to them)."""
    import numpy as np

    from .evaluation import evaluate

    m = np.asarray(expl.map, dtype=np.float32)
    if job.reorder is not None:
        m = job.reorder.model(m)
    if job.crop is not None:
        m = m[job.crop].reshape(job.image.shape[1:])
    res = evaluate(model, job.image, job.roi, job.target, m, label=job.label, pool=job.pool,
                   seed=getattr(job.config, "seed", 0), direction=SALIENT.get(job.method, "high"), **options)
    return {f"eval_{k}": v for k, v in res.items()}


def run_tasks(tasks: Sequence[Task], out_dir: str | Path, *, scheduler: str | None = None, workers: int = 0,
              device: str = "auto", threads: int = 1, gpus: bool = False,
              progress: Callable[[int, int, dict[str, Any] | None], None] | None = None) -> list[dict[str, Any]]:
    """Every task's record, in task order; finished tasks are skipped, the rest run locally (``scheduler`` None and
    ``workers`` 0), on a new local Dask cluster of ``workers`` processes, or on the cluster at ``scheduler``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records: dict[str, dict[str, Any]] = {}
    todo = []
    for t in tasks:
        rec = finished(out, t)
        if rec is None:
            todo.append(t)
        else:
            records[t.key] = rec
    total, done = len(tasks), len(records)
    if progress:
        progress(done, total, None)
    if todo and (scheduler or workers):
        for rec in _on_dask(todo, out, scheduler, workers, device, threads, gpus):
            records[rec["key"]] = rec
            done += 1
            if progress:
                progress(done, total, rec)
    else:
        for t in todo:
            rec = run_task(t, str(out), device, threads)
            records[rec["key"]] = rec
            done += 1
            if progress:
                progress(done, total, rec)
    ordered = [records[t.key] for t in tasks]
    write_tidy_csv(out / "results.csv", ordered)
    return ordered


def _on_dask(todo: Sequence[Task], out: Path, scheduler: str | None, workers: int, device: str, threads: int,
             gpus: bool):
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError as exc:
        from .errors import UserError

        raise UserError("dataset runs on Dask need distributed: pip install 'napari-seg-explain[dask]'") from exc
    import logging

    cluster = None if scheduler else LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                  dashboard_address=None, silence_logs=logging.ERROR,
                                                  resources={"GPU": 1} if gpus else None)
    client = Client(scheduler or cluster)
    try:
        futures = [client.submit(run_task, t, str(out), device, threads, key=f"seg-explain-{t.key}", pure=False,
                                 resources={"GPU": 1} if gpus else None) for t in todo]
        for fut in as_completed(futures):
            yield fut.result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def write_tidy_csv(path: Path, records: Sequence[dict[str, Any]]) -> Path:
    """One row per task: the identity columns first, then every scalar statistic any task reported."""
    cols = list(TIDY_FIRST)
    for rec in records:
        cols += [k for k, v in rec.items() if k not in cols and not isinstance(v, (list, dict))]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for rec in records:
        w.writerow({k: rec.get(k, "") for k in cols})
    _write_atomic(path, buf.getvalue())
    return path
