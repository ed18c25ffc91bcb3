"""``seg-explain reliability``: predict from MiSuRe's outputs whether a segmentation is reliable.

    seg-explain reliability fit RESULTS [RESULTS2 ...] (--manifest MANIFEST [--manifest M2 ...] | --dice-column COL)
                                [--threshold 0.9] [--folds 5] [--seed 0] [--plot PNG] -o MODEL.json
    seg-explain reliability predict RESULTS [RESULTS2 ...] --model-json MODEL.json [--manifest MANIFEST ...] -o OUT.csv

RESULTS: a ``seg-explain batch ... --method misure`` folder or its ``results.csv``; its finished MiSuRe rows give
the features (stage-1 dilations, Dice explained, perturbation ratio, log10 of the prediction's size in pixels).
The label of a row is reliable = Dice(model prediction, ground truth) > --threshold inside the row's RoI. A
batch's results.csv holds no such Dice, so ``fit`` computes it: give the manifest each RESULTS was run on
(``--manifest``, once per RESULTS, in the same order; its rows need a ``label`` file): the model named in the
row (the batch's ``model`` column) segments the row's image once and the Dice is taken inside the RoI. A CSV
that already has the Dice (e.g. one this command wrote: ``label_dice``) can name it with --dice-column.

``fit`` prints the stratified k-fold cross-validated ROC AUC, writes the model as JSON (no pickle), the rows
with features, Dice, label and out-of-fold probability (``MODEL_rows.csv``) and MiSuRe's global views
(``MODEL_global_views.png``, or --plot). ``predict`` writes each row's probability of being reliable; with
--manifest it also computes the rows' Dice and reports the AUC on them.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

from ..core.errors import UserError
from .common import atomic_write, check_new


def add_reliability_parser(sub: Any, flags: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("reliability", parents=flags, description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       help="post-hoc reliability: predict from MiSuRe's outputs whether a segmentation is reliable")
    acts = p.add_subparsers(dest="reliability_command", required=True, metavar="ACTION")

    def inputs(q: argparse.ArgumentParser) -> None:
        q.add_argument("results", nargs="+", help="batch folder(s) or results.csv file(s) of --method misure runs")
        q.add_argument("--manifest", action="append", default=[],
                       help="the manifest each RESULTS was run on (repeat, same order): computes each row's Dice "
                            "of the prediction vs its label")
        q.add_argument("--dice-column", "--labels-from-dice", dest="dice_column", metavar="COLUMN",
                       help="a column of RESULTS that already holds the prediction's Dice vs the ground truth")
        q.add_argument("--device", default="auto", help="device for the models that compute the Dice")

    fit = acts.add_parser("fit", parents=flags, help="fit the reliability model and print its CV ROC AUC")
    inputs(fit)
    fit.add_argument("--threshold", type=float, default=0.9, help="reliable = Dice > THRESHOLD (default 0.9)")
    fit.add_argument("--folds", type=int, default=5, help="stratified cross-validation folds (default 5)")
    fit.add_argument("--seed", type=int, default=0, help="seed of the fold shuffle (default 0)")
    fit.add_argument("--C", type=float, default=1.0, help="inverse L2 regularisation strength (default 1)")
    fit.add_argument("--plot", help="global-views PNG (default MODEL_global_views.png)")
    fit.add_argument("-o", "--output", required=True, help="the fitted model, JSON")
    fit.add_argument("--overwrite", action="store_true", help="replace output files that already exist")
    fit.set_defaults(func=cmd_fit)

    pred = acts.add_parser("predict", parents=flags, help="probability that each segmentation is reliable")
    inputs(pred)
    pred.add_argument("--model-json", required=True, help="a model written by seg-explain reliability fit")
    pred.add_argument("-o", "--output", required=True, help="CSV: one row per result with probability_reliable")
    pred.add_argument("--overwrite", action="store_true", help="replace the output file if it already exists")
    pred.set_defaults(func=cmd_predict)


def _results_csv(path: str) -> Path:
    p = Path(path)
    if p.is_dir():
        p = p / "results.csv"
    if not p.is_file():
        raise UserError(f"{path}: no results.csv (give a seg-explain batch folder or its results.csv)")
    return p


def read_results(args: argparse.Namespace, need_dice: bool) -> list[dict[str, Any]]:
    """The finished MiSuRe rows of every RESULTS, each with ``label_dice`` where it can be had."""
    from ..core.manifest import read_manifest

    if args.manifest and len(args.manifest) != len(args.results):
        raise UserError(f"give one --manifest per RESULTS ({len(args.results)} RESULTS, {len(args.manifest)} "
                        "--manifest)")
    if need_dice and not args.manifest and not args.dice_column:
        raise UserError("the label needs each row's Dice vs the ground truth: give the manifest(s) the batch ran on "
                        "(--manifest MANIFEST, rows with a label file) or a Dice column (--dice-column COLUMN)")
    rows: list[dict[str, Any]] = []
    models: dict[str, Any] = {}
    skipped = 0
    for i, res in enumerate(args.results):
        path = _results_csv(res)
        with path.open(newline="") as fh:
            recs = list(csv.DictReader(fh))
        manifest = read_manifest(args.manifest[i]) if args.manifest else None
        for rec in recs:
            if rec.get("method") != "misure" or rec.get("status") != "ok":
                skipped += 1
                continue
            rec = dict(rec, source=str(path))
            if args.dice_column:
                if args.dice_column not in rec:
                    raise UserError(f"{path} has no column {args.dice_column!r}")
                rec["label_dice"] = float(rec[args.dice_column])
            elif manifest is not None:
                idx = int(rec["row"])
                if not 0 <= idx < len(manifest) or Path(manifest[idx].image).resolve() != Path(rec["image"]).resolve():
                    raise UserError(f"{path} row {idx} ({rec['image']}) is not row {idx} of {args.manifest[i]}: give "
                                    "the manifest the batch ran on")
                rec["label_dice"] = _dice(models, rec["model"], manifest[idx], args.device)
            rows.append(rec)
    if skipped and not args.quiet:
        print(f"{skipped} row(s) skipped (not a finished MiSuRe result)", file=sys.stderr)
    if not rows:
        raise UserError("no finished MiSuRe results in " + ", ".join(args.results) + " (run seg-explain batch with "
                        "--method misure)")
    return rows


def _dice(models: dict[str, Any], model_path: str, row: Any, device: str) -> float:
    from ..core.models import load_model
    from ..core.reliability import prediction_dice

    if model_path not in models:
        models[model_path] = load_model(model_path, device=device)
    return prediction_dice(models[model_path], row)


def _write_rows(path: Path, rows: list[dict[str, Any]], extra: list[str]) -> None:
    from ..core.reliability import FEATURES, feature_row

    cols = ["source", "key", "status", "method", "row", "name", "image", "model", "dilations", "dice_explained",
            "perturbation_ratio", "object_pixels", *[f for f in FEATURES if f.startswith("log10")], *extra]
    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow(r | dict(zip(FEATURES, feature_row(r))))

    atomic_write(path, write)


def _stem(path: Path) -> Path:
    return path.with_name(path.name[:-5] if path.name.endswith(".json") else path.name)


def cmd_fit(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from ..core import reliability as rel

    out = Path(args.output)
    table = Path(f"{_stem(out)}_rows.csv")
    plot = Path(args.plot) if args.plot else Path(f"{_stem(out)}_global_views.png")
    if not plot.suffix:  # as matplotlib would name it (the temporary file's suffix must be an image format)
        plot = plot.with_name(plot.name + ".png")
    check_new([out, table, plot], args)
    rows = read_results(args, need_dice=True)
    X = rel.feature_matrix(rows)
    y = rel.reliable_labels([r["label_dice"] for r in rows], args.threshold)
    model = rel.fit(X, y, threshold=args.threshold, folds=args.folds, seed=args.seed, C=args.C)
    _, oof = rel.cross_validated_auc(X, y, args.folds, args.seed, args.C, return_predictions=True)
    plot.parent.mkdir(parents=True, exist_ok=True)  # the plot first: the likeliest to fail, then the rest
    atomic_write(plot, lambda tmp: rel.plot_global_views(
        X, y, tmp, threshold=args.threshold,
        title=f"MiSuRe global views: {len(y)} segmentations, CV ROC AUC {model.cv_auc:.3f}"))
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: rel.save_model(model, tmp))
    for r, lab, p in zip(rows, y, oof):
        r |= {"reliable": int(lab), "probability_reliable_oof": round(float(p), 6)}
    _write_rows(table, rows, ["label_dice", "reliable", "probability_reliable_oof"])
    if not args.quiet:
        print(f"cross-validated ROC AUC ({args.folds}-fold, stratified, seed {args.seed}): {model.cv_auc:.3f} "
              f"on {len(y)} rows ({int(y.sum())} reliable, Dice > {args.threshold:g})", file=sys.stderr)
    return {"command": "reliability fit", "output": str(out), "files": [str(out), str(table), str(plot)],
            "rows": len(y), "reliable": int(y.sum()), "threshold": args.threshold, "cv_auc": model.cv_auc,
            "folds": args.folds, "coefficients": model.coefficients,
            "mean_label_dice": float(np.mean([r["label_dice"] for r in rows]))}


def cmd_predict(args: argparse.Namespace) -> dict[str, Any]:
    from ..core import reliability as rel

    check_new([Path(args.output)], args)
    model = rel.load_model(args.model_json)
    rows = read_results(args, need_dice=False)
    proba = rel.predict(model, rows)
    extra = ["probability_reliable"]
    for r, p in zip(rows, proba):
        r["probability_reliable"] = round(float(p), 6)
    summary: dict[str, Any] = {"command": "reliability predict", "output": args.output, "rows": len(rows),
                               "model_cv_auc": model.cv_auc}
    if all("label_dice" in r for r in rows):
        y = rel.reliable_labels([r["label_dice"] for r in rows], model.threshold)
        for r, lab in zip(rows, y):
            r["reliable"] = int(lab)
        extra = ["label_dice", "reliable", *extra]
        if 0 < y.sum() < len(y):
            from sklearn.metrics import roc_auc_score

            summary["auc"] = float(roc_auc_score(y, proba))
            if not args.quiet:
                print(f"ROC AUC on these {len(y)} rows: {summary['auc']:.3f}", file=sys.stderr)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_rows(out, rows, extra)
    return summary
