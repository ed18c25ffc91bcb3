"""``seg-explain compare``'s report: a Markdown table per method and per model, and plots (matplotlib, Agg).

- ``table.md``: mean (sd) over the tasks that finished, like the PdCR paper's Tables 2-3: attribution score,
  deletion/insertion AUC, positive/negative/irrelevant shares, min/max ATE, Dice explained, perturbation ratio,
  seconds, forward passes.
- ``curves.png``: mean deletion curve per method (and model).
- ``maps_<row>.png``: the maps of every method for one RoI side by side (the first rows).
- ``shares.png``: per model, PdCR's positive/negative/irrelevant shares (pies) and attribution scores (bars).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

COLUMNS = (("eval_attribution_score", "attribution score ↑", "{:.1f}"),
           ("eval_deletion_auc", "deletion AUC ↓", "{:.1f}"),
           ("eval_insertion_auc", "insertion AUC ↑", "{:.1f}"),
           ("positive_share", "positive %", "{:.1f}"), ("negative_share", "negative %", "{:.1f}"),
           ("irrelevant_share", "irrelevant %", "{:.1f}"), ("min_ate", "min ATE", "{:.2f}"),
           ("max_ate", "max ATE", "{:.2f}"), ("dice_explained", "Dice explained", "{:.2f}"),
           ("perturbation_ratio", "ratio", "{:.2f}"), ("seconds", "seconds", "{:.1f}"),
           ("forward_passes", "passes", "{:.0f}"))


def _records(out: Path, recs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The full records (with curves) of the finished tasks."""
    full = []
    for r in recs:
        if r.get("status") != "ok":
            continue
        p = out / "results" / f"{r['key']}.record.json"
        full.append(json.loads(p.read_text()) if p.exists() else r)
    return full


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def table(recs: Sequence[dict[str, Any]]) -> str:
    """Markdown: one line per (model, method), mean (sd) over tasks; '–' where a method has no such number."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in recs:
        groups[(Path(r["model"]).name, r["method"])].append(r)
    head = "| model | method | n | " + " | ".join(c[1] for c in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (3 + len(COLUMNS))]
    for (model, method), rs in sorted(groups.items()):
        cells = []
        for key, _, fmt in COLUMNS:
            v = np.array([_num(r.get(key)) for r in rs])
            v = v[np.isfinite(v)]
            cells.append("–" if not len(v) else (fmt.format(v.mean()) + (f" ({fmt.format(v.std())})"
                                                                          if len(v) > 1 else "")))
        lines.append(f"| {model} | {method} | {len(rs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(records: Sequence[dict[str, Any]], out: Path, max_map_rows: int = 4) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    recs = _records(out, records)
    files = [out / "table.md"]
    files[0].write_text("# Method comparison\n\nMean (sd) over RoIs; arrows: which way is better.\n\n" + table(recs))
    if not recs:
        return files
    files.append(_curves(recs, out / "curves.png"))
    files += _map_grids(recs, out, max_map_rows)
    shares = _shares(recs, out / "shares.png")
    return files + ([shares] if shares else [])


def _curves(recs: Sequence[dict[str, Any]], path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    groups: dict[str, list[list[float]]] = defaultdict(list)
    xs: dict[str, list[float]] = {}
    for r in recs:
        if r.get("eval_deletion_curve"):
            label = r["method"] + ("" if len({q["model"] for q in recs}) == 1 else f" · {Path(r['model']).name}")
            groups[label].append(r["eval_deletion_curve"])
            xs[label] = r.get("eval_fractions") or list(np.linspace(0, 1, len(r["eval_deletion_curve"])))
    for label, curves in sorted(groups.items()):
        n = min(len(c) for c in curves)
        ax.plot(np.asarray(xs[label])[:n], np.mean([c[:n] for c in curves], axis=0), label=label)
    ax.set_xlabel("fraction of blocks perturbed (most salient first)")
    ax.set_ylabel("RoI Dice (points)")
    ax.set_title("Deletion curves (mean over RoIs; lower = better map)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _map_grids(recs: Sequence[dict[str, Any]], out: Path, max_rows: int) -> list[Path]:
    """One figure per RoI (the first ``max_rows`` rows): every method's map side by side."""
    import matplotlib.pyplot as plt

    from ..core.images import read_image

    by_row: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
    for r in recs:
        by_row[(int(r["row"]), r["model"])].append(r)
    files = []
    for (row, model), rs in sorted(by_row.items())[:max_rows]:
        rs = sorted(rs, key=lambda r: r["method"])
        fig, axes = plt.subplots(1, len(rs), figsize=(2.6 * len(rs), 2.8), dpi=110, squeeze=False)
        for ax, r in zip(axes[0], rs):
            m = read_image(Path(r["files"][0])).data[0]
            if m.ndim == 3:  # a volume: the plane holding the RoI
                z = int(np.nanargmax(np.isfinite(m).sum(axis=(0, 1)))) if np.isfinite(m).any() else m.shape[2] // 2
                m = m[:, :, z]
            finite = m[np.isfinite(m)]
            signed = finite.size > 0 and finite.min() < 0
            if signed:  # effect maps: symmetric around 0, red = supports (negative), as in napari
                lim = float(np.abs(finite).max()) or 1.0
                ax.imshow(m, cmap="RdBu", vmin=-lim, vmax=lim)
            else:  # saliency: its own range (RISE clusters around the mean Dice)
                lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
                ax.imshow(m, cmap="magma", vmin=lo, vmax=hi if hi > lo else lo + 1)
            ax.set_title(r["method"], fontsize=9)
            ax.axis("off")
        fig.suptitle(f"{rs[0]['name']} · {Path(model).name}", fontsize=9)
        fig.tight_layout()
        path = out / f"maps_row{row + 1}_{Path(model).stem}.png"
        fig.savefig(path)
        plt.close(fig)
        files.append(path)
    return files


def _shares(recs: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """Per model: PdCR's mean effect shares (pie) and every method's attribution score (bars)."""
    import matplotlib.pyplot as plt

    models = sorted({r["model"] for r in recs})
    pdcr = {m: [r for r in recs if r["model"] == m and r["method"] == "pdcr"] for m in models}
    if not any(pdcr.values()):
        return None
    fig, axes = plt.subplots(2, len(models), figsize=(3.2 * len(models), 6), dpi=110, squeeze=False)
    for i, m in enumerate(models):
        rs = pdcr[m]
        if rs:
            vals = [np.nanmean([_num(r.get(k)) for r in rs]) for k in ("positive_share", "negative_share",
                                                                         "irrelevant_share")]
            # ATE > 0: Dice rises when the block is replaced (works against, blue); < 0: supports (red)
            axes[0, i].pie(vals, labels=["works against (ATE > 0)", "supports (ATE < 0)", "irrelevant"],
                           colors=["#2e6fb5", "#c0392b", "#d0d0d0"], autopct="%.0f%%", textprops={"fontsize": 8})
        axes[0, i].set_title(Path(m).name, fontsize=9)
        methods = sorted({r["method"] for r in recs if r["model"] == m})
        scores = [np.nanmean([_num(r.get("eval_attribution_score")) for r in recs
                              if r["model"] == m and r["method"] == k]) for k in methods]
        axes[1, i].bar(methods, scores, color="#555")
        axes[1, i].set_ylabel("attribution score")
        axes[1, i].tick_params(axis="x", rotation=45, labelsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
