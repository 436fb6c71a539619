"""The evaluation report: one self-contained HTML file (inline SVG plots, embedded PNG frame strips).

    write_report(Path("runs/eval_wm"), results, cfg)   # -> runs/eval_wm/report.html

Sections: success bars with 95% intervals (beside ground truth when given), the ranking table,
a scatter of this world's success against ground truth with Pearson / Spearman / Kendall / MMRV and
their bootstrap intervals, and side-by-side frame strips (ground truth above, this world below).
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

from common.io import atomic_write_text
from policy_eval.evaluate import EvalConfig, fmt_metric

CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5rem 0; } td, th { padding: 0.25rem 0.7rem; border-bottom: 1px solid #eee; }
th { text-align: left; background: #f6f6f6; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.strip img { image-rendering: pixelated; width: 100%; max-width: 1000px; display: block; }
.strip { margin-bottom: 1rem; } .caption { color: #666; font-size: 0.9rem; }
figure { margin: 0.5rem 0; }
"""


def _pyplot() -> Any:
    """matplotlib's pyplot on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _svg(fig: Any) -> str:
    plt = _pyplot()
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _bars(results: dict[str, Any], gt: dict[str, Any] | None, world: str) -> str:
    import numpy as np

    plt = _pyplot()

    pols = results["ranking"]
    x = np.arange(len(pols))
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(pols)), 3.6))
    sides = [(world, results["policies"], "#3b76c4")]
    if gt is not None:
        sides.append((f"ground truth ({gt.get('world', '')})", gt["policies"], "#5a9e4b"))
    w = 0.8 / len(sides)
    for j, (label, per, color) in enumerate(sides):
        rates = np.array([per[p]["success_rate"] if p in per else np.nan for p in pols])
        lo = np.array([per[p]["ci_low"] if p in per else np.nan for p in pols])
        hi = np.array([per[p]["ci_high"] if p in per else np.nan for p in pols])
        ax.bar(
            x + (j - (len(sides) - 1) / 2) * w,
            rates,
            w,
            label=label,
            color=color,
            yerr=np.clip([rates - lo, hi - rates], 0, None),  # Wilson bounds at 0 or n round past the rate
            capsize=3,
            ecolor="#333",
        )
    ax.set_xticks(x, pols, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success rate (95% Wilson interval)")
    ax.legend(loc="upper right", fontsize=8)
    return _svg(fig)


def _scatter(metrics: dict[str, Any]) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    ax.plot([0, 1], [0, 1], "--", color="#999", lw=1)
    for p in metrics["policies"]:
        gx, py = metrics["ground_truth_success"][p], metrics["predicted_success"][p]
        ax.scatter([gx], [py], color="#3b76c4")
        ax.annotate(p, (gx, py), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlim(-0.03, 1.03)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("ground-truth success")
    ax.set_ylabel("success in this world")
    ax.set_title(
        f"Pearson {fmt_metric(metrics['pearson']['value'], 2)}, MMRV {fmt_metric(metrics['mmrv']['value'])}",
        fontsize=9,
    )
    return _svg(fig)


def _png_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _ranking_table(results: dict[str, Any], gt: dict[str, Any] | None) -> str:
    head = "<tr><th>rank</th><th>policy</th><th>success</th><th>95% CI</th><th>n</th><th>mean steps</th>"
    head += "<th>ground truth</th><th>GT rank</th></tr>" if gt else "</tr>"
    gt_rank = {p: i + 1 for i, p in enumerate(gt["ranking"])} if gt else {}
    rows = []
    for i, p in enumerate(results["ranking"], 1):
        r = results["policies"][p]
        cells = (
            f"<td class=num>{i}</td><td>{html.escape(p)}</td><td class=num>{r['success_rate']:.2f}</td>"
            f"<td class=num>[{r['ci_low']:.2f}, {r['ci_high']:.2f}]</td><td class=num>{r['n']}</td>"
            f"<td class=num>{r['mean_length']:.1f}</td>"
        )
        if gt:
            g = gt["policies"].get(p)
            cells += (
                (
                    f"<td class=num>{g['success_rate']:.2f} [{g['ci_low']:.2f}, {g['ci_high']:.2f}]</td>"
                    f"<td class=num>{gt_rank.get(p, '')}</td>"
                )
                if g
                else "<td></td><td></td>"
            )
        rows.append(f"<tr>{cells}</tr>")
    return f'<table id="ranking">{head}{"".join(rows)}</table>'


def _metrics_table(metrics: dict[str, Any]) -> str:
    f = fmt_metric
    rows = "".join(
        f"<tr><td>{k}</td><td class=num>{f(metrics[k]['value'])}</td>"
        f"<td class=num>[{f(metrics[k]['ci_low'])}, {f(metrics[k]['ci_high'])}]</td></tr>"
        for k in ("pearson", "spearman", "kendall", "mmrv", "mae")
        if k in metrics
    )
    return (
        f'<table id="metrics"><tr><th>metric</th><th>value</th><th>95% bootstrap CI (over seeds)</th></tr>{rows}'
        f"</table><p class=caption>{len(metrics['policies'])} policies; per-episode agreement of the success "
        f"verdicts {metrics['per_episode_agreement']:.2f}; mae: mean |imagined - ground-truth| success rate per "
        f"policy. SIMPLER reports Pearson 0.57–0.98 and MMRV "
        f"0.03–0.12 for its simulators against real robots.</p>"
    )


def _trust_table(out: Path, results: dict[str, Any]) -> str:
    """Per policy: imagined success over all episodes and over trusted ones, how many were set aside (and
    the success with the twin's verdicts for those, after a fallback); then the untrusted episodes."""
    from policy_eval.evaluate import EpisodeLog, unique_rows

    pol = results["policies"]
    if not any("trusted" in r for r in pol.values()):
        return ""
    fallback = any("with_fallback" in r.get("trusted", {}) for r in pol.values())
    head = (
        "<tr><th>policy</th><th>all episodes</th><th>trusted only</th><th>set aside</th><th>mean trust</th>"
    )
    head += "<th>untrusted re-run in the twin</th></tr>" if fallback else "</tr>"
    rows = []
    for p in results["ranking"]:
        r, t = pol[p], pol[p].get("trusted", {})
        rate = t.get("success_rate")
        cells = (
            f"<td>{html.escape(p)}</td><td class=num>{r['success_rate']:.2f} ({r['n']})</td>"
            f"<td class=num>{'–' if rate is None else f'{rate:.2f}'} ({t.get('n', 0)})</td>"
            f"<td class=num>{t.get('set_aside', 0)}</td><td class=num>{r.get('mean_trust', float('nan')):.2f}</td>"
        )
        if fallback:
            cells += f"<td class=num>{t.get('with_fallback', float('nan')):.2f}</td>"
        rows.append(f"<tr>{cells}</tr>")
    episodes = unique_rows(EpisodeLog(out / "episodes.jsonl").read())
    bad = sorted((e for e in episodes if e.get("trusted") is False), key=lambda e: e["trust"])
    items = "".join(
        f"<li class=untrusted>{html.escape(e['policy'])}, seed {e['seed']}: imagined "
        f"{'success' if e['success'] else 'failure'}, trust {e['trust']:.2f}</li>"
        for e in bad[:50]
    )
    more = f"<li>… and {len(bad) - 50} more</li>" if len(bad) > 50 else ""
    return (
        '<h2>Trust in the imagined episodes</h2><table id="trust">'
        f"{head}{''.join(rows)}</table><p class=caption>trust: the probability that an imagined verdict is the "
        "twin's (policy_eval.trust: a dynamics ensemble replays each episode); episodes under the threshold "
        f"are set aside.</p><details><summary>{len(bad)} untrusted episodes</summary><ul>{items}{more}</ul></details>"
    )


def _strips(out: Path, gt_dir: Path | None, results: dict[str, Any], world: str, limit: int = 6) -> str:
    from policy_eval.evaluate import slug

    parts = []
    for p in results["ranking"][:limit]:
        mine = sorted((out / "strips" / slug(p)).glob("seed-*.png"), key=lambda f: int(f.stem[5:]))
        for f in mine[:2]:
            block = [f"<div class=strip><div class=caption>{html.escape(p)}, {f.stem}</div>"]
            if gt_dir is not None and (gt_dir / "strips" / slug(p) / f.name).exists():
                block.append(
                    f"<div class=caption>ground truth</div>{_png_tag(gt_dir / 'strips' / slug(p) / f.name, 'ground truth')}"
                )
            block.append(f"<div class=caption>{html.escape(world)}</div>{_png_tag(f, world)}</div>")
            parts.append("".join(block))
    return "".join(parts) or "<p class=caption>no frame strips (run with render and strips > 0)</p>"


def write_report(out: Path, results: dict[str, Any], cfg: EvalConfig) -> Path:
    metrics = results.get("metrics")
    gt_dir = Path(metrics["ground_truth"]) if metrics else None
    gt = json.loads((gt_dir / "results.json").read_text()) if gt_dir else None
    world = results.get("world", "")
    body = [
        f"<h1>Policy evaluation: {html.escape(results.get('scene', ''))} in {html.escape(world)}</h1>",
        f"<p class=caption>{len(results['ranking'])} policies, seeds {results['seeds'][0]}–{results['seeds'][-1]}"
        f"{' (adaptive stopping)' if cfg.adaptive else ''}.</p>",
        '<h2>Success rates</h2><figure id="success-bars">',
        _bars(results, gt, world),
        "</figure>",
        "<h2>Ranking</h2>",
        _ranking_table(results, gt),
    ]
    if metrics:
        body += [
            "<h2>Agreement with ground truth</h2>",
            '<figure id="scatter">',
            _scatter(metrics),
            "</figure>",
            _metrics_table(metrics),
            f"<p>ranking here: {html.escape(' > '.join(metrics['ranking_predicted']))}<br>"
            f"ground truth: {html.escape(' > '.join(metrics['ranking_ground_truth']))}</p>",
        ]
    body.append(_trust_table(out, results))
    body += [
        '<h2>Episodes side by side</h2><div id="strips">',
        _strips(out, gt_dir, results, world),
        "</div>",
    ]
    page = (
        f"<!doctype html><html><head><meta charset=utf-8><title>DreamTwin evaluation</title><style>{CSS}</style>"
        f"</head><body>{''.join(body)}</body></html>"
    )
    path = out / "report.html"
    atomic_write_text(path, page)
    return path
