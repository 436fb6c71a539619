"""The perturbation sweep's report: one self-contained HTML file in the evaluation report's style.

    write_sweep_report(Path("runs/perturb"), results, cfg)   # -> runs/perturb/report.html

Sections: heatmaps of success and of the paired difference to the control (policies x cells, significant
differences marked), per-axis success curves with Beta intervals, failure-event rates per cell, the
largest drops, and a frame strip per level of each axis (the first policy's first seed).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from common.io import atomic_write_text
from policy_eval.evaluate import slug
from policy_eval.report import CSS, _png_tag, _pyplot, _svg

if TYPE_CHECKING:
    from policy_eval.perturb import PerturbConfig


def _heatmap(results: dict[str, Any], key: str) -> str:
    plt = _pyplot()
    pols = results["policies"]
    cells = [c for c in results["cells"] if key == "success_rate" or c != "control"]
    m = np.full((len(pols), len(cells)), np.nan)
    sig = np.zeros_like(m, bool)
    for j, c in enumerate(cells):
        for i, p in enumerate(pols):
            e = results["cells"][c]["policies"][p]
            v = e["success_rate"] if key == "success_rate" else e["diff"]["value"]
            m[i, j] = np.nan if v is None else v
            sig[i, j] = key != "success_rate" and e["diff"]["significant"]
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(cells) + 2), 0.45 * len(pols) + 1.8))
    cmap, lim = ("viridis", (0, 1)) if key == "success_rate" else ("RdBu", (-1, 1))
    im = ax.imshow(m, cmap=cmap, vmin=lim[0], vmax=lim[1], aspect="auto")
    for i in range(len(pols)):
        for j in range(len(cells)):
            if np.isfinite(m[i, j]):
                text = f"{m[i, j]:+.2f}" if key != "success_rate" else f"{m[i, j]:.2f}"
                ax.text(
                    j,
                    i,
                    text + ("*" if sig[i, j] else ""),
                    ha="center",
                    va="center",
                    fontsize=6.5,
                    color="white"
                    if (m[i, j] < 0.5 if key == "success_rate" else abs(m[i, j]) > 0.6)
                    else "black",
                )
    ax.set_xticks(range(len(cells)), cells, rotation=40, ha="right", fontsize=7)
    ax.set_yticks(range(len(pols)), pols, fontsize=7)
    fig.colorbar(
        im,
        ax=ax,
        fraction=0.03,
        label="success" if key == "success_rate" else "perturbed - control (* : 95% interval excludes 0)",
    )
    return _svg(fig)


def _axis_curves(results: dict[str, Any], axis: str) -> str:
    plt = _pyplot()
    cells = ["control"] + [c for c, e in results["cells"].items() if e["axis"] == axis]
    labels = ["control"] + [results["cells"][c]["level"] for c in cells[1:]]
    fig, ax = plt.subplots(figsize=(max(4.5, 1.2 * len(cells)), 3.2))
    x = np.arange(len(cells))
    for k, p in enumerate(results["policies"]):
        es = [results["cells"][c]["policies"][p] for c in cells]
        y = np.array([np.nan if e["success_rate"] is None else e["success_rate"] for e in es])
        lo, hi = np.array([e["ci_low"] for e in es]), np.array([e["ci_high"] for e in es])
        off = (k - (len(results["policies"]) - 1) / 2) * 0.04
        ax.errorbar(
            x + off, y, yerr=np.clip([y - lo, hi - y], 0, None), marker="o", ms=3, capsize=2, lw=1, label=p
        )
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel("success (Beta 95%)")
    ax.set_title(axis, fontsize=9)
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return _svg(fig)


def _events(results: dict[str, Any]) -> str:
    plt = _pyplot()
    cells = list(results["cells"])
    counts: dict[str, np.ndarray] = {}
    n = np.array([sum(e["n"] for e in results["cells"][c]["policies"].values()) for c in cells], float)
    for j, c in enumerate(cells):
        for e in results["cells"][c]["policies"].values():
            for name, k in e["events"].items():
                counts.setdefault(name, np.zeros(len(cells)))[j] += k
    if not counts:
        return "<p class=caption>no failure events recorded</p>"
    names = sorted(counts, key=lambda k: -counts[k].sum())[:8]
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(cells) + 2), 3.4))
    w = 0.8 / len(names)
    for k, name in enumerate(names):
        ax.bar(
            np.arange(len(cells)) + (k - (len(names) - 1) / 2) * w,
            counts[name] / np.maximum(n, 1),
            w,
            label=name,
        )
    ax.set_xticks(range(len(cells)), cells, rotation=40, ha="right", fontsize=7)
    ax.set_ylabel("fraction of episodes (all policies)")
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return _svg(fig)


def _harm_table(results: dict[str, Any], limit: int = 15) -> str:
    ctrl = results["cells"]["control"]["policies"]
    rows = []
    for h in results["most_harmful"][:limit]:
        cell = results["cells"][h["cell"]]["policies"][h["policy"]]
        rows.append(
            f"<tr><td>{html.escape(h['policy'])}</td><td>{html.escape(h['cell'])}</td>"
            f"<td class=num>{ctrl[h['policy']]['success_rate']:.2f}</td><td class=num>{cell['success_rate']:.2f}</td>"
            f"<td class=num>{h['value']:+.2f}</td><td class=num>[{h['ci_low']:+.2f}, {h['ci_high']:+.2f}]</td>"
            f"<td class=num>{h['n_pairs']}</td><td>{'yes' if h['significant'] else ''}</td></tr>"
        )
    head = (
        "<tr><th>policy</th><th>cell</th><th>control</th><th>perturbed</th><th>difference</th>"
        "<th>95% CI (paired)</th><th>seeds</th><th>significant</th></tr>"
    )
    return f'<table id="harm">{head}{"".join(rows)}</table>'


def _strips(out: Path, results: dict[str, Any], axis: str) -> str:
    parts = []
    cells = ["control"] + [c for c, e in results["cells"].items() if e["axis"] == axis]
    for c in cells:
        d = out / "cells" / c / "strips"
        found = None
        for p in results["policies"]:
            files = sorted((d / slug(p)).glob("seed-*.png")) if (d / slug(p)).is_dir() else []
            if files:
                found = (p, files[0])
                break
        if found:
            parts.append(
                f"<div class=strip><div class=caption>{html.escape(c)} ({html.escape(found[0])}, "
                f"{found[1].stem})</div>{_png_tag(found[1], c)}</div>"
            )
    return "".join(parts)


def write_sweep_report(out: Path, results: dict[str, Any], cfg: PerturbConfig) -> Path:
    seeds = results["seeds"]
    body = [
        f"<h1>Perturbation analysis: {html.escape(results['scene'])} in {html.escape(results['world'])}</h1>",
        f"<p class=caption>{len(results['policies'])} policies, {len(results['cells']) - 1} perturbed cells and "
        f"the control on the same seeds {seeds[0]}–{seeds[-1]}"
        f"{' (adaptive stopping per cell)' if cfg.adaptive else ''}. Intervals: Beta(k+1, n−k+1) 95% for "
        "success, Newcombe's paired interval for the difference to the control.</p>",
        '<h2>Success per cell</h2><figure id="heatmap-success">',
        _heatmap(results, "success_rate"),
        '</figure><h2>Difference to the control</h2><figure id="heatmap-diff">',
        _heatmap(results, "diff"),
        "</figure><h2>Largest drops</h2>",
        _harm_table(results),
        '<h2>Per axis</h2><div id="axes">',
    ]
    for axis, a in results["axes"].items():
        body.append(f"<h3>{html.escape(axis)} <span class=caption>({html.escape(a['type'])})</span></h3>")
        body.append(f'<figure class="axis-curve">{_axis_curves(results, axis)}</figure>')
        fits = a.get("fits") or {}
        if fits:
            items = [
                f"{html.escape(p)}: {html.escape(k)} slope {v['slope_per_unit']:+.3g} per unit over "
                f"[{v['range'][0]:.3g}, {v['range'][1]:.3g}] (n {v['n']})"
                for p, per in fits.items()
                for k, v in per.items()
            ]
            body.append(
                "<p class=caption>logistic fits of success on the drawn values: " + "; ".join(items) + "</p>"
            )
        body.append(f'<div class="axis-strips">{_strips(out, results, axis)}</div>')
    body += ["</div>", '<h2>Failure events</h2><figure id="events">', _events(results), "</figure>"]
    page = (
        "<!doctype html><html><head><meta charset=utf-8><title>DreamTwin perturbation analysis</title>"
        f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>"
    )
    path = out / "report.html"
    atomic_write_text(path, page)
    return path
